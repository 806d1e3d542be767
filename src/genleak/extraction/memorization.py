"""Memorisation detection: rank images or conditions by the SecMI t-error.

The DualMD paper (001, section 3.6, Fig. 3 and appendix A.1) shows that the t-error of Duan et
al. (eq. 8: ||psi(phi(x~_t, t), t) - x~_t||^2 with x~_t the DDIM inversion of x_0) separates
memorised prompts of Stable Diffusion from normal ones: memorised content has a *lower* t-error.
We reuse the registered ``secmi`` attack (its score is minus the t-error) rather than a second
implementation, so memorisation ranking and membership inference can never disagree on the
statistic.

Two modes:

* **per image** (pixel DDPMs): the t-error of given images (with their class labels for
  class-conditional UNets). Images duplicated many times in training are the memorised ones.
* **per condition** (class label or prompt): x_0 are the model's *own* generations for that
  condition (``k`` per condition) and the condition's t-error is their mean. This needs no
  training data: a memorised condition makes the model regenerate its training image, whose
  t-error is low (001, appendix A.1 applies eq. 8 to prompts the same way: memorised prompts as
  the "member" set, normal prompts as the "hold-out" set).

t_sec follows the public SecMI code (``genleak.attacks.secmi``: the t-error at t_sec - interval).
Measured on tiny trained DDPMs with planted duplicates (benchmarks/RESULTS.md, t-error claim): at the
paper's t = 100 (t_sec = 110) the separation swung between AUC 0.40 and 0.998 across seeds, at t_sec = 30
(interval 10) it was 0.975-1.0 on every seed. The default stays the paper's; pass ``t_sec=30`` for
small models (the statistic's known instability on tiny models: README, "SecMI on tiny models").

With labels (which items are known to be memorised) the separation is reported as AUC / TPR@FPR
from ``genleak.metrics`` with memorised = "member" and score = -t-error, plus a histogram of the
two groups (the analogue of 001's Fig. 3).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genleak.errors import GenleakError

__all__ = [
    "MemorizationResult",
    "condition_t_errors",
    "plot_t_error_histogram",
    "rank_conditions",
    "rank_images",
    "t_errors",
    "write_memorization",
]

MEMORIZATION_FORMAT = "genleak.memorization"
JSON_FILE = "memorization.json"
HIST_FILE = "memorization_hist.png"

# The t-error at t = 100 with interval k = 10, as the DualMD paper (001, eq. 8, appendix A.2.3): t_sec = 110 in
# the public SecMI code's convention; the same values as genleak.attacks.secmi.SecMIConfig.
DEFAULT_T_SEC = 110
DEFAULT_INTERVAL = 10


def t_errors(
    target: Any,
    images: torch.Tensor,
    ids: Sequence[str] | None = None,
    *,
    cond: Any = None,
    t_sec: int = DEFAULT_T_SEC,
    interval: int = DEFAULT_INTERVAL,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> torch.Tensor:
    """t-error (001, eq. 8) per image: >= 0, lower = more memorised. Costs t_sec/interval + 1 NFE."""
    from genleak.attacks import get_attack
    from genleak.data import ImageSet
    from genleak.scoring import score_images

    attack = get_attack("secmi", t_sec=t_sec, interval=interval)
    queries = ImageSet(images, [str(i) for i in range(images.shape[0])] if ids is None else list(ids))
    scored = score_images(target, queries, [attack], cond=cond, batch_size=batch_size, seed=seed, progress=progress,
                          desc="t-error")
    return -torch.from_numpy(scored[attack].values)


@dataclass
class MemorizationResult:
    """t-errors of the ranked items and, with labels, how well they separate memorised from normal."""

    mode: str  # "image" or "condition"
    names: list[str]  # image ids or conditions (as strings)
    t_error: np.ndarray  # (N,) per item (per-condition mean for mode "condition")
    memorised: np.ndarray | None  # (N,) bool labels, or None
    config: dict[str, Any]
    per_sample: np.ndarray | None = None  # (N, k) per-generation t-errors in mode "condition"
    target_info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    command: str = ""

    def ranking(self) -> list[int]:
        """Item rows from most to least memorised (ascending t-error; ties by name)."""
        return sorted(range(len(self.names)), key=lambda i: (float(self.t_error[i]), self.names[i]))

    def separation(self) -> dict[str, Any] | None:
        """AUC / TPR@FPR of -t-error with memorised items as the positive class (genleak.metrics)."""
        if self.memorised is None:
            return None
        mem, norm = self.t_error[self.memorised], self.t_error[~self.memorised]
        if mem.size == 0 or norm.size == 0:
            raise GenleakError("labels must mark at least one memorised and one normal item to measure separation")
        from genleak.metrics import evaluate

        report = evaluate(-mem, -norm).to_dict()
        report["n_memorised"], report["n_normal"] = int(mem.size), int(norm.size)
        report["median_t_error_memorised"] = float(np.median(mem))
        report["median_t_error_normal"] = float(np.median(norm))
        return report

    def to_dict(self) -> dict[str, Any]:
        items = []
        for rank, i in enumerate(self.ranking()):
            item: dict[str, Any] = {"rank": rank, "name": self.names[i], "t_error": float(self.t_error[i])}
            if self.memorised is not None:
                item["memorised"] = bool(self.memorised[i])
            items.append(item)
        return {
            "format": MEMORIZATION_FORMAT,
            "version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
            "mode": self.mode,
            "statistic": "SecMI t-error (DualMD paper eq. 8); lower = more memorised",
            "config": self.config,
            "target": self.target_info,
            "seconds": round(self.seconds, 3),
            "separation": self.separation(),
            "histogram": HIST_FILE if self.memorised is not None else None,
            "items": items,
        }


def rank_images(
    target: Any,
    images: Any,
    memorised_ids: Sequence[str] | None = None,
    *,
    t_sec: int = DEFAULT_T_SEC,
    interval: int = DEFAULT_INTERVAL,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> MemorizationResult:
    """Per-image t-errors of an ``ImageSet`` (class labels are used for class-conditional targets).

    ``memorised_ids`` labels the known-memorised images (e.g. planted duplicates); unknown ids raise.
    """
    start = time.perf_counter()
    images.validate("images to rank")
    cond = target.conditions(images)
    te = t_errors(target, images.images, images.ids, cond=cond, t_sec=t_sec, interval=interval, seed=seed,
                  batch_size=batch_size, progress=progress).numpy().astype(np.float64)
    labels = None
    if memorised_ids is not None:
        wanted = {str(i) for i in memorised_ids}
        unknown = wanted - set(images.ids)
        if unknown:
            raise GenleakError(f"{len(unknown)} memorised ids are not among the images, e.g. {sorted(unknown)[0]!r}")
        labels = np.array([i in wanted for i in images.ids])
    return MemorizationResult(
        mode="image",
        names=list(images.ids),
        t_error=te,
        memorised=labels,
        config={"t_sec": t_sec, "interval": interval, "seed": seed},
        target_info=_describe(target),
        seconds=time.perf_counter() - start,
    )


def condition_t_errors(
    target: Any,
    conditions: Sequence[Any],
    *,
    k: int = 8,
    steps: int = 50,
    t_sec: int = DEFAULT_T_SEC,
    interval: int = DEFAULT_INTERVAL,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """(len(conditions), k) t-errors of ``k`` DDIM generations per condition, under that condition."""
    from genleak.extraction.extract import _repeat, _sub_seed
    from genleak.targets.sampling import generate

    if k < 1:
        raise GenleakError(f"k (generations per condition) must be >= 1, got {k}")
    rows = []
    for j, c in enumerate(conditions):
        cond = _repeat(c, k)
        x0 = generate(target, k, steps=steps, seed=_sub_seed(seed, j), cond=cond, batch_size=batch_size)
        ids = [f"cond{j}/gen{i}" for i in range(k)]
        rows.append(t_errors(target, x0, ids, cond=cond, t_sec=t_sec, interval=interval, seed=seed,
                             batch_size=batch_size, progress=progress).numpy())
    return np.stack(rows).astype(np.float64)


def rank_conditions(
    target: Any,
    conditions: Sequence[Any],
    memorised: Sequence[bool] | None = None,
    *,
    k: int = 8,
    steps: int = 50,
    t_sec: int = DEFAULT_T_SEC,
    interval: int = DEFAULT_INTERVAL,
    seed: int = 0,
    progress: bool = True,
) -> MemorizationResult:
    """Rank conditions (class labels, prompts) by the mean t-error of their own generations."""
    if not conditions:
        raise GenleakError("no conditions to rank; list one class label or prompt per line")
    if memorised is not None and len(memorised) != len(conditions):
        raise GenleakError(f"{len(memorised)} labels for {len(conditions)} conditions")
    start = time.perf_counter()
    per = condition_t_errors(target, conditions, k=k, steps=steps, t_sec=t_sec, interval=interval, seed=seed,
                             progress=progress)
    return MemorizationResult(
        mode="condition",
        names=[str(c) for c in conditions],
        t_error=per.mean(1),
        memorised=None if memorised is None else np.asarray(memorised, dtype=bool),
        config={"t_sec": t_sec, "interval": interval, "seed": seed, "k": k, "steps": steps},
        per_sample=per,
        target_info=_describe(target),
        seconds=time.perf_counter() - start,
    )


def plot_t_error_histogram(memorised: np.ndarray, normal: np.ndarray, path: str | Path, title: str = "") -> None:
    """Overlaid histograms of the two groups' t-errors on a log axis (001, Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genleak.io import atomic_path

    both = np.concatenate([memorised, normal])
    lo, hi = max(float(both.min()), 1e-12), max(float(both.max()), 1e-12)
    bins = np.geomspace(lo, hi * 1.0001, 30) if hi > lo else 10
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.hist(normal, bins=bins, alpha=0.6, label=f"normal (n={normal.size})", color="tab:blue")
    ax.hist(memorised, bins=bins, alpha=0.6, label=f"memorised (n={memorised.size})", color="tab:red")
    if hi > lo:
        ax.set_xscale("log")
    ax.set_xlabel("t-error (SecMI loss, eq. 8); lower = more memorised")
    ax.set_ylabel("count")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_memorization(result: MemorizationResult, out_dir: str | Path) -> Path:
    """Write ``memorization.json`` (ranking, separation) and, with labels, ``memorization_hist.png``."""
    from genleak.io import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict()
    if result.memorised is not None:
        sep = doc["separation"]
        plot_t_error_histogram(
            result.t_error[result.memorised], result.t_error[~result.memorised], out / HIST_FILE,
            title=f"t-error by group: AUC {sep['auc']:.3f}",
        )
    return atomic_write_json(out / JSON_FILE, doc)


def _describe(target: Any) -> dict[str, Any]:
    return target.describe()
