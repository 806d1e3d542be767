"""Choose an attack hyperparameter on a calibration split, never on the evaluation labels."""

from __future__ import annotations

from typing import Any

from genleak.attacks.base import get_attack
from genleak.data import MembershipSplit
from genleak.metrics import auc, tpr_at_fpr
from genleak.targets.base import Target, conditions_for


def sweep_parameter(
    target: Target,
    calibration: MembershipSplit,
    attack: str,
    param: str,
    grid: list[Any],
    *,
    seed: int = 0,
    batch_size: int = 64,
    params: dict[str, Any] | None = None,
) -> dict[Any, dict[str, float]]:
    """AUC and TPR@1%FPR of ``attack`` for each value of ``param`` on a calibration split (e.g. a shadow model's).

    The caller then fixes the best value in the attack config and evaluates once on held-out data.
    ``params`` fixes the attack's other hyperparameters (``genleak sweep --param``).
    Each side is scored with the conditions (captions, labels) the target wants, as ``run_attacks`` does.
    """
    calibration.validate()
    m, n = calibration.members, calibration.nonmembers
    cm, cn = conditions_for(target, m), conditions_for(target, n)
    result: dict[Any, dict[str, float]] = {}
    for value in grid:
        a = get_attack(attack, **{**(params or {}), param: value})
        sm = a.score(target, m.images, m.ids, cond=cm, seed=seed, batch_size=batch_size, progress=False)
        sn = a.score(target, n.images, n.ids, cond=cn, seed=seed, batch_size=batch_size, progress=False)
        result[value] = {"auc": auc(sm.numpy(), sn.numpy()), "tpr_at_1pct_fpr": tpr_at_fpr(sm.numpy(), sn.numpy(), 0.01)}
    return result
