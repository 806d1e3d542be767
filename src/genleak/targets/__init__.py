"""Targets: adapters that give attacks one view of any generative model (see ``base.Target``)."""

from genleak.targets.base import Target, abar, ddim_invert, ddim_step, predict_x0, q_sample
from genleak.targets.ddpm import DiffusionTarget, build_unet, default_scheduler

__all__ = [
    "Target",
    "DiffusionTarget",
    "abar",
    "build_unet",
    "ddim_invert",
    "ddim_step",
    "default_scheduler",
    "predict_x0",
    "q_sample",
]
