"""Defenses for your own training loop, in the spirit of Opacus' ``make_private``.

Each ``make_*`` returns a ``genleak.train.TrainHooks`` object. Pass it to ``train_ddpm`` /
``train_latent`` (``hooks=``) or to the one trainer ``genleak.train.loop.run_loop`` with your own loss
step, or call its methods in your own loop:

* ``batch_indices(step, n, generator)`` — which rows to train on at ``step`` (None: your choice);
* ``regression_target(x_t, t, noise, idx, step, cond)`` — what ``eps_theta(x_t, t, cond)`` is
  regressed on (the noise for plain training, a teacher's answer for DistillMD / KD);
* ``after_step(step)`` after each optimiser step, ``evaluate(step, make_target)`` to monitor/stop.

Teachers may be genleak targets or bare diffusers UNets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from genleak.train import TrainHooks


def make_distillmd(teacher_1: Any, teacher_2: Any, half_1: Sequence[int], half_2: Sequence[int],
                   batch_size: int, seed: int = 0) -> TrainHooks:
    """DistillMD (DualMD paper, Algorithm 2): even steps draw rows of ``half_1`` and regress on
    ``teacher_2`` (trained on ``half_2``), odd steps the reverse."""
    from genleak.defenses.distill import AlternatingDistillation

    return AlternatingDistillation(teacher_1, teacher_2, half_1, half_2, batch_size, seed=seed)


def make_kd(teacher: Any) -> TrainHooks:
    """Normal knowledge distillation (table 10's baseline): regress on the one teacher's answer."""
    from genleak.defenses.kd import SingleTeacher

    return SingleTeacher(teacher)


def make_private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, n: int, batch_size: int, steps: int,
                 noise_multiplier: float | None = None, target_epsilon: float | None = None, delta: float = 1e-5,
                 max_grad_norm: float = 1.0, accountant: str = "rdp", seed: int = 0,
                 reproducible_noise: bool = False) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """DP-SGD with Opacus: returns (per-sample-gradient model, DP optimiser, hooks). Draw batches with
    ``hooks.batch_indices`` (Poisson sampling at rate batch_size / n, as the accountant assumes), call
    ``hooks.after_step(step)`` after each ``optimizer.step()`` and read ``hooks.epsilon()``. Give
    ``noise_multiplier`` or ``target_epsilon`` (solved for ``steps``); see ``genleak.defenses.dpsgd``."""
    from genleak.defenses.dpsgd import DPConfig, DPSGDHooks, solve_noise_multiplier

    dp = DPConfig(noise_multiplier=noise_multiplier, target_epsilon=target_epsilon, delta=delta,
                  max_grad_norm=max_grad_norm, accountant=accountant, reproducible_noise=reproducible_noise)
    dp.check(n)
    sigma = solve_noise_multiplier(dp, min(batch_size / n, 1.0), steps)
    hooks = DPSGDHooks(n, batch_size, sigma, dp, seed=seed)
    model, optimizer = hooks.prepare(model, optimizer)
    return model, optimizer, hooks


def make_monitor(split: Any, every: int, *, n_members: int | None = None, stop_auc: float | None = None,
                 inner: TrainHooks | None = None, seed: int = 0, **kwargs: Any) -> TrainHooks:
    """A ``LeakageMonitor`` on ``n_members`` members of ``split`` (a seeded sample, all by default)
    against all its non-members; wraps ``inner`` (e.g. DistillMD or DP-SGD hooks)."""
    import dataclasses

    from genleak.defenses.monitor import LeakageMonitor

    if n_members is not None and n_members < len(split.members):
        rows = torch.randperm(len(split.members), generator=torch.Generator().manual_seed(seed))[:n_members]
        split = dataclasses.replace(split, members=split.members[sorted(rows.tolist())])
    return LeakageMonitor(split, every, stop_auc=stop_auc, inner=inner, seed=seed, **kwargs)
