"""The encoder behind the API: wrap whatever ``torch.nn.Module`` the owner has, or train a small one.

Like Opacus wraps the user's model instead of asking for a special one, :class:`Encoder` wraps any
module that maps a float batch ``(N, C, H, W)`` in [0, 1] to embeddings ``(N, D)``. A saved encoder is
a folder with ``config.json`` (the registered architecture's name and constructor arguments, input
shape, embedding size, weight fingerprint) and ``model.safetensors`` (the weights). Loading a folder
never runs code from it: JSON and safetensors hold only data, and the module is rebuilt from a class
registered in this process (:func:`register_architecture`, or the ``genleak.b4b_architectures``
entry point group of an installed package). Pickle-based formats (``torch.export``'s ``model.pt2``,
``torch.save``) are refused: unpickling a file received from someone else runs their code.

The offline default victim is :class:`SmallConvEncoder` trained with SimCLR's InfoNCE (NT-Xent) on the
broad ``world`` distribution of :mod:`genleak.b4b.data`: a self-supervised encoder like the SimSiam /
DINO victims of Section 6.4, at a size two CPU cores train in about a minute.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from genleak.errors import GenleakError
from genleak.io import atomic_path, atomic_write_json

META_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Folders written before the architecture registry: the same JSON + safetensors under other names
# (still read), or a torch.export "model.pt2" (refused, it is a pickle).
LEGACY_META_FILE, LEGACY_WEIGHTS_FILE = "encoder.json", "weights.safetensors"
ENTRY_POINT_GROUP = "genleak.b4b_architectures"


class SmallConvEncoder(nn.Module):
    """A 4-layer CNN for small grayscale images; the output is the representation the API returns.

    With ``normalize=True`` (the victim) the representation is L2-normalised, like the output of a
    contrastive encoder: InfoNCE then spreads the training data over the sphere, and B4B's
    hyperplanes through the origin hash directions. Stolen copies use ``normalize=False`` so they can
    regress onto whatever (transformed, noisy) vectors the API returned.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, embed_dim: int = 64, normalize: bool = False) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "width": width, "embed_dim": embed_dim, "normalize": normalize}
        self.normalize = normalize
        w = width

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, w, 1), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1), *block(2 * w, 4 * w, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(4 * w, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(self.features(x))
        return F.normalize(z, dim=1) if self.normalize else z


ARCHITECTURES: dict[str, type[nn.Module]] = {"genleak-small-cnn": SmallConvEncoder}


def register_architecture(name: str, cls: type[nn.Module]) -> None:
    """Allow encoder folders naming ``name`` to be rebuilt as ``cls(**config)``.

    ``cls`` must be an ``nn.Module`` subclass whose constructor takes JSON-able keyword arguments;
    an instance saved with :meth:`Encoder.save` stores them from its ``config`` attribute (a dict;
    no attribute means no arguments). Installed packages can register for every process, including
    ``b4b serve --workers N``, with an entry point in the ``genleak.b4b_architectures`` group.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise GenleakError(f"architecture {name!r} must be an nn.Module subclass, got {cls!r}")
    ARCHITECTURES[name] = cls


def architecture(name: str) -> type[nn.Module]:
    """The class registered as ``name`` (here or by an installed package's entry point)."""
    if name not in ARCHITECTURES:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            register_architecture(name, ep.load())
    if name not in ARCHITECTURES:
        raise GenleakError(f"encoder architecture {name!r} is not registered (known: {sorted(ARCHITECTURES)}); "
                           "call genleak.b4b.encoder.register_architecture() or install the package that provides it")
    return ARCHITECTURES[name]


class Encoder:
    """A frozen embedding model: ``embed(images) -> (N, D)`` float32, thread-safe for inference.

    Args:
        module: any ``torch.nn.Module`` mapping ``(N, *input_shape)`` floats in [0, 1] to ``(N, D)``.
            To :meth:`save` it, its class must be registered (:func:`register_architecture`).
        input_shape: ``(C, H, W)`` the module expects; the API rejects anything else.
        name: a label for logs and ``config.json``.
        meta: extra JSON-able metadata stored next to the weights (training config, data, ...).
    """

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int], *, name: str = "custom",
                 meta: dict[str, Any] | None = None) -> None:
        if len(input_shape) != 3:
            raise GenleakError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        module.eval()
        self.module = module
        self.input_shape = tuple(int(s) for s in input_shape)
        self.name = name
        self.meta = dict(meta or {})
        with torch.inference_mode():
            out = self.module(torch.zeros((2, *self.input_shape)))
        if out.ndim != 2 or out.shape[0] != 2:
            raise GenleakError(f"encoder {name!r} must return (N, D) embeddings, got shape {tuple(out.shape)}")
        self.embed_dim = int(out.shape[1])
        self._fingerprint: str | None = None

    def embed(self, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """Embeddings of ``images`` (N, C, H, W) in [0, 1], computed without gradients, as float32."""
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                outs.append(self.module(x[i:i + batch_size]).float().numpy())
        if not outs:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.concatenate(outs).astype(np.float32, copy=False)

    def fingerprint(self) -> str:
        """sha256 of the parameters and buffers: the state store refuses a different model later."""
        if self._fingerprint is None:
            h = hashlib.sha256(repr(self.input_shape).encode())
            for k, v in sorted(self.module.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    # ----------------------------------------------------------------------------------- save/load
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Save to a folder: ``model.safetensors`` and ``config.json`` naming the registered architecture."""
        from safetensors.torch import save_file

        names = [n for n, cls in ARCHITECTURES.items() if type(self.module) is cls]
        if not names:
            raise GenleakError(f"cannot save encoder {self.name!r}: its module class {type(self.module).__name__} is not a "
                               "registered architecture; call genleak.b4b.encoder.register_architecture(name, cls) first")
        directory = Path(directory)
        meta: dict[str, Any] = {
            "architecture": names[0], "config": dict(getattr(self.module, "config", {})), "name": self.name,
            "input_shape": list(self.input_shape), "embed_dim": self.embed_dim, "fingerprint": self.fingerprint(),
            "meta": self.meta,
        }
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file({k: v.detach().contiguous() for k, v in self.module.state_dict().items()}, str(tmp))
        # config.json last: a folder is only loadable once its weights are complete.
        atomic_write_json(directory / META_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Encoder:
        """Load an encoder folder written by :meth:`save` (or by ``genleak b4b train-encoder``).

        Only JSON and safetensors are read; the module is built from the registered architecture.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path, weights = directory / META_FILE, directory / WEIGHTS_FILE
        if not meta_path.is_file() and (directory / LEGACY_META_FILE).is_file():
            meta_path, weights = directory / LEGACY_META_FILE, directory / LEGACY_WEIGHTS_FILE
        if not meta_path.is_file():
            raise GenleakError(f"{directory} is not an encoder folder (no {META_FILE}); "
                               "create one with `genleak b4b train-encoder --out DIR` or Encoder.save()")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") == "torch-export":
                raise GenleakError(f"{directory} holds a torch.export model.pt2, which genleak no longer loads: it is "
                                   "unpickled, so a crafted file runs code. Re-save the module with Encoder.save() "
                                   "as a registered architecture (config.json + model.safetensors)")
            arch = "genleak-small-cnn" if meta.get("format") == "genleak-small-cnn" else meta["architecture"]
            config, shape = dict(meta.get("config") or {}), tuple(meta["input_shape"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise GenleakError(f"{meta_path} is not a valid encoder config ({err!r}); re-save the encoder") from err
        try:
            module = architecture(arch)(**config)
            module.load_state_dict(load_file(str(weights)))
        except (SafetensorError, OSError, RuntimeError, TypeError, ValueError) as err:
            raise GenleakError(f"{directory}: cannot load {weights.name} into architecture {arch!r} ({err}); "
                               "the folder is corrupt or half-written, re-save the encoder") from err
        enc = cls(module, shape, name=meta.get("name", directory.name), meta=meta.get("meta"))
        if meta.get("fingerprint") and meta["fingerprint"] != enc.fingerprint():
            raise GenleakError(f"{directory}: weights do not match the fingerprint in {meta_path.name}; the folder "
                               "is corrupt or half-written, re-save the encoder")
        return enc


# --------------------------------------------------------------------------------------- training
def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """SimCLR-style views for 16x16 grayscale: random rotation/scale/shift, contrast, noise, erasing."""
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(20)
    scale = 0.8 + 0.4 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=gen)
    bright = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.3
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = (v - mean) * contrast + mean + bright
    v = v + 0.05 * torch.randn(v.shape, generator=gen)
    return v.clamp(0.0, 1.0)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) loss between two batches of paired vectors; also used by the stealer."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def train_simclr_encoder(images: np.ndarray, *, embed_dim: int = 64, width: int = 32, epochs: int = 10,
                         batch_size: int = 256, lr: float = 2e-3, temperature: float = 0.2, seed: int = 0,
                         progress: bool = True) -> Encoder:
    """Train a normalised :class:`SmallConvEncoder` with InfoNCE (SimCLR's NT-Xent) on ``images``.

    Why this victim: the thesis' victims are self-supervised (SimSiam, DINO; Section 6.4). InfoNCE on
    the returned representation itself (no projection head) also makes the training distribution
    spread uniformly over the sphere, the geometry in which bucket coverage separates broad from
    narrow querying (Section 6.3.1, Figure 6.4.1).
    """
    x_all = torch.as_tensor(np.asarray(images, np.float32))
    steps_per_epoch = max(1, len(x_all) // batch_size)

    def loss_step(model: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        return info_nce(model(augment(x_all[idx], gen)), model(augment(x_all[idx], gen)), temperature)

    enc, losses = fit_encoder(lambda: SmallConvEncoder(images.shape[1], width, embed_dim, normalize=True), loss_step,
                              len(x_all), epochs * steps_per_epoch, batch_size, lr, seed, drop_last=True,
                              label="train encoder (InfoNCE)", progress=progress)
    meta = {"trainer": "infonce", "epochs": epochs, "batch_size": batch_size, "lr": lr, "temperature": temperature,
            "seed": seed, "n_images": len(images), "final_loss": round(losses[-1], 5)}
    return Encoder(enc, tuple(images.shape[1:]), name="genleak-infonce-cnn", meta=meta)


def fit_encoder(build: Callable[[], nn.Module], loss_step: Callable[..., torch.Tensor], n: int, steps: int,
                batch_size: int, lr: float, seed: int, *, drop_last: bool, label: str,
                progress: bool) -> tuple[nn.Module, list[float]]:
    """Train ``build()`` (made after seeding torch with ``seed``) on the one trainer with AdamW and a
    one-cycle learning rate: epoch-wise batches of ``n`` rows (``drop_last``: only full batches),
    ``loss_step(model, rows, step, generator)``. Returns the module in eval mode and the losses."""
    from genleak.train.loop import LoopConfig, make_accelerator, run_loop

    loop = LoopConfig(steps, batch_size, seed, drop_last=drop_last)
    accelerator = make_accelerator(loop, cpu=True)  # the images stay on the CPU, as the encoder does
    torch.manual_seed(seed)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    model, losses, _ = run_loop(model, opt, loop, loss_step, accelerator=accelerator, n=n, lr_scheduler=sched,
                                desc=label, progress=progress)
    return model.eval(), losses
