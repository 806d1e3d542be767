"""Thesis ch. 7, measured (issue 16 §1): the verdict downgrade for distribution shift, and the
scenario builders of benchmarks/realistic.py (shift transforms, cross-side duplicate removal, repeated
subset statistics) on tiny inputs. No model is trained here; the benchmark itself trains."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from genleak.data import ImageSet, load_source
from genleak.inference.guards import BLIND_ALPHA, blind_classifier
from genleak.metrics import evaluate, repeated_subsets
from genleak.report.html import _verdict_html
from genleak.report.verdict import SHIFT_ALPHA, compute_verdict
from genleak.results import AuditResult


def _scores(shift: float, n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)


def _results(shift: float, blind_auc: float | None, blind_p: float = 1e-4) -> AuditResult:
    """One attack whose members score ``shift`` sd higher (500 vs 500, bootstrap CIs) and a guards
    section whose blind classifier reached ``blind_auc`` with p-value ``blind_p``."""
    m, n = _scores(shift)
    r = {"split": {"name": "s", "fingerprint": "f", "n_members": 500, "n_nonmembers": 500},
         "attacks": {"loss": {"status": "ok", "access": "gray-box",
                              "metrics": evaluate(m, n, bootstrap=500, seed=0).to_dict()}}}
    if blind_auc is not None:
        r["sections"] = {"guards": {"kind": "guards", "status": "ok", "warnings": ["DISTRIBUTION SHIFT: ..."],
                                    "metrics": {"blind_classifier_auc": blind_auc, "blind_classifier_p_value": blind_p}}}
    return AuditResult.from_json({"format": "genleak.results", "version": 1, "seed": 0, "target": {}, **r})


def test_the_shift_alarm_is_the_guards_own():
    assert SHIFT_ALPHA == BLIND_ALPHA


def test_a_blind_classifier_as_good_as_the_attack_downgrades_the_verdict_with_the_reason():
    base = compute_verdict(_results(1.5, None))
    auc = _results(1.5, None).metric("loss")
    assert base["level"] == "high" and 0.83 < auc < 0.88
    v = compute_verdict(_results(1.5, auc - 0.03))
    assert (v["level"], v["label"], v["confidence"], v["level_before_shift"]) == ("unknown", "Inconclusive", "low", "high")
    assert v["headline"].startswith(f"Distribution shift: a model-free classifier separates the sets with AUC {auc - 0.03:.3f}")
    assert f"comparable to the best attack's {auc:.3f} (loss)" in v["headline"]
    assert v["details"][0].startswith("Downgraded from high leakage to inconclusive: distribution shift")
    html = _verdict_html(0, v)  # the report shows the reason, not only a flag
    assert 'data-level="unknown"' in html and "model-free classifier separates the sets" in html


def test_a_blind_classifier_near_chance_or_not_significant_leaves_the_verdict():
    for blind, p in ((0.52, 1e-4), (0.5, 0.4), (0.84, 0.02)):  # clearly below the attack, or p >= alpha
        v = compute_verdict(_results(1.5, blind, p))
        assert v["level"] == "high" and "level_before_shift" not in v, (blind, p)
    # An attack well above a significant blind classifier keeps its level (the margin is 0.05).
    auc = _results(1.5, None).metric("loss")
    assert compute_verdict(_results(1.5, auc - 0.08))["level"] == "high"
    # "No leakage" is not downgraded: the shift did not produce a leak.
    assert compute_verdict(_results(0.0, 0.9))["level"] == "none"


def test_a_flipped_attack_is_judged_two_sided():
    """Members score lower (AUC ~0.15): its leakage AUC is 1 - AUC ~0.85, so a blind AUC 0.02 below it is
    comparable and 0.6 is not; one-sided (AUC 0.15) neither would be."""
    r = _results(-1.5, None)
    auc = r.metric("loss")
    assert auc < 0.17 and compute_verdict(r)["direction"] == "flipped"
    v = compute_verdict(_results(-1.5, 1 - auc - 0.02))
    assert v["level"] == "unknown" and f"{1 - auc:.3f} (loss, sign-flipped)" in v["headline"]
    assert compute_verdict(_results(-1.5, 0.6))["level"] == "high"


# ----------------------------------------------------------------------------------------------
# benchmarks/realistic.py scenario builders
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "realistic.py"
    spec = importlib.util.spec_from_file_location("realistic_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    d = load_source({"kind": "digits", "size": 8})
    return d[np.random.default_rng(0).permutation(len(d.ids))[:300].tolist()]


def test_the_shift_transforms_change_pixels_but_not_shape_and_a_blind_classifier_sees_them(bench, digits):
    x = digits.images[:150]
    for kind, p in (("jpeg", 50), ("resize", 5)):
        y = bench.shift_images(x, kind, p)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
        rms = (y - x).pow(2).mean((1, 2, 3)).sqrt()
        assert rms.min() > 0.02, kind  # every image is altered (8-bit round trip alone: 0)
    # Unaltered i.i.d. halves: no alarm (deterministic seed; the alarm's false-positive rate is 1%).
    iid = blind_classifier(x, digits.images[150:])
    assert iid.p_value >= BLIND_ALPHA and abs(iid.auc - 0.5) < 0.08
    # Non-members re-encoded, members untouched: the model-free classifier separates them.
    shifted = blind_classifier(x, bench.shift_images(digits.images[150:], "jpeg", 50))
    assert shifted.p_value < BLIND_ALPHA and shifted.auc > 0.95


def test_cross_side_duplicates_are_dropped_from_the_non_members(bench, digits):
    members = digits[list(range(20))]
    near = (digits.images[5:6] + 0.02 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    extra = torch.cat([digits.images[20:40], digits.images[3:4], near])
    nonmembers = ImageSet(extra, [f"n{i}" for i in range(22)])
    kept, exact, near_n = bench.drop_cross_duplicates(members, nonmembers)
    assert (exact, near_n) == (1, 1) and kept.ids == [f"n{i}" for i in range(20)]
    # Nothing to drop between disjoint digits (closest distinct pair 0.083 > 0.05).
    assert bench.drop_cross_duplicates(members, digits[list(range(20, 40))])[1:] == (0, 0)


def test_subset_statistics_use_the_protocol_size_or_three_quarters_of_the_smaller_side(bench):
    assert bench.subset_size(700, 897) == 500 and bench.subset_size(200, 897) == 150
    rng = np.random.default_rng(1)
    ms, ns = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 897)
    s = bench.subset_stats(ms, ns, n_subsets=20, seed=3)
    ref = repeated_subsets(ms, ns, n_subsets=20, subset_size=150, seed=3)
    assert s["subset"] == 150 and s["tpr1"] == list(ref["tpr@1%fpr"]) and s["auc"] == list(ref["auc"])
    assert 0.71 < s["auc"][0] < 0.81 and 0.0 < s["auc"][1] < 0.05  # AUC of a 1-sd shift: 0.76
    # Perfectly separated scores: every subset has AUC 1 and TPR 1, so the std is 0.
    sep = bench.subset_stats(np.arange(600.0) + 1000, np.arange(600.0), n_subsets=5)
    assert sep["subset"] == 500 and sep["auc"] == [1.0, 0.0] and sep["tpr1"] == [1.0, 0.0]
