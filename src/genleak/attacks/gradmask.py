"""Gradient Masking (GM): degrade the inputs the loss is most sensitive to, then ask the model to
restore them (CDI thesis ch. 8.4.1, after the "Degrade, Restore, Compare" idea of Fu et al.).

For each timestep t: g = |d L(x_t, t, eps) / d x_t| with L = ||eps - eps_theta(x_t, t)||^2; M marks
the top 20% entries of g (per sample); the degraded input is x^ = eps * M + x_0 * (1 - M); the
feature is the restoration error on the masked entries, ||((eps - x_0) - eps_theta(x^, t)) * M||^2
(mean over masked entries), which is lower for members. As in the authors' public implementation
the replacement is applied to the clean input x_0 (the chapter's notation writes z_t for the
latent) and one noise draw is shared by all timesteps. Needs gradients: white-box (table C.14.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import (
    Access,
    Attack,
    AttackConfig,
    NoiseSource,
    at_timesteps,
    repeat_cond,
)
from genleak.targets.base import Target, q_sample


@dataclass(frozen=True)
class GradMaskConfig(AttackConfig):
    # Top 20% mask: thesis ch. 8.4.1 ("a binary mask M for the top 20% values in g"). The chapter
    # computes GM "at multiple diffusion timesteps" without listing them; we use the ten timesteps
    # of Multiple Loss (t = 0, 100, ..., 900; fig. C.20.4 plots GM and ML on the same t axis).
    timesteps: tuple[int, ...] = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900)
    mask_fraction: float = 0.2


class GradMaskAttack(Attack):
    """Columns ``gradmask@t<t>`` = -(masked restoration error) per timestep (higher = member, as the
    thesis expects). Measured on the tiny overfit DDPM the orientation holds at t = 200..600 (AUC up
    to 0.78) and flips at t <= 100 (0.45, 0.35); CDI's scoring model learns a weight per column."""

    name = "gradmask"
    access = Access.WHITE_BOX
    config_class = GradMaskConfig
    needs_grad = True
    paper = "Dubinski, Kowalczyk et al. 2025, 'CDI: Copyrighted Data Identification in Diffusion Models' (ch. 8.4.1)"

    def __init__(self, config: GradMaskConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if not self.config.timesteps:
            raise ValueError("gradmask needs at least one timestep")
        if not 0.0 < self.config.mask_fraction <= 1.0:
            raise ValueError(f"gradmask mask_fraction must be in (0, 1], got {self.config.mask_fraction}")

    @property
    def nfe(self) -> int:
        return 2 * len(self.config.timesteps)

    @property
    def n_backward(self) -> int:
        """Backward passes through the denoiser per sample (one input gradient per timestep)."""
        return len(self.config.timesteps)

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}@t{t}" for t in self.config.timesteps]

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        b = x0.shape[0]
        ts = self.config.timesteps
        k = len(ts)
        x0_rep, eps_rep, t_rep = at_timesteps(x0.detach(), noise, ts)
        cond_rep = repeat_cond(cond, k)
        # 1. input gradient of the denoising loss at x_t (per sample: the sum over the batch has
        #    d/dx_t[i] = dL_i/dx_t[i], so batching does not mix samples)
        x_t = q_sample(target, x0_rep, t_rep, eps_rep).detach().requires_grad_(True)
        loss = (target.eps(x_t, t_rep.to(x_t.device), cond_rep) - eps_rep).pow(2).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(loss.sum(), x_t)
        # 2. mask of the top mask_fraction entries of |g| per sample
        flat = grad.detach().abs().flatten(1)
        n_mask = max(1, int(flat.shape[1] * self.config.mask_fraction))
        idx = flat.topk(n_mask, dim=1).indices
        mask = torch.zeros_like(flat).scatter_(1, idx, 1.0).view_as(x0_rep)
        # 3. degrade and restore
        with torch.no_grad():
            degraded = eps_rep * mask + x0_rep * (1 - mask)
            pred = target.eps(degraded, t_rep.to(degraded.device), cond_rep)
            err = (((eps_rep - x0_rep) - pred) * mask).pow(2).flatten(1).sum(1) / n_mask
        return -err.view(b, k)
