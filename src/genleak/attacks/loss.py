"""Denoising-loss attack (Carlini et al. 2023; CDI thesis ch. 8.3.1 and supplement C.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import (
    Access,
    Attack,
    AttackConfig,
    NoiseSource,
    eps_in_chunks,
    repeat_cond,
)
from genleak.targets.base import Target, q_sample


@dataclass(frozen=True)
class LossConfig(AttackConfig):
    # t = 100 and five noise draws: thesis ch. 8.3.1 item 1 ("computed five times for t = 100").
    t: int = 100
    n_draws: int = 5


class LossAttack(Attack):
    """Score = -mean_k ||eps_k - eps_theta(x_t^k, t)||^2 over ``n_draws`` noise draws."""

    name = "loss"
    access = Access.GRAY_BOX
    config_class = LossConfig
    paper = "Carlini et al. 2023, 'Extracting training data from diffusion models'"

    @property
    def nfe(self) -> int:
        return self.config.n_draws

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        b = x0.shape[0]
        k = self.config.n_draws
        eps = noise.draw(k)  # (B, k, C, H, W)
        x0_rep = x0.unsqueeze(1).expand_as(eps).reshape(b * k, *x0.shape[1:])
        eps_flat = eps.reshape(b * k, *x0.shape[1:])
        x_t = q_sample(target, x0_rep, self.config.t, eps_flat)
        cond_rep = repeat_cond(cond, k)
        pred = eps_in_chunks(target, x_t, self.config.t, cond_rep, chunk=b)
        loss = (pred - eps_flat).pow(2).flatten(1).mean(1).view(b, k).mean(1)
        return -loss

