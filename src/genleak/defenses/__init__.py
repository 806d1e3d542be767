"""Defenses against membership inference: each produces a new target the same attacks then run on.

* ``disjoint`` — Algorithm 1 of the DualMD paper: two teachers on disjoint halves of the members.
* ``dualmd`` — ``DualTarget``: DualMD inference, alternating the two teachers step by step (sec. 3.4).
* ``distill`` — DistillMD, Algorithm 2: a student taught on each half by the other half's teacher.
* ``kd`` — normal single-teacher distillation, the baseline of table 10.
* ``dpsgd`` — DP-SGD training with Opacus, reporting the epsilon spent.
* ``evaluate`` — baseline vs defended: every attack's AUC / TPR@FPR next to each model's quality.
* ``experiment`` — all of the above from one JSON config.

Heavy imports (torch, diffusers, opacus) happen in the submodules, not here.
"""

__all__ = ["cli", "disjoint", "distill", "dpsgd", "dualmd", "evaluate", "experiment", "kd"]
