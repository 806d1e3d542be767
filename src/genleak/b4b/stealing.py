"""The adversary's and the evaluator's tools: train a stolen copy, remap sybils, probe downstream.

* :func:`train_stolen_encoder` fits a fresh CNN to the representations an account got back, with MSE
  or InfoNCE (the thesis uses InfoNCE for Table 6.4.1, following the stealing setup of [86]).
* :func:`fit_remap` / :func:`apply_remap`: the sybil attacker's linear map from account k's space into
  account 1's, learned on queries both accounts sent (Section 6.4.3, Figure A.6.7).
* :func:`linear_probe_accuracy`: downstream utility, a linear classifier on frozen representations
  (Section 6.4.3, "training a linear classifier on top of them").
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from genleak.b4b.encoder import Encoder, SmallConvEncoder, fit_encoder, info_nce


def train_stolen_encoder(images: np.ndarray, targets: np.ndarray, *, loss: Literal["mse", "infonce"] = "mse",
                         epochs: int = 20, batch_size: int = 128, lr: float = 2e-3, width: int = 32,
                         temperature: float = 0.2, seed: int = 0, progress: bool = True,
                         label: str = "steal") -> Encoder:
    """Train a :class:`SmallConvEncoder` so that ``f(images) ~= targets`` (the returned representations).

    The attacker trains on every answer they paid for, noisy or not: they cannot see sigma (the API
    does not reveal it) and the thesis' attacker does the same (Section 6.4.4). The targets are
    centred first (their mean subtracted): a per-user affine map adds a constant offset that would
    otherwise dominate InfoNCE's cosine similarities, and any attacker can remove it.
    """
    if len(images) != len(targets) or len(images) == 0:
        raise ValueError(f"need as many targets as images (got {len(images)} images, {len(targets)} targets)")
    if loss not in ("mse", "infonce"):
        raise ValueError(f"unknown stealing loss {loss!r}; use 'mse' or 'infonce'")
    x = torch.as_tensor(np.asarray(images, np.float32))
    t = np.nan_to_num(np.asarray(targets, np.float64))
    y = torch.as_tensor((t - t.mean(axis=0)).astype(np.float32))

    def loss_step(model: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        out = model(x[idx])
        if loss == "infonce" and len(idx) > 1:
            return info_nce(out, y[idx], temperature)
        return F.mse_loss(out, y[idx])

    model, _ = fit_encoder(lambda: SmallConvEncoder(x.shape[1], width, y.shape[1]), loss_step, len(x),
                           epochs * max(1, -(-len(x) // batch_size)), batch_size, lr, seed, drop_last=False,
                           label=label, progress=progress)
    return Encoder(model, tuple(x.shape[1:]), name=f"stolen-{label}", meta={"loss": loss, "epochs": epochs})


def fit_remap(source: np.ndarray, target: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Least-squares affine map ``[source, 1] @ M ~= target`` (ridge-regularised), learned on the
    overlapping queries of two sybil accounts (Section 6.4.3)."""
    s = np.hstack([np.asarray(source, np.float64), np.ones((len(source), 1))])
    t = np.asarray(target, np.float64)
    reg = ridge * np.eye(s.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(s.T @ s + reg * len(s), s.T @ t)


def apply_remap(m: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.hstack([np.asarray(x, np.float64), np.ones((len(x), 1))]) @ m).astype(np.float32)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise ``1 - a.b / (|a| |b|)``, the remapping fidelity metric of Section 6.4.3."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return 1.0 - num / den


def whiten(f_train: np.ndarray, f_test: np.ndarray, floor: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whiten both sets with the train statistics, dropping directions with (almost) no variance.

    Whitening maps ``A x + b`` and ``x`` to the same features up to a rotation, for any invertible
    affine ``A``; constants (the Pad/Add transforms) are dropped as zero-variance directions.
    """
    a = np.nan_to_num(np.asarray(f_train, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    b = np.nan_to_num(np.asarray(f_test, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mu = a.mean(axis=0)
    ev, vecs = np.linalg.eigh(np.cov((a - mu).T).reshape(a.shape[1], a.shape[1]))
    keep = ev > floor * max(float(ev.max()), 1e-300)
    w = vecs[:, keep] / np.sqrt(ev[keep])
    return (a - mu) @ w, (b - mu) @ w


def linear_probe_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                          c: float = 0.1) -> float:
    """Test accuracy (in %) of a linear probe: L2 logistic regression on PCA-whitened representations.

    Why whitened: an L2 penalty is rotation-invariant, so after whitening the probe's accuracy is
    exactly the same for ``x`` and any affine ``A x + b`` of it. B4B's per-user affine maps then cost
    a legitimate user nothing by construction, and the LEGIT rows measure the defense's noise, not a
    probe's sensitivity to the basis (a standardise-then-fit probe moved by up to 2 points under a
    random affine map of our victim's embeddings, with no noise at all).
    """
    from sklearn.linear_model import LogisticRegression

    a, b = whiten(f_train, f_test)
    if a.shape[1] == 0:  # constant features: no information
        return 100.0 * float(np.mean(np.asarray(y_test) == np.bincount(np.asarray(y_train)).argmax()))
    clf = LogisticRegression(C=c, max_iter=5000)
    clf.fit(a, y_train)
    return 100.0 * float(clf.score(b, y_test))
