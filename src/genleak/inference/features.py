"""CDI features: which attacks feed the scoring model, and their cached per-sample extraction.

A feature is a registered attack (``genleak.attacks``) that may return several columns; its values
are oriented like scores (higher = member) but the scoring model learns its own weights. The sets
of thesis table C.14.1: gray-box = {Denoising Loss, SecMI_stat, PIA, PIAN, Multiple Loss}; white-box
adds {Gradient Masking, Noise Optimization}.

Extraction is cached on disk per (target fingerprint, feature name + hyperparameters + seed, sample
hash) and flushed every ``chunk_size`` samples, so a long extraction that crashes resumes where it
stopped and a second audit of the same images recomputes nothing (see ``FeatureCache``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genleak.attacks import get_attack
from genleak.attacks.base import Access, Attack
from genleak.data import ImageSet
from genleak.errors import GenleakError
from genleak.io import atomic_save_npz

# Thesis table C.14.1 (model access per feature) and ch. 8.3.1 / 8.4.1 (the features).
GRAY_BOX_FEATURES: tuple[str, ...] = ("loss", "secmi", "pia", "pian", "multiloss")
WHITE_BOX_FEATURES: tuple[str, ...] = GRAY_BOX_FEATURES + ("gradmask", "noiseopt")
FEATURE_SETS: dict[str, tuple[str, ...]] = {"gray": GRAY_BOX_FEATURES, "white": WHITE_BOX_FEATURES}
ALIASES: dict[str, str] = {
    "dl": "loss",
    "denoising-loss": "loss",
    "secmi_stat": "secmi",
    "ml": "multiloss",
    "gm": "gradmask",
    "no": "noiseopt",
}
# Bump when the computation behind a feature changes: it is part of every cache key.
FEATURE_VERSION = 1
CACHE_FORMAT = "genleak.features"


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: an attack name and its hyperparameter overrides (empty = paper defaults)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def attack(self) -> Attack:
        try:
            return get_attack(self.name, **dict(self.params))
        except (TypeError, ValueError) as err:
            raise GenleakError(f"feature '{self.name}': bad parameters {dict(self.params)} ({err})") from err


def parse_features(
    features: str | Sequence[str], params: Mapping[str, Mapping[str, Any]] | None = None
) -> list[FeatureSpec]:
    """``"gray"``, ``"white"`` or comma-separated names (aliases DL, ML, GM, NO accepted).

    ``params`` maps a feature name to hyperparameter overrides, e.g. ``{"loss": {"t": 50}}``.
    """
    names: list[str] = []
    items = features.split(",") if isinstance(features, str) else list(features)
    for item in items:
        item = item.strip().lower()
        if not item:
            continue
        if item in FEATURE_SETS:
            names.extend(FEATURE_SETS[item])
        else:
            names.append(ALIASES.get(item, item))
    if not names:
        raise GenleakError("no features given; use gray, white or comma-separated attack names")
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    params = {ALIASES.get(k.lower(), k.lower()): dict(v) for k, v in (params or {}).items()}
    unknown = sorted(set(params) - set(seen))
    if unknown:
        raise GenleakError(f"parameters given for feature(s) {unknown} that are not selected ({', '.join(seen)})")
    specs = []
    for n in seen:
        p = params.get(n, {})
        specs.append(FeatureSpec(n, tuple(sorted((k, _freeze(v)) for k, v in p.items()))))
    for s in specs:
        s.attack()  # unknown names and bad parameters fail here, before any work
    return specs


def access_level(specs: Sequence[FeatureSpec]) -> str:
    """The strongest access the features need ("white-box" if any needs gradients)."""
    levels = {s.attack().access for s in specs}
    for level in (Access.WHITE_BOX, Access.GRAY_BOX, Access.BLACK_BOX):
        if level in levels:
            return level.value
    return Access.GRAY_BOX.value


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, list | tuple) else v


@dataclass
class FeatureMatrix:
    """Per-sample feature values (N, k) with their column names and the sample keys."""

    values: np.ndarray
    columns: list[str]
    blocks: dict[str, tuple[int, int]]  # feature name -> column range [start, stop)
    keys: list[str]  # sample keys (sha256 of pixels, plus the condition for conditional targets)
    ids: list[str]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # feature -> computed / reused

    def select(self, names: Sequence[str]) -> FeatureMatrix:
        """Only the columns of the given features."""
        cols: list[int] = []
        blocks: dict[str, tuple[int, int]] = {}
        for n in names:
            start, stop = self.blocks[n]
            blocks[n] = (len(cols), len(cols) + stop - start)
            cols.extend(range(start, stop))
        return FeatureMatrix(self.values[:, cols], [self.columns[c] for c in cols], blocks, self.keys, self.ids, self.stats)

    def rows(self, index: Sequence[int] | np.ndarray) -> FeatureMatrix:
        idx = np.asarray(index, dtype=np.int64)
        return FeatureMatrix(
            self.values[idx], list(self.columns), dict(self.blocks),
            [self.keys[i] for i in idx], [self.ids[i] for i in idx], self.stats,
        )


def sample_keys(images: ImageSet, cond: Any = None) -> list[str]:
    """Content keys: the image's sha256, combined with its condition (class label, caption) when the
    target is conditional, since the same pixels under another prompt are another query."""
    if cond is None:
        return list(images.hashes)
    values = cond.tolist() if isinstance(cond, torch.Tensor) else list(cond)
    return [
        hashlib.sha256(f"{h}\x00{json.dumps(c, sort_keys=True, default=str)}".encode()).hexdigest()
        for h, c in zip(images.hashes, values, strict=True)
    ]


class FeatureCache:
    """Per-sample feature values on disk, one folder per (target, feature config, seed).

    Layout: ``ROOT/<target fingerprint[:16]>/<feature>-<key[:16]>/`` holding ``meta.json``, an
    optional consolidated ``store.npz`` and ``chunk-*.npz`` files written while extracting. Every
    npz carries the full key metadata (target fingerprint, attack name and config, columns, seed,
    feature version) and is checked on load: a file whose metadata differs from what is asked for
    is never used (it is reported and skipped). All files are written atomically.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @staticmethod
    def metadata(target_fingerprint: str, attack: Attack, seed: int) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "feature_version": FEATURE_VERSION,
            "target": target_fingerprint,
            "feature": attack.name,
            "config": json.loads(json.dumps(attack.config.to_dict(), default=list)),
            "columns": list(attack.columns),
            "seed": int(seed),
        }

    def folder(self, meta: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
        return self.root / meta["target"][:16] / f"{meta['feature']}-{digest[:16]}"

    def load(self, meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[Path]]:
        """key -> values for every cached sample of this config, and the chunk files read."""
        folder = self.folder(meta)
        found: dict[str, np.ndarray] = {}
        chunks: list[Path] = []
        if not folder.is_dir():
            return found, chunks
        expected = json.dumps(meta, sort_keys=True)
        files = ([folder / "store.npz"] if (folder / "store.npz").is_file() else []) + sorted(folder.glob("chunk-*.npz"))
        for f in files:
            try:
                with np.load(f, allow_pickle=False) as z:
                    stored = json.dumps(json.loads(str(z["meta"])), sort_keys=True)
                    keys, values = z["keys"], z["values"]
            except Exception as err:  # a corrupt or foreign file: never trusted, never fatal
                warnings.warn(f"feature cache: ignoring unreadable {f} ({err})", stacklevel=2)
                continue
            if stored != expected:
                warnings.warn(f"feature cache: ignoring {f}: its metadata does not match this feature config", stacklevel=2)
                continue
            if values.ndim != 2 or values.shape[1] != len(meta["columns"]) or len(keys) != len(values):
                warnings.warn(f"feature cache: ignoring {f}: wrong shape {values.shape}", stacklevel=2)
                continue
            for k, v in zip(keys.tolist(), values):
                found[k] = v
            if f.name.startswith("chunk-"):
                chunks.append(f)
        return found, chunks

    def write_chunk(self, meta: dict[str, Any], keys: Sequence[str], values: np.ndarray) -> Path:
        folder = self.folder(meta)
        if not (folder / "meta.json").is_file():
            from genleak.io import atomic_write_json

            atomic_write_json(folder / "meta.json", meta)
        name = hashlib.sha256("\x00".join(keys).encode()).hexdigest()[:16]
        path = folder / f"chunk-{name}.npz"
        atomic_save_npz(path, keys=np.asarray(list(keys)), values=np.asarray(values, np.float32), meta=np.asarray(json.dumps(meta)))
        return path

    def consolidate(self, meta: dict[str, Any], found: dict[str, np.ndarray], chunks: Sequence[Path]) -> None:
        """Merge everything known into ``store.npz`` (atomically), then drop the merged chunks."""
        if not chunks:
            return
        folder = self.folder(meta)
        keys = sorted(found)
        values = np.stack([found[k] for k in keys]) if keys else np.zeros((0, len(meta["columns"])), np.float32)
        atomic_save_npz(folder / "store.npz", keys=np.asarray(keys), values=values.astype(np.float32), meta=np.asarray(json.dumps(meta)))
        for c in chunks:
            try:
                c.unlink()
            except FileNotFoundError:
                pass


def extract_features(
    target: Any,
    images: ImageSet,
    specs: Sequence[FeatureSpec],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    chunk_size: int = 256,
    progress: bool = True,
    cond: Any = None,
) -> FeatureMatrix:
    """Feature matrix of ``images`` for every spec, reusing and extending the on-disk cache.

    The noise of sample i is seeded by (seed, feature, sample key), i.e. by its content, so a value
    depends only on what the cache key names: never on the batch, the order, the id, or which other
    samples are extracted with it. Duplicate images (same key) are computed once.
    """
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise GenleakError(f"chunk_size must be >= 1, got {chunk_size}")
    keys = sample_keys(images, cond)
    unique: dict[str, int] = {}
    for i, k in enumerate(keys):
        unique.setdefault(k, i)
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    fingerprint = target.fingerprint()
    blocks: dict[str, tuple[int, int]] = {}
    columns: list[str] = []
    parts: list[np.ndarray] = []
    stats: dict[str, dict[str, int]] = {}
    for spec in specs:
        attack = spec.attack()
        meta = FeatureCache.metadata(fingerprint, attack, seed)
        found, chunks = cache.load(meta) if cache is not None else ({}, [])
        missing = [k for k in unique if k not in found]
        stats[attack.name] = {"computed": len(missing), "reused": len(unique) - len(missing)}
        with tqdm(total=len(missing), desc=f"feature {attack.name}", unit="img", disable=not progress or not missing, leave=False) as bar:
            for start in range(0, len(missing), chunk_size):
                chunk_keys = missing[start : start + chunk_size]
                rows = [unique[k] for k in chunk_keys]
                sub_cond = None if cond is None else _rows(cond, rows)
                values = attack.score(
                    target, images.images[rows], chunk_keys, cond=sub_cond, batch_size=batch_size,
                    seed=seed, progress=False,
                ).numpy()
                if values.ndim == 1:
                    values = values[:, None]
                for k, v in zip(chunk_keys, values):
                    found[k] = v
                if cache is not None:
                    chunks.append(cache.write_chunk(meta, chunk_keys, values))
                bar.update(len(chunk_keys))
        if cache is not None:
            cache.consolidate(meta, found, chunks)
        start_col = len(columns)
        columns.extend(attack.columns)
        blocks[attack.name] = (start_col, len(columns))
        parts.append(np.stack([np.asarray(found[k], np.float64).reshape(-1) for k in keys]))
    values = np.concatenate(parts, axis=1) if parts else np.zeros((len(keys), 0))
    return FeatureMatrix(values, columns, blocks, keys, list(images.ids), stats)


def _rows(cond: Any, rows: list[int]) -> Any:
    if isinstance(cond, torch.Tensor):
        return cond[rows]
    return [cond[i] for i in rows]


def feature_descriptions(specs: Sequence[FeatureSpec]) -> list[dict[str, Any]]:
    """describe() of each feature's attack plus its columns (for results and reports)."""
    out = []
    for s in specs:
        a = s.attack()
        d = a.describe()
        d["columns"] = list(a.columns)
        d["backward_passes"] = int(getattr(a, "n_backward", 0))
        d["config"] = json.loads(json.dumps(dataclasses.asdict(a.config), default=list))
        out.append(d)
    return out
