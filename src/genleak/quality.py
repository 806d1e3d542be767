"""Generation quality and memorisation: FID, precision/recall and a nearest-neighbour memorisation rate.

A defense is only useful if the defended model still generates well, so every privacy figure
genleak reports for a defended model comes with these quality figures (DualMD paper, table 2
reports FID and IS next to the attack tables).

Feature space. FID and precision/recall are computed on features of one extractor, the *same*
for every model compared:
  * a user-supplied Inception checkpoint (a TorchScript file such as the ``inception-2015-12-05.pt``
    of the StyleGAN/clean-fid metrics) when one is on disk: images are mapped to [0, 255], gray is
    repeated to RGB, resized to 299 and the 2048-d pool features are used;
  * offline default: ``SmallEncoder``, a small CNN genleak trains itself on reference images (a
    digit classifier's penultimate layer when labels exist, else an autoencoder's bottleneck).
    Nothing is downloaded. Its FID is *not* comparable with published Inception FIDs; it is
    comparable between models scored with the same encoder and the same numbers of images.

Memorisation rate: the fraction of generated images whose nearest training image is closer than
tau (RMS pixel distance in [-1, 1] units). Default tau: half the median distance from a held-out
real image to its nearest training image, i.e. "twice as close to a training image as unseen real
data typically is"; the tau used is always reported. ``nn_ratio`` (median nearest-training-image
distance of the generations / the same for held-out real images) is the softer companion figure:
below 1, generations sit closer to the training set than unseen data does.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genleak.errors import GenleakError
from genleak.io import atomic_path, atomic_write_json

__all__ = [
    "FeatureExtractor",
    "SmallEncoder",
    "TorchScriptExtractor",
    "frechet_distance",
    "load_extractor",
    "memorization_rate",
    "nearest_distances",
    "precision_recall",
    "quality_report",
    "train_encoder",
]

ENCODER_FILE = "encoder.json"
ENCODER_WEIGHTS = "encoder.safetensors"


class SmallEncoder(nn.Module):
    """A 3-conv CNN for small images; ``features(x)`` is the embedding FID and genbox use."""

    def __init__(self, channels: int = 1, width: int = 32, dim: int = 64, n_classes: int = 0, image_size: int = 8) -> None:
        super().__init__()
        self.config = {"channels": channels, "width": width, "dim": dim, "n_classes": n_classes, "image_size": image_size}
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, dim),
        )
        self.head = nn.Linear(dim, n_classes) if n_classes else None
        side = max(image_size // 4, 1)
        self.decoder = None if n_classes else nn.Sequential(
            nn.Linear(dim, 2 * width * side * side), nn.SiLU(), nn.Unflatten(1, (2 * width, side, side)),
            nn.Upsample(size=image_size), nn.Conv2d(2 * width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeatureExtractor:
    """Images in [-1, 1] (NCHW) -> features (N, D) as float64 numpy, batched, no grad."""

    name = "features"

    def __call__(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                out.append(self._embed(images[start : start + batch_size]).double().cpu().numpy())
        return np.concatenate(out).reshape(images.shape[0], -1)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass
class EncoderExtractor(FeatureExtractor):
    """Features of a genleak ``SmallEncoder``."""

    model: SmallEncoder
    source: str = ""
    meta: dict[str, Any] | None = None
    name = "genleak-small-encoder"

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        return self.model.features(x.to(dev, torch.float32))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.source, **(self.meta or {})}

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / ENCODER_WEIGHTS) as tmp:
            save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        atomic_write_json(path / ENCODER_FILE, {"format": "genleak.encoder", "version": 1,
                                                "config": self.model.config, **(self.meta or {})})


@dataclass
class TorchScriptExtractor(FeatureExtractor):
    """A TorchScript feature network, e.g. the Inception-v3 of the FID reference implementations.

    Inputs are converted to what those expect: RGB (gray repeated), values in [0, 255],
    ``resize`` x ``resize`` pixels; ``return_features=True`` is passed when the module accepts it.
    """

    module: Any
    source: str = ""
    resize: int = 299
    name = "torchscript"

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.resize and x.shape[-1] != self.resize:
            x = torch.nn.functional.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        x = ((x + 1) * 127.5).clamp(0, 255)
        try:
            out = self.module(x, return_features=True)
        except (RuntimeError, TypeError):
            out = self.module(x)
        return out.flatten(1)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.source, "resize": self.resize}


def train_encoder(
    images: torch.Tensor,
    labels: Any = None,
    *,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 2e-3,
    dim: int = 64,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> EncoderExtractor:
    """Train the offline default feature extractor on reference images (never on the evaluated members).

    With class labels it is a classifier (features = penultimate layer, like Inception's pool
    features), otherwise an autoencoder (features = bottleneck). Deterministic per ``seed``.
    """
    from tqdm.auto import tqdm

    if images.ndim != 4 or images.shape[0] < 2:
        raise GenleakError(f"encoder training needs at least 2 reference images (N, C, H, W), got {tuple(images.shape)}")
    torch.manual_seed(seed)
    y = None
    n_classes = 0
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        n_classes = int(y.max()) + 1
    model = SmallEncoder(images.shape[1], dim=dim, n_classes=n_classes, image_size=images.shape[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    for _ in tqdm(range(steps), desc="encoder", disable=not progress, leave=False):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        x = images[idx]
        # light augmentation: one-pixel shifts and pixel noise make features robust to small changes
        shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3)) + 0.05 * torch.randn(x.shape, generator=gen)
        feats = model.features(x)
        if model.head is not None:
            loss = nn.functional.cross_entropy(model.head(feats), y[idx])
        else:
            loss = nn.functional.mse_loss(model.decoder(feats), images[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]
    meta = {"kind": "classifier" if n_classes else "autoencoder", "trained_on": int(n), "reference_sha256": digest,
            "steps": steps, "seed": seed, "final_loss": float(loss.item())}
    extractor = EncoderExtractor(model, source=str(out_dir or ""), meta=meta)
    if out_dir is not None:
        extractor.save(out_dir)
    return extractor


def load_extractor(path: str | Path, trust_code: bool = False) -> FeatureExtractor:
    """A genleak encoder folder (``encoder.json`` + safetensors) or, with ``trust_code``, a TorchScript
    file (e.g. an Inception checkpoint). A TorchScript file is a program, not weights: like
    transformers' ``trust_remote_code`` it is only loaded when the caller says they trust it."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        meta_file = p / ENCODER_FILE
        if not meta_file.is_file():
            raise GenleakError(f"'{path}' has no {ENCODER_FILE}; train one with `genleak train encoder`")
        meta = json.loads(meta_file.read_text())
        model = SmallEncoder(**meta["config"])
        model.load_state_dict(load_file(str(p / ENCODER_WEIGHTS)))
        return EncoderExtractor(model.eval(), source=str(p), meta={k: v for k, v in meta.items() if k not in ("format", "version", "config")})
    if p.is_file():
        if not trust_code:
            raise GenleakError(f"'{path}' is a TorchScript file, i.e. code; load it only if you trust its author "
                               "(--trust-torchscript), or use a genleak encoder folder")
        try:
            module = torch.jit.load(str(p), map_location="cpu").eval()
        except RuntimeError as err:
            raise GenleakError(f"'{path}' is not a TorchScript feature extractor ({str(err).splitlines()[0]})") from err
        return TorchScriptExtractor(module, source=str(p))
    raise GenleakError(f"feature extractor '{path}' does not exist (a genleak encoder folder or a TorchScript file)")


# ----------------------------------------------------------------------------------------------- metrics
def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID (Heusel et al. 2017): ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) of Gaussian fits.

    Biased upwards for small n (it depends on n: compare models only at equal numbers of images).
    """
    from scipy import linalg

    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise GenleakError("FID needs at least 2 images on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # singular product: regularise as in the reference implementation
        eps = np.eye(s_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean), 0.0))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2 = (a * a).sum(1)[:, None]
    b2 = (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(a2 + b2 - 2 * a @ b.T, 0.0))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, k = 3 as in the paper).

    Precision: share of generated samples inside the real manifold (union of k-NN balls of real
    features); recall: share of real samples inside the generated manifold.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise GenleakError(f"precision/recall with k={k} needs more than {k} images on each side")

    def radii(x: np.ndarray) -> np.ndarray:
        d = _pairwise(x, x)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    r_real, r_fake = radii(real), radii(fake)
    precision = float((_pairwise(fake, real) <= r_real[None, :]).any(1).mean())
    recall = float((_pairwise(real, fake) <= r_fake[None, :]).any(1).mean())
    return precision, recall


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance from each query to its nearest reference image (both NCHW in [-1, 1])."""
    q = queries.flatten(1).double()
    r = references.flatten(1).double()
    d = torch.cdist(q, r).min(1).values
    return (d / math.sqrt(q.shape[1])).float()


def memorization_rate(generated: torch.Tensor, train: torch.Tensor, tau: float) -> float:
    """Fraction of generated images within RMS distance ``tau`` of some training image."""
    return float((nearest_distances(generated, train) < tau).double().mean())


def quality_report(
    generated: torch.Tensor,
    heldout: torch.Tensor,
    train: torch.Tensor,
    extractor: FeatureExtractor,
    *,
    tau: float | None = None,
    k: int = 3,
) -> dict[str, Any]:
    """FID, precision, recall (vs held-out real images) and memorisation (vs training images).

    ``heldout`` must be real images no compared model was trained on; use the same ``heldout``,
    extractor and number of generated images for every model in one comparison.
    """
    gen_f, real_f = extractor(generated), extractor(heldout)
    precision, recall = precision_recall(real_f, gen_f, k=k)
    heldout_nn = float(nearest_distances(heldout, train).median())
    tau_value = 0.5 * heldout_nn if tau is None else float(tau)
    nn_train = nearest_distances(generated, train)
    return {
        "fid": frechet_distance(real_f, gen_f),
        "precision": precision,
        "recall": recall,
        "memorization_rate": float((nn_train < tau_value).double().mean()),
        "tau": tau_value,
        "median_nn_train_distance": float(nn_train.median()),
        # < 1: generations sit closer to the training images than unseen real images do
        "nn_ratio": float(nn_train.median()) / max(heldout_nn, 1e-12),
        "n_generated": int(generated.shape[0]),
        "n_heldout": int(heldout.shape[0]),
        "extractor": extractor.describe(),
        "k": k,
    }
