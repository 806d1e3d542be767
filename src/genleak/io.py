"""Atomic file writes shared by the whole project.

Every file genleak writes (split manifests, scores, reports, checkpoints' metadata) goes through
these helpers: the bytes are written to a temporary file in the *same directory* and then moved
over the destination with ``os.replace``. A crash, a full disk or a serialisation error therefore
never leaves a half-written file behind and never clobbers a good existing file: readers see
either the old content or the new content, nothing in between.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "publish_folder",
    "atomic_save_npz",
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "jsonable",
]


def _current_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import time, instead of per write
    # (changing the process umask while other threads create files would be a race).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    The temporary file lives next to the destination (``os.replace`` is only atomic within one
    file system) and is removed if anything fails. Missing parent directories are created. The
    final file gets the usual ``0o666 & ~umask`` permissions rather than ``mkstemp``'s 0600.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write_bytes needs bytes, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Serialise ``obj`` as JSON and write it atomically.

    Serialisation happens completely in memory *before* the file system is touched, so an object
    that is not JSON-able (a tensor, a set, NaN — ``allow_nan=False`` because NaN is not valid JSON)
    raises without creating or modifying any file.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def jsonable(obj: Any, inf: float | None = None) -> Any:
    """``obj`` with plain JSON values only: numpy scalars and arrays, tuples and paths converted, NaN ->
    None, and +-inf -> None or, given ``inf``, +-``inf`` (JSON has neither; ``atomic_write_json`` refuses them)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v, inf) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v, inf) for v in obj]
    if isinstance(obj, np.ndarray | np.generic):
        return jsonable(obj.tolist(), inf)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) or inf is None else math.copysign(inf, obj)
    return obj


def atomic_save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` ``obj`` atomically (checkpoints): serialised in memory first, like JSON.

    torch is imported here, not at module level, so importing ``genleak.io`` stays light.
    """
    import io as _io

    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """``numpy.savez`` atomically (per-sample scores and features)."""
    import io as _io

    import numpy as np

    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for writers that need a file name (matplotlib,
    safetensors); on success it is renamed onto ``path``, on failure deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def publish_folder(out: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Let ``write(staging)`` fill a staging folder inside ``out``, then move each of its entries
    over its namesake in ``out`` (a model folder written by ``save_pretrained``): a crash while
    writing never leaves a half-written model where a good one was."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    write(staging)
    for entry in staging.iterdir():
        dest = out / entry.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(entry, dest)
    staging.rmdir()
    return out


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort, silently skipped where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
