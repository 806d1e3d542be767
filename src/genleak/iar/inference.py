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

The statistics (vectorised Welch test over resamples, p-value aggregation, minimum |P|) and the
cross-fitted scorer are the CDI module's (:mod:`genleak.inference`); this module only adds the IAR
scoring rule and the feature sets. Note: as in the CDI module, scores are computed once on all of P
and U and then resampled; the min-max range is fitted once on all of P and U.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genleak.errors import GenleakError
from genleak.inference.scoring import cross_val_scores
from genleak.inference.stats import CurvePoint, min_suspect_size, resampled_curve

ALPHA = 0.01  # ch. 8.4.3
# The IAR DI features: the authors' DI drops SURP and CAMIA (their many degenerate columns); the
# rest of the LLM MIAs on CFG-difference logits are "our MIAs for IARs" of Table 9.5.3.
DI_FAMILIES: tuple[str, ...] = ("loss", "zlib", "hinge", "mink", "minkpp")
# Suspect-set sizes tried: the authors' grid starts at 2 (IARs need as few as 6, Table 9.5.3).
SIZES: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 80, 100, 128,
                          160, 200, 256, 300, 400, 500, 600, 800, 1000)


def select_features(names: Sequence[str], cfg: bool | None, families: Sequence[str] = DI_FAMILIES) -> list[str]:
    """Feature names of ``families``, CFG-difference (cfg=True), plain (False) or both (None)."""
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
            "curve": [p.to_dict() for p in self.curve],
            "null_curve": [p.to_dict() for p in self.null_curve],
        }


def _scores(method: str, fp: np.ndarray, fu: np.ndarray, seed: int, folds: int) -> tuple[np.ndarray, np.ndarray]:
    if method == "sum":
        return minmax_sum(fp, fu)
    if method == "lr":
        k = min(folds, fp.shape[0], fu.shape[0])
        oof = cross_val_scores(fp, fu, folds=k, seed=seed)
        return oof.scores_p, oof.scores_u
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
    """Run DI on suspect features P vs validation features U.

    With ``null_check`` U is split in two halves and the same procedure is run with one half as a
    fake suspect set: a sound DI must not reject there (CDI Table 8.5.2; the p-values stay high).
    """
    fp, fu = as_matrix(features_p, names), as_matrix(features_u, names)
    if fp.shape[0] < 2 or fu.shape[0] < 2:
        raise GenleakError(f"DI needs at least 2 suspect and 2 validation samples, got {fp.shape[0]} and {fu.shape[0]}")
    sp, su = _scores(method, fp, fu, seed, folds)
    sizes = [n for n in sizes if 2 <= n <= min(fp.shape[0], fu.shape[0])] or [min(fp.shape[0], fu.shape[0])]
    curve = resampled_curve(sp, su, sizes, n_resamples=n_resamples, alpha=ALPHA, seed=seed)
    null_curve: list[CurvePoint] = []
    if null_check and fu.shape[0] >= 4:
        rng = np.random.default_rng(seed + 1)
        perm = rng.permutation(fu.shape[0])
        half = fu.shape[0] // 2
        a, b = fu[perm[:half]], fu[perm[half : 2 * half]]
        na, nb = _scores(method, a, b, seed, folds)
        null_sizes = [n for n in sizes if n <= half] or [half]
        null_curve = resampled_curve(na, nb, null_sizes, n_resamples=n_resamples, alpha=ALPHA, seed=seed)
    return DIResult(method=method, features=list(names), curve=curve, min_size=min_suspect_size(curve, ALPHA),
                    null_curve=null_curve)


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
