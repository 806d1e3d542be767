"""Adaptive attack on DualMD: multi-round re-noising that isolates one sub-model (DualMD paper, appendix A.5).

An attacker who knows that DualMD alternates its sub-models (SB1 answers every sampler call's
first step, SB2 the second, ...) can make SB1 answer more of the early steps: generate with n
steps; re-noise the result to the grid's *second* timestep, which discards everything after SB1's
first step, and run a new round of n - 1 steps from there, which SB1 again begins; repeat. After r
rounds SB1 has taken the r noisiest steps. Each round's generations are then scored like genbox
(-min distance to the query). Table 9 reports AUC 0.53 (2 rounds) and 0.51 (3 rounds) on Pokemon.

Rounds = 1 is plain genbox. On a single-model target the procedure is just repeated re-noising.
Access: black-box (the attacker re-noises images and calls the image-to-image sampler).
NFE = n_gen x sum over rounds r of (steps run - r + 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import NoiseSource, repeat_cond
from genleak.attacks.genbox import GenBoxAttack, GenBoxConfig, decode_generations
from genleak.errors import GenleakError
from genleak.targets.base import Target
from genleak.targets.sampling import denoise, img2img_timesteps, sampling_scheduler


@dataclass(frozen=True)
class AdaptiveDualConfig(GenBoxConfig):
    # Table 9 evaluates 2 and 3 generation rounds.
    rounds: int = 2


class AdaptiveDualAttack(GenBoxAttack):
    """genbox on the output of ``rounds`` generation rounds that hand SB1 the first ``rounds`` steps."""

    name = "dual-adaptive"
    config_class = AdaptiveDualConfig
    paper = "DualMD paper (anonymous, under review), appendix A.5 adaptive attack, on top of genbox"

    def __init__(self, config: AdaptiveDualConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.rounds < 1:
            raise GenleakError(f"{self.name}: rounds must be >= 1, got {self.config.rounds}")
        if self.config.rounds > self.steps_run:
            raise GenleakError(f"{self.name}: {self.config.rounds} rounds need at least as many denoising steps, "
                               f"got {self.steps_run}")

    @property
    def nfe(self) -> int:
        s, r = self.steps_run, self.config.rounds
        return self.config.n_gen * sum(s - i for i in range(r))

    def generations(self, target: Target, queries: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        k = self.config.n_gen
        scheduler = sampling_scheduler(target, self.config.steps)
        timesteps = img2img_timesteps(scheduler, self.config.steps, self.config.strength)
        cond_k = repeat_cond(cond, k)
        x = self.start(target, queries, noise, scheduler, timesteps)
        x = denoise(target, x, timesteps, scheduler, cond_k, eta=self.config.eta)  # round 1: n steps
        for r in range(1, self.config.rounds):
            # re-noise the result to the next grid timestep: every step after SB1's r-th is discarded,
            # and the new round (n - r steps) starts with SB1 again (appendix A.5)
            fresh = noise.draw(k).reshape(x.shape)
            x = scheduler.add_noise(x, fresh, torch.tensor([timesteps[r]]))
            x = denoise(target, x, timesteps[r:], scheduler, cond_k, eta=self.config.eta)
        return decode_generations(target, x, queries.shape[0])
