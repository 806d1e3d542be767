"""A small Python client for the B4B encoder API (what a paying user, or a stealer, would run)."""

from __future__ import annotations

from typing import Any

import numpy as np

from genleak._extras import needs_extra
from genleak.b4b.wire import decode_array, encode_array


class APIError(RuntimeError):
    """A non-2xx answer from the API, with its status code and ``detail`` message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class _Batching:
    """``embed`` = ``embed_batch`` over chunks of ``batch_size`` images, in order."""

    batch_size: int

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Representations of all ``images`` (N, C, H, W), ``batch_size`` per request."""
        parts = [self.embed_batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class B4BClient(_Batching):
    """``embed(images)`` against ``url`` with one API key; splits large arrays into batches.

    Images are sent as float32 arrays in [0, 1] (or uint8), shape ``(N, C, H, W)``.
    """

    def __init__(self, url: str, api_key: str, *, batch_size: int = 256, timeout: float = 120.0) -> None:
        with needs_extra("serve"):
            import httpx

        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def __enter__(self) -> B4BClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _check(self, resp: Any) -> dict[str, Any]:
        if resp.status_code >= 300:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise APIError(resp.status_code, str(detail))
        return resp.json()

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        """One request: the returned (defended) representations of ``images``."""
        out = self._check(self._http.post("/v1/embed", json={"images": encode_array(images)}))
        return decode_array(out["embeddings"], "embeddings").astype(np.float32, copy=False)

    def me(self) -> dict[str, Any]:
        return self._check(self._http.get("/v1/me"))


class LocalClient(_Batching):
    """Same interface as :class:`B4BClient` but calls a :class:`~genleak.b4b.service.B4BService`
    in-process: the identical request path without sockets (for tests and quick experiments)."""

    def __init__(self, service: Any, api_key: str, *, batch_size: int = 256) -> None:
        self.service = service
        self.batch_size = batch_size
        self.user = service.authenticate(api_key)
        if self.user is None:
            raise APIError(401, "missing, unknown or revoked API key")

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        return self.service.embed(self.user, np.asarray(images, np.float32))
