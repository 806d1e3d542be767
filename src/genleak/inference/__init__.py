"""Dataset inference: was a *set* of images used to train the model? (CDI, thesis chapter 8).

``run_cdi(target, P, U)`` audits images end to end (guards, cached features, scoring model,
Welch's t-test, minimum-|P| curve); ``cdi_test`` runs the statistics on precomputed features.
"""

from genleak.inference.cdi import CDIConfig, CDIResult, cdi_test, format_result, run_cdi, write_cdi
from genleak.inference.features import (
    GRAY_BOX_FEATURES,
    WHITE_BOX_FEATURES,
    FeatureCache,
    FeatureMatrix,
    extract_features,
    parse_features,
)
from genleak.inference.guards import blind_classifier, find_duplicates
from genleak.inference.stats import resampled_curve, size_grid, ttest_power, welch_ttest

__all__ = [
    "CDIConfig",
    "CDIResult",
    "FeatureCache",
    "FeatureMatrix",
    "GRAY_BOX_FEATURES",
    "WHITE_BOX_FEATURES",
    "blind_classifier",
    "cdi_test",
    "extract_features",
    "find_duplicates",
    "format_result",
    "parse_features",
    "resampled_curve",
    "run_cdi",
    "size_grid",
    "ttest_power",
    "welch_ttest",
    "write_cdi",
]
