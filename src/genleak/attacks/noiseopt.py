"""Noise Optimization (NO): how far must the noisy input move to make the model's noise prediction
right? (CDI thesis ch. 8.4.1, after the adversarial-distance features of supervised DI).

x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at t = 100; an unbounded perturbation delta minimises
f(delta) = ||eps - eps_theta(x_t + delta, t)||^2 with a few L-BFGS iterations starting at delta = 0.
Two columns: the final prediction error and the size of the perturbation ||delta||^2. Needs
gradients: white-box (table C.14.1).

The L-BFGS here is batched but per-sample: every sample has its own curvature history, step sizes
and Armijo backtracking line search, so a feature never depends on which other samples share its
batch (the authors' code runs one scipy L-BFGS-B over the concatenated batch, whose line search
couples the samples). The first trial step has unit length in delta-space (as L-BFGS-B's first
step), later ones start at 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource
from genleak.targets.base import Target, q_sample

_ARMIJO_C1 = 1e-4  # sufficient-decrease constant (Nocedal & Wright, ch. 3.1, the usual 1e-4)
_CURVATURE_EPS = 1e-10


@dataclass(frozen=True)
class NoiseOptConfig(AttackConfig):
    # t = 100 and 5 L-BFGS steps: thesis ch. 8.4.1 "Noise Optimization (NO)" ("unbounded
    # optimization of the perturbation delta ... at timestep t = 100", "the 5-step L-BFGS").
    t: int = 100
    steps: int = 5
    history: int = 10  # L-BFGS memory (torch / scipy default 10; with 5 steps it never fills)
    max_line_search: int = 8  # Armijo halvings per step before a sample stays put


class NoiseOptAttack(Attack):
    """Columns ``noiseopt_loss`` = -f(delta*) and ``noiseopt_delta`` = -||delta*||^2 (higher = member).

    Orientation, measured on the tiny overfit DDPM (tests/test_features.py): members start with a
    small error, so the optimiser both ends lower and travels less; both columns are negated.
    """

    name = "noiseopt"
    access = Access.WHITE_BOX
    config_class = NoiseOptConfig
    needs_grad = True
    paper = "Dubinski, Kowalczyk et al. 2025, 'CDI: Copyrighted Data Identification in Diffusion Models' (ch. 8.4.1)"

    def __init__(self, config: NoiseOptConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        if c.steps < 1 or c.history < 1 or c.max_line_search < 1:
            raise ValueError(f"noiseopt needs steps, history, max_line_search >= 1, got {c}")

    @property
    def nfe(self) -> int:
        """Denoiser queries per sample when every first trial step is accepted (the minimum)."""
        return 1 + self.config.steps

    @property
    def n_backward(self) -> int:
        """Backward passes per sample, same convention as ``nfe`` (each query is differentiated)."""
        return 1 + self.config.steps

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}_loss", f"{self.name}_delta"]

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        c = self.config
        b = x0.shape[0]
        eps = noise.draw(1)[:, 0]
        x_t = q_sample(target, x0.detach(), c.t, eps).detach()
        shape = x_t.shape

        def evaluate(rows: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """f and its gradient for the given rows at perturbations ``delta`` (len(rows), D)."""
            d = delta.detach().view(-1, *shape[1:]).requires_grad_(True)
            sub_cond = None if cond is None else _take(cond, rows)
            pred = target.eps(x_t[rows] + d, c.t, sub_cond)
            f = (eps[rows] - pred).pow(2).flatten(1).sum(1)
            (g,) = torch.autograd.grad(f.sum(), d)
            return f.detach(), g.detach().flatten(1)

        all_rows = torch.arange(b, device=x_t.device)
        delta = torch.zeros(b, x_t[0].numel(), dtype=x_t.dtype, device=x_t.device)
        f, g = evaluate(all_rows, delta)
        s_hist: list[torch.Tensor] = []
        y_hist: list[torch.Tensor] = []
        rho_hist: list[torch.Tensor] = []
        gamma = torch.ones(b, dtype=x_t.dtype, device=x_t.device)
        for step in range(c.steps):
            d = -_two_loop(g, s_hist, y_hist, rho_hist, gamma)
            slope = (g * d).sum(1)
            bad = slope >= 0  # not a descent direction (can only happen with a bad history)
            if bool(bad.any()):
                d[bad] = -g[bad]
                slope = (g * d).sum(1)
            if step == 0:
                alpha = 1.0 / g.norm(dim=1).clamp_min(1e-12)
            else:
                alpha = torch.ones(b, dtype=x_t.dtype, device=x_t.device)
            accepted = torch.zeros(b, dtype=torch.bool, device=x_t.device)
            new_delta, new_f, new_g = delta.clone(), f.clone(), g.clone()
            for _ in range(c.max_line_search):
                rows = torch.nonzero(~accepted & (g.norm(dim=1) > 0)).flatten()
                if rows.numel() == 0:
                    break
                cand = delta[rows] + alpha[rows, None] * d[rows]
                f_c, g_c = evaluate(rows, cand)
                ok = f_c <= f[rows] + _ARMIJO_C1 * alpha[rows] * slope[rows]
                take = rows[ok]
                new_delta[take], new_f[take], new_g[take] = cand[ok], f_c[ok], g_c[ok]
                accepted[take] = True
                alpha[rows[~ok]] *= 0.5
            s = new_delta - delta
            y = new_g - g
            sy = (s * y).sum(1)
            valid = accepted & (sy > _CURVATURE_EPS)
            rho = torch.where(valid, 1.0 / sy.clamp_min(_CURVATURE_EPS), torch.zeros_like(sy))
            s_hist.append(torch.where(valid[:, None], s, torch.zeros_like(s)))
            y_hist.append(torch.where(valid[:, None], y, torch.zeros_like(y)))
            rho_hist.append(rho)
            if len(s_hist) > c.history:
                del s_hist[0], y_hist[0], rho_hist[0]
            yy = (y * y).sum(1)
            gamma = torch.where(valid, sy / yy.clamp_min(_CURVATURE_EPS), gamma)
            delta, f, g = new_delta, new_f, new_g
        return torch.stack([-f, -delta.pow(2).sum(1)], dim=1)


def _two_loop(
    g: torch.Tensor, s_hist: list[torch.Tensor], y_hist: list[torch.Tensor], rho_hist: list[torch.Tensor],
    gamma: torch.Tensor,
) -> torch.Tensor:
    """H g by the L-BFGS two-loop recursion, per row (Nocedal & Wright, algorithm 7.4).

    Pairs with rho = 0 (rejected curvature pairs) contribute nothing, so each row effectively
    uses only its own valid history.
    """
    q = g.clone()
    alphas = []
    for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
        a = rho * (s * q).sum(1)
        q = q - a[:, None] * y
        alphas.append(a)
    r = gamma[:, None] * q
    for (s, y, rho), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
        beta = rho * (y * r).sum(1)
        r = r + s * (a - beta)[:, None]
    return r


def _take(cond: Any, rows: torch.Tensor) -> Any:
    if isinstance(cond, torch.Tensor):
        return cond[rows.to(cond.device)]
    return [cond[i] for i in rows.tolist()]
