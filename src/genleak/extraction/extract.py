"""Generate-and-filter training-data extraction (Carlini et al. 2023) with a held-out guard.

The attack: sample many images from the model, find each one's nearest training image, and call
a generation *extracted* when it is a near copy of that training image. Following the thesis'
definition (003, section 9.3.3: x is memorised when l(x, x_hat) < tau) with two safeguards:

1. **Distance below tau.** l is the normalised l2 of Carlini et al. (RMS pixel difference in
   [0, 1] units, see ``genleak.extraction.nn``); tau = 0.15 is the extraction threshold of
   Shake-to-Leak (002, "Method Summary": "extracted examples with l2-distance < 0.15").
2. **Clearly closer to the training set than to held-out data.** A generation that is merely a
   typical image of its class can lie within tau of some training image *and* of images the model
   never saw; that is generalisation, not extraction. The thesis uses the known validation set
   exactly this way, to check for false positives (003, section 9.4 and supplement D.12.2 /
   Table D.12.1: generations matching validation images are false positives). We require
   ``d_train < ratio * d_heldout`` with ratio = 0.5, the factor Carlini et al. use for their
   relative distance (alpha = 0.5: a match must be twice as close as the typical neighbourhood).

As a check on the procedure itself we also run the mirror test, held-out images in the role of
the training set (``d_heldout < tau`` and ``d_heldout < ratio * d_train``): its count is the
number of "extractions" of images the model never saw, i.e. false positives, and should be 0.

Class- or prompt-conditioned targets are attacked per condition (Carlini et al. prompt with the
training captions; here the conditions are whatever ``target.conditions(train)`` returns: class
labels for class-conditional UNets, captions for text targets), with counts per condition.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genleak.data import ImageSet
from genleak.errors import DataError, GenleakError
from genleak.extraction.nn import Neighbours, nearest

__all__ = ["ExtractionConfig", "ExtractionResult", "extract", "write_extraction", "EXTRACTION_FORMAT"]

EXTRACTION_FORMAT = "genleak.extraction"
EXTRACTION_VERSION = 1
GRID_FILE = "extraction_grid.png"
JSON_FILE = "extraction.json"
SAMPLES_FILE = "extraction_samples.npz"


@dataclass(frozen=True)
class ExtractionConfig:
    """Generation and filtering settings (paper constants cited in the module docstring)."""

    n: int = 1000  # generations in total, or per condition for conditioned targets
    steps: int = 50  # DDIM steps per generation (NFE per image = steps)
    eta: float = 0.0  # DDIM eta: 0 = deterministic DDIM, 1 = DDPM-like ancestral noise
    tau: float = 0.15  # normalised-l2 threshold: S2L (002, Method Summary)
    ratio: float = 0.5  # d_train < ratio * d_heldout: Carlini et al.'s alpha = 0.5
    seed: int = 0
    batch_size: int = 256
    max_grid: int = 64  # generations shown in the PNG grid

    def validate(self) -> None:
        if self.n < 1:
            raise GenleakError(f"n must be >= 1 generation, got {self.n}")
        if not self.tau > 0:
            raise GenleakError(f"tau must be > 0 (a normalised l2 distance, e.g. 0.15), got {self.tau}")
        if not 0 < self.ratio <= 1:
            raise GenleakError(f"ratio must be in (0, 1] (d_train < ratio * d_heldout), got {self.ratio}")
        if self.steps < 1:
            raise GenleakError(f"steps must be >= 1, got {self.steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExtractionResult:
    """All generations, their nearest training / held-out images, and which ones count as extracted."""

    config: ExtractionConfig
    generated: torch.Tensor  # (N, C, H, W) in [-1, 1]
    conditions: list[Any]  # per generation (None for unconditional targets)
    train: Neighbours
    heldout: Neighbours | None
    train_ids: list[str]
    heldout_ids: list[str]
    extracted: torch.Tensor  # (N,) bool
    heldout_false_positive: torch.Tensor  # (N,) bool: the mirror test (should be all False)
    seconds: dict[str, float] = field(default_factory=dict)
    target_info: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @property
    def n_generated(self) -> int:
        return int(self.generated.shape[0])

    @property
    def extracted_train_ids(self) -> list[str]:
        """Distinct training images extracted at least once, in order of first (closest) hit."""
        rows = self.extracted.nonzero().flatten()
        rows = rows[self.train.distance[rows].argsort()]
        seen: dict[str, None] = {}
        for i in rows.tolist():
            seen.setdefault(self.train_ids[int(self.train.index[i])], None)
        return list(seen)

    def entries(self) -> list[dict[str, Any]]:
        """One record per extracted generation, closest first (what extraction.json lists)."""
        rows = self.extracted.nonzero().flatten()
        rows = rows[self.train.distance[rows].argsort()]
        return [self._entry(int(i)) for i in rows]

    def _entry(self, i: int) -> dict[str, Any]:
        e: dict[str, Any] = {
            "generated_index": i,
            "train_id": self.train_ids[int(self.train.index[i])],
            "distance": round(float(self.train.distance[i]), 6),
            "heldout_id": None,
            "heldout_distance": None,
        }
        if self.heldout is not None:
            e["heldout_id"] = self.heldout_ids[int(self.heldout.index[i])]
            e["heldout_distance"] = round(float(self.heldout.distance[i]), 6)
        e["condition"] = _jsonable(self.conditions[i])
        return e

    def per_condition(self) -> list[dict[str, Any]]:
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(self.conditions):
            groups.setdefault(_key(c), []).append(i)
        out = []
        for rows in groups.values():
            idx = torch.tensor(rows)
            hit = idx[self.extracted[idx]]
            out.append(
                {
                    "condition": _jsonable(self.conditions[rows[0]]),
                    "n_generated": len(rows),
                    "n_extracted_generations": int(hit.numel()),
                    "n_extracted_train_images": len({int(self.train.index[i]) for i in hit.tolist()}),
                    "min_distance": round(float(self.train.distance[idx].min()), 6),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        d_train = self.train.distance.numpy()
        return {
            "format": EXTRACTION_FORMAT,
            "version": EXTRACTION_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
            "target": self.target_info,
            "config": c.to_dict(),
            "distance": "normalised l2: RMS pixel difference with images in [0, 1] (Carlini et al. 2023)",
            "rule": f"extracted iff d_train < {c.tau} and d_train < {c.ratio} * d_heldout",
            "n_generated": self.n_generated,
            "nfe_per_image": c.steps,
            "n_train": len(self.train_ids),
            "n_heldout": len(self.heldout_ids),
            "heldout_guard": self.heldout is not None,
            "n_extracted_generations": int(self.extracted.sum()),
            "n_extracted_train_images": len(self.extracted_train_ids),
            "extracted_train_ids": self.extracted_train_ids,
            "heldout_false_positives": int(self.heldout_false_positive.sum()),
            "train_distance_quantiles": _quantiles(d_train),
            "heldout_distance_quantiles": _quantiles(self.heldout.distance.numpy()) if self.heldout is not None else None,
            "per_condition": self.per_condition(),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "grid": GRID_FILE,
            "samples": SAMPLES_FILE,
            "entries": self.entries(),
        }


def extract(
    target: Any,
    train: ImageSet,
    heldout: ImageSet | None,
    config: ExtractionConfig | None = None,
    *,
    conditions: list[Any] | None = None,
    progress: bool = True,
    nn_device: str | torch.device | None = None,
    command: str = "",
) -> ExtractionResult:
    """Generate ``config.n`` images (per condition) and filter them against ``train`` / ``heldout``.

    ``conditions``: the conditions to generate from (class labels, prompts); default: every distinct
    condition of the training set if the target is conditioned (``target.conditions(train)``), else
    unconditional generation. ``heldout`` images must come from the same distribution and never
    have been trained on; without them the false-positive guard is off (recorded in the result).
    """
    from genleak.targets.sampling import generate

    config = config or ExtractionConfig()
    config.validate()
    train.validate("training images")
    if heldout is not None:
        heldout.validate("held-out images")
        if heldout.shape != train.shape:
            raise DataError(f"held-out images have shape {heldout.shape} but training images {train.shape}")
        overlap = set(train.hashes) & set(heldout.hashes)
        if overlap:
            raise DataError(f"{len(overlap)} held-out images are also training images; the false-positive guard needs disjoint sets")
    expected = target.image_shape
    if expected is not None and tuple(expected) != train.shape:
        raise DataError(f"training images have shape {train.shape} but the target generates {tuple(expected)}")
    conds = _generation_conditions(target, train, conditions)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    batches, per_sample = [], []
    for k, c in enumerate(conds):
        cond = None if c is None else _repeat(c, config.n)
        batches.append(
            generate(
                target, config.n, steps=config.steps, seed=_sub_seed(config.seed, k), cond=cond, eta=config.eta,
                batch_size=config.batch_size, progress=progress,
            )
        )
        per_sample.extend([c] * config.n)
    generated = torch.cat(batches)
    timings["generate"] = time.perf_counter() - start

    start = time.perf_counter()
    nb_train = nearest(generated, train.images, device=nn_device)
    nb_held = nearest(generated, heldout.images, device=nn_device) if heldout is not None else None
    timings["nearest_neighbour"] = time.perf_counter() - start

    extracted, false_pos = flag_extracted(nb_train.distance, None if nb_held is None else nb_held.distance, config)
    info = target.describe()
    return ExtractionResult(
        config=config,
        generated=generated,
        conditions=per_sample,
        train=nb_train,
        heldout=nb_held,
        train_ids=list(train.ids),
        heldout_ids=list(heldout.ids) if heldout is not None else [],
        extracted=extracted,
        heldout_false_positive=false_pos,
        seconds=timings,
        target_info=info,
        command=command,
    )


def flag_extracted(
    d_train: torch.Tensor, d_heldout: torch.Tensor | None, config: ExtractionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The filter: (extracted, held-out false positive) masks from nearest-neighbour distances."""
    extracted = d_train < config.tau
    if d_heldout is None:
        return extracted, torch.zeros_like(extracted)
    extracted &= d_train < config.ratio * d_heldout
    mirror = (d_heldout < config.tau) & (d_heldout < config.ratio * d_train)
    return extracted, mirror


def write_extraction(result: ExtractionResult, out_dir: str | Path, train: ImageSet, heldout: ImageSet | None) -> Path:
    """Write ``extraction.json``, ``extraction_grid.png`` and ``extraction_samples.npz`` into ``out_dir``.

    The grid shows the extracted generations (closest first; top row generated, then the matched
    training image, then the nearest held-out image). With nothing extracted it shows the closest
    generations instead, so the reader sees how far the model is from copying; the JSON says which.
    """
    from genleak.extraction.grids import comparison_grid, save_png
    from genleak.io import atomic_save_npz, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict()
    rows = result.extracted.nonzero().flatten()
    shows = "extracted"
    if rows.numel() == 0:
        rows, shows = torch.arange(result.n_generated), "closest generations (none extracted)"
    rows = rows[result.train.distance[rows].argsort()][: result.config.max_grid]
    gen = result.generated[rows]
    matches = train.images[result.train.index[rows]]
    held = heldout.images[result.heldout.index[rows]] if heldout is not None and result.heldout is not None else None
    save_png(comparison_grid(gen, matches, held), out / GRID_FILE)
    doc["grid_shows"] = shows
    doc["grid_generated_indices"] = rows.tolist()
    atomic_save_npz(
        out / SAMPLES_FILE,
        generated=result.generated.numpy(),
        train_distance=result.train.distance.numpy(),
        train_index=result.train.index.numpy(),
        heldout_distance=(result.heldout.distance.numpy() if result.heldout is not None else np.zeros(0)),
        heldout_index=(result.heldout.index.numpy() if result.heldout is not None else np.zeros(0, np.int64)),
        extracted=result.extracted.numpy(),
    )
    path = atomic_write_json(out / JSON_FILE, doc)
    return path


# -- helpers -----------------------------------------------------------------------------------------
def _generation_conditions(target: Any, train: ImageSet, conditions: list[Any] | None) -> list[Any]:
    """[None] for unconditional targets; else the requested or the training set's distinct conditions."""
    train_conds = target.conditions(train)
    if train_conds is None:
        if conditions:
            raise GenleakError("the target is unconditional; generate without --conditions")
        return [None]
    if conditions:
        return [_coerce_like(c, train_conds) for c in conditions]
    values = train_conds.tolist() if isinstance(train_conds, torch.Tensor) else list(train_conds)
    distinct: dict[str, Any] = {}
    for v in values:
        distinct.setdefault(_key(v), v)
    return sorted(distinct.values(), key=_key) if all(isinstance(v, int) for v in distinct.values()) else list(distinct.values())


def _coerce_like(value: Any, train_conds: Any) -> Any:
    if isinstance(train_conds, torch.Tensor):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise GenleakError(f"condition {value!r} is not a class index; this target is class-conditional") from None
    return value


def _repeat(c: Any, n: int) -> Any:
    if isinstance(c, int):
        return torch.full((n,), c, dtype=torch.long)
    return [c] * n


def _sub_seed(seed: int, k: int) -> int:
    """Seed of the k-th condition's generations: adding conditions does not change the others'."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{k}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _key(c: Any) -> str:
    return repr(c)


def _jsonable(c: Any) -> Any:
    if c is None or isinstance(c, bool | int | float | str):
        return c
    return str(c)


def _quantiles(d: np.ndarray) -> dict[str, float]:
    qs = (0.0, 0.01, 0.1, 0.5)
    return {f"q{int(q * 100)}": round(float(np.quantile(d, q)), 6) for q in qs}
