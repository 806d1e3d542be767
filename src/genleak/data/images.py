"""``ImageSet``: a batch of images with stable ids — the unit every attack, split and report uses.

Images are identified two ways: by ``id`` (where they came from, e.g. ``"cifar10/train/123"``, so a
split can be reloaded from its source) and by ``sha256`` of their float32 pixels (what they *are*,
so a split can prove that nothing changed and that no image is on both sides).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from genleak.errors import DataError

__all__ = ["ImageSet", "iter_batches", "sample_hash"]

_RANGE_TOL = 1e-4


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


@dataclass(eq=False)
class ImageSet:
    """Images ``(N, C, H, W)`` float32 in [-1, 1] plus one stable id per image.

    ``captions`` and ``labels`` are optional per-image conditions. ``source`` is the JSON-able spec
    that reloads the *full* source these images were taken from (see
    :func:`genleak.data.sources.load_source`); subsets keep it, because their ids still refer to it.

    Construction checks structure (4-D, float, lengths, unique ids); :meth:`validate` additionally
    checks values (NaN/inf, range). ``hashes`` are cached: do not modify ``images`` in place after
    reading them (assigning a new tensor to ``.images`` does reset the cache).
    """

    images: torch.Tensor
    ids: list[str]
    captions: list[str] | None = None
    labels: list[int] | None = None
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor):
            raise DataError(
                f"ImageSet.images must be a torch tensor, got {type(self.images).__name__}; "
                "convert with genleak.data.transforms.to_model_range"
            )
        if not self.images.is_floating_point():
            raise DataError(
                f"ImageSet.images has dtype {self.images.dtype}, expected float32 in [-1, 1]; "
                "convert with genleak.data.transforms.to_model_range"
            )
        if self.images.dtype != torch.float32:
            self.images = self.images.to(torch.float32)
        self.ids = [str(i) for i in self.ids]
        if self.captions is not None:
            self.captions = [str(c) for c in self.captions]
        if self.labels is not None:
            self.labels = [int(v) for v in self.labels]
        self._check_structure()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "images":
            self.__dict__.pop("hashes", None)
        super().__setattr__(name, value)

    def _check_structure(self) -> None:
        if self.images.dim() != 4:
            raise DataError(
                f"images must be 4-D (N, C, H, W), got shape {tuple(self.images.shape)}; "
                "add a batch/channel axis (genleak.data.transforms.to_nchw)"
            )
        n = self.images.shape[0]
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
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}" for name in ("captions", "labels") if getattr(self, name) is not None
        )
        kind = (self.source or {}).get("kind", "?")
        return f"ImageSet(n={len(self)}, shape={self.shape}, source={kind}{extra})"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @cached_property
    def hashes(self) -> list[str]:
        """sha256 of each image (see :func:`sample_hash`), computed once and cached."""
        arr = _canonical_cpu(self.images)
        return [_hash_bytes(arr[i]) for i in range(arr.shape[0])]

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """Subset (always an ``ImageSet``, also for an int) in the given order; pixels are copied."""
        rows = _normalise_index(index, len(self))
        return self._take(rows)

    def _take(self, rows: list[int]) -> ImageSet:
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.images.device)
        sub = ImageSet(
            images=self.images.index_select(0, idx) if rows else self.images[:0].clone(),
            ids=[self.ids[i] for i in rows],
            captions=None if self.captions is None else [self.captions[i] for i in rows],
            labels=None if self.labels is None else [self.labels[i] for i in rows],
            source=self.source,
        )
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
        out = ImageSet(
            images=torch.cat([self.images, other.images.to(self.images.device)], 0),
            ids=list(self.ids) + list(other.ids),
            source=self.source if self.source == other.source else None,
            **opt,
        )
        if "hashes" in self.__dict__ and "hashes" in other.__dict__:
            out.__dict__["hashes"] = self.hashes + other.hashes
        return out

    # --------------------------------------------------------------- checks
    def validate(self, what: str = "images") -> None:
        """Raise :class:`DataError` if the set is unusable: not 4-D, NaN/inf, outside [-1, 1].

        ``what`` names the set in the message (e.g. ``"split 'x' members"``). The range check
        allows 1e-4 of slack for float round-off.
        """
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            shape = tuple(getattr(self.images, "shape", ()))
            raise DataError(f"{what}: images must be 4-D (N, C, H, W), got shape {shape}")
        self._check_structure()
        if len(self) == 0:
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


def iter_batches(images: ImageSet | torch.Tensor, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, batch)`` over the rows of ``images`` so attacks can stream large sets.

    ``batch`` is a view ``images[start:start + batch_size]`` (do not modify it in place).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size <= 0:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")
    tensor = images.images if isinstance(images, ImageSet) else images
    n = int(tensor.shape[0])
    for start in range(0, n, int(batch_size)):
        yield start, tensor[start : start + int(batch_size)]
