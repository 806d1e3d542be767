"""The wire format of the B4B API: numpy arrays as ``{"dtype", "shape", "data": base64}``.

Shared by the server and the client (numpy only, so a client does not need FastAPI).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np


class InputError(Exception):
    """A malformed request: becomes ``status`` with ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_DTYPES = {"float32": np.float32, "uint8": np.uint8}


def encode_array(x: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}`` with the raw little-endian bytes in base64 (uint8 or float32)."""
    x = np.asarray(x)
    dtype = "uint8" if x.dtype == np.uint8 else "float32"
    raw = np.ascontiguousarray(x, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")).tobytes()
    return {"dtype": dtype, "shape": list(x.shape), "data": base64.b64encode(raw).decode()}


def decode_array(obj: Any, what: str = "array") -> np.ndarray:
    """Inverse of :func:`encode_array`, with InputError (422) for anything malformed."""
    if not isinstance(obj, dict) or not {"dtype", "shape", "data"} <= set(obj):
        raise InputError(422, f"{what} must be an object with 'dtype', 'shape' and 'data' (base64)")
    dtype = obj["dtype"]
    if dtype not in _DTYPES:
        raise InputError(422, f"{what}: dtype {dtype!r} is not supported; send float32 in [0, 1] or uint8 in [0, 255]")
    shape = obj["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise InputError(422, f"{what}: shape must be a list of non-negative integers, got {shape!r}")
    if not isinstance(obj["data"], str):
        raise InputError(422, f"{what}: data must be a base64 string")
    try:
        raw = base64.b64decode(obj["data"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(422, f"{what}: data is not valid base64 ({err})") from err
    dt = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    need = math.prod(shape) * dt.itemsize
    if len(raw) != need:
        raise InputError(422, f"{what}: data has {len(raw)} bytes but shape {shape} of {dtype} needs {need}")
    return np.frombuffer(raw, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
