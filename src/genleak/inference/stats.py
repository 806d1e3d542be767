"""Statistics of dataset inference: Welch's t-test vectorised over resamples, p-value aggregation,
the minimum-|P| curve, effect size and power (thesis ch. 8.4.3, supplement C.5 and C.17).

Everything here works on per-sample *scores* (the scoring model's out-of-fold logits) and is plain
numpy/scipy: the reference implementation spreads 1000 resamples x every suspect-set size over 80
processes; here one resampling pass draws a random order of P and of U per resample and reads the
t statistic of *every* prefix size off cumulative sums, so the whole grid costs about as much as the
largest size alone (benchmarks/cdi.py: the full grid x 1000 resamples on 10k + 10k scores).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

from genleak.errors import GenleakError
from genleak.results import CurvePoint

Alternative = Literal["greater", "two-sided"]

# alpha = 0.01: thesis ch. 8.4.3 ("rejecting H0 at a significance level alpha = 0.01"), chosen to
# match the TPR@FPR=1% convention of MIAs.
DEFAULT_ALPHA = 0.01
# 1000 resamples aggregated with the arithmetic mean of p-values: supplement C.5.
DEFAULT_RESAMPLES = 1000


def size_grid(max_size: int | None = None) -> list[int]:
    """Suspect-set sizes of the minimum-|P| search: 5..10, 20..100 step 10, 200..1000 step 100,
    2000..10000 step 1000 (the sizes of fig. 8.5.1 and table C.12.1), capped at ``max_size``."""
    grid = (
        list(range(5, 11))
        + list(range(20, 101, 10))
        + list(range(200, 1001, 100))
        + list(range(2000, 10001, 1000))
    )
    if max_size is not None:
        grid = [n for n in grid if n <= max_size]
    return grid


def _check_alternative(alternative: str) -> Alternative:
    if alternative not in ("greater", "two-sided"):
        raise GenleakError(f"alternative must be 'greater' (one-sided, the CDI default) or 'two-sided', got {alternative!r}")
    return alternative  # type: ignore[return-value]


def welch_from_moments(
    mean1: ArrayLike, var1: ArrayLike, n1: ArrayLike, mean2: ArrayLike, var2: ArrayLike, n2: ArrayLike,
    alternative: Alternative = "greater",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t statistic, Welch-Satterthwaite degrees of freedom and p-value, elementwise.

    ``var`` are unbiased sample variances (ddof=1). ``alternative="greater"`` tests
    H0: mean1 <= mean2 (p = P(T >= t)); ``"two-sided"`` tests H0: mean1 == mean2. Equals
    ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=...)`` (tested), including its NaN
    when both variances are zero.
    """
    alternative = _check_alternative(alternative)
    m1, v1, k1 = np.asarray(mean1, float), np.asarray(var1, float), np.asarray(n1, float)
    m2, v2, k2 = np.asarray(mean2, float), np.asarray(var2, float), np.asarray(n2, float)
    se1, se2 = v1 / k1, v2 / k2
    se = se1 + se2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (m1 - m2) / np.sqrt(se)
        df = se**2 / (se1**2 / (k1 - 1) + se2**2 / (k2 - 1))
    if alternative == "greater":
        p = special.stdtr(df, -t)
    else:
        p = 2.0 * special.stdtr(df, -np.abs(t))
    return t, df, p


def welch_ttest(a: ArrayLike, b: ArrayLike, alternative: Alternative = "greater", axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's test of ``a`` against ``b`` along ``axis`` (rows = resamples): (t, df, p)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = a.shape[axis], b.shape[axis]
    if n1 < 2 or n2 < 2:
        raise GenleakError(f"Welch's t-test needs at least 2 scores per side, got {n1} and {n2}")
    return welch_from_moments(
        a.mean(axis), a.var(axis, ddof=1), n1, b.mean(axis), b.var(axis, ddof=1), n2, alternative
    )


def reference_size(n_suspect: int, n_reference_total: int, reference_ratio: float | None) -> int:
    """|U| used next to |P| = n_suspect: ratio x n (table C.12.1's |U|/|P|) or n, capped at |U|."""
    want = n_suspect if reference_ratio is None else max(2, int(round(reference_ratio * n_suspect)))
    return min(want, n_reference_total)


def resampled_curve(
    scores_p: ArrayLike,
    scores_u: ArrayLike,
    sizes: Sequence[int] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    alpha: float = DEFAULT_ALPHA,
    alternative: Alternative = "greater",
    reference_ratio: float | None = None,
    seed: int = 0,
    chunk: int = 250,
) -> list[CurvePoint]:
    """Mean p-value (and power views) over ``n_resamples`` random subsets at each suspect size.

    At size n, a resample draws n scores of P and ``reference_size(n, |U|, reference_ratio)`` of U
    without replacement and runs Welch's test. Each resample draws one random order of P and one of
    U; the subset at size n is the first n of that order, so one resample serves every size (the
    subsets are uniform at each size and nested across sizes: common random numbers, which makes
    the curve smooth without changing any point's distribution). Moments of all prefixes come from
    cumulative sums of the centred scores. The set-level MIA baseline (ch. 8.5.2) scores a set by its
    maximum; its TPR@1%FPR compares the P sets' maxima with the U sets' maxima at the same size.

    Caveat: as n approaches |P| the subsets overlap more and more, so the reject rate and the
    set-level TPR describe this one pool (the set-level threshold is even calibrated on it) rather
    than fresh sets; at n = |P| every resample is the same set.
    """

    alternative = _check_alternative(alternative)
    p = np.asarray(scores_p, float).ravel()
    u = np.asarray(scores_u, float).ravel()
    if p.size < 2 or u.size < 2:
        raise GenleakError(f"need at least 2 suspect and 2 reference scores, got {p.size} and {u.size}")
    if not (np.isfinite(p).all() and np.isfinite(u).all()):
        raise GenleakError("scores contain NaN or inf; the features or the scoring model are broken")
    if isinstance(n_resamples, bool) or int(n_resamples) < 1:
        raise GenleakError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    sizes = sorted({int(n) for n in (size_grid(p.size) if sizes is None else sizes) if 2 <= int(n) <= p.size})
    if not sizes:
        raise GenleakError(f"no suspect-set size between 2 and |P| = {p.size} to test")
    n_u_of = [reference_size(n, u.size, reference_ratio) for n in sizes]
    if min(n_u_of) < 2:
        raise GenleakError("need at least 2 reference samples per resample")
    # centre on the pooled mean: the cumulative sums of squares then stay well conditioned
    centre = 0.5 * (p.mean() + u.mean())
    p, u = p - centre, u - centre
    max_p, max_u = sizes[-1], max(n_u_of)
    d = cohens_d(p, u)
    rng_p, rng_u = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    pvals = np.empty((n_resamples, len(sizes)))
    set_max_p = np.empty((n_resamples, len(sizes)))
    set_max_u = np.empty((n_resamples, len(sizes)))
    idx_p, idx_u = np.asarray(sizes) - 1, np.asarray(n_u_of) - 1
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        sp = _random_prefix(rng_p, p, rows, max_p)
        su = _random_prefix(rng_u, u, rows, max_u)
        mp, vp = _prefix_moments(sp, idx_p)
        mu, vu = _prefix_moments(su, idx_u)
        _, _, pv = welch_from_moments(mp, vp, idx_p + 1, mu, vu, idx_u + 1, alternative)
        pvals[start : start + rows] = pv
        set_max_p[start : start + rows] = np.maximum.accumulate(sp, axis=1)[:, idx_p]
        set_max_u[start : start + rows] = np.maximum.accumulate(su, axis=1)[:, idx_u]
    # NaN p (both sides constant) counts as "no evidence": p = 1
    pvals = np.where(np.isnan(pvals), 1.0, pvals)
    return [CurvePoint.from_pvalues(n, m, pvals[:, j], alpha, ttest_power(d, n, m, alpha, alternative),
                                    set_max_p[:, j], set_max_u[:, j], resamples=int(n_resamples))
            for j, (n, m) in enumerate(zip(sizes, n_u_of))]


def _random_prefix(rng: np.random.Generator, values: np.ndarray, rows: int, length: int) -> np.ndarray:
    """``rows`` random orders of ``values`` truncated to ``length`` (a uniform random subset at every
    prefix length). When length == len(values) every row is all of ``values`` in random order."""
    if length >= values.size:
        order = rng.permuted(np.broadcast_to(np.arange(values.size), (rows, values.size)), axis=1)
    else:
        # the `length` smallest of i.i.d. uniform keys, in key order: a uniformly random ordered subset
        keys = rng.random((rows, values.size))
        part = np.argpartition(keys, length - 1, axis=1)[:, :length]
        order = np.take_along_axis(part, np.argsort(np.take_along_axis(keys, part, axis=1), axis=1), axis=1)
    return values[order]


def _prefix_moments(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance of the prefixes x[:, :k+1] for each k in ``idx``."""
    n = (idx + 1).astype(float)
    s1 = np.cumsum(x, axis=1)[:, idx]
    s2 = np.cumsum(x * x, axis=1)[:, idx]
    mean = s1 / n
    var = np.maximum(s2 - n * mean * mean, 0.0) / np.maximum(n - 1, 1)
    return mean, var


def min_suspect_size(curve: Sequence[CurvePoint], alpha: float = DEFAULT_ALPHA) -> int | None:
    """The smallest size whose mean p-value is below ``alpha`` and stays below at every larger size
    tested (fig. 8.5.2's "minimum size of P needed to reject H0"); None if none does."""
    best = None
    for point in reversed(curve):
        if point.mean_p < alpha:
            best = point.n_suspect
        else:
            break
    return best


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d with the pooled standard deviation (supplement C.17)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = a.size, b.size
    pooled = ((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2)
    if pooled <= 0:
        return 0.0 if a.mean() == b.mean() else math.copysign(math.inf, a.mean() - b.mean())
    return float((a.mean() - b.mean()) / math.sqrt(pooled))


def ttest_power(d: float, n1: int, n2: int, alpha: float = DEFAULT_ALPHA, alternative: Alternative = "greater") -> float:
    """Power of the two-sample t-test at effect size ``d`` (supplement C.17: "the TPR of a statistical
    test is equivalent to its power"; at alpha = 0.01 it is the test's TPR@FPR=1%).

    Noncentral t with df = n1 + n2 - 2 and noncentrality d * sqrt(n1 n2 / (n1 + n2)): the solver
    the thesis uses (statsmodels' TTestIndPower) computes the same quantity.
    """
    if not math.isfinite(d):
        return 1.0 if (d > 0 or alternative == "two-sided") else 0.0
    df = n1 + n2 - 2
    nc = d * math.sqrt(n1 * n2 / (n1 + n2))
    if alternative == "greater":
        crit = stats.t.ppf(1 - alpha, df)
        return float(stats.nct.sf(crit, df, nc))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
