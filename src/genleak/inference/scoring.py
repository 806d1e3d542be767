"""The CDI scoring model: standardised features -> logistic regression -> logit (thesis ch. 8.4.2),
fitted with k-fold cross-validation so that every sample of P and U is scored exactly once by a
model that never saw it (ch. 8.5, "we implement a k-fold cross-validation with k = 5").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from genleak.errors import GenleakError

# k = 5 folds: thesis ch. 8.5 ("CDI Setup").
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class OutOfFoldScores:
    """Out-of-fold logits for P and U, and the scoring models' standardised coefficients."""

    scores_p: np.ndarray
    scores_u: np.ndarray
    folds_p: np.ndarray  # fold index of each P sample
    folds_u: np.ndarray
    coef_mean: np.ndarray  # mean over folds of the coefficients on standardised features
    coef_std: np.ndarray


def fold_indices(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each of n samples: a random permutation cut into k near-equal parts."""
    folds = np.empty(n, dtype=np.int64)
    folds[rng.permutation(n)] = np.arange(n) % k
    return folds


def cross_val_scores(
    features_p: ArrayLike,
    features_u: ArrayLike,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    C: float = 1.0,
) -> OutOfFoldScores:
    """k-fold out-of-fold logits of a StandardScaler + LogisticRegression scorer (label 1 = P).

    Fold indices are drawn for P and U with the same procedure and seed (identical index arrays
    when |P| = |U|), and fold j tests P_j and U_j with a scorer trained on the other folds of both.
    ``class_weight="balanced"`` keeps the decision function centred when |U| != |P| (table C.12.1).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xp, xu = _as_matrix(features_p, "suspect"), _as_matrix(features_u, "reference")
    if xp.shape[1] != xu.shape[1]:
        raise GenleakError(f"suspect features have {xp.shape[1]} columns but reference features {xu.shape[1]}")
    if isinstance(folds, bool) or int(folds) < 2:
        raise GenleakError(f"folds must be an integer >= 2, got {folds!r}")
    k = int(folds)
    if xp.shape[0] < k or xu.shape[0] < k:
        raise GenleakError(
            f"{k}-fold cross-validation needs at least {k} suspect and {k} reference samples, "
            f"got {xp.shape[0]} and {xu.shape[0]}; give more samples or lower --folds"
        )
    fp = fold_indices(xp.shape[0], k, np.random.default_rng(seed))
    fu = fold_indices(xu.shape[0], k, np.random.default_rng(seed))
    sp, su = np.empty(xp.shape[0]), np.empty(xu.shape[0])
    coefs = []
    for j in range(k):
        train_x = np.concatenate([xp[fp != j], xu[fu != j]])
        train_y = np.concatenate([np.ones(int((fp != j).sum())), np.zeros(int((fu != j).sum()))])
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=1000, class_weight="balanced")
        )
        model.fit(train_x, train_y)
        sp[fp == j] = model.decision_function(xp[fp == j])
        su[fu == j] = model.decision_function(xu[fu == j])
        coefs.append(model[-1].coef_.ravel().copy())
    c = np.asarray(coefs)
    return OutOfFoldScores(sp, su, fp, fu, c.mean(0), c.std(0))


def _as_matrix(x: ArrayLike, side: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise GenleakError(f"{side} features must be a non-empty (N, k) matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise GenleakError(f"{side} features contain NaN or inf; re-extract them")
    return arr
