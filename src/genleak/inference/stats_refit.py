"""The minimum-|P| curve with the scoring model refitted on every resample (supplement C.5, and the
authors' ``experiments/cdi_perf.py``): at size n each resample draws n suspect and m reference
samples and runs the whole k-fold StandardScaler + LogisticRegression scorer on them alone, which is
what an owner holding only those samples gets. The cheaper fixed-scorer curve (``stats.resampled_curve``)
reuses out-of-fold scores of one scorer trained on all of P and U and so overstates power at small n.

Speed: every resample of one size has the same shapes, so all of them (in memory-bounded chunks) are
fitted together by damped Newton steps on per-resample design matrices: the objective is
scikit-learn's ``LogisticRegression(C=1, class_weight="balanced")`` (tested equal). Large sizes get
fewer resamples when ``budget`` rows per size would be exceeded (``resamples_at``); each point says
how many it used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special

from genleak.inference.stats import Alternative, reference_size, ttest_power
from genleak.results import CurvePoint

# Rows (suspect + reference samples) refitted per size: 1000 resamples up to |P| + |U| = 4000, then
# budget / (|P| + |U|); about 10 s per size on one CPU thread with 14 feature columns.
DEFAULT_REFIT_BUDGET = 4_000_000
MIN_REFIT_RESAMPLES = 100  # below this the mean p at one size is too noisy to compare with alpha
# Sequential stop: after SETTLE_AFTER resamples (then after every further block of that many), a size
# stops once its mean p is more than SETTLE_SE standard errors from alpha: the minimum-|P| decision
# at that size is then settled (a wrong side has probability ~6e-5), and sizes far from alpha (most of
# the grid) cost a fifth of 1000 refits. Sizes near alpha run all their resamples.
SETTLE_AFTER = 200
SETTLE_SE = 4.0
_CHUNK_ELEMENTS = 2_000_000  # floats of one chunk's design matrices (memory bound, ~16 MB)


def resamples_at(n: int, m: int, n_resamples: int, budget: int) -> int:
    """Resamples used at |P| = n, |U| = m: all ``n_resamples`` while (n + m) x n_resamples fits in
    ``budget``, otherwise budget / (n + m), but never fewer than MIN_REFIT_RESAMPLES."""
    return int(min(n_resamples, max(MIN_REFIT_RESAMPLES, budget // (n + m))))


def fit_logistic_stacked(
    x: np.ndarray, y: np.ndarray, *, C: float = 1.0, theta0: np.ndarray | None = None, max_iter: int = 100,
    tol: float = 1e-4,
) -> np.ndarray:
    """L2-penalised logistic regressions with balanced class weights, one per design matrix x[b]
    (x: (B, n, k), labels y: (n,) shared). Same objective as ``scoring.fit_logistic_batched``
    (intercept unpenalised); returns (B, k + 1): coefficients, then the intercept. ``theta0`` is a
    starting point only (the objective is convex). Newton converges quadratically here (measured: error
    1e-2, 1e-4, 1e-8, 1e-14 after steps 1-4), so stopping once a step is below ``tol`` = 1e-4 leaves
    the coefficients within ~1e-8 of the optimum, far below anything that moves a p-value."""
    b, n, k = x.shape
    xt = np.concatenate([x, np.ones((b, n, 1))], 2)
    n_pos = float(y.sum())
    s = np.where(y > 0, n / (2.0 * n_pos), n / (2.0 * (n - n_pos)))
    reg = np.ones(k + 1)
    reg[-1] = 0.0
    sign = np.where(y > 0, 1.0, -1.0)
    theta = np.zeros((b, k + 1)) if theta0 is None else theta0.copy()
    z = np.matmul(xt, theta[..., None])[..., 0]

    def objective(th: np.ndarray, z: np.ndarray) -> np.ndarray:
        m = sign * z  # softplus(-m), written with one exp and one log1p (faster than np.logaddexp)
        return 0.5 * (th[:, :-1] ** 2).sum(1) + C * (s * (np.log1p(np.exp(-np.abs(m))) + np.maximum(-m, 0.0))).sum(1)

    f = objective(theta, z)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        grad = C * np.matmul((s * (p - y))[:, None, :], xt)[:, 0] + theta * reg
        hess = np.matmul(xt.transpose(0, 2, 1) * (C * s * p * (1.0 - p))[:, None, :], xt) + np.diag(reg)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        t = np.ones(b)
        for _ in range(30):  # backtracking per resample: never uphill on a convex objective
            cand = theta - t[:, None] * step
            z_new = np.matmul(xt, cand[..., None])[..., 0]  # reused as the next iteration's z
            f_new = objective(cand, z_new)
            bad = f_new > f + 1e-12 * np.abs(f)
            if not bad.any():
                break
            t = np.where(bad, 0.5 * t, t)
        theta, z, f = cand, z_new, f_new
        if np.abs(t[:, None] * step).max() < tol:
            break
    return theta


def _oof_scores(xp: np.ndarray, xu: np.ndarray, folds: int, C: float) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold logits of the k-fold scorer for a stack of resamples xp (B, n, k), xu (B, m, k)
    whose rows are already in random order: fold of position i = i mod k (a random partition)."""
    n, m = xp.shape[1], xu.shape[1]
    fp, fu = np.arange(n) % folds, np.arange(m) % folds
    sp, su = np.empty(xp.shape[:2]), np.empty(xu.shape[:2])
    for j in range(folds):
        tr = np.concatenate([xp[:, fp != j], xu[:, fu != j]], 1)
        y = np.concatenate([np.ones(int((fp != j).sum())), np.zeros(int((fu != j).sum()))])
        mean, std = tr.mean(1, keepdims=True), tr.std(1, keepdims=True)
        std = np.where(std > 0, std, 1.0)  # StandardScaler: a constant column keeps scale 1
        theta = fit_logistic_stacked((tr - mean) / std, y, C=C)
        w, c = theta[:, None, :-1], theta[:, None, -1]
        sp[:, fp == j] = (((xp[:, fp == j] - mean) / std) * w).sum(2) + c
        su[:, fu == j] = (((xu[:, fu == j] - mean) / std) * w).sum(2) + c
    return sp, su


def _welch_both(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(one-sided p for mean a > mean b, two-sided p) per row; NaN (both sides constant) -> 1."""
    n1, n2 = a.shape[1], b.shape[1]
    se1, se2 = a.var(1, ddof=1) / n1, b.var(1, ddof=1) / n2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a.mean(1) - b.mean(1)) / np.sqrt(se1 + se2)
        df = (se1 + se2) ** 2 / (se1**2 / (n1 - 1) + se2**2 / (n2 - 1))
    one, two = special.stdtr(df, -t), 2.0 * special.stdtr(df, -np.abs(t))
    return np.nan_to_num(one, nan=1.0), np.nan_to_num(two, nan=1.0)


def refitted_curve(
    features_p: np.ndarray,
    features_u: np.ndarray,
    sizes: Sequence[int],
    *,
    n_resamples: int = 1000,
    alpha: float = 0.01,
    alternative: Alternative = "greater",
    reference_ratio: float | None = None,
    folds: int = 5,
    seed: int = 0,
    budget: int = DEFAULT_REFIT_BUDGET,
    effect_size: float = 0.0,
    C: float = 1.0,
) -> list[CurvePoint]:
    """Mean p-value over resamples at each size with the k-fold scorer refitted on every resample.

    Subsets are independent across sizes (as in the authors' code). A size may stop before its
    resamples once its mean p is settled far from alpha (SETTLE_AFTER, SETTLE_SE); ``resamples`` says
    how many it used. Sizes with fewer than ``folds``
    samples on a side are skipped (the k-fold scorer cannot run). ``power`` is the analytic t-test
    power at ``effect_size`` (Cohen's d of the full-data scores, as in the fixed-scorer curve);
    ``set_mia_tpr`` compares the maximum refitted score of the P and U sets.
    """

    xp, xu = np.asarray(features_p, float), np.asarray(features_u, float)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    out = []
    for n in sorted({int(v) for v in sizes}):
        m = reference_size(n, len(xu), reference_ratio)
        if n < folds or m < folds or n > len(xp):
            continue
        r_n = resamples_at(n, m, n_resamples, budget)
        chunk = max(1, min(SETTLE_AFTER, _CHUNK_ELEMENTS // ((n + m) * (xp.shape[1] + 1))))
        p1, p2, max_p, max_u = [], [], [], []
        done = 0
        while done < r_n:
            rows = min(chunk, r_n - done)
            ip = np.argsort(rng.random((rows, len(xp))), 1)[:, :n]
            iu = np.argsort(rng.random((rows, len(xu))), 1)[:, :m]
            sp, su = _oof_scores(xp[ip], xu[iu], folds, C)
            one, two = _welch_both(sp, su)
            p1.append(one)
            p2.append(two)
            max_p.append(sp.max(1))
            max_u.append(su.max(1))
            done += rows
            if done % SETTLE_AFTER == 0 and done < r_n:
                pv = np.concatenate(p1 if alternative == "greater" else p2)
                if abs(pv.mean() - alpha) > SETTLE_SE * pv.std(ddof=1) / np.sqrt(done):
                    break
        one, two = np.concatenate(p1), np.concatenate(p2)
        out.append(CurvePoint.from_pvalues(
            n, m, one if alternative == "greater" else two, alpha, ttest_power(effect_size, n, m, alpha, alternative),
            np.concatenate(max_p), np.concatenate(max_u), resamples=len(one),
            mean_p_one_sided=float(one.mean()), mean_p_two_sided=float(two.mean())))
    return out
