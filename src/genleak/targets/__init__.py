"""Targets: adapters that give attacks one view of any generative model, one base class per kind
(``base.PixelDiffusion``, ``base.LatentDiffusion``, ``base.Autoregressive``; see ``base.TargetKind``)."""

from genleak.targets.base import (
    Autoregressive,
    Denoiser,
    LatentDiffusion,
    PixelDiffusion,
    Target,
    TargetKind,
    abar,
    ddim_invert,
    ddim_step,
    predict_x0,
    q_sample,
)
from genleak.targets.ddpm import DiffusionTarget, build_unet, default_scheduler

__all__ = [
    "Autoregressive",
    "Denoiser",
    "DiffusionTarget",
    "LatentDiffusion",
    "PixelDiffusion",
    "Target",
    "TargetKind",
    "abar",
    "build_unet",
    "ddim_invert",
    "ddim_step",
    "default_scheduler",
    "predict_x0",
    "q_sample",
]
