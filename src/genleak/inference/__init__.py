"""Dataset inference: was a *set* of images used to train the model? (CDI, thesis chapter 8).

``run_cdi(target, P, U)`` audits images end to end (guards, cached features, scoring model,
Welch's t-test, minimum-|P| curve); ``cdi_test`` runs the statistics on precomputed features.
"""

from genleak._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CDIConfig": "genleak.inference.cdi",
    "CDIResult": "genleak.results",
    "cdi_test": "genleak.inference.cdi",
    "format_result": "genleak.inference.cdi",
    "run_cdi": "genleak.inference.cdi",
    "write_cdi": "genleak.inference.cdi",
    "GRAY_BOX_FEATURES": "genleak.inference.features",
    "WHITE_BOX_FEATURES": "genleak.inference.features",
    "FeatureMatrix": "genleak.inference.features",
    "extract_features": "genleak.inference.features",
    "parse_features": "genleak.inference.features",
    "blind_classifier": "genleak.inference.guards",
    "find_duplicates": "genleak.inference.guards",
    "resampled_curve": "genleak.inference.stats",
    "size_grid": "genleak.inference.stats",
    "ttest_power": "genleak.inference.stats",
    "welch_ttest": "genleak.inference.stats",
}

__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
