"""Typed results (genleak.results): to_json / from_json round trips, old files, refusals (issue 13 item 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genleak.errors import GenleakError
from genleak.metrics import evaluate
from genleak.report.results import read_results, save_results
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
    assert read_results(tmp_path).to_json() == data


def test_old_version_1_files_load_as_written_other_versions_are_refused_in_one_line(tmp_path):
    """Version 1 is the on-disk schema before and after typing, and its later keys are optional
    (docs/results-schema.md): a file from before the two-sided metrics and the provenance keys loads,
    its missing keys stay "not recorded" (None, and absent when written back), never guessed."""
    from genleak.report.verdict import compute_verdict

    data = _result().to_json()
    old = json.loads(json.dumps(data))
    for k in ("machine", "created", "genleak_version", "bootstrap", "command"):
        del old[k]
    old["sections"]["cdi"].pop("title")
    for k in ("leakage_auc", "leak_direction", "leakage_auc_ci", "flipped_tpr_at_1pct_fpr", "flipped_tpr_at_01pct_fpr",
              "flipped_tpr_at_1pct_fpr_ci", "asr_calibrated"):
        del old["attacks"]["loss"]["metrics"][k]
    (tmp_path / "results.json").write_text(json.dumps(old))
    r = read_results(tmp_path)
    loss = r.attack("loss")
    assert loss.metrics.auc == data["attacks"]["loss"]["metrics"]["auc"] and loss.metrics.leakage_auc is None
    assert (r.bootstrap, r.machine, r.sections["cdi"].title) == (None, None, None)
    assert read_results(tmp_path).to_json() == old  # written back unchanged: nothing added
    assert compute_verdict(read_results(tmp_path))["level"] == compute_verdict(_result())["level"]
    for bad, words in (({**data, "version": 2}, "version 2; genleak .* reads only version 1 .*newer genleak"),
                       ({**data, "version": 0}, "version 0; .*rerun"),
                       ({**data, "format": "x"}, "not a genleak results file"),
                       ({**data, "sections": {"a": {"status": "done"}}}, "sections.a needs a status"),
                       ({**data, "attacks": {"loss": {"status": "ok", "metrics": {"auc": 0.9}}}}, "metrics lacks")):
        (tmp_path / "results.json").write_text(json.dumps(bad))
        with pytest.raises(GenleakError, match=words) as info:
            read_results(tmp_path).to_json()
        assert "\n" not in str(info.value)


def test_a_cdi_result_round_trips_through_cdi_json_and_refuses_other_versions():
    """cdi.json is written and read through ``CDIResult``: the verdict, both p-values, the scorer and both
    minimum-|P| curves come back as written; a foreign format or version is refused in one line."""
    from genleak.inference.cdi import CDIConfig, cdi_test
    from genleak.results import CDI_VERSION, CDIResult

    rng = np.random.default_rng(1)
    p, u = rng.normal(0.4, 1, (60, 2)), rng.normal(0, 1, (60, 2))
    r = cdi_test(p, u, CDIConfig(n_resamples=20, permutations=99, sizes=[10, 30], refit_resamples=20),
                 columns=["a", "b"], feature_names=["a", "b"])
    data = json.loads(json.dumps(r.to_json()))
    assert (data["format"], data["version"]) == ("genleak.cdi", CDI_VERSION)
    back = CDIResult.from_json(data)
    assert back.to_json() == data
    assert (back.p_value, back.rejected, back.t_statistic, back.scorer_auc) == (r.p_value, r.rejected, r.t_statistic, r.scorer_auc)
    assert back.curve == r.curve and back.fixed_curve == r.fixed_curve and [c.n_suspect for c in back.curve] == [10, 30, 60]
    assert back.min_suspect_size == r.min_suspect_size and back.curve_method == "refit"
    for bad, words in (({**data, "version": 2}, "newer"), ({**data, "format": "x"}, "not a genleak CDI file"),
                       ({k: v for k, v in data.items() if k != "scorer"}, "damaged")):
        with pytest.raises(GenleakError, match=words):
            CDIResult.from_json(bad)
