"""Dataset inference (DI) for IARs: the classifier-free variant and the CDI logistic-regression
variant, side by side (thesis ch. 9.5.2, supp. D.5.3, Table 9.5.3; CDI: ch. 8.4).

Both variants turn per-sample MIA *features* of a suspect set P (claimed training data) and a
validation set U (known non-members) into one score per sample, then run a one-sided Welch t-test
"scores of P are higher than scores of U" over random subsets of growing size |P| = |U| = n,
reporting the arithmetic mean of the p-values per n (supp. C.5) and the minimum n with mean p < 0.01
(ch. 8.4.3: alpha = 0.01).

* ``"sum"`` (IAR DI, ch. 9.5.2 "Improvement 1: Optimized DI Procedure"): every feature is min-max
  scaled to [0, 1] over P and U together and the scaled features are summed. No classifier, no
  labels, no auditing data spent on training; it relies on the IAR features being "well-behaved"
  (higher for members), which every genleak feature is by orientation.
* ``"lr"`` (CDI, ch. 8.4.2): standardised features -> logistic regression, 5-fold cross-fitted so
  every sample is scored by a model that never saw it (ch. 8.5).

As in the authors' ``analysis/di.py``, the scoring is refitted on every resample: the min-max range
on that resample's P and U alone (``minmax_curve``), the k-fold classifier on that resample alone
(``inference.stats_refit.refitted_curve``); fitting once on all of P and U would give every small
resample weights learnt from data its owner does not have. Features as in the authors' DI: VAR/RAR
keep CAMIA (their ``llm_mia_cfg`` list; SURP is not in it), MAR drops it (``REMOVE_CAMIA``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genleak.errors import GenleakError
from genleak.inference.scoring import cross_val_scores
from genleak.inference.stats import cohens_d, min_suspect_size
from genleak.inference.stats_refit import refitted_curve
from genleak.results import CurvePoint

ALPHA = 0.01  # ch. 8.4.3
# The IAR DI features (authors' analysis/di.py): VAR/RAR use conf/attack/llm_mia_cfg.yaml (no SURP);
# MAR uses the t = 500 losses with CAMIA removed (REMOVE_CAMIA applies to MAR only).
DI_FAMILIES: tuple[str, ...] = ("loss", "zlib", "hinge", "mink", "minkpp", "camia")
MAR_DI_FAMILIES: tuple[str, ...] = ("loss", "zlib", "mink")
# Suspect-set sizes: the authors' grid (analysis/di.py), 2-10, 20-100 by 10, 200-1000 by 100,
# 2000-10000 by 1000; sizes above the data are skipped (DIResult.skipped_sizes).
SIZES: tuple[int, ...] = (tuple(range(2, 11)) + tuple(range(20, 101, 10)) + tuple(range(200, 1001, 100))
                          + tuple(range(2000, 10001, 1000)))


def _family(name: str) -> str:
    return name.split("@")[0].removeprefix("iar-").removesuffix("-cfg")


def di_families(names: Sequence[str]) -> tuple[str, ...]:
    """The DI families for these features: MAR (no logit features: no hinge/minkpp) or VAR/RAR."""
    return DI_FAMILIES if any(_family(n) in ("hinge", "minkpp") for n in names) else MAR_DI_FAMILIES


def select_features(names: Sequence[str], cfg: bool | None, families: Sequence[str] | None = None) -> list[str]:
    """Feature names of ``families`` (default: ``di_families(names)``), CFG-difference (cfg=True),
    plain (False) or both (None)."""
    families = di_families(names) if families is None else families
    out = []
    for name in names:
        base = name.split("@")[0]
        is_cfg = base.endswith("-cfg")
        fam = base.removeprefix("iar-").removesuffix("-cfg")
        if fam in families and (cfg is None or cfg == is_cfg):
            out.append(name)
    return out


def as_matrix(features: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    if not names:
        raise GenleakError("no features selected for dataset inference")
    missing = [n for n in names if n not in features]
    if missing:
        raise GenleakError(f"features {missing[:3]} are missing; compute them first")
    return np.stack([np.asarray(features[n], np.float64) for n in names], axis=1)


def minmax_curve(
    fp: np.ndarray, fu: np.ndarray, sizes: Sequence[int], *, n_resamples: int = 1000, alpha: float = ALPHA,
    seed: int = 0, chunk_elements: int = 4_000_000,
) -> list[CurvePoint]:
    """Mean p-value over resamples with the min-max scaling refitted on every resample (authors'
    ``analysis/di.py``: n suspect and n validation rows drawn, ``MinMaxScaler`` fitted on those 2n rows,
    scaled features summed, Welch's test). Each point gives the one-sided mean p (``mean_p``, the
    verdict's sidedness) and the two-sided one the authors' code reports (``mean_p_two_sided``)."""
    from genleak.inference.stats import ttest_power
    from genleak.inference.stats_refit import _welch_both

    if not (np.isfinite(fp).all() and np.isfinite(fu).all()):
        raise GenleakError("features contain NaN or inf; the attack features are broken")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    full_p, full_u = minmax_sum(fp, fu)
    d = cohens_d(full_p, full_u)
    out = []
    for n in sizes:
        chunk = max(1, min(n_resamples, chunk_elements // (2 * n * fp.shape[1])))
        p1, p2, max_p, max_u = [], [], [], []
        for start in range(0, n_resamples, chunk):
            rows = min(chunk, n_resamples - start)
            xp = fp[np.argsort(rng.random((rows, len(fp))), 1)[:, :n]]
            xu = fu[np.argsort(rng.random((rows, len(fu))), 1)[:, :n]]
            lo = np.minimum(xp.min(1), xu.min(1))[:, None]
            span = np.maximum(xp.max(1), xu.max(1))[:, None] - lo
            span = np.where(span > 0, span, 1.0)  # a constant feature contributes 0, as MinMaxScaler
            sp, su = ((xp - lo) / span).sum(2), ((xu - lo) / span).sum(2)
            one, two = _welch_both(sp, su)
            p1.append(one)
            p2.append(two)
            max_p.append(sp.max(1))
            max_u.append(su.max(1))
        one, two = np.concatenate(p1), np.concatenate(p2)
        out.append(CurvePoint.from_pvalues(
            n, n, one, alpha, ttest_power(d, n, n, alpha, "greater"), np.concatenate(max_p), np.concatenate(max_u),
            resamples=n_resamples, mean_p_one_sided=float(one.mean()), mean_p_two_sided=float(two.mean())))
    return out


def minmax_sum(fp: np.ndarray, fu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Supp. D.5.3 step 3: MinMaxScaler over P and U together, then the sum over features.

    A constant feature contributes 0. NaN features (none are produced here) would be refused.
    """
    both = np.concatenate([fp, fu])
    if not np.isfinite(both).all():
        raise GenleakError("features contain NaN or inf; the attack features are broken")
    lo, hi = both.min(0), both.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (both - lo) / span
    scores = scaled.sum(1)
    return scores[: fp.shape[0]], scores[fp.shape[0] :]


@dataclass
class DIResult:
    """One DI run: the method, its features, the p-value curve and the minimum |P|."""

    method: str
    features: list[str]
    curve: list[CurvePoint]
    min_size: int | None
    null_curve: list[CurvePoint] = field(default_factory=list)  # P drawn from non-members: must not reject
    skipped_sizes: list[int] = field(default_factory=list)  # grid sizes above min(|P|, |U|): not tested

    @property
    def p_at_max(self) -> float:
        return self.curve[-1].mean_p

    @property
    def null_p_at_max(self) -> float | None:
        return self.null_curve[-1].mean_p if self.null_curve else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_features": len(self.features),
            "features": self.features,
            "min_suspect_size": self.min_size,
            "mean_p_at_max_size": self.p_at_max,
            "max_size": self.curve[-1].n_suspect,
            "null_mean_p_at_max_size": self.null_p_at_max,
            "scoring": "refitted on every resample (min-max range for 'sum', the k-fold classifier for 'lr')",
            "sizes_skipped": self.skipped_sizes,
            "sizes_note": None if not self.skipped_sizes else
            f"sizes {self.skipped_sizes[0]}-{self.skipped_sizes[-1]} of the authors' grid skipped: larger than the "
            f"data (|P| = |U| up to {self.curve[-1].n_suspect})",
            "curve": [p.to_json() for p in self.curve],
            "null_curve": [p.to_json() for p in self.null_curve],
        }


def _curve(method: str, fp: np.ndarray, fu: np.ndarray, sizes: Sequence[int], n_resamples: int, seed: int,
           folds: int) -> list[CurvePoint]:
    if method == "sum":
        return minmax_curve(fp, fu, sizes, n_resamples=n_resamples, seed=seed)
    if method == "lr":
        k = min(folds, fp.shape[0], fu.shape[0])
        oof = cross_val_scores(fp, fu, folds=k, seed=seed)
        return refitted_curve(fp, fu, sizes, n_resamples=n_resamples, alpha=ALPHA, folds=k, seed=seed,
                              effect_size=cohens_d(oof.scores_p, oof.scores_u))
    raise GenleakError(f"unknown DI method '{method}'; choose 'sum' (IAR DI) or 'lr' (CDI)")


def dataset_inference(
    features_p: dict[str, np.ndarray],
    features_u: dict[str, np.ndarray],
    names: Sequence[str],
    *,
    method: str = "sum",
    sizes: Sequence[int] = SIZES,
    n_resamples: int = 1000,
    seed: int = 0,
    folds: int = 5,
    null_check: bool = True,
) -> DIResult:
    """Run DI on suspect features P vs validation features U, the scoring refitted on every resample.

    Sizes of ``sizes`` above min(|P|, |U|) are skipped and listed; the LR variant also skips sizes
    below ``folds``. With ``null_check`` U is split in two halves and the same procedure is run with
    one half as a fake suspect set: a sound DI must not reject there (CDI Table 8.5.2).
    """
    fp, fu = as_matrix(features_p, names), as_matrix(features_u, names)
    if fp.shape[0] < 2 or fu.shape[0] < 2:
        raise GenleakError(f"DI needs at least 2 suspect and 2 validation samples, got {fp.shape[0]} and {fu.shape[0]}")
    top = min(fp.shape[0], fu.shape[0])
    skipped = [int(n) for n in sizes if n > top]
    sizes = [int(n) for n in sizes if 2 <= n <= top] or [top]
    curve = _curve(method, fp, fu, sizes, n_resamples, seed, folds)
    if not curve:
        raise GenleakError(f"no suspect-set size to test for DI method '{method}' with {top} samples per side")
    null_curve: list[CurvePoint] = []
    if null_check and fu.shape[0] >= 4:
        rng = np.random.default_rng(seed + 1)
        perm = rng.permutation(fu.shape[0])
        half = fu.shape[0] // 2
        a, b = fu[perm[:half]], fu[perm[half : 2 * half]]
        if method == "sum" or half >= min(folds, 2):
            null_curve = _curve(method, a, b, [n for n in sizes if n <= half] or [half], n_resamples, seed, folds)
    return DIResult(method=method, features=list(names), curve=curve, min_size=min_suspect_size(curve, ALPHA),
                    null_curve=null_curve, skipped_sizes=skipped)


def iar_di_table(
    features_p: dict[str, np.ndarray],
    features_u: dict[str, np.ndarray],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    sizes: Sequence[int] = SIZES,
) -> dict[str, DIResult]:
    """The rows of Table 9.5.3 on one target, plus the CDI classifier on the IAR features:

    * ``baseline-lr``: LLM-style DI: plain-logit MIA features + logistic regression (Maini et al.);
    * ``plain-sum``: "+ Optimized procedure": the same features, min-max + sum, no classifier;
    * ``cfg-sum``: "+ Our MIAs for IARs": CFG-difference features, min-max + sum (the IAR DI);
    * ``cfg-lr``: CFG-difference features with the CDI classifier (for the side-by-side).
    MAR rows use the loss families only (there are no logits).
    """
    names = list(features_p)
    rows = {}
    for key, cfg, method in (("baseline-lr", False, "lr"), ("plain-sum", False, "sum"),
                             ("cfg-sum", True, "sum"), ("cfg-lr", True, "lr")):
        sel = select_features(names, cfg)
        if sel:
            rows[key] = dataset_inference(features_p, features_u, sel, method=method, n_resamples=n_resamples,
                                          seed=seed, sizes=sizes)
    return rows
