"""CDI features: which attacks feed the scoring model, and their cached per-sample extraction.

A feature is a registered attack (``genleak.attacks``) that may return several columns; its values
are oriented like scores (higher = member) but the scoring model learns its own weights. The sets
of thesis table C.14.1: gray-box = {Denoising Loss, SecMI_stat, PIA, PIAN, Multiple Loss}; white-box
adds {Gradient Masking, Noise Optimization}.

Extraction goes through ``genleak.scoring.score_images`` and its cache, per (target fingerprint,
feature name + hyperparameters + seed, sample hash), flushed every ``chunk_size`` samples, so a long
extraction that crashes resumes where it stopped and a second audit of the same images recomputes
nothing (see ``genleak.scoring.ScoreCache``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genleak.attacks import get_attack
from genleak.attacks.base import Access, Attack
from genleak.data import ImageSet
from genleak.errors import GenleakError
from genleak.scoring import ScoreCache, sample_keys, score_images

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


def extract_features(
    target: Any,
    images: ImageSet,
    specs: Sequence[FeatureSpec],
    *,
    cache_dir: str | os.PathLike[str] | ScoreCache | None = None,
    seed: int = 0,
    batch_size: int = 64,
    chunk_size: int = 256,
    progress: bool = True,
    cond: Any = None,
) -> FeatureMatrix:
    """Feature matrix of ``images`` for every spec, reusing and extending the score cache
    (``genleak.scoring.ScoreCache`` under ``cache_dir``), flushed every ``chunk_size`` samples.

    The noise of sample i is seeded by (seed, feature, sample key), i.e. by its content, so a value
    depends only on what the cache key names: never on the batch, the order, the id, or which other
    samples are extracted with it. Duplicate images (same key) are computed once.
    """
    attacks = [spec.attack() for spec in specs]
    scored = score_images(target, images, attacks, cond=cond, noise="content", cache=cache_dir, seed=seed,
                          batch_size=batch_size, chunk_size=chunk_size, progress=progress)
    blocks: dict[str, tuple[int, int]] = {}
    columns: list[str] = []
    for attack in attacks:
        blocks[attack.name] = (len(columns), len(columns) + len(attack.columns))
        columns.extend(attack.columns)
    parts = [scored[a].values.astype(np.float64).reshape(len(images), -1) for a in attacks]
    values = np.concatenate(parts, axis=1) if parts else np.zeros((len(images), 0))
    stats = {a.name: {"computed": scored[a].computed, "reused": scored[a].reused} for a in attacks}
    keys = scored[attacks[0]].keys if attacks else sample_keys(images, cond)
    return FeatureMatrix(values, columns, blocks, keys, list(images.ids), stats)


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
