"""PIA and PIAN: proximal initialisation attacks (Kong et al. 2024; thesis supplement C.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource, lp_norm
from genleak.targets.base import Target, q_sample


@dataclass(frozen=True)
class PIAConfig(AttackConfig):
    # t = 200 and the 5-norm: CDI thesis supplement C.2 ("PIA by Kong et al.": ||.||_5, t = 200).
    t: int = 200
    p: float = 5.0


class _ProximalInit(Attack):
    access = Access.GRAY_BOX
    config_class = PIAConfig
    paper = "Kong et al. 2024, 'An efficient membership inference attack for the diffusion model by proximal initialization'"
    normalize = False

    @property
    def nfe(self) -> int:
        return 2

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        eps0 = target.eps(x0, 0, cond)
        if self.normalize:
            eps0 = gaussianize(eps0)
        x_t = q_sample(target, x0, self.config.t, eps0)
        eps_t = target.eps(x_t, self.config.t, cond)
        return -lp_norm(eps0 - eps_t, self.config.p)


def gaussianize(eps: torch.Tensor) -> torch.Tensor:
    """Rescale each sample so its mean absolute value is that of N(0, I), i.e. sqrt(2/pi).

    PIAN (Kong et al. 2024) makes eps_theta(x_0, 0) look like standard Gaussian noise. The thesis
    (supplement C.2) writes the factor as C*H*W*sqrt(pi/2)/||eps||_1; a standard normal has
    E|z| = sqrt(2/pi), so we use C*H*W*sqrt(2/pi)/||eps||_1, which is what makes the statement
    "follows N(0, I)" true (and what the public PIA code does).
    """
    d = eps[0].numel()
    l1 = eps.flatten(1).abs().sum(1).clamp_min(1e-12)
    scale = d * math.sqrt(2 / math.pi) / l1
    return eps * scale.view(-1, *([1] * (eps.ndim - 1)))


class PIAAttack(_ProximalInit):
    """Score = -||eps0 - eps_theta(sqrt(abar_t) x0 + sqrt(1-abar_t) eps0, t)||_p, eps0 = eps_theta(x0, 0)."""

    name = "pia"


class PIANAttack(_ProximalInit):
    """PIA with eps0 rescaled to the statistics of N(0, I) before noising (``gaussianize``)."""

    name = "pian"
    normalize = True
