"""``ImageSet``: a batch of images with stable ids — the unit every attack, split and report uses.

Images are identified two ways: by ``id`` (where they came from, e.g. ``"cifar10/train/123"``, so a
split can be reloaded from its source) and by ``sha256`` of their float32 pixels (what they *are*,
so a split can prove that nothing changed and that no image is on both sides).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import torch
import torch.utils.data

from genleak.data.transforms import from_uint8
from genleak.errors import DataError

__all__ = ["ImageSet", "LazyImage", "iter_batches", "sample_hash"]

_RANGE_TOL = 1e-4
_MAX_MATERIALISE = 8 << 30  # bytes of float32 that ``.images`` builds at most: beyond this, stream
_PARALLEL_HASH = 2000  # a lazy set of this many images is hashed by DataLoader workers (forking costs ~1 s)


def _hash_bytes(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def _canonical_cpu(images: torch.Tensor) -> np.ndarray:
    # + 0.0 maps -0.0 to 0.0: the two compare equal, so they must hash equal too.
    return (images.detach().to("cpu", torch.float32) + 0.0).contiguous().numpy()


def sample_hash(image: torch.Tensor) -> str:
    """sha256 hex digest of one image's float32 pixels (contiguous, CPU, C-order bytes).

    Used to detect duplicates across members/non-members and to verify that a reloaded source
    still yields exactly the images a split was made from. ``-0.0`` is hashed as ``0.0``.
    """
    return _hash_bytes(_canonical_cpu(image))


def _normalise_index(index: Any, n: int) -> list[int]:
    """Turn an int / slice / sequence / bool mask into a list of non-negative row indices."""
    if isinstance(index, int | np.integer) and not isinstance(index, bool):
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for ImageSet of {n} images")
        return [i % n]
    if isinstance(index, slice):
        return list(range(n))[index]
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    if isinstance(index, range):
        index = list(index)
    if isinstance(index, np.ndarray | Sequence) and not isinstance(index, str | bytes):
        arr = np.asarray(index)
        if arr.size == 0:
            return []
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"boolean mask has shape {arr.shape}, expected ({n},)")
            return [int(i) for i in np.flatnonzero(arr)]
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise IndexError(f"ImageSet indices must be a 1-D list of ints, got dtype {arr.dtype}")
        out = []
        for i in arr.tolist():
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for ImageSet of {n} images")
            out.append(i % n)
        return out
    raise TypeError(f"ImageSet cannot be indexed with {type(index).__name__}")


class LazyImage(Protocol):
    """One image decoded on demand (e.g. :class:`genleak.data.sources.FileImage`). It must pickle,
    since DataLoader workers decode it."""

    def load(self) -> torch.Tensor:
        """The image as uint8 ``(C, H, W)`` in [0, 255]."""


class _Decoded(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The map-style dataset a DataLoader reads a lazy set through: uint8 ``(C, H, W)`` per row."""

    def __init__(self, refs: Sequence[LazyImage], ids: Sequence[str], shape: tuple[int, int, int]) -> None:
        self.refs, self.ids, self.shape = refs, ids, shape

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.refs[i].load()
        if x.dtype != torch.uint8 or tuple(x.shape) != self.shape:
            raise DataError(f"image {self.ids[i]!r} now decodes to {x.dtype}{tuple(x.shape)}, not uint8{self.shape} "
                            "as when the source was loaded; reload the source")
        return x


class ImageSet:
    """Images ``(N, C, H, W)`` float32 in [-1, 1] plus one stable id per image.

    ``captions`` and ``labels`` are optional per-image conditions. ``source`` is the JSON-able spec
    that reloads the *full* source these images were taken from (see
    :func:`genleak.data.sources.load_source`); subsets keep it, because their ids still refer to it.

    The pixels are either a float32 tensor in RAM or, for a *lazy* set (:meth:`lazy`, what folder
    sources give), one :class:`LazyImage` per image that decodes to uint8 on demand, so a large
    source never sits in memory: :meth:`batches` streams it through a DataLoader (and keeps uint8
    until a batch reaches its device), subsets and :meth:`select_ids` stay lazy, ``hashes`` and
    :meth:`validate` stream, and ``.images`` materialises (and keeps) the float32 tensor, for
    small sets and for callers that need every pixel at once.

    Construction checks structure (4-D, float, lengths, unique ids); :meth:`validate` additionally
    checks values (NaN/inf, range). ``hashes`` are cached: do not modify ``images`` in place after
    reading them (assigning a new tensor to ``.images`` does reset the cache).
    """

    def __init__(
        self,
        images: torch.Tensor,
        ids: Sequence[str],
        captions: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        source: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor):
            raise DataError(
                f"ImageSet.images must be a torch tensor, got {type(images).__name__}; "
                "convert with genleak.data.transforms.to_model_range"
            )
        if not images.is_floating_point():
            raise DataError(
                f"ImageSet.images has dtype {images.dtype}, expected float32 in [-1, 1]; "
                "convert with genleak.data.transforms.to_model_range"
            )
        if images.dim() != 4:
            raise DataError(
                f"images must be 4-D (N, C, H, W), got shape {tuple(images.shape)}; "
                "add a batch/channel axis (genleak.data.transforms.to_nchw)"
            )
        self._refs: list[LazyImage] | None = None
        self._shape = tuple(int(v) for v in images.shape[1:])
        self.images = images.to(torch.float32)
        self._set_meta(ids, captions, labels, source)

    def _set_meta(self, ids: Sequence[str], captions: Sequence[str] | None, labels: Sequence[int] | None,
                  source: dict[str, Any] | None) -> None:
        self.ids = [str(i) for i in ids]
        self.captions = None if captions is None else [str(c) for c in captions]
        self.labels = None if labels is None else [int(v) for v in labels]
        self.source = source
        self._check_structure()

    @classmethod
    def lazy(
        cls,
        refs: Sequence[LazyImage],
        ids: Sequence[str],
        shape: Sequence[int],
        captions: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        source: dict[str, Any] | None = None,
        hashes: Sequence[str] | None = None,
    ) -> ImageSet:
        """A set whose images are decoded on demand; every ``ref`` must decode to uint8 ``shape`` (C, H, W)."""
        out = cls.__new__(cls)
        out._refs, out._shape = list(refs), tuple(int(v) for v in shape)
        if len(out._shape) != 3:
            raise DataError(f"a lazy ImageSet needs the per-image shape (C, H, W), got {tuple(shape)}")
        out.__dict__["_tensor"] = None
        out._set_meta(ids, captions, labels, source)
        if hashes is not None:
            out.__dict__["hashes"] = [str(h) for h in hashes]
        return out

    @property
    def is_lazy(self) -> bool:
        """True while the pixels are not in RAM (``.images`` has not been read)."""
        return self._tensor is None

    @property
    def images(self) -> torch.Tensor:
        """All pixels, float32 ``(N, C, H, W)``; a lazy set decodes them now and keeps them."""
        if self._tensor is None:
            need = len(self) * int(np.prod(self._shape)) * 4
            if need > _MAX_MATERIALISE:
                raise DataError(f"{len(self)} images of {self._shape} would need {need / 2**30:.0f} GiB as float32; "
                                "stream them with ImageSet.batches instead of reading .images")
            data = _Decoded(self._refs or [], self.ids, self._shape)  # type: ignore[arg-type]
            pixels = torch.empty((len(self), *self._shape), dtype=torch.float32)
            for i in range(len(self)):
                pixels[i] = from_uint8(data[i])
            self.__dict__["_tensor"] = pixels
        return self._tensor  # type: ignore[return-value]

    @images.setter
    def images(self, value: torch.Tensor) -> None:
        self.__dict__.pop("hashes", None)
        self.__dict__["_tensor"] = value
        self._refs = None

    def _check_structure(self) -> None:
        if self._tensor is not None and self._tensor.dim() != 4:
            raise DataError(
                f"images must be 4-D (N, C, H, W), got shape {tuple(self._tensor.shape)}; "
                "add a batch/channel axis (genleak.data.transforms.to_nchw)"
            )
        n = len(self)
        if len(self.ids) != n:
            raise DataError(f"ImageSet has {n} images but {len(self.ids)} ids; give exactly one id per image")
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            for id_ in self.ids:
                if id_ in seen:
                    raise DataError(f"ImageSet ids must be unique; id {id_!r} appears more than once")
                seen.add(id_)
        for name in ("captions", "labels"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise DataError(f"ImageSet has {n} images but {len(values)} {name}; give one per image or None")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self._refs) if self._tensor is None else int(self._tensor.shape[0])  # type: ignore[arg-type]

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}" for name in ("captions", "labels") if getattr(self, name) is not None
        )
        kind = (self.source or {}).get("kind", "?")
        return f"ImageSet(n={len(self)}, shape={self.shape}, source={kind}{extra})"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape ``(C, H, W)``."""
        if self._tensor is not None:
            c, h, w = self._tensor.shape[1:]
            return int(c), int(h), int(w)
        return self._shape  # type: ignore[return-value]

    @cached_property
    def hashes(self) -> list[str]:
        """sha256 of each image (see :func:`sample_hash`), computed once and cached (a lazy set
        decodes one image at a time for it)."""
        if self._tensor is None:  # rows of a float batch hash as the images alone (from_uint8 is elementwise)
            workers = min(4, (os.cpu_count() or 1) - 1) if len(self) >= _PARALLEL_HASH else 0
            return [_hash_bytes(row) for _, x in self.batches(32, num_workers=workers) for row in x.numpy()]
        arr = _canonical_cpu(self.images)
        return [_hash_bytes(arr[i]) for i in range(arr.shape[0])]

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """Subset (always an ``ImageSet``, also for an int) in the given order; pixels are copied."""
        rows = _normalise_index(index, len(self))
        return self._take(rows)

    def _take(self, rows: list[int]) -> ImageSet:
        meta = {"ids": [self.ids[i] for i in rows], "source": self.source,
                "captions": None if self.captions is None else [self.captions[i] for i in rows],
                "labels": None if self.labels is None else [self.labels[i] for i in rows]}
        if self._tensor is None:
            sub = ImageSet.lazy([self._refs[i] for i in rows], shape=self._shape, **meta)  # type: ignore[index]
        else:
            idx = torch.as_tensor(rows, dtype=torch.long, device=self.images.device)
            sub = ImageSet(images=self.images.index_select(0, idx) if rows else self.images[:0].clone(), **meta)
        if "hashes" in self.__dict__:
            sub.__dict__["hashes"] = [self.hashes[i] for i in rows]
        return sub

    def select_ids(self, ids: Sequence[str]) -> ImageSet:
        """Subset by id, in the order given; unknown ids raise :class:`DataError` naming them."""
        position = {id_: i for i, id_ in enumerate(self.ids)}
        ids = [str(i) for i in ids]
        missing = [i for i in ids if i not in position]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise DataError(
                f"{len(missing)} requested ids are not in this image set: "
                f"{', '.join(repr(m) for m in missing[:3])}{more}; check the ids or the source"
            )
        return self._take([position[i] for i in ids])

    def concat(self, other: ImageSet) -> ImageSet:
        """Both sets one after the other. Shapes must match, ids must stay unique, and captions /
        labels must be present on both or neither; ``source`` is kept only if both share it."""
        if self.shape != other.shape and len(self) and len(other):
            raise DataError(f"cannot concatenate images of shape {self.shape} and {other.shape}; resize one")
        opt: dict[str, Any] = {}
        for name in ("captions", "labels"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                raise DataError(f"cannot concatenate: only one image set has {name}; add them to both or neither")
            opt[name] = None if a is None else list(a) + list(b)
        opt.update(ids=list(self.ids) + list(other.ids), source=self.source if self.source == other.source else None)
        if self._tensor is None and other._tensor is None:  # both lazy: stay lazy
            shape = self.shape if len(self) else other.shape
            out = ImageSet.lazy([*self._refs, *other._refs], shape=shape, **opt)  # type: ignore[misc]
        else:
            out = ImageSet(images=torch.cat([self.images, other.images.to(self.images.device)], 0), **opt)
        if "hashes" in self.__dict__ and "hashes" in other.__dict__:
            out.__dict__["hashes"] = self.hashes + other.hashes
        return out

    def with_fields(self, **changes: Any) -> ImageSet:
        """The same pixels (shared, lazy or not) and cached hashes with other ``ids``, ``captions``,
        ``labels`` or ``source``."""
        meta = {"ids": self.ids, "captions": self.captions, "labels": self.labels, "source": self.source, **changes}
        if self._tensor is None:
            out = ImageSet.lazy(self._refs, shape=self._shape, **meta)  # type: ignore[arg-type]
        else:
            out = ImageSet(images=self._tensor, **meta)
        if "hashes" in self.__dict__:
            out.__dict__["hashes"] = self.hashes
        return out

    def batches(
        self, batch_size: int, num_workers: int = 0, pin_memory: bool | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[list[str], torch.Tensor]]:
        """Yield ``(ids, images)`` per ``batch_size`` rows in order, images float32 in [-1, 1] on ``device``
        (default: where they are; CPU for a lazy set).

        A lazy set is decoded by a ``torch.utils.data.DataLoader`` with ``num_workers`` processes, as
        uint8 (4x smaller than float32; pinned when ``pin_memory``, default: when ``device`` is CUDA)
        and converted to float only on ``device``; at most about ``2 * num_workers + 1`` batches
        exist at once, however large the set.
        """
        size = _check_batch_size(batch_size)
        device = None if device is None else torch.device(device)
        if self._tensor is not None:
            for start in range(0, len(self), size):
                x = self._tensor[start : start + size]
                yield self.ids[start : start + size], x if device is None else x.to(device)
            return
        if pin_memory is None:
            pin_memory = device is not None and device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            _Decoded(self._refs or [], self.ids, self._shape),  # type: ignore[arg-type]
            batch_size=size, shuffle=False, num_workers=int(num_workers),
            pin_memory=bool(pin_memory) and torch.cuda.is_available(),
        )
        start = 0
        try:
            for pixels in loader:
                if device is not None:
                    pixels = pixels.to(device, non_blocking=bool(pin_memory))
                yield self.ids[start : start + len(pixels)], from_uint8(pixels)
                start += len(pixels)
                del pixels
                _release_freed_memory()
        except DataError as err:  # a worker's error arrives with its traceback in the message: keep one line
            last = str(err).strip().splitlines()[-1]
            if "DataLoader worker" not in str(err) or ": " not in last:
                raise
            raise DataError(last.split(": ", 1)[1]) from None

    # --------------------------------------------------------------- checks
    def validate(self, what: str = "images") -> None:
        """Raise :class:`DataError` if the set is unusable: not 4-D, NaN/inf, outside [-1, 1].

        ``what`` names the set in the message (e.g. ``"split 'x' members"``). The range check
        allows 1e-4 of slack for float round-off. A lazy set decodes to uint8 (see
        :meth:`batches`), so only its structure needs checking, and it is not decoded here.
        """
        if self._tensor is not None and (not isinstance(self._tensor, torch.Tensor) or self._tensor.dim() != 4):
            shape = tuple(getattr(self._tensor, "shape", ()))
            raise DataError(f"{what}: images must be 4-D (N, C, H, W), got shape {shape}")
        self._check_structure()
        if len(self) == 0 or self._tensor is None:  # lazy: decoded uint8 is always finite and in range
            return
        # one pass: per-image min/max (NaN propagates through aminmax, inf shows up as +-inf)
        lo, hi = torch.aminmax(self.images.detach().reshape(len(self), -1), dim=1)
        bad = torch.isnan(lo) | torch.isnan(hi) | torch.isinf(lo) | torch.isinf(hi)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten().tolist()
            raise DataError(
                f"{what}: {len(rows)} images contain NaN/inf values, e.g. id {self.ids[rows[0]]!r}; "
                "fix or remove them"
            )
        out = (lo < -1 - _RANGE_TOL) | (hi > 1 + _RANGE_TOL)
        if bool(out.any()):
            rows = torch.nonzero(out).flatten().tolist()
            raise DataError(
                f"{what}: {len(rows)} images have values outside [-1, 1] (range [{float(lo.min()):g}, "
                f"{float(hi.max()):g}]), e.g. id {self.ids[rows[0]]!r}; "
                "convert with genleak.data.transforms.to_model_range"
            )

    # ------------------------------------------------------------------ files
    def save_npz(self, path: str | os.PathLike[str]) -> None:
        """Save as an uncompressed ``.npz`` readable by :func:`~genleak.data.sources.npz_source`.

        Stores ``images`` (float32 NCHW), ``value_range`` = [-1, 1] (so reloading never has to
        guess the range), ``ids`` and, if present, ``captions`` / ``labels``. Written atomically.
        """
        from genleak.io import atomic_write_bytes

        arrays: dict[str, np.ndarray] = {
            "images": _canonical_cpu(self.images),
            "value_range": np.asarray([-1.0, 1.0], dtype=np.float32),
            "ids": np.asarray(self.ids, dtype=np.str_),
        }
        if self.captions is not None:
            arrays["captions"] = np.asarray(self.captions, dtype=np.str_)
        if self.labels is not None:
            arrays["labels"] = np.asarray(self.labels, dtype=np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(path, buffer.getvalue())


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``) after each streamed batch.

    Once a process has freed a large block (e.g. a UNet's activations), glibc serves blocks of up to
    32 MB from its heap instead of mmap, and keeps what they free: streaming 2,000 256x256 images
    then held 1.4 GB of freed batches (benchmarks/RESULTS.md), which this returns; ~1 ms per batch."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size <= 0:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def iter_batches(images: ImageSet | torch.Tensor, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, batch)`` over the rows of ``images`` so attacks can stream large sets.

    ``batch`` is a view ``images[start:start + batch_size]`` (do not modify it in place); a lazy
    :class:`ImageSet` is decoded batch by batch (:meth:`ImageSet.batches`).
    """
    size = _check_batch_size(batch_size)
    if isinstance(images, ImageSet):
        start = 0
        for _, batch in images.batches(size):
            yield start, batch
            start += len(batch)
        return
    for start in range(0, int(images.shape[0]), size):
        yield start, images[start : start + size]
