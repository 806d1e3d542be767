"""Shake-to-Leak (arXiv 2403.09450): privacy amplification by fine-tuning on self-generated domain
data (``shake``; textual inversion for text-to-image targets in ``textual_inversion``) or by
Gaussian weight perturbation (``perturb``), reported as before/after MIA metrics on the original
split (``report``)."""

from genleak._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "perturb_module": "genleak.s2l.perturb",
    "perturb_target": "genleak.s2l.perturb",
    "perturbation_sweep": "genleak.s2l.perturb",
    "Comparison": "genleak.s2l.report",
    "compare": "genleak.s2l.report",
    "write_report": "genleak.s2l.report",
    "ShakeConfig": "genleak.s2l.shake",
    "domain_split": "genleak.s2l.shake",
    "finetune": "genleak.s2l.shake",
    "make_domain_set": "genleak.s2l.shake",
    "run_s2l": "genleak.s2l.shake",
    "TextualInversionTarget": "genleak.s2l.textual_inversion",
    "textual_inversion": "genleak.s2l.textual_inversion",
}

__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
