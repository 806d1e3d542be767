"""``load_target(folder)``: one entry point that opens any target folder genleak understands.

The CLI (``genleak attack``, ``data inspect``, ``infer``, ...) calls this instead of a specific class so
that a pixel DDPM folder, a Stable-Diffusion-style latent folder, a DualMD folder and an image
autoregressive (IAR) folder all work with the same commands. Detection is by layout only; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genleak.errors import TargetError

__all__ = ["detect_kind", "load_target"]


def detect_kind(folder: str | Path) -> str:
    """``"dualmd"``, ``"iar"`` (image autoregressive, ``genleak train iar``), ``"latent"`` (``vae/`` +
    ``unet/``) or ``"pixel"`` (``unet/`` or a flat model folder)."""
    path = Path(folder)
    if not path.is_dir():
        raise TargetError(f"target folder '{folder}' does not exist; train one with `genleak train ddpm` or pass a diffusers folder")
    if (path / "dualmd.json").is_file():
        return "dualmd"
    from genleak.iar.target import is_iar_folder

    if is_iar_folder(path):
        return "iar"
    from genleak.targets.latent import is_latent_folder

    if is_latent_folder(path):
        return "latent"
    index = path / "model_index.json"
    if index.is_file():
        try:
            entries = json.loads(index.read_text())
        except json.JSONDecodeError:
            entries = {}
        if "vae" in entries or "vqvae" in entries:
            raise TargetError(f"'{folder}' lists a VAE in model_index.json but has no vae/config.json and unet/config.json")
    return "pixel"


def load_target(
    folder: str | Path, device: str | torch.device | None = None, *, guidance_scale: float | None = None
) -> Any:
    """Open a target folder as the matching genleak target.

    ``guidance_scale`` sets the CFG scale of text-conditioned latent targets (default: the folder's
    ``genleak_latent.json``, else 1 = conditional only); other targets reject a scale != 1.
    """
    kind = detect_kind(folder)
    if kind == "latent":
        from genleak.targets.latent import LatentDiffusionTarget

        return LatentDiffusionTarget.from_pretrained(folder, device=device, guidance_scale=guidance_scale)
    if guidance_scale not in (None, 1.0):
        raise TargetError(f"'{folder}' is a {kind} target without text conditioning; --guidance-scale applies to text-to-image targets")
    if kind == "iar":
        from genleak.iar.target import load_iar_target

        return load_iar_target(folder, device=device)
    if kind == "dualmd":
        from genleak.defenses.dualmd import DualTarget

        return DualTarget.from_pretrained(folder, device=device)
    from genleak.targets.ddpm import DiffusionTarget

    return DiffusionTarget.from_pretrained(folder, device=device)
