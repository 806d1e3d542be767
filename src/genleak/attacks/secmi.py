"""SecMI_stat t-error (Duan et al. 2023; DualMD paper appendix A.1, eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource
from genleak.targets.base import Target, ddim_invert, ddim_step


@dataclass(frozen=True)
class SecMIConfig(AttackConfig):
    # The public SecMI code's convention (jinhaoduan/SecMI `secmia.py`, `range(0, t_sec, k)[1:]`): the
    # round trip is (t_sec - k) -> t_sec -> (t_sec - k), the t-error is measured at t_sec - k. 110 measures
    # it at t = 100, as 001 eq. 8 and the CDI code (t = 100) do, and equals genleak's t_sec = 100 before
    # issue 16 §3 (old T = this T - k, same scores); the SecMI code's own default t_sec = 100 measures at 90.
    t_sec: int = 110
    interval: int = 10


class SecMIAttack(Attack):
    """Score = -||psi(phi(x~_s, s), s) - x~_s||^2, s = t_sec - interval, x~_s = Phi(x_0, s) the DDIM inversion.

    Phi inverts 0 -> s in steps of ``interval`` (s / interval queries); phi is one more inversion
    step s -> t_sec and psi the DDIM denoising step back (2 queries): t_sec / interval + 1 queries, at
    t = 0, k, ..., t_sec, as the public SecMI code (t_sec = 100, k = 10: 11 queries).
    """

    name = "secmi"
    access = Access.GRAY_BOX
    config_class = SecMIConfig
    paper = "Duan et al. 2023, 'Are diffusion models vulnerable to membership inference attacks?'"

    def __init__(self, config: SecMIConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        if c.interval < 1 or c.t_sec < 2 * c.interval or c.t_sec % c.interval:
            raise ValueError("secmi needs t_sec a multiple of interval and >= 2 x interval (one inversion "
                             f"step before the round trip), got t_sec={c.t_sec}, interval={c.interval}")

    @property
    def nfe(self) -> int:
        return self.config.t_sec // self.config.interval + 1

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        t, k = self.config.t_sec, self.config.interval
        if t >= target.num_train_timesteps:
            raise ValueError(f"t_sec = {t} exceeds the target's {target.num_train_timesteps} timesteps")
        x_s = ddim_invert(target, x0, t - k, k, cond)
        x_t = ddim_step(target, x_s, t - k, t, cond)
        x_s_hat = ddim_step(target, x_t, t, t - k, cond)
        return -(x_s_hat - x_s).pow(2).flatten(1).sum(1)
