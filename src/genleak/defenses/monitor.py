"""A leakage monitor for training: membership AUC / TPR@1%FPR versus step, and an optional stop.

Every ``every`` steps ``LeakageMonitor`` scores a fixed sample of training members and held-out
non-members with SimA and the loss attack through ``genleak.pipeline.run_attacks`` (the scoring
path every other command uses: the same attacks, conditions and metrics) on the weights the run
would publish at that step (the EMA when there is one). The curve goes into the run record
(``genleak_train.json`` under ``leakage_monitor``), so a model owner sees when memorisation starts;
with ``stop_auc`` the run stops, and is published, at the first check where an attack's two-sided
AUC max(AUC, 1 - AUC) reaches it. ``genleak train ddpm --monitor-every N`` switches it on, and the
audit report of the trained folder shows the curve ("Leakage during training"). The monitor wraps another hook (a defense, DP-SGD) and passes everything else through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.train import TrainHooks

DEFAULT_ATTACKS = ("sima", "loss")


class LeakageMonitor(TrainHooks):
    """Score ``split`` (a fixed member sample vs held-out non-members) every ``every`` steps."""

    def __init__(self, split: Any, every: int, *, attacks: Sequence[str] = DEFAULT_ATTACKS,
                 stop_auc: float | None = None, inner: TrainHooks | None = None,
                 attack_params: dict[str, dict[str, Any]] | None = None, seed: int = 0, batch_size: int = 64) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise GenleakError(f"the leakage monitor needs every >= 1 steps, got {every!r}")
        if stop_auc is not None and not 0.5 < stop_auc <= 1:
            raise GenleakError(f"stop_auc must be in (0.5, 1], got {stop_auc}")
        split.validate()
        self.split, self.every, self.attacks = split, every, tuple(attacks)
        self.stop_auc, self.inner = stop_auc, inner or TrainHooks()
        self.accumulates = self.inner.accumulates
        self.attack_params, self.seed, self.batch_size = attack_params or {}, seed, batch_size
        self.curve: list[dict[str, Any]] = []
        self.stopped_at: int | None = None

    # everything but evaluation is the wrapped hook's
    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        return self.inner.prepare(model, optimizer)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.inner.unwrap(model)

    def batch_indices(self, step: int, n: int, generator: torch.Generator) -> torch.Tensor | None:
        return self.inner.batch_indices(step, n, generator)

    def regression_target(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, idx: torch.Tensor,
                          step: int, cond: Any = None) -> torch.Tensor:
        return self.inner.regression_target(x_t, t, noise, idx, step, cond=cond)

    def after_step(self, step: int) -> None:
        self.inner.after_step(step)

    def evaluate(self, step: int, make_target: Callable[[], Any]) -> bool:
        stop = self.inner.evaluate(step, make_target)
        if step % self.every:
            return stop
        from genleak.pipeline import run_attacks

        result = run_attacks(make_target(), self.split, list(self.attacks), attack_params=self.attack_params,
                             seed=self.seed, batch_size=self.batch_size, progress=False, fail_fast=True)
        row: dict[str, Any] = {"step": step}
        for res in result.attacks:
            m = res.metrics
            row[res.name] = {"auc": float(m.auc), "tpr_at_1pct_fpr": float(m.tpr_at_1pct_fpr),
                             "leakage_auc": float(m.leakage_auc)}
        self.curve.append(row)
        # two-sided, like every verdict: a reversed signal is memorisation too
        if self.stop_auc is not None and max(row[a]["leakage_auc"] for a in self.attacks) >= self.stop_auc:
            self.stopped_at = step
            return True
        return stop

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "curve": self.curve}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state.get("inner") or {})
        self.curve = list(state.get("curve") or [])

    def record(self) -> dict[str, Any]:
        return {**self.inner.record(), "leakage_monitor": {
            "every": self.every, "attacks": list(self.attacks), "stop_auc": self.stop_auc,
            "n_members": len(self.split.members), "n_nonmembers": len(self.split.nonmembers),
            "split_fingerprint": self.split.fingerprint(), "stopped_at": self.stopped_at, "curve": self.curve}}
