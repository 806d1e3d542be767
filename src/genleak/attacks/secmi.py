"""SecMI_stat t-error (Duan et al. 2023; DualMD paper appendix A.1, eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource, register_attack
from genleak.targets.base import Target, ddim_invert, ddim_step


@dataclass(frozen=True)
class SecMIConfig(AttackConfig):
    # t_sec = 100 and step interval k = 10 are the defaults of the public SecMI code used by the
    # DualMD paper (appendix A.2.3: "codebase and default settings of SecMIA").
    t_sec: int = 100
    interval: int = 10


@register_attack
class SecMIAttack(Attack):
    """Score = -||psi(phi(x~_t, t), t) - x~_t||^2 with x~_t = Phi(x_0, t) the DDIM inversion.

    Phi inverts 0 -> t_sec in steps of ``interval`` (t_sec / interval queries); phi is one more
    inversion step t_sec -> t_sec + interval and psi the DDIM denoising step back (2 queries).
    """

    name = "secmi"
    access = Access.GRAY_BOX
    config_class = SecMIConfig
    paper = "Duan et al. 2023, 'Are diffusion models vulnerable to membership inference attacks?'"

    def __init__(self, config: SecMIConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        if c.interval < 1 or c.t_sec < c.interval or c.t_sec % c.interval:
            raise ValueError(f"secmi needs t_sec a positive multiple of interval, got t_sec={c.t_sec}, interval={c.interval}")

    @property
    def nfe(self) -> int:
        return self.config.t_sec // self.config.interval + 2

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        t, k = self.config.t_sec, self.config.interval
        if t + k >= target.num_train_timesteps:
            raise ValueError(f"t_sec + interval = {t + k} exceeds the target's {target.num_train_timesteps} timesteps")
        x_t = ddim_invert(target, x0, t, k, cond)
        x_next = ddim_step(target, x_t, t, t + k, cond)
        x_t_hat = ddim_step(target, x_next, t + k, t, cond)
        return -(x_t_hat - x_t).pow(2).flatten(1).sum(1)
