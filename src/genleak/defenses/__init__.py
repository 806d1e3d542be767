"""Defenses against membership inference: each produces a new target the same attacks then run on.

* ``disjoint`` — Algorithm 1 of the DualMD paper: two teachers on disjoint halves of the members.
* DualMD inference itself, ``genleak.targets.dual.DualTarget``, is a target type (it alternates the
  two teachers step by step, sec. 3.4); ``disjoint`` writes its folders.
* ``distill`` — DistillMD, Algorithm 2: a student taught on each half by the other half's teacher.
* ``kd`` — normal single-teacher distillation, the baseline of table 10.
* ``dpsgd`` — DP-SGD training with Opacus, reporting the epsilon spent.
* ``evaluate`` — baseline vs defended: every attack's AUC / TPR@FPR next to each model's quality.
* ``experiment`` — all of the above from one JSON config.
* ``from_target`` — ``TargetSpec``: every defense above can copy the audited target's UNet config,
  scheduler and conditioning (``target=``) instead of training genleak's default UNet.
* ``hooks`` — ``make_distillmd``, ``make_kd``, ``make_private`` (DP-SGD), ``make_monitor``: the same
  defenses as training hooks for ``train_ddpm`` / ``train_latent`` or a user's own loop.
* ``monitor`` — ``LeakageMonitor``: membership AUC / TPR@1%FPR versus training step, optional stop.

Heavy imports (torch, diffusers, opacus) happen in the submodules, not here.
"""

from genleak._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "LeakageMonitor": "genleak.defenses.monitor",
    "TargetSpec": "genleak.defenses.from_target",
    "make_distillmd": "genleak.defenses.hooks",
    "make_kd": "genleak.defenses.hooks",
    "make_monitor": "genleak.defenses.hooks",
    "make_private": "genleak.defenses.hooks",
}

__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
