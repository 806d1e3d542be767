"""The HTTP API in-process (FastAPI TestClient): authentication, isolation, malformed input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from genleak.b4b.config import B4BConfig
from genleak.b4b.encoder import Encoder
from genleak.b4b.server import create_app
from genleak.b4b.service import B4BService
from genleak.b4b.store import StateStore
from genleak.b4b.wire import decode_array, encode_array

MAX_BATCH = 16


@pytest.fixture
def api(tmp_path, tiny_encoder_dir):
    store = StateStore(f"sqlite:///{tmp_path / 'api.db'}")
    service = B4BService(Encoder.load(tiny_encoder_dir), store, B4BConfig(n_hyperplanes=10, transforms=("affine", "pad")))
    users = {}
    for name, policy in (("alice", "b4b"), ("bob", "b4b"), ("trusted", "none")):
        _, users[name] = store.create_user(name, policy=policy, seed=len(users) + 1)
    with TestClient(create_app(service, max_batch=MAX_BATCH)) as client:
        yield client, service, users
    store.close()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 16, 16), dtype=np.float32)


def _post(client, key, body, header="bearer"):
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    return client.post("/v1/embed", json=body, headers=headers)


def _ok(client, key, n=4, seed=0):
    r = _post(client, key, {"images": encode_array(_images(n, seed))})
    assert r.status_code == 200, r.text
    return decode_array(r.json()["embeddings"])


def test_embed_returns_defended_embeddings(api):
    client, service, users = api
    x = _images(8)
    out = _ok(client, users["alice"], 8)
    assert out.shape == (8, 32 + 8)  # affine + pad (8 constants)
    raw = _ok(client, users["trusted"], 8)
    np.testing.assert_allclose(raw, service.encoder.embed(x), rtol=1e-6)  # policy none: the victim's output
    # Same images, two B4B users: different spaces (per-user transformation, Section 6.3.4).
    assert not np.allclose(_ok(client, users["bob"], 8)[:, :32], out[:, :32])
    r = _post(client, users["alice"], {"images": encode_array(x), "format": "list"})
    assert r.status_code == 200 and np.asarray(r.json()["embeddings"]).shape == (8, 40)
    assert _post(client, users["alice"], {"images": encode_array(x)}, header="x-api-key").status_code == 200
    uint8 = _post(client, users["trusted"], {"images": encode_array((x * 255).round().astype(np.uint8))})
    np.testing.assert_allclose(decode_array(uint8.json()["embeddings"]), raw, atol=0.05)


def test_png_files_are_accepted(api):
    from PIL import Image

    client, service, users = api
    x = (_images(3) * 255).round().astype(np.uint8)
    files = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img[0], mode="L").save(buf, format="PNG")
        files.append(base64.b64encode(buf.getvalue()).decode())
    r = _post(client, users["trusted"], {"images": files})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(decode_array(r.json()["embeddings"]), service.encoder.embed(x / 255.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", [None, "", "glb4b_unknown", "Bearer", "not-a-key"])
def test_missing_or_unknown_key_is_401_without_embeddings(api, key):
    client, _, _ = api
    r = _post(client, key, {"images": encode_array(_images(2))})
    assert r.status_code == 401
    assert "embeddings" not in r.json() and "API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401_and_auth_comes_before_body_checks(api):
    client, service, users = api
    _ok(client, users["bob"])
    service.store.revoke_user("bob")
    r = _post(client, users["bob"], {"images": encode_array(_images(2))})
    assert r.status_code == 401 and "embeddings" not in r.json()
    # A bad key never learns whether its body was valid: 401 even for garbage.
    assert client.post("/v1/embed", content=b"\x00garbage", headers={"Authorization": "Bearer glb4b_x"}).status_code == 401
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {users['bob']}"}).status_code == 401


def test_users_cannot_read_or_reset_each_other(api):
    client, service, users = api
    alice = {"Authorization": f"Bearer {users['alice']}"}
    _ok(client, users["bob"], 12, seed=1)
    before = service.store.get_user("bob")
    me = client.get("/v1/me", headers=alice).json()
    assert me["name"] == "alice" and me["n_queries"] == 0
    assert "coverage" not in me and "sigma" not in me and "buckets" not in me  # A.3.2: do not reveal the cost
    # No route takes a user name; nothing resets state; extra fields naming another user are ignored.
    for method, path in (("GET", "/v1/users/bob"), ("GET", "/v1/me/bob"), ("DELETE", "/v1/me"),
                         ("POST", "/v1/reset"), ("PUT", "/v1/me"), ("DELETE", "/v1/users/bob")):
        assert client.request(method, path, headers=alice).status_code in (404, 405)
    assert client.get("/v1/me?user=bob", headers=alice).json()["name"] == "alice"
    r = _post(client, users["alice"], {"images": encode_array(_images(2)), "user": "bob", "reset": True})
    assert r.status_code == 200
    after = service.store.get_user("bob")
    assert (after.n_queries, after.buckets) == (before.n_queries, before.buckets)
    assert service.store.get_user("alice").n_queries == 2


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


MALFORMED = [
    ("invalid json", b"{not json", 400, "not valid JSON"),
    ("no images field", {"pictures": []}, 400, "'images' field"),
    ("images not array", {"images": 5}, 422, "must be an array object"),
    ("wrong shape", {"images": encode_array(np.zeros((2, 1, 8, 8), np.float32))}, 422, "expects (1, 16, 16)"),
    ("wrong rank", {"images": encode_array(np.zeros((2, 16, 16), np.float32))}, 422, "[N, C, H, W]"),
    ("wrong channels", {"images": encode_array(np.zeros((2, 3, 16, 16), np.float32))}, 422, "expects (1, 16, 16)"),
    ("float64 dtype", {"images": {"dtype": "float64", "shape": [1, 1, 16, 16], "data": _b64(bytes(2048))}}, 422, "dtype 'float64'"),
    ("int16 dtype", {"images": {"dtype": "int16", "shape": [1, 1, 16, 16], "data": _b64(bytes(512))}}, 422, "not supported"),
    ("empty batch", {"images": encode_array(np.zeros((0, 1, 16, 16), np.float32))}, 422, "empty batch"),
    ("empty file list", {"images": []}, 422, "empty batch"),
    ("oversized batch", {"images": encode_array(np.zeros((MAX_BATCH + 1, 1, 16, 16), np.float32))}, 413, "exceeds the limit"),
    ("oversized file list", {"images": ["x"] * (MAX_BATCH + 1)}, 413, "exceeds the limit"),
    ("byte count mismatch", {"images": {"dtype": "float32", "shape": [2, 1, 16, 16], "data": _b64(bytes(100))}}, 422, "needs 2048"),
    ("bad base64", {"images": {"dtype": "float32", "shape": [1, 1, 16, 16], "data": "!!!"}}, 422, "base64"),
    ("negative shape", {"images": {"dtype": "float32", "shape": [1, -1, 16, 16], "data": ""}}, 422, "non-negative"),
    ("nan values", {"images": encode_array(np.full((1, 1, 16, 16), np.nan, np.float32))}, 422, "NaN"),
    ("out of range", {"images": encode_array(np.full((1, 1, 16, 16), 3.0, np.float32))}, 422, "[0, 1]"),
    ("non-image bytes", {"images": [_b64(b"this is not a png at all")]}, 422, "not a decodable image"),
    ("png wrong size", None, 422, "expects 16x16"),
    ("not base64 file", {"images": ["%%%"]}, 422, "not valid base64"),
    ("file not string", {"images": [123]}, 422, "base64 string"),
    ("bad format", {"images": encode_array(np.zeros((1, 1, 16, 16), np.float32)), "format": "xml"}, 422, "format"),
]


@pytest.mark.parametrize("name,body,status,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_4xx_and_server_keeps_serving(api, name, body, status, message):
    client, service, users = api
    if body is None:  # a real PNG of the wrong size
        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (32, 32)).save(buf, format="PNG")
        body = {"images": [_b64(buf.getvalue())]}
    headers = {"Authorization": f"Bearer {users['alice']}"}
    if isinstance(body, bytes):
        r = client.post("/v1/embed", content=body, headers={**headers, "Content-Type": "application/json"})
    else:
        r = client.post("/v1/embed", json=body, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert "embeddings" not in r.json()
    assert service.store.get_user("alice").n_queries == 0  # rejected requests are not charged
    _ok(client, users["alice"])  # and the server keeps serving


def test_oversized_body_is_413(api):
    client, _, users = api
    huge = b'{"images": "' + b"A" * 2_000_000 + b'"}'
    r = client.post("/v1/embed", content=huge, headers={"Authorization": f"Bearer {users['alice']}", "Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
    assert client.get("/healthz").json() == {"status": "ok"}
