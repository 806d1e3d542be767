"""Multiple Loss (ML): the denoising loss at ten timesteps, one column each (CDI thesis ch. 8.4.1).

A CDI *feature* rather than a stand-alone attack: the scoring model of dataset inference learns
which timesteps carry the membership signal for a given model, so every timestep is its own
column. Used alone (e.g. by ``genleak attack``), the first column is the score.
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
    eps_in_chunks,
    repeat_cond,
)
from genleak.targets.base import Target, q_sample


@dataclass(frozen=True)
class MultiLossConfig(AttackConfig):
    # t = 0, 100, ..., 900: thesis ch. 8.4.1 "Multiple Loss (ML)" ("at multiple (10) diffusion
    # timesteps t = 0, 100, ..., 900"). One noise draw per sample shared by all timesteps, as in
    # the authors' public implementation, so columns differ only by t.
    timesteps: tuple[int, ...] = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900)


class MultiLossAttack(Attack):
    """Columns ``multiloss@t<t>`` = -||eps - eps_theta(x_t, t)||^2 / d for each t (higher = member)."""

    name = "multiloss"
    access = Access.GRAY_BOX
    config_class = MultiLossConfig
    paper = "Dubinski, Kowalczyk et al. 2025, 'CDI: Copyrighted Data Identification in Diffusion Models' (ch. 8.4.1)"

    def __init__(self, config: MultiLossConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if not self.config.timesteps:
            raise ValueError("multiloss needs at least one timestep")

    @property
    def nfe(self) -> int:
        return len(self.config.timesteps)

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}@t{t}" for t in self.config.timesteps]

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        b = x0.shape[0]
        ts = self.config.timesteps
        k = len(ts)
        x0_rep, eps_rep, t_rep = at_timesteps(x0, noise, ts)  # one noise draw shared by every timestep
        x_t = q_sample(target, x0_rep, t_rep, eps_rep)
        pred = eps_in_chunks(target, x_t, t_rep.to(x_t.device), repeat_cond(cond, k), chunk=x0.shape[0])
        loss = (pred - eps_rep).pow(2).flatten(1).mean(1).view(b, k)
        return -loss
