"""HTTP layer of the B4B encoder API (FastAPI): authenticate, validate, call the service, answer.

Endpoints:

* ``POST /v1/embed`` - body ``{"images": ...}``, header ``Authorization: Bearer <key>`` (or
  ``X-API-Key``). Images come either as one raw array
  ``{"dtype": "float32"|"uint8", "shape": [N, C, H, W], "data": "<base64>"}`` (float32 in [0, 1],
  uint8 in [0, 255]) or as a list of base64 PNG/JPEG files of the encoder's size. Optional
  ``"format": "b64"`` (default, same array form as the input) or ``"list"`` (nested JSON lists).
* ``GET /v1/me`` - the caller's own name and query count. There is no endpoint that takes a user
  name: a key only ever reaches its own state, and nothing resets it. Coverage and sigma are not
  shown to users (Section A.3.2: revealing the cost lets an adversary learn the cost function).
* ``GET /healthz`` - liveness, no authentication, no state.
* ``/docs``, ``/redoc``, ``/openapi.json`` only with ``api_docs=True`` (``b4b serve --api-docs``):
  the doc pages load their JavaScript from a CDN, and the schema maps the API for anyone asking.

The key is checked before the body is read, so a caller without a valid key learns nothing, not
even whether their body would have been valid. Every user mistake is a 4xx with a one-line
``detail``; the process keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from genleak._extras import needs_extra
from genleak.b4b.service import B4BService
from genleak.b4b.wire import InputError, decode_array, encode_array

with needs_extra("serve"):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

SETTINGS_ENV = "GENLEAK_B4B_SERVER"


@dataclass(frozen=True)
class ServerSettings:
    """Everything needed to build the app in a worker process (passed as JSON in an env var)."""

    model: str
    db: str
    config: str | None = None
    max_batch: int = 256
    max_body_bytes: int | None = None  # default: enough for max_batch float32 images in base64, x1.5
    torch_threads: int = 1
    sqlite_synchronous: str = "FULL"
    api_docs: bool = False


class ImageDecoder:
    """Turns the ``images`` field into a float32 batch the encoder accepts, or raises InputError."""

    def __init__(self, input_shape: tuple[int, int, int], max_batch: int) -> None:
        self.input_shape = tuple(input_shape)
        self.max_batch = max_batch

    def _check_batch_size(self, n: int) -> None:
        if n == 0:
            raise InputError(422, "empty batch: send at least one image")
        if n > self.max_batch:
            raise InputError(413, f"batch of {n} images exceeds the limit of {self.max_batch}; split it into smaller requests")

    def __call__(self, images: Any) -> np.ndarray:
        if isinstance(images, dict):
            return self._from_array(images)
        if isinstance(images, list):
            return self._from_files(images)
        raise InputError(422, "'images' must be an array object {dtype, shape, data} or a list of base64 PNG/JPEG strings")

    def _from_array(self, obj: dict[str, Any]) -> np.ndarray:
        shape = obj.get("shape")
        if isinstance(shape, list) and len(shape) >= 1 and isinstance(shape[0], int):
            self._check_batch_size(shape[0])  # before decoding: an oversized batch costs nothing
        if isinstance(shape, list) and len(shape) != 4:
            raise InputError(422, f"images: shape must be [N, C, H, W], got {shape}")
        x = decode_array(obj, "images")
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputError(422, f"images: each image has shape {tuple(x.shape[1:])} but this encoder expects {self.input_shape} (C, H, W)")
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        if not np.isfinite(x).all():
            raise InputError(422, "images: float32 data contains NaN or infinity")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(422, f"images: float32 values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        return x.astype(np.float32, copy=False)

    def _from_files(self, files: list[Any]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        self._check_batch_size(len(files))
        c, h, w = self.input_shape
        if c not in (1, 3):
            raise InputError(422, f"this encoder takes {c}-channel arrays; send the array form, not image files")
        mode = "L" if c == 1 else "RGB"
        out = np.empty((len(files), c, h, w), np.float32)
        for i, item in enumerate(files):
            if not isinstance(item, str):
                raise InputError(422, f"images[{i}] must be a base64 string of a PNG/JPEG file")
            try:
                raw = base64.b64decode(item, validate=True)
                with Image.open(io.BytesIO(raw)) as img:
                    if img.size != (w, h):
                        raise InputError(422, f"images[{i}] is {img.size[0]}x{img.size[1]} but this encoder expects {w}x{h}")
                    arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            except InputError:
                raise
            except (binascii.Error, ValueError) as err:
                raise InputError(422, f"images[{i}] is not valid base64 ({err})") from err
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
                raise InputError(422, f"images[{i}] is not a decodable image file ({type(err).__name__})") from err
            out[i] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
        return out


def _api_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return request.headers.get("x-api-key")


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise InputError(413, f"request body of {declared} bytes exceeds the limit of {limit}; send fewer images per request")
        except ValueError as err:
            raise InputError(400, "invalid Content-Length header") from err
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, f"request body exceeds the limit of {limit} bytes; send fewer images per request")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: B4BService, *, max_batch: int = 256, max_body_bytes: int | None = None,
               api_docs: bool = False) -> FastAPI:
    """The FastAPI app serving ``service``; limits guard memory against oversized requests.

    ``api_docs`` serves ``/docs``, ``/redoc`` and ``/openapi.json`` (off by default, see above)."""
    c, h, w = service.encoder.input_shape
    if max_body_bytes is None:
        max_body_bytes = int(max_batch * c * h * w * 4 * 1.5) + 65536
    decoder = ImageDecoder(service.encoder.input_shape, max_batch)
    docs = {} if api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="genleak B4B encoder API", version="1",
                  description="Embeddings behind Bucks-for-Buckets (B4B), an active defense against encoder stealing.",
                  **docs)
    unauthorized = "missing, unknown or revoked API key; send 'Authorization: Bearer <key>'"

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/me")
    async def me(request: Request) -> JSONResponse:
        user = await run_in_threadpool(service.authenticate, _api_key(request))
        if user is None:
            return _error(401, unauthorized)
        return JSONResponse({"name": user.name, "n_queries": user.n_queries, "n_requests": user.n_requests,
                             "input_shape": list(service.encoder.input_shape),
                             "embedding_dim": service.transform_of(user).out_dim})

    @app.post("/v1/embed")
    async def embed(request: Request) -> JSONResponse:
        user = await run_in_threadpool(service.authenticate, _api_key(request))
        if user is None:
            return _error(401, unauthorized)
        try:
            body = await _read_body(request, max_body_bytes)
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as err:
                raise InputError(400, f"body is not valid JSON ({err})") from err
            except RecursionError as err:  # json's C parser recurses once per nesting level
                raise InputError(400, "body is nested too deeply to be an embedding request") from err
            if not isinstance(payload, dict) or "images" not in payload:
                raise InputError(400, "body must be a JSON object with an 'images' field")
            fmt = payload.get("format", "b64")
            if fmt not in ("b64", "list"):
                raise InputError(422, f"format must be 'b64' or 'list', got {fmt!r}")
            images = await run_in_threadpool(decoder, payload["images"])
        except InputError as err:
            return _error(err.status, err.message)
        try:
            out = await run_in_threadpool(service.embed, user, images)
        except PermissionError:
            return _error(401, unauthorized)
        emb: Any = encode_array(out.astype(np.float32)) if fmt == "b64" else out.astype(float).tolist()
        return JSONResponse({"embeddings": emb, "n": int(out.shape[0]), "dim": int(out.shape[1])})

    return app


def build_service(settings: ServerSettings) -> B4BService:
    """Load the encoder, open the store and check both against each other (raises GenleakError)."""
    import torch

    from genleak.b4b.config import load_config
    from genleak.b4b.encoder import Encoder
    from genleak.b4b.store import StateStore

    torch.set_num_threads(max(1, settings.torch_threads))
    encoder = Encoder.load(settings.model)
    store = StateStore(settings.db, sqlite_synchronous=settings.sqlite_synchronous, create=False)
    config = load_config(settings.config) if settings.config else None
    return B4BService(encoder, store, config)


def app_from_settings(settings: ServerSettings) -> FastAPI:
    return create_app(build_service(settings), max_batch=settings.max_batch, max_body_bytes=settings.max_body_bytes,
                      api_docs=settings.api_docs)


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: every worker process builds its app from the env var."""
    return app_from_settings(ServerSettings(**json.loads(os.environ[SETTINGS_ENV])))


def serve(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info", announce: Callable[[str], None] | None = None) -> None:
    """Run the API with uvicorn. Several workers (or several machines on one PostgreSQL URL) share
    all user state through the database."""
    with needs_extra("serve"):
        import uvicorn

    app = app_from_settings(settings)  # validates model, config and database before binding the port
    if announce is not None:
        announce(f"serving {settings.model} on http://{host}:{port} (state: {settings.db})")
    if workers <= 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
        return
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    # Workers import torch and load the model before answering uvicorn's health check; the default
    # 5 s check kills them on a busy machine, so allow two minutes.
    uvicorn.run("genleak.b4b.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=log_level == "debug", timeout_worker_healthcheck=120)


def main(argv: list[str] | None = None) -> None:
    """``python -m genleak.b4b.server --host H --port P [--workers N] [--log-level L]`` with the
    ``ServerSettings`` as JSON in ``$GENLEAK_B4B_SERVER``: how ``b4b.process.ServerProcess`` starts a
    server without going through the CLI layer above this package."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m genleak.b4b.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    settings = ServerSettings(**json.loads(os.environ[SETTINGS_ENV]))
    serve(settings, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)


if __name__ == "__main__":
    main()
