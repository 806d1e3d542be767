"""Thesis ch. 7, measured (issue 16 §1): the verdict downgrade for distribution shift, and the
scenario builders of benchmarks/realistic.py (shift transforms, cross-side duplicate removal, repeated
subset statistics) on tiny inputs. No model is trained here; the benchmark itself trains."""

from __future__ import annotations

import numpy as np

from genleak.inference.guards import BLIND_ALPHA
from genleak.metrics import evaluate
from genleak.report.html import _verdict_html
from genleak.report.verdict import SHIFT_ALPHA, compute_verdict


def _scores(shift: float, n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)


def _results(shift: float, blind_auc: float | None, blind_p: float = 1e-4) -> dict:
    """One attack whose members score ``shift`` sd higher (500 vs 500, bootstrap CIs) and a guards
    section whose blind classifier reached ``blind_auc`` with p-value ``blind_p``."""
    m, n = _scores(shift)
    r = {"split": {"name": "s", "fingerprint": "f", "n_members": 500, "n_nonmembers": 500},
         "attacks": {"loss": {"status": "ok", "access": "gray-box",
                              "metrics": evaluate(m, n, bootstrap=500, seed=0).to_dict()}}}
    if blind_auc is not None:
        r["sections"] = {"guards": {"kind": "guards", "status": "ok", "warnings": ["DISTRIBUTION SHIFT: ..."],
                                    "metrics": {"blind_classifier_auc": blind_auc, "blind_classifier_p_value": blind_p}}}
    return r


def test_the_shift_alarm_is_the_guards_own():
    assert SHIFT_ALPHA == BLIND_ALPHA


def test_a_blind_classifier_as_good_as_the_attack_downgrades_the_verdict_with_the_reason():
    base = compute_verdict(_results(1.5, None))
    auc = _results(1.5, None)["attacks"]["loss"]["metrics"]["auc"]
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
    auc = _results(1.5, None)["attacks"]["loss"]["metrics"]["auc"]
    assert compute_verdict(_results(1.5, auc - 0.08))["level"] == "high"
    # "No leakage" is not downgraded: the shift did not produce a leak.
    assert compute_verdict(_results(0.0, 0.9))["level"] == "none"


def test_a_flipped_attack_is_judged_two_sided():
    """Members score lower (AUC ~0.15): its leakage AUC is 1 - AUC ~0.85, so a blind AUC 0.02 below it is
    comparable and 0.6 is not; one-sided (AUC 0.15) neither would be."""
    r = _results(-1.5, None)
    auc = r["attacks"]["loss"]["metrics"]["auc"]
    assert auc < 0.17 and compute_verdict(r)["direction"] == "flipped"
    v = compute_verdict(_results(-1.5, 1 - auc - 0.02))
    assert v["level"] == "unknown" and f"{1 - auc:.3f} (loss, sign-flipped)" in v["headline"]
    assert compute_verdict(_results(-1.5, 0.6))["level"] == "high"
