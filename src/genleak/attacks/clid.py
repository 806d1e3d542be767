"""CLiD-style conditional-vs-unconditional membership feature (Zhai et al. 2024; thesis supp. C.8.1).

Text-to-image models overfit the *conditional* distribution p(x | c) more than p(x) ("conditional
overfitting"). CLiD therefore measures the conditional likelihood discrepancy: the denoising loss
with the condition removed minus the loss with it,

    D(x, c) = E_{t, eps} [ ||eps - eps_theta(x_t, t, c_null)||^2 - ||eps - eps_theta(x_t, t, c)||^2 ],

which is large for members. The threshold variant combines it with the conditional loss,
score = alpha * D - (1 - alpha) * L_cond. The thesis (C.8.1; ch. 9.3.1) uses CLiD as an extra CDI
feature and notes that the original needs a hyper-parameter search and a robust scaler fitted on
samples; this implementation is parameter-light: it returns the raw terms as extra columns
(``clid.discrepancy``, ``clid.neg_cond_loss``, ``clid.neg_uncond_loss``), which a scoring model
(CDI) scales itself. c_null is the target's ``null_condition`` (the empty caption, what SD's
classifier-free guidance uses). CFG is switched off: the raw conditional prediction is compared.

Needs a text-conditioned target (``conditions`` and ``null_condition``); ``check`` refuses others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource, repeat_cond
from genleak.attacks.denoising_family import guided
from genleak.errors import GenleakError
from genleak.targets.base import Target, TargetKind, q_sample


@dataclass(frozen=True)
class CLiDConfig(AttackConfig):
    # Timesteps and draws: ours (the thesis gives no values; CLiD's own Monte-Carlo estimate samples
    # a few timesteps). alpha = 1 scores the pure discrepancy D, CLiD's indicator: the paper's quantity
    # (no calibration split of ours has picked another value).
    timesteps: tuple[int, ...] = (100, 200, 300)
    n_draws: int = 1
    alpha: float = 1.0


class CLiDAttack(Attack):
    """Score = alpha * (L_uncond - L_cond) - (1 - alpha) * L_cond, averaged over timesteps and draws."""

    name = "clid"
    access = Access.GRAY_BOX
    config_class = CLiDConfig
    paper = "Zhai et al. 2024, 'Membership inference on text-to-image diffusion models via conditional likelihood discrepancy'"
    kinds = frozenset({TargetKind.LATENT})
    needs_text = True

    def __init__(self, config: CLiDConfig | None = None, **overrides: Any) -> None:
        if isinstance(overrides.get("timesteps"), list | str):
            value = overrides["timesteps"]
            overrides["timesteps"] = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
        super().__init__(config, **overrides)
        if not self.config.timesteps or self.config.n_draws < 1:
            raise GenleakError(f"{self.name}: needs at least one timestep and one draw")
        if not 0.0 <= self.config.alpha <= 1.0:
            raise GenleakError(f"{self.name}: alpha must be in [0, 1], got {self.config.alpha}")

    @property
    def nfe(self) -> int:
        return 2 * len(self.config.timesteps) * self.config.n_draws  # conditional + unconditional

    @property
    def columns(self) -> list[str]:
        return [self.name, f"{self.name}.discrepancy", f"{self.name}.neg_cond_loss", f"{self.name}.neg_uncond_loss"]

    def score(self, target: Target, images: torch.Tensor, ids: Any = None, **kwargs: Any) -> torch.Tensor:
        self.check(target)
        if kwargs.get("cond") is None:
            raise GenleakError(f"{self.name} needs the samples' conditions (captions); pass cond=target.conditions(samples)")
        return super().score(guided(target, 1.0), images, ids, **kwargs)

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        b, k = x0.shape[0], self.config.n_draws
        null = target.null_condition(b * k)
        c = repeat_cond(cond, k)
        both_cond = torch.cat([c, null]) if isinstance(c, torch.Tensor) else list(c) + list(null)
        z0 = x0.repeat_interleave(k, dim=0)
        lc = torch.zeros(b, device=x0.device, dtype=x0.dtype)
        lu = torch.zeros_like(lc)
        for t in self.config.timesteps:
            if not 0 <= t < target.num_train_timesteps:
                raise GenleakError(f"{self.name}: timestep {t} outside 0..{target.num_train_timesteps - 1}")
            eps = noise.draw(k).reshape(b * k, *x0.shape[1:])
            x_t = q_sample(target, z0, t, eps)
            pred = target.eps(torch.cat([x_t, x_t]), t, both_cond)
            err = (pred - torch.cat([eps, eps])).pow(2).flatten(1).mean(1)
            lc += err[: b * k].view(b, k).mean(1)
            lu += err[b * k :].view(b, k).mean(1)
        n = len(self.config.timesteps)
        lc, lu = lc / n, lu / n
        d = lu - lc
        a = self.config.alpha
        return torch.stack([a * d - (1 - a) * lc, d, -lc, -lu], dim=1)
