"""benchmarks/evidence.json and benchmarks/claims.py (issue 13 item 5, issue 16 §5): the recommendation's
numbers are data with a scale and the command that produced them, and the claims table is generated."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import claims  # noqa: E402
import evidence  # noqa: E402
from genleak.report import recommend  # noqa: E402


@pytest.fixture(scope="module")
def doc():
    return evidence.load()


def test_one_file_shipped_with_the_package(doc):
    assert (ROOT / "benchmarks" / "evidence.json").resolve() == recommend.EVIDENCE_FILE.resolve() == evidence.EVIDENCE_FILE
    assert doc == recommend.load_evidence()


def test_every_entry_names_a_command_that_parses_and_a_scale(doc):
    checked = 0
    for kind, key, e in evidence.entries(doc):
        if e.get("defense"):  # a claims row quoting a defense entry (checked as that entry)
            assert e["defense"] in doc["defenses"], key
            continue
        unmeasured = e.get("verdict") == "not attempted" or str(e.get("section", "")).startswith("not measured")
        assert e.get("section"), (kind, key)
        if unmeasured:  # nothing produced it: no command to name, said so in the section
            assert not e.get("commands"), (kind, key)
            continue
        assert e.get("scale"), (kind, key)
        assert e.get("commands"), (kind, key)
        for c in e["commands"]:
            assert evidence.command_problem(c) is None, (kind, key, c, evidence.command_problem(c))
            checked += 1
    assert checked >= 30
    # the check can fail: a wrong option, a missing script, a bad subcommand
    assert "--cfg" in (evidence.command_problem("genleak defend experiment --cfg x") or "")
    assert evidence.command_problem("python benchmarks/latent.py claims --config x") is not None  # --out missing
    assert evidence.command_problem("python benchmarks/no_such.py") == "no such file benchmarks/no_such.py"


def test_claims_rows_have_allowed_verdicts_and_results_md_is_generated(doc):
    rows = claims.claim_rows(doc)
    assert {r["verdict"] for r in rows} <= set(evidence.VERDICTS)
    assert {"reproduced", "trend", "not reproduced", "not attempted"} <= {r["verdict"] for r in rows}
    for r in rows:
        assert r["verdict"] == "not attempted" or (r["scale"] and r["commands"]), r["id"]
    dual = next(r for r in rows if r["id"] == "dualmd")  # a defense-linked row quotes the defense entry
    assert dual["verdict"] == "not reproduced" and dual["ours"] == doc["defenses"]["dualmd"]["measured"]
    md = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    section = md.split(claims.BEGIN)[1].split(claims.END)[0].strip()
    assert section == claims.table(rows), "benchmarks/RESULTS.md is stale: run `python benchmarks/claims.py --write`"


def test_the_recommendation_reads_the_file(tmp_path, monkeypatch, doc):
    from genleak.report.recommend import AuditFacts, section_from_facts
    from genleak.report.recommend import recommend as recommend_for

    facts = AuditFacts(target_kind="pixel-ddpm", level="high", label="High leakage", confidence="high")
    facts.attacks.append(recommend.AttackFact(name="sima", access="gray-box", level="high", auc=0.99, auc_lower=0.97,
                                              auc_upper=1.0, tpr_at_1pct_fpr=0.6, tpr_lower=0.4))
    before = {r.id: r for r in recommend_for(facts)}["distillmd"]
    assert before.expected_effect.scale == doc["defenses"]["distillmd"]["scale"]
    assert doc["defenses"]["distillmd"]["scale"] in before.expected_effect.source
    changed = json.loads(json.dumps(doc))
    changed["defenses"]["distillmd"].update(measured="AUC 0.978 -> 0.123 (rerun)", scale="CIFAR10, 25k members")
    changed["costs"]["distillmd"]["text"] = "Compute: 2.5x."
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(changed))
    monkeypatch.setattr(recommend, "EVIDENCE_FILE", path)
    after = {r["id"]: r for r in section_from_facts(facts)["recommendations"]}["distillmd"]
    assert after["expected_effect"]["measured"] == "AUC 0.978 -> 0.123 (rerun)"
    assert after["expected_effect"]["scale"] == "CIFAR10, 25k members" and after["cost"].startswith("Compute: 2.5x.")
    from genleak.report.html import _recommendations_html

    assert "Scale: CIFAR10, 25k members" in _recommendations_html(0, "defense", [after], {})


def test_update_evidence_and_a_rerun_are_recorded(tmp_path, doc):
    path = tmp_path / "evidence.json"
    shutil.copyfile(evidence.EVIDENCE_FILE, path)
    evidence.update_evidence("defenses", "vae-kl", {"measured": "loss 1.000 -> 0.5"}, path=path)
    got = json.loads(path.read_text())
    assert got["defenses"]["vae-kl"]["measured"] == "loss 1.000 -> 0.5"
    assert got["defenses"]["vae-kl"]["commands"] == doc["defenses"]["vae-kl"]["commands"]  # merged, not replaced
    hit = evidence.record_run(["benchmarks/latent.py", "claims", "--config", "configs/ldm_kl_sweep.json", "--out", "/x"],
                              "/x", path=path)
    # (the claims row "vae-kl" quotes defenses.vae-kl and shows its stamp)
    assert sorted(hit) == ["claims.adversarial-vae", "costs.vae-kl", "defenses.vae-kl", "not_recommended.adversarial-vae"]
    rows = {r["id"]: r for r in claims.claim_rows(evidence.load(path))}
    assert "numbers to update" in claims.table([rows["vae-kl"]]) and "numbers to update" not in claims.table([rows["s2l"]])
    hit = evidence.record_run(["genleak", "iar", "experiment", "--config", "configs/iar_digits_compare.json", "--out", "y"],
                              path=path)
    assert sorted(hit) == ["claims.iar-cfg", "claims.iar-vs-ddpm", "claims.mar-ablation", "costs.iar-output-noise",
                           "defenses.iar-output-noise"]
    assert evidence.record_run(["genleak", "iar", "experiment", "--config", "configs/other.json"], path=path) == []
    with pytest.raises(ValueError, match="kind must be"):
        evidence.update_evidence("nope", "x", {}, path=path)


def test_every_measured_number_is_in_the_results_files(doc):
    """No number without a trace: each decimal in what we measured (not the paper's) appears in
    benchmarks/*.md outside the generated claims table, or is 1 - one there (a sign-flipped AUC)."""
    import re

    md = "".join(p.read_text() for p in sorted((ROOT / "benchmarks").glob("*.md")))
    md = md.split(claims.BEGIN)[0] + md.split(claims.END)[1]  # not the table generated from this file
    untraced = []
    for kind, key, e in evidence.entries(doc):
        text = " ".join(str(e.get(f, "")) for f in ("measured", "caveat", "text", "why", "ours"))
        untraced += [(kind, key, n) for n in re.findall(r"\d+\.\d+", text)
                     if n not in md and f"{1 - float(n):.{len(n.split('.')[1])}f}" not in md]
    assert not untraced, untraced


def test_latent_metrics_reads_every_runs_saved_scores(tmp_path, capsys):
    """`benchmarks/latent.py metrics` (the TPR and CIs beside the latent claims' AUCs): the first column of a
    multi-column score is the attack's score, and a reversed signal is reported two-sided."""
    import numpy as np

    import latent

    def save(run: str, attack: str, members: list, nonmembers: list) -> None:
        (tmp_path / f"scores-{run}" / "scores").mkdir(parents=True, exist_ok=True)
        np.savez(tmp_path / f"scores-{run}" / "scores" / f"{attack}.npz", member_scores=np.array(members),
                 nonmember_scores=np.array(nonmembers))

    with pytest.raises(SystemExit, match="no saved scores"):
        latent.print_metrics(tmp_path)
    save("a", "loss", [1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5])  # 10 of 16 pairs ordered: AUC 0.625
    save("b", "clid", [[0.0, 9.0], [1.0, 9.0]], [[2.0, 0.0], [3.0, 0.0]])  # column 0 reversed, column 1 ignored
    latent.print_metrics(tmp_path, bootstrap=50)
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0], r[1], r[2][:5], r[-1]) for r in rows] == [("| a", "loss", "0.625", "0.625 (direct) |"),
                                                             ("| b", "clid", "0.000", "1.000 (flipped) |")]
