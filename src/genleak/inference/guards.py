"""Evaluation guards run before any audit (thesis ch. 7 and supplement C.4.3).

MIA and dataset-inference numbers only measure membership when P and U come from the same
distribution. If they do not (other camera, other year, brightened, re-encoded), *any* classifier
tells them apart and the audit "detects" the shift, not the training set. Two checks:

* a **blind classifier**: a model-free logistic regression on simple image statistics (per-channel
  mean/std, intensity histogram, gradient energy, FFT band energies), cross-validated; its AUC should
  be ~0.5. When it is significantly above 0.5, DI/MIA results are not evidence of membership
  (ch. 7: "blind" baselines beat published MIAs on shifted benchmarks).
* **duplicates** between P and U: an exact duplicate is a sample claimed both published and
  unpublished and is refused; near-duplicates (small pixel distance) are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genleak.errors import DataError

# Blind-classifier alarm: its permutation p-value below 0.01, the alpha of the CDI test it guards
# (ch. 8.4.3): a shift the blind classifier detects at CDI's own bar is one CDI's scorer can detect
# too. A fixed AUC cut-off would fire on noise at 30 samples (AUC sd ~0.07) and miss shifts that
# matter at 10,000 (sd ~0.004).
BLIND_ALPHA = 0.01
# Near-duplicate threshold: RMS pixel distance in [-1, 1] units on images area-downsampled to at
# most 32x32. 0.05 is 2.5% of the range: re-encodes and slight edits stay below it; the closest
# distinct pair among the 1,797 built-in digits is 0.083 (measured).
NEAR_DUPLICATE_RMS = 0.05
_THUMB = 32
_HIST_BINS = 16
_FFT_BANDS = 4


def image_statistics(images: torch.Tensor) -> np.ndarray:
    """Model-free per-image statistics (N, k) for the blind classifier.

    Per channel: mean, std, a 16-bin histogram of values in [-1, 1], mean squared horizontal and
    vertical differences (gradient energy); on the channel-mean image: the fraction of spectral
    energy in 4 radial FFT bands (low to high frequency).
    """
    x = images.detach().to("cpu", torch.float64)
    n, c, h, w = x.shape
    flat = x.flatten(2)
    cols = [flat.mean(2), flat.std(2, unbiased=False)]
    edges = torch.linspace(-1.0, 1.0, _HIST_BINS + 1, dtype=torch.float64)
    idx = torch.bucketize(flat.clamp(-1, 1), edges[1:-1])
    hist = torch.zeros(n, c, _HIST_BINS, dtype=torch.float64).scatter_add_(2, idx, torch.ones_like(flat))
    cols.append((hist / flat.shape[2]).flatten(1))
    if w > 1:
        cols.append((x[..., :, 1:] - x[..., :, :-1]).pow(2).mean((2, 3)))
    if h > 1:
        cols.append((x[..., 1:, :] - x[..., :-1, :]).pow(2).mean((2, 3)))
    gray = x.mean(1)
    power = torch.fft.fft2(gray - gray.mean((1, 2), keepdim=True)).abs().pow(2)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    radius = (fy.pow(2) + fx.pow(2)).sqrt() / math.sqrt(0.5)  # 0 .. 1
    band = torch.clamp((radius * _FFT_BANDS).long(), max=_FFT_BANDS - 1)
    total = power.flatten(1).sum(1).clamp_min(1e-12)
    cols.append(
        torch.stack([(power * (band == b)).flatten(1).sum(1) / total for b in range(_FFT_BANDS)], 1)
    )
    return torch.cat([col.reshape(n, -1) for col in cols], 1).numpy()


@dataclass(frozen=True)
class BlindResult:
    """Cross-validated AUC of a model-free P-vs-U classifier and whether it signals a shift."""

    auc: float
    p_value: float  # exact within-fold permutation p-value (one-sided: P scores higher than U)
    shift_detected: bool
    n_suspect: int
    n_reference: int
    n_features: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "p_value": self.p_value,
            "shift_detected": self.shift_detected,
            "n_suspect": self.n_suspect,
            "n_reference": self.n_reference,
            "n_features": self.n_features,
            "statistics": "per-channel mean/std, 16-bin histogram, gradient energy, 4 FFT band energies",
        }

    def message(self) -> str:
        return (
            f"DISTRIBUTION SHIFT: a model-free classifier on simple image statistics separates P from U "
            f"with cross-validated AUC {self.auc:.3f} (p = {self.p_value:.2g}); MIA/CDI results on these "
            "sets measure the shift, not membership. Use a U drawn from the same source as P."
        )


def blind_classifier(
    images_p: torch.Tensor,
    images_u: torch.Tensor,
    *,
    folds: int = 5,
    seed: int = 0,
    permutations: int = 199,
    max_images: int = 2000,
) -> BlindResult:
    """The blind baseline: CDI's own scoring procedure (k-fold StandardScaler + logistic regression)
    on ``image_statistics`` instead of model features.

    Reports the out-of-fold AUC (``genleak.metrics.auc``) and decides with the exact within-fold
    permutation p-value of the out-of-fold Welch statistic (``scoring.permutation_test``): a normal
    approximation of the cross-validated AUC fired on 4-8% of i.i.d. draws at 32-64 images per side
    instead of 1% (measured on the digits), for the reason explained in ``scoring``. At most
    ``max_images`` random images per side are used (a shift that matters shows on 2,000).
    """
    from genleak.inference.scoring import cross_val_scores, permutation_test
    from genleak.metrics import auc

    rng = np.random.default_rng(seed)
    xp, xu = image_statistics(images_p), image_statistics(images_u)
    if len(xp) > max_images:
        xp = xp[np.sort(rng.choice(len(xp), max_images, replace=False))]
    if len(xu) > max_images:
        xu = xu[np.sort(rng.choice(len(xu), max_images, replace=False))]
    n1, n2 = len(xp), len(xu)
    k = min(folds, n1, n2)
    if k < 2:
        raise DataError(f"the blind classifier needs at least 2 images per side, got {n1} and {n2}")
    oof = cross_val_scores(xp, xu, folds=k, seed=seed)
    value = auc(oof.scores_p, oof.scores_u)
    test = permutation_test(xp, xu, oof.folds_p, oof.folds_u, n_permutations=permutations, seed=seed)
    return BlindResult(
        auc=float(value),
        p_value=float(test.p_value),
        shift_detected=bool(test.p_value < BLIND_ALPHA),
        n_suspect=n1,
        n_reference=n2,
        n_features=xp.shape[1],
    )


@dataclass
class DuplicateReport:
    """Exact and near duplicates between P and U."""

    exact: list[tuple[str, str]] = field(default_factory=list)  # (suspect id, reference id)
    near: list[tuple[str, str, float]] = field(default_factory=list)  # (suspect id, reference id, rms)
    threshold: float = NEAR_DUPLICATE_RMS
    min_distance: float = math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "exact": len(self.exact),
            "near": len(self.near),
            "threshold_rms": self.threshold,
            "min_rms_distance": None if not math.isfinite(self.min_distance) else self.min_distance,
            "near_examples": [{"suspect": a, "reference": b, "rms": d} for a, b, d in self.near[:20]],
        }


def find_duplicates(
    images_p: torch.Tensor,
    hashes_p: list[str],
    ids_p: list[str],
    images_u: torch.Tensor,
    hashes_u: list[str],
    ids_u: list[str],
    *,
    threshold: float = NEAR_DUPLICATE_RMS,
    chunk: int = 1024,
) -> DuplicateReport:
    """Exact duplicates by sha256 and near-duplicates by RMS distance on <= 32x32 thumbnails.

    Each suspect image is matched with its nearest reference image; pairs closer than ``threshold``
    are near-duplicates (exact ones excluded). Distances are computed in chunks with one matrix
    product per chunk.
    """
    report = DuplicateReport(threshold=threshold)
    where_u = {h: i for i, h in enumerate(hashes_u)}
    for i, h in enumerate(hashes_p):
        if h in where_u:
            report.exact.append((ids_p[i], ids_u[where_u[h]]))
    tp, tu = _thumbnails(images_p), _thumbnails(images_u)
    d = tp.shape[1]
    nu = (tu * tu).sum(1)
    for start in range(0, len(tp), chunk):
        a = tp[start : start + chunk]
        dist2 = ((a * a).sum(1)[:, None] + nu[None, :] - 2.0 * a @ tu.T).clamp_min(0.0) / d
        best, j = dist2.min(1)
        rms = best.sqrt()
        for r in torch.nonzero(rms <= threshold).flatten().tolist():
            i, k = start + r, int(j[r])
            if hashes_p[i] != hashes_u[k]:
                report.near.append((ids_p[i], ids_u[k], float(rms[r])))
        nonexact = [float(rms[r]) for r in range(len(a)) if hashes_p[start + r] != hashes_u[int(j[r])]]
        if nonexact:
            report.min_distance = min(report.min_distance, min(nonexact))
    report.near.sort(key=lambda item: item[2])
    return report


def _thumbnails(images: torch.Tensor) -> torch.Tensor:
    x = images.detach().to("cpu", torch.float64)
    if x.shape[-1] > _THUMB or x.shape[-2] > _THUMB:
        x = torch.nn.functional.adaptive_avg_pool2d(x, (min(_THUMB, x.shape[-2]), min(_THUMB, x.shape[-1])))
    return x.flatten(1)
