"""Typed results (genleak.results): to_json / from_json round trips, old files, refusals (issue 13 item 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genleak.errors import GenleakError
from genleak.metrics import evaluate
from genleak.report.results import load_results, read_results, save_results
from genleak.results import RESULTS_VERSION, AttackResult, AuditResult, CDIOutcome, SectionResult


def _result() -> AuditResult:
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.8, 1, 64), rng.normal(0, 1, 64)
    ok = AttackResult(name="loss", description={"access": "gray-box", "config": {"t": 100}}, member_scores=m,
                      nonmember_scores=n, metrics=evaluate(m, n, bootstrap=50, seed=0), asr_calibrated=0.61,
                      seconds=1.25, warnings=["few samples"])
    failed = AttackResult(name="secmi", description={"access": "gray-box"}, error="RuntimeError: boom")
    cdi = CDIOutcome(p_value=0.003, alpha=0.01, rejected=True, min_suspect_size=200, n_suspect=256)
    return AuditResult(
        target={"fingerprint": "t1", "kind": "pixel-ddpm"},
        split={"name": "s", "fingerprint": "f1", "n_members": 64, "n_nonmembers": 64},
        attacks=[ok, failed], seed=3, command="genleak audit", bootstrap=50,
        settings={"seed": 3}, sections={"cdi": SectionResult(status="ok", title="CDI", kind="cdi", summary="rejected",
                                                              metrics=cdi.to_json(), extra={"curve": None}),
                                        "extraction": SectionResult(status="skipped", reason="opt-in")},
        verdict={"level": "high"}, extra={"inputs": {"x": 1}})


def test_a_result_round_trips_through_json(tmp_path):
    r = _result()
    data = r.to_json()
    assert (data["format"], data["version"]) == ("genleak.results", RESULTS_VERSION)
    back = AuditResult.from_json(json.loads(json.dumps(data)))
    assert back.to_json() == data  # nothing lost or added, unknown keys (inputs, curve) included
    loss = back.attack("loss")
    assert loss.metrics == r.attack("loss").metrics  # CIs back as tuples, every float exact
    assert loss.scores_sha256 == data["attacks"]["loss"]["scores_sha256"] and loss.member_scores is None
    assert back.metric("loss") == pytest.approx(float(r.attack("loss").metrics.auc), abs=0)
    assert not back.attack("secmi").ok and back.attack("secmi").error == "RuntimeError: boom"
    assert back.cdi() == CDIOutcome(p_value=0.003, alpha=0.01, rejected=True, min_suspect_size=200, n_suspect=256)
    assert back.sections["extraction"].reason == "opt-in"
    # the audit's extra metric keys stay next to MetricReport's, through the file
    data["attacks"]["loss"]["metrics"]["simultaneous_lower"] = {"auc": 0.6}
    save_results(data, tmp_path)
    assert read_results(tmp_path).attack("loss").metrics_extra == {"simultaneous_lower": {"auc": 0.6}}
    assert load_results(tmp_path) == data


def test_old_version_1_files_load_or_are_refused_in_one_line(tmp_path):
    """Version 1 is the on-disk schema before and after typing: a file with the two-sided metrics
    loads as written; one from before them (issue 16 §3) is refused, naming the missing keys."""
    data = _result().to_json()
    old = json.loads(json.dumps(data))
    del old["machine"], old["created"], old["genleak_version"], old["bootstrap"]  # optional in version 1
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert read_results(tmp_path).attack("loss").metrics.auc == data["attacks"]["loss"]["metrics"]["auc"]
    for k in ("leakage_auc", "flipped_tpr_at_1pct_fpr"):
        del old["attacks"]["loss"]["metrics"][k]
    (tmp_path / "results.json").write_text(json.dumps(old))
    with pytest.raises(GenleakError) as info:
        load_results(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "attacks.loss.metrics lacks ['leakage_auc', 'flipped_tpr_at_1pct_fpr']" in msg and "rerun" in msg
    for bad, words in (({**data, "version": 2}, "newer genleak"), ({**data, "format": "x"}, "not a genleak results"),
                       ({**data, "sections": {"a": {"status": "done"}}}, "sections.a needs a status")):
        (tmp_path / "results.json").write_text(json.dumps(bad))
        with pytest.raises(GenleakError, match=words):
            load_results(tmp_path)


def test_pipeline_still_exports_the_result_types():
    import genleak.pipeline as pipeline
    import genleak.results as results

    assert (pipeline.AuditResult, pipeline.AttackResult, pipeline.RESULTS_VERSION) == (
        results.AuditResult, results.AttackResult, results.RESULTS_VERSION)
