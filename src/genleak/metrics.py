"""Membership-inference metrics: the only place in genleak where they are computed.

Every attack hands this module two 1-D score arrays, ``member_scores`` and ``nonmember_scores``,
where **higher always means "more likely a member"**. Attacks whose raw statistic points the other
way (a loss, a reconstruction error) flip it themselves; the direct figures (``auc``, ``tpr_at_fpr``)
never flip a score silently.

Two-sided leakage
-----------------
An AUC far below 0.5 is not privacy: members score *lower*, and an attacker who flips the sign (a
defense's documentation or a shadow model tells the direction) gets AUC 1 - AUC. ``evaluate``
therefore also reports the *sign-flipped attack* (scores negated) under its own name:
``leakage_auc = max(AUC, 1 - AUC)``, ``leak_direction`` ("direct" when AUC >= 0.5, else "flipped")
and the flipped attack's TPR@1%FPR / TPR@0.1%FPR, read off the same bootstrap resamples as the
direct figures. The flipped attack's AUC is exactly 1 - AUC (ties count 1/2 both ways), so its CI is
``[1 - hi, 1 - lo]``. Judging both directions doubles the bounds a verdict picks from; the verdict
(``genleak.report.verdict``) counts both in its Bonferroni family.

Why one module: published MIA numbers are hard to compare because repositories disagree on ties,
on interpolation of the ROC curve and on what "ASR" means. Keeping every definition here, written
down once, is what makes two genleak reports comparable.

All metrics derive from one object: the exact empirical ROC curve. Its points are the decision
rules "predict member iff score >= t" for every distinct value ``t`` of the pooled scores (tied
scores are one threshold, never split), plus the rule "nobody is a member" (``t = +inf``, the
point (0, 0)). The last point (lowest threshold) is (1, 1).

The TPR@FPR rule
----------------
Public code disagrees: some repositories interpolate the ROC linearly between points, some take
the first threshold whose FPR is >= alpha (which can *exceed* the FPR budget). genleak uses:

    TPR@alpha = the largest TPR among exact ROC points whose FPR <= alpha
                ("largest FPR <= alpha"; no interpolation, the budget is never exceeded).

With ``n`` non-members the achievable FPRs are ``k / n`` for ``k = 0 .. n``, so TPR@alpha is the
TPR of the best rule that lets through at most ``k = floor(alpha * n)`` non-members. In particular
TPR@0%FPR is the fraction of members scoring *strictly above the maximum non-member score*.

Worked example: members ``[3, 4, 5]``, non-members ``[0, 1, 2, 3.5]`` (n = 4, achievable FPRs
0, 0.25, 0.5, 0.75, 1). ROC points, threshold -> (FPR, TPR):

    +inf -> (0, 0)     5 -> (0, 1/3)     4 -> (0, 2/3)     3.5 -> (1/4, 2/3)
    3 -> (1/4, 1)      2 -> (2/4, 1)     1 -> (3/4, 1)     0 -> (1, 1)

* TPR@0%FPR = 2/3: 4 and 5 lie strictly above the largest non-member score 3.5.
* TPR@1%FPR = 2/3 as well: with 4 non-members 1% buys no false positive (k = floor(0.04) = 0).
  ``fpr_resolution_warning(4, 0.01)`` says so; report it next to such a figure.
* TPR@25%FPR = 1.0: one false positive (3.5) is allowed, so threshold 3 catches every member.

ASR
---
SecMI and PIA report "attack success rate" as the best accuracy over *all* thresholds, chosen on the
evaluation data itself (``best_balanced_accuracy``; balanced so that unequal split sizes cannot
inflate it; it equals plain accuracy on balanced splits). That choice peeks at the labels and is
optimistic, more so for small splits. ``calibrate_threshold`` + ``asr_calibrated`` give the honest
version: the threshold is fixed on a separate calibration split and then applied to evaluation data.

Uncertainty
-----------
``bootstrap_ci`` (percentile bootstrap, members and non-members resampled independently) and
``repeated_subsets`` (mean and std over equal-size random subsets, as in chapter 7 of the thesis).
Both are vectorised: all resamples are turned into per-threshold count matrices at once (in
memory-bounded chunks), and every metric is read off those counts with integer arithmetic, so a
resample's AUC is exactly what ``auc`` returns on the resampled arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from genleak.errors import GenleakError

__all__ = [
    "MetricReport",
    "RocCurve",
    "asr_calibrated",
    "auc",
    "balanced_accuracy_at",
    "best_balanced_accuracy",
    "bootstrap_ci",
    "calibrate_threshold",
    "evaluate",
    "fpr_resolution_warning",
    "leakage_interval",
    "repeated_subsets",
    "simultaneous_lower",
    "roc_curve",
    "tpr_at_fpr",
]

# Upper bound, in bytes, on the temporary arrays of one chunk of resamples (bootstrap and repeated
# subsets). Results do not depend on it: the random draws are chunk-invariant (tested).
_CHUNK_BYTES = 64 * 2**20

_BOOTSTRAP_METRICS = ("auc", "tpr_at_fpr", "flipped_tpr_at_fpr", "asr")
# Names in a ``wanted`` dict starting with this prefix are TPR@FPR of the sign-flipped attack.
_FLIPPED = "flipped_"


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


def _as_scores(x: ArrayLike, side: str) -> np.ndarray:
    """Return ``x`` as a finite 1-D float64 array or raise a GenleakError naming ``side``.

    Torch tensors are accepted without importing torch here (``import genleak.metrics`` must stay
    light): anything with ``.detach()`` is moved to the CPU first.
    """
    if hasattr(x, "detach"):
        t = x.detach().cpu()
        try:
            x = np.asarray(t)
        except (TypeError, RuntimeError):  # e.g. bfloat16, which numpy cannot represent
            x = np.asarray(t.double())
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged nested lists
        raise GenleakError(f"{side} scores are not a numeric array: {e}") from None
    if arr.ndim != 1:
        raise GenleakError(
            f"{side} scores must be 1-D (one score per sample), got shape {arr.shape}; "
            "flatten per-sample scores before evaluating"
        )
    if arr.size == 0:
        raise GenleakError(f"{side} scores are empty; need at least one {side} score")
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise GenleakError(f"{side} scores must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise GenleakError(
            f"{side} scores contain {n_nan} NaN value{'s' if n_nan != 1 else ''}; "
            "the attack produced invalid scores"
        )
    n_inf = int(np.isinf(arr).sum())
    if n_inf:
        raise GenleakError(
            f"{side} scores contain {n_inf} infinite value{'s' if n_inf != 1 else ''}; "
            "the attack produced invalid scores"
        )
    return arr


def _pair(
    member_scores: ArrayLike, nonmember_scores: ArrayLike, prefix: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    return _as_scores(member_scores, f"{prefix}member"), _as_scores(nonmember_scores, f"{prefix}non-member")


def _check_fpr(max_fpr: Any, name: str = "max_fpr") -> float:
    try:
        a = float(max_fpr)
    except (TypeError, ValueError):
        raise GenleakError(f"{name} must be a number in [0, 1], got {max_fpr!r}") from None
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise GenleakError(f"{name} must be in [0, 1] (a fraction, not a percentage), got {max_fpr!r}")
    return a


def _max_false_positives(n_nonmembers: int, max_fpr: float) -> int:
    """Largest k with k / n_nonmembers <= max_fpr, compared in float exactly as an ROC's FPR is.

    ``floor(max_fpr * n)`` alone is wrong for e.g. 0.29 * 100 = 28.999999999999996.
    """
    k = min(math.floor(max_fpr * n_nonmembers), n_nonmembers)
    while k + 1 <= n_nonmembers and (k + 1) / n_nonmembers <= max_fpr:
        k += 1
    while k > 0 and k / n_nonmembers > max_fpr:
        k -= 1
    return k


# ----------------------------------------------------------------------------------------------
# Core: per-threshold counts
# ----------------------------------------------------------------------------------------------


def _pool(m: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct pooled scores in decreasing order, and each score's position in that order."""
    uniq, inv = np.unique(np.concatenate([m, n]), return_inverse=True)
    pos = (uniq.size - 1) - inv.reshape(-1)
    return uniq[::-1], pos[: m.size], pos[m.size :]


def _row_counts(pos: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Histogram of each row of a (R, k) matrix of threshold positions -> (R, n_thresholds) int64."""
    rows = pos.shape[0]
    flat = pos + (np.arange(rows, dtype=np.int64) * n_thresholds)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n_thresholds).reshape(rows, n_thresholds)


def _auc_from_counts(cm: np.ndarray, cn: np.ndarray, n_m: int, n_n: int) -> np.ndarray:
    """Mann-Whitney AUC per row from per-threshold counts (thresholds decreasing).

    A member at threshold j beats the non-members strictly below it (n_n - fp_j) and ties with the
    cn_j non-members at the same score (counted 1/2). Integer arithmetic until the final division,
    so the result is exact up to one rounding.
    """
    fp = np.cumsum(cn, axis=-1)
    twice_wins = (cm * (2 * (n_n - fp) + cn)).sum(axis=-1)
    return twice_wins / (2.0 * n_m * n_n)


def _tpr_from_counts(tp: np.ndarray, fp: np.ndarray, n_m: int, n_n: int, max_fpr: float) -> np.ndarray:
    """Largest TPR over ROC points with FPR <= max_fpr, per row (the (0, 0) point is always allowed)."""
    k = _max_false_positives(n_n, max_fpr)
    return np.where(fp <= k, tp, 0).max(axis=-1) / n_m


def _asr_from_counts(tp: np.ndarray, fp: np.ndarray, n_m: int, n_n: int) -> np.ndarray:
    """Best balanced accuracy per row: 1/2 + 1/2 max(TPR - FPR), the max including the (0, 0) point."""
    youden = np.maximum((tp * n_n - fp * n_m).max(axis=-1), 0)
    return (n_m * n_n + youden) / (2.0 * n_m * n_n)


def _stats_from_positions(
    pos_m: np.ndarray, pos_n: np.ndarray, n_thresholds: int, wanted: dict[str, float | None]
) -> dict[str, np.ndarray]:
    """Metrics for each row of (R, k_m) / (R, k_n) matrices of threshold positions.

    ``wanted`` maps output name -> max_fpr for TPR@FPR entries, or None for "auc" / "asr"; a name
    starting with ``flipped_`` is TPR@FPR of the negated scores (thresholds read in reverse order).
    """
    n_m, n_n = pos_m.shape[1], pos_n.shape[1]
    cm = _row_counts(pos_m, n_thresholds)
    cn = _row_counts(pos_n, n_thresholds)
    tp = np.cumsum(cm, axis=1)
    fp = np.cumsum(cn, axis=1)
    out: dict[str, np.ndarray] = {}
    for name, alpha in wanted.items():
        if alpha is not None and name.startswith(_FLIPPED):
            tp_f, fp_f = np.cumsum(cm[:, ::-1], axis=1), np.cumsum(cn[:, ::-1], axis=1)
            out[name] = _tpr_from_counts(tp_f, fp_f, n_m, n_n, alpha)
        elif alpha is not None:
            out[name] = _tpr_from_counts(tp, fp, n_m, n_n, alpha)
        elif name == "auc":
            out[name] = _auc_from_counts(cm, cn, n_m, n_n)
        elif name == "asr":
            out[name] = _asr_from_counts(tp, fp, n_m, n_n)
        else:  # pragma: no cover - internal misuse
            raise ValueError(name)
    return out


def _rows_per_chunk(k_m: int, k_n: int, n_thresholds: int) -> int:
    # Per row: two index matrices, two position matrices, the flat bincount input, and about five
    # (n_thresholds)-wide int64 arrays (counts, cumulative counts, products).
    per_row = 8 * (3 * (k_m + k_n) + 6 * n_thresholds)
    return max(1, _CHUNK_BYTES // per_row)


def _single_stats(m: np.ndarray, n: np.ndarray, wanted: dict[str, float | None]) -> dict[str, float]:
    _, pos_m, pos_n = _pool(m, n)
    n_thr = int(max(pos_m.max(), pos_n.max())) + 1
    res = _stats_from_positions(pos_m[None, :], pos_n[None, :], n_thr, wanted)
    return {k: float(v[0]) for k, v in res.items()}


# ----------------------------------------------------------------------------------------------
# Point metrics
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocCurve:
    """The exact empirical ROC curve: one point per distinct pooled score, no interpolation.

    ``thresholds`` are decreasing; point i is the rule "member iff score >= thresholds[i]". The
    first point is (0, 0) with threshold +inf, the last is (1, 1) at the lowest score.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> RocCurve:
    """Exact ROC curve with every distinct threshold kept (sklearn's ``drop_intermediate=False``).

    Intermediate points are kept because TPR at a tiny FPR lives exactly in the corner that
    point-dropping would thin out.
    """
    m, n = _pair(member_scores, nonmember_scores)
    thr, pos_m, pos_n = _pool(m, n)
    tp = np.cumsum(np.bincount(pos_m, minlength=thr.size))
    fp = np.cumsum(np.bincount(pos_n, minlength=thr.size))
    return RocCurve(
        fpr=np.concatenate([[0.0], fp / n.size]),
        tpr=np.concatenate([[0.0], tp / m.size]),
        thresholds=np.concatenate([[np.inf], thr]),
    )


def auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """Area under the ROC curve = P(s_m > s_n) + 1/2 P(s_m = s_n) over all member/non-member pairs.

    This is the Mann-Whitney statistic, identical to ``sklearn.metrics.roc_auc_score`` (ties count
    one half, so an attack that outputs a constant scores exactly 0.5).
    """
    m, n = _pair(member_scores, nonmember_scores)
    return _single_stats(m, n, {"auc": None})["auc"]


def tpr_at_fpr(member_scores: ArrayLike, nonmember_scores: ArrayLike, max_fpr: float) -> float:
    """TPR at the best exact ROC point with FPR <= ``max_fpr`` (see the module docstring).

    Low-FPR TPR is the metric that matters for privacy (Carlini et al., "MIA from first
    principles"): an attack that confidently identifies a few members is a leak even at AUC 0.5.
    With ``n`` non-members only FPRs k/n exist; check ``fpr_resolution_warning``.
    """
    m, n = _pair(member_scores, nonmember_scores)
    alpha = _check_fpr(max_fpr)
    return _single_stats(m, n, {"tpr": alpha})["tpr"]


def balanced_accuracy_at(member_scores: ArrayLike, nonmember_scores: ArrayLike, threshold: float) -> float:
    """(TPR + TNR) / 2 of the rule "member iff score >= threshold".

    Balanced, so a 10:1 non-member:member split cannot make "nobody is a member" look 91% accurate.
    """
    m, n = _pair(member_scores, nonmember_scores)
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise GenleakError(f"threshold must be a number, got {threshold!r}") from None
    if math.isnan(t):
        raise GenleakError("threshold is NaN")
    tpr = np.count_nonzero(m >= t) / m.size
    tnr = np.count_nonzero(n < t) / n.size
    return 0.5 * (tpr + tnr)


def best_balanced_accuracy(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """The "ASR" as SecMI/PIA report it: the best balanced accuracy over all thresholds.

    The threshold is chosen on the very data it is scored on, so this is an optimistic (oracle)
    figure, kept for comparability with papers; ``asr_calibrated`` is the honest one. Never below
    0.5, because "nobody is a member" is one of the rules considered.
    """
    m, n = _pair(member_scores, nonmember_scores)
    return _single_stats(m, n, {"asr": None})["asr"]


def calibrate_threshold(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """Threshold maximising balanced accuracy on a calibration split (never on evaluation data).

    Every threshold in the gap between the optimal distinct score and the next lower one gives the
    same calibration accuracy; the midpoint of that gap is returned so that unseen scores falling
    in the gap are not systematically pushed to one side. Among equally good rules the highest
    threshold (fewest members claimed) wins. If no threshold beats chance on the calibration data,
    returns +inf ("nobody is a member"), whose balanced accuracy is exactly 0.5 on any data.
    """
    m, n = _pair(member_scores, nonmember_scores, prefix="calibration ")
    thr, pos_m, pos_n = _pool(m, n)
    tp = np.cumsum(np.bincount(pos_m, minlength=thr.size))
    fp = np.cumsum(np.bincount(pos_n, minlength=thr.size))
    youden = tp * n.size - fp * m.size  # proportional to TPR - FPR, exact integers
    j = int(np.argmax(youden))
    if youden[j] <= 0:
        return math.inf
    hi = float(thr[j])
    if j + 1 == thr.size:  # pragma: no cover - the lowest threshold has TPR = FPR = 1, youden 0
        return hi
    lo = float(thr[j + 1])
    mid = hi / 2 + lo / 2  # no overflow for huge scores
    # Guard against rounding onto lo (adjacent floats), which would change the calibration rule.
    return mid if lo < mid <= hi else hi


def asr_calibrated(
    cal_member: ArrayLike, cal_nonmember: ArrayLike, eval_member: ArrayLike, eval_nonmember: ArrayLike
) -> float:
    """Honest ASR: balanced accuracy on the evaluation split at the threshold fixed on calibration.

    This is what an attacker who cannot peek at evaluation labels would achieve; compare it with
    ``best_balanced_accuracy`` on the evaluation split to see how much the oracle threshold flatters.
    """
    em = _as_scores(eval_member, "evaluation member")
    en = _as_scores(eval_nonmember, "evaluation non-member")
    t = calibrate_threshold(cal_member, cal_nonmember)
    return balanced_accuracy_at(em, en, t)


# ----------------------------------------------------------------------------------------------
# Uncertainty
# ----------------------------------------------------------------------------------------------


def _child_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the member side and the non-member side.

    Separate streams make the draws reproducible and chunk-invariant: the member index matrix of
    ``B`` resamples is exactly ``rng_m.integers(0, n_m, size=(B, n_m))`` however it is chunked.
    """
    ss_m, ss_n = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(ss_m), np.random.default_rng(ss_n)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GenleakError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _bootstrap_stats(
    m: np.ndarray, n: np.ndarray, wanted: dict[str, float | None], n_resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Metric values on ``n_resamples`` bootstrap resamples.

    Resample b takes members ``m[I_m[b]]`` and non-members ``n[I_n[b]]`` with
    ``I_m = rng_m.integers(0, n_m, size=(B, n_m))`` and ``I_n = rng_n.integers(0, n_n, size=(B, n_n))``
    (``rng_m, rng_n = _child_rngs(seed)``), drawn chunk by chunk to bound memory.
    """
    thr, pos_m_all, pos_n_all = _pool(m, n)
    rng_m, rng_n = _child_rngs(seed)
    rows = _rows_per_chunk(m.size, n.size, thr.size)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
    for start in range(0, n_resamples, rows):
        b = min(rows, n_resamples - start)
        idx_m = rng_m.integers(0, m.size, size=(b, m.size))
        idx_n = rng_n.integers(0, n.size, size=(b, n.size))
        res = _stats_from_positions(pos_m_all[idx_m], pos_n_all[idx_n], thr.size, wanted)
        for k, v in res.items():
            parts[k].append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _check_bootstrap_args(n_resamples: Any, confidence: Any) -> tuple[int, float]:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 2:
        raise GenleakError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise GenleakError(f"confidence must be a number in (0, 1), got {confidence!r}") from None
    if not 0.0 < c < 1.0:
        raise GenleakError(f"confidence must be in (0, 1) (e.g. 0.95), got {confidence!r}")
    return int(n_resamples), c


def bootstrap_ci(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    metric: str = "auc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_fpr: float | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI for ``metric`` in {"auc", "tpr_at_fpr", "flipped_tpr_at_fpr", "asr"}.

    Members and non-members are resampled independently with replacement, keeping both split sizes
    fixed: the two sides are separate samples, and pooling them would let the class balance drift.
    ``max_fpr`` is required for, and only accepted with, the two TPR metrics (``flipped_tpr_at_fpr``:
    the sign-flipped attack's). All resamples are evaluated at once (chunked for memory); the same
    seed gives the same resamples, whatever the metric.

    Caveat: at FPRs close to the 1/n resolution TPR@FPR is a near-extreme order statistic and its
    percentile interval is unreliable; prefer more non-members to a tighter-looking interval.
    """
    m, n = _pair(member_scores, nonmember_scores)
    n_resamples, confidence = _check_bootstrap_args(n_resamples, confidence)
    seed = _check_seed(seed)
    if metric not in _BOOTSTRAP_METRICS:
        raise GenleakError(f"unknown metric {metric!r}; choose one of {', '.join(_BOOTSTRAP_METRICS)}")
    if metric.endswith("tpr_at_fpr"):
        if max_fpr is None:
            raise GenleakError(f"metric {metric!r} needs max_fpr (e.g. max_fpr=0.01)")
        wanted: dict[str, float | None] = {metric: _check_fpr(max_fpr)}
    else:
        if max_fpr is not None:
            raise GenleakError(f"max_fpr only applies to the TPR metrics, not {metric!r}")
        wanted = {metric: None}
    values = _bootstrap_stats(m, n, wanted, n_resamples, seed)[metric]
    return _percentile_interval(values, confidence)


def leakage_interval(auc_ci: tuple[float, float]) -> tuple[float, float]:
    """CI of the leakage AUC max(AUC, 1 - AUC) from a CI ``[lo, hi]`` of the AUC: its image under that
    map, so it covers whenever the AUC's CI does. The lower end is 0.5 when the AUC's CI holds 0.5."""
    lo, hi = float(auc_ci[0]), float(auc_ci[1])
    return max(lo, 1.0 - hi, 0.5), max(hi, 1.0 - lo)


def simultaneous_lower(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    *,
    confidence: float,
    n_resamples: int,
    seed: int = 0,
) -> dict[str, float]:
    """Lower ends of percentile-bootstrap intervals at ``confidence``, both directions, one set of resamples.

    ``auc`` and ``tpr_at_1pct_fpr`` of the attack as scored, ``flipped_auc`` (= 1 - the AUC interval's
    upper end) and ``flipped_tpr_at_1pct_fpr`` of the sign-flipped attack. Each equals the matching
    ``bootstrap_ci(..., confidence=confidence, seed=seed)`` end: the resamples depend only on the seed.
    A caller that picks the largest of several such bounds chooses ``confidence`` for the whole family
    (the verdict: Bonferroni over attacks x 2 directions x 2 figures).
    """
    m, n = _pair(member_scores, nonmember_scores)
    n_resamples, confidence = _check_bootstrap_args(n_resamples, confidence)
    wanted: dict[str, float | None] = {"auc": None, "tpr": 0.01, _FLIPPED + "tpr": 0.01}
    boot = _bootstrap_stats(m, n, wanted, n_resamples, _check_seed(seed))
    auc_lo, auc_hi = _percentile_interval(boot["auc"], confidence)
    return {
        "auc": auc_lo,
        "tpr_at_1pct_fpr": _percentile_interval(boot["tpr"], confidence)[0],
        "flipped_auc": 1.0 - auc_hi,
        "flipped_tpr_at_1pct_fpr": _percentile_interval(boot[_FLIPPED + "tpr"], confidence)[0],
    }


def _fpr_key(alpha: float) -> str:
    return f"tpr@{alpha * 100:g}%fpr"


def repeated_subsets(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    n_subsets: int = 100,
    subset_size: int = 500,
    seed: int = 0,
    fprs: tuple[float, ...] = (0.01,),
) -> dict[str, tuple[float, float]]:
    """Mean and sample std (ddof=1) of each metric over ``n_subsets`` random evaluation subsets.

    The thesis protocol (chapter 7): each subset holds ``subset_size`` members and ``subset_size``
    non-members, drawn without replacement within the subset, independently across subsets. This
    measures how much a figure would move if a paper had evaluated on a different 500 + 500 images,
    which is the spread that matters when comparing against published numbers at that size.

    Returns ``{"auc": (mean, std), "tpr@1%fpr": (mean, std), "asr": (mean, std)}`` for the default
    ``fprs=(0.01,)``; one ``"tpr@{100*alpha:g}%fpr"`` key per entry of ``fprs``. ``asr`` is the
    best balanced accuracy within each subset.
    """
    m, n = _pair(member_scores, nonmember_scores)
    seed = _check_seed(seed)
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, (int, np.integer)) or n_subsets < 2:
        raise GenleakError(f"n_subsets must be an integer >= 2 (a std needs two subsets), got {n_subsets!r}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, (int, np.integer)) or subset_size < 1:
        raise GenleakError(f"subset_size must be a positive integer, got {subset_size!r}")
    if m.size < subset_size or n.size < subset_size:
        raise GenleakError(
            f"subset_size={subset_size} needs at least {subset_size} scores on each side; "
            f"have {m.size} members and {n.size} non-members"
        )
    wanted: dict[str, float | None] = {"auc": None}
    for alpha in fprs:
        wanted[_fpr_key(_check_fpr(alpha, "fprs entry"))] = float(alpha)
    wanted["asr"] = None

    thr, pos_m_all, pos_n_all = _pool(m, n)
    rng_m, rng_n = _child_rngs(seed)
    k = int(subset_size)
    rows = _rows_per_chunk(m.size, n.size, thr.size)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in wanted}
    for start in range(0, n_subsets, rows):
        b = min(rows, n_subsets - start)
        # Without replacement: the k smallest of i.i.d. uniform keys are a uniform random k-subset.
        idx_m = np.argpartition(rng_m.random((b, m.size)), k - 1, axis=1)[:, :k]
        idx_n = np.argpartition(rng_n.random((b, n.size)), k - 1, axis=1)[:, :k]
        res = _stats_from_positions(pos_m_all[idx_m], pos_n_all[idx_n], thr.size, wanted)
        for key, v in res.items():
            parts[key].append(v)
    out: dict[str, tuple[float, float]] = {}
    for key, chunks in parts.items():
        v = np.concatenate(chunks)
        out[key] = (float(v.mean()), float(v.std(ddof=1)))
    return out


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricReport:
    """The standard set of figures genleak reports for one attack on one split.

    ``asr`` is ``best_balanced_accuracy`` (oracle threshold, comparable with SecMI/PIA). CIs are
    95% percentile-bootstrap intervals, or None when ``evaluate`` ran without bootstrap. The last
    six fields are the two-sided view (module docstring): ``leakage_auc`` = max(AUC, 1 - AUC), the
    direction that leaks, and the sign-flipped attack's TPRs (its AUC is 1 - ``auc``).
    """

    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    tpr_at_0_fpr: float
    asr: float
    n_members: int
    n_nonmembers: int
    auc_ci: tuple[float, float] | None
    tpr_at_1pct_fpr_ci: tuple[float, float] | None
    leakage_auc: float
    leak_direction: str  # "direct" (AUC >= 0.5) or "flipped" (members score lower)
    leakage_auc_ci: tuple[float, float] | None
    flipped_tpr_at_1pct_fpr: float
    flipped_tpr_at_01pct_fpr: float
    flipped_tpr_at_1pct_fpr_ci: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain floats/ints, CIs as 2-element lists or None), keys = field names."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or isinstance(v, str):
                out[f.name] = v
            elif isinstance(v, tuple):
                out[f.name] = [float(x) for x in v]
            elif f.name.startswith("n_"):
                out[f.name] = int(v)
            else:
                out[f.name] = float(v)
        return out


def evaluate(
    member_scores: ArrayLike, nonmember_scores: ArrayLike, *, bootstrap: int = 0, seed: int = 0
) -> MetricReport:
    """All standard figures at once; ``bootstrap`` > 0 adds 95% CIs from that many resamples.

    The CIs come from one shared set of resamples and equal
    ``bootstrap_ci(..., n_resamples=bootstrap, seed=seed)`` for "auc" and for the two TPR metrics at
    1%; the leakage AUC's CI is ``leakage_interval`` of the AUC's.
    """
    m, n = _pair(member_scores, nonmember_scores)
    seed = _check_seed(seed)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise GenleakError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    if bootstrap == 1:
        raise GenleakError("bootstrap must be 0 (no CIs) or >= 2 resamples, got 1")
    wanted: dict[str, float | None] = {
        "auc": None,
        "tpr_1": 0.01,
        "tpr_01": 0.001,
        "tpr_0": 0.0,
        "asr": None,
        _FLIPPED + "tpr_1": 0.01,
        _FLIPPED + "tpr_01": 0.001,
    }
    s = _single_stats(m, n, wanted)
    auc_ci = tpr_ci = flip_ci = None
    if bootstrap:
        wanted_ci: dict[str, float | None] = {"auc": None, "tpr": 0.01, _FLIPPED + "tpr": 0.01}
        boot = _bootstrap_stats(m, n, wanted_ci, int(bootstrap), seed)
        auc_ci = _percentile_interval(boot["auc"], 0.95)
        tpr_ci = _percentile_interval(boot["tpr"], 0.95)
        flip_ci = _percentile_interval(boot[_FLIPPED + "tpr"], 0.95)
    return MetricReport(
        auc=s["auc"],
        tpr_at_1pct_fpr=s["tpr_1"],
        tpr_at_01pct_fpr=s["tpr_01"],
        tpr_at_0_fpr=s["tpr_0"],
        asr=s["asr"],
        n_members=int(m.size),
        n_nonmembers=int(n.size),
        auc_ci=auc_ci,
        tpr_at_1pct_fpr_ci=tpr_ci,
        leakage_auc=max(s["auc"], 1.0 - s["auc"]),
        leak_direction="direct" if s["auc"] >= 0.5 else "flipped",
        leakage_auc_ci=leakage_interval(auc_ci) if auc_ci else None,
        flipped_tpr_at_1pct_fpr=s[_FLIPPED + "tpr_1"],
        flipped_tpr_at_01pct_fpr=s[_FLIPPED + "tpr_01"],
        flipped_tpr_at_1pct_fpr_ci=flip_ci,
    )


def fpr_resolution_warning(n_nonmembers: int, max_fpr: float) -> str | None:
    """Warn when ``n_nonmembers`` is too small for TPR@``max_fpr`` to be anything but TPR@0%FPR.

    With n non-members the smallest non-zero FPR is 1/n; if 1/n > max_fpr, no false positive fits
    in the budget and the reported figure is silently TPR at FPR = 0. Returns None when the budget
    admits at least one false positive, and for ``max_fpr == 0`` (TPR@0%FPR is meant literally).
    """
    if isinstance(n_nonmembers, bool) or not isinstance(n_nonmembers, (int, np.integer)) or n_nonmembers < 0:
        raise GenleakError(f"n_nonmembers must be a non-negative integer, got {n_nonmembers!r}")
    alpha = _check_fpr(max_fpr)
    if alpha == 0.0:
        return None
    if n_nonmembers > 0 and _max_false_positives(int(n_nonmembers), alpha) >= 1:
        return None
    needed = max(1, math.ceil(1.0 / alpha))
    while needed > 1 and 1.0 / (needed - 1) <= alpha:  # float-consistent with tpr_at_fpr
        needed -= 1
    while 1.0 / needed > alpha:
        needed += 1
    return (
        f"TPR@{alpha * 100:g}%FPR needs >= {needed} non-members; have {n_nonmembers}: "
        "the figure is TPR at FPR=0"
    )
