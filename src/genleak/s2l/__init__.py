"""Shake-to-Leak (arXiv 2403.09450): privacy amplification by fine-tuning on self-generated domain
data (``shake``) or by Gaussian weight perturbation (``perturb``), reported as before/after MIA
metrics on the original split (``report``)."""

from genleak.s2l.perturb import perturb_module, perturb_target, perturbation_sweep
from genleak.s2l.report import Comparison, compare, write_report
from genleak.s2l.shake import ShakeConfig, domain_split, finetune, make_domain_set, run_s2l

__all__ = [
    "Comparison",
    "ShakeConfig",
    "compare",
    "domain_split",
    "finetune",
    "make_domain_set",
    "perturb_module",
    "perturb_target",
    "perturbation_sweep",
    "run_s2l",
    "write_report",
]
