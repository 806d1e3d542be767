"""Two-sided leakage (issue 16 §3) and SecMI's t_sec convention.

An AUC far below 0.5 (DistillMD gave SecMI 0.400 and CLiD 0.373) is a reversed signal that an attacker
flips, not privacy: the metrics report the sign-flipped attack, the verdict judges both directions, the
recommendation re-rates its evidence. SecMI's t_sec follows the public SecMI code (t_sec = 100, k = 10 is
the round trip 90 -> 100 -> 90, 11 queries); the old t_sec = T scores equal the new T + interval.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genleak.metrics import bootstrap_ci, evaluate, leakage_interval, simultaneous_lower, tpr_at_fpr
from genleak.report.verdict import compute_verdict, judged_side, level_of, simultaneous_confidence
from genleak.results import AuditResult


def _scores(shift: float, n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Members N(0, 1) vs non-members N(shift, 1): shift 0.47 gives AUC ~0.37 (members score lower)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, n)


def _results(**metrics: dict) -> dict:
    return {"format": "genleak.results", "version": 1, "seed": 0, "target": {},
            "split": {"name": "s", "fingerprint": "f", "n_members": 500, "n_nonmembers": 500},
            "attacks": {k: {"status": "ok", "access": "gray-box", "metrics": m} for k, m in metrics.items()}}


def _typed(**metrics: dict) -> AuditResult:
    return AuditResult.from_json(_results(**metrics))


def test_a_flipped_attack_reports_one_minus_auc_and_the_flipped_tprs():
    m, n = _scores(0.47)
    r = evaluate(m, n, bootstrap=1000, seed=0)
    f = evaluate(-m, -n, bootstrap=1000, seed=0)  # the attacker who flips the sign
    assert r.auc == pytest.approx(0.378984) and r.leak_direction == "flipped"
    assert r.leakage_auc == 1 - r.auc == f.auc and f.leakage_auc == f.auc and f.leak_direction == "direct"
    # The flipped TPRs are the negated scores' own, at 1% and 0.1%, with the same resamples' CI.
    assert (r.flipped_tpr_at_1pct_fpr, r.flipped_tpr_at_01pct_fpr) == (f.tpr_at_1pct_fpr, f.tpr_at_01pct_fpr)
    assert (r.flipped_tpr_at_1pct_fpr, r.tpr_at_1pct_fpr) == (0.032, 0.004)
    assert r.flipped_tpr_at_1pct_fpr == tpr_at_fpr(-m, -n, 0.01)
    assert r.flipped_tpr_at_1pct_fpr_ci == f.tpr_at_1pct_fpr_ci == (0.014, 0.078)
    flip_ci = bootstrap_ci(m, n, "flipped_tpr_at_fpr", n_resamples=1000, max_fpr=0.01)
    assert r.flipped_tpr_at_1pct_fpr_ci == flip_ci
    # The leakage AUC's CI is the AUC CI mirrored: [1 - hi, 1 - lo] (the AUC is exactly 1 - AUC per resample).
    assert r.leakage_auc_ci == pytest.approx((1 - r.auc_ci[1], 1 - r.auc_ci[0]))
    assert r.leakage_auc_ci == pytest.approx(f.auc_ci)
    assert r.leakage_auc_ci == pytest.approx((0.585571, 0.657244))
    d = r.to_dict()
    assert d["leak_direction"] == "flipped" and d["leakage_auc"] == pytest.approx(0.621016)
    # A CI straddling 0.5 maps to a leakage CI starting at 0.5: chance is not excluded.
    assert leakage_interval((0.45, 0.58)) == (0.5, 0.58) and leakage_interval((0.3, 0.4)) == (0.6, 0.7)


def test_verdict_names_a_reversed_signal_as_a_leak():
    """A run with AUC 0.379 (500 vs 500): one-sided it would read "no leakage"; two-sided it is a
    leak, named sign-flipped, with the flipped attack's figures in the headline."""
    m, n = _scores(0.47)
    metrics = evaluate(m, n, bootstrap=1000, seed=0).to_dict()
    assert level_of(metrics["auc_ci"][0], metrics["tpr_at_1pct_fpr_ci"][0]) == "none"  # the one-sided reading
    v = compute_verdict(_typed(secmi=metrics))
    assert (v["level"], v["direction"], v["attack"]) == ("low", "flipped", "secmi")
    assert v["point_level"] == "moderate"
    assert v["auc_lower"] == pytest.approx(0.585571) and v["tpr_at_1pct_fpr_lower"] == 0.014
    assert v["headline"].startswith("secmi, sign-flipped, reaches AUC 0.621 [95% CI 0.586, 0.657] and "
                                    "TPR@1%FPR 0.032")
    assert any("reversed signal" in d and "not privacy" in d for d in v["details"])
    assert judged_side(_typed(secmi=metrics).attack("secmi"))[0] == "flipped"
    # A chance-level attack stays "direct" and "none", whichever side its CI leans to.
    chance = evaluate(*_scores(0.0, seed=7), bootstrap=1000, seed=0).to_dict()
    assert chance["auc"] == pytest.approx(0.467248) and chance["auc_ci"][1] == pytest.approx(0.502827)
    assert judged_side(_typed(a=chance).attack("a"))[0] == "direct" and compute_verdict(_typed(a=chance))["level"] == "none"


def test_audit_bounds_are_two_sided_and_bonferroni_over_both_directions():
    """The audit's simultaneous lower bounds cover 2 attacks x 2 directions x 2 figures."""
    from genleak.audit import _add_audit_bounds

    (m, n), (cm, cn) = _scores(0.47), _scores(0.0, seed=7)
    data = _results(secmi=evaluate(m, n, bootstrap=1000, seed=0).to_dict(),
                    loss=evaluate(cm, cn, bootstrap=1000, seed=0).to_dict())
    fake = SimpleNamespace(attacks=[SimpleNamespace(name=k, ok=True, member_scores=a, nonmember_scores=b)
                                    for k, a, b in (("secmi", m, n), ("loss", cm, cn))])
    _add_audit_bounds({k: a["metrics"] for k, a in data["attacks"].items()}, fake, (np.ones(500, bool), np.ones(500, bool)),
                      1000, 0)
    joint = data["attacks"]["secmi"]["metrics"]["simultaneous_lower"]
    assert joint["confidence"] == simultaneous_confidence(2) == 1 - 0.05 / 8 and joint["family_size"] == 8
    hi = bootstrap_ci(m, n, "auc", n_resamples=1000, confidence=joint["confidence"])[1]
    assert joint["flipped_auc"] == 1 - hi == pytest.approx(0.574569)
    assert joint == {**simultaneous_lower(m, n, confidence=joint["confidence"], n_resamples=1000),
                     "confidence": joint["confidence"], "family_size": 8, "rule": joint["rule"]}
    got = data["attacks"]["secmi"]["metrics"]
    assert got["flipped_tpr_at_01pct_fpr_ci"] == pytest.approx([0.00595, 0.034])
    v = compute_verdict(AuditResult.from_json(data))
    assert (v["level"], v["direction"], v["auc_lower"]) == ("low", "flipped", joint["flipped_auc"])
    assert any("Bonferroni over 8 figures" in d for d in v["details"])


def test_recommendation_and_report_treat_a_flipped_signal_as_a_leak(tmp_path):
    from genleak.report.html import Run, render_report
    from genleak.report.recommend import EVIDENCE, AuditFacts, recommend

    m, n = _scores(0.47)
    metrics = evaluate(m, n, bootstrap=1000, seed=0).to_dict()
    data = {**_results(secmi=metrics), "target": {"kind": "pixel-ddpm"}}
    facts = AuditFacts.from_results(AuditResult.from_json(data))
    (row,) = facts.attacks
    assert (row.direction, row.level, row.tpr_at_1pct_fpr) == ("flipped", "low", 0.032)
    assert row.auc == pytest.approx(0.621016)
    assert row.auc_upper == pytest.approx(0.657244)
    recs = {r.id: r for r in recommend(facts)}
    assert "sign-flipped" in recs["distillmd"].reason and recs["distillmd"].priority == "consider"
    # Re-rated two-sided: the latent DistillMD left reversed leaks of 0.596 / 0.627 (SimA / CLiD).
    latent = EVIDENCE["distillmd-latent"]
    assert latent.paper_claim_held == "partly" and "0.627" in latent.caveat
    page = render_report([Run(path=tmp_path, result=AuditResult.from_json(data), label="run")])
    assert 'data-metric="leakage_auc" data-value="0.621016"' in page and "sign-flipped" in page
    assert 'data-metric="flipped_tpr_at_1pct_fpr" data-value="0.032"' in page


# ------------------------------------------------------------------------------------------------
# SecMI's t_sec: the public SecMI code's convention
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_target():
    from genleak.targets import DiffusionTarget, build_unet, default_scheduler

    torch.manual_seed(0)
    return DiffusionTarget(build_unet(8, 1, (16, 32)), default_scheduler(), device="cpu")


def test_secmi_queries_the_public_codes_timesteps(tiny_target, monkeypatch):
    """SecMI code: target_steps = range(0, t_sec, k)[1:]; invert from t_c = 0 through the targets, then
    target_steps[-1] -> + k -> back: the denoiser is queried at 0, 10, ..., 90, then 100."""
    from genleak.attacks import get_attack

    t_sec, k = 100, 10
    target_steps = list(range(0, t_sec, k))[1:]
    public = [0, *target_steps[:-1], target_steps[-1], target_steps[-1] + k]  # t_c of every ddim_singlestep
    seen: list[int] = []
    eps = tiny_target.eps
    monkeypatch.setattr(tiny_target, "eps", lambda x, t, cond=None: (seen.append(int(t)), eps(x, t, cond))[1])
    attack = get_attack("secmi", t_sec=t_sec, interval=k)
    attack.score(tiny_target, torch.zeros(2, 1, 8, 8), progress=False)
    assert seen == public == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert attack.nfe == len(seen) == 11
    assert get_attack("secmi").nfe == 12  # the default 110: the t-error at t = 100 (001 eq. 8, CDI code)
    with pytest.raises(ValueError, match="2 x interval"):
        get_attack("secmi", t_sec=10, interval=10)  # the SecMI code has no inversion step to round-trip from


def test_old_t_sec_scores_equal_new_t_sec_plus_interval(tiny_target, digits8):
    """The former convention (invert 0 -> T, round trip T -> T + k -> T), written out here, gives the
    same scores bit for bit as the new t_sec = T + k."""
    from genleak.attacks import get_attack
    from genleak.targets.base import ddim_invert, ddim_step

    x = digits8.images[:4]
    for old_t, k in ((20, 10), (100, 10), (40, 20)):
        with torch.no_grad():
            x_t = ddim_invert(tiny_target, x, old_t, k)
            back = ddim_step(tiny_target, ddim_step(tiny_target, x_t, old_t, old_t + k), old_t + k, old_t)
        old = -(back - x_t).pow(2).flatten(1).sum(1)
        new = get_attack("secmi", t_sec=old_t + k, interval=k).score(tiny_target, x, progress=False)
        assert torch.equal(new, old.to(new.dtype)), (old_t, k)


def test_defense_tables_and_mlflow_keys_show_the_flipped_signal():
    """A defense that pushes an attack's AUC to ~0.2 must read as a leak in the defense table and in MLflow."""
    from genleak.defenses.evaluate import TABLE_KEYS, _leak_cell
    from genleak.report.mlflow_log import mlflow_payload

    rng = np.random.default_rng(0)
    m = evaluate(rng.normal(-1.2, 1, 400), rng.normal(0, 1, 400)).to_dict()  # members score lower
    assert m["leak_direction"] == "flipped" and m["leakage_auc"] == pytest.approx(1 - m["auc"])
    row = {k: m[k] for k in TABLE_KEYS}
    cell = _leak_cell(row, " / ", 3)
    assert cell.startswith(f"{m['auc']:.3f} / ") and f"(flipped: {m['leakage_auc']:.3f} / " in cell
    assert "flipped" not in _leak_cell({**row, "leak_direction": "direct"}, " / ", 3)
    _, metrics, _ = mlflow_payload(_typed(secmi=m))
    assert metrics["secmi.leakage_auc"] == pytest.approx(m["leakage_auc"])
    # N(-1.2, 1) vs N(0, 1), 400 vs 400: the flipped TPR@1%FPR averages 0.14; seed 0 makes it deterministic,
    # and over 200 other seeds its minimum was 0.035
    assert metrics["secmi.flipped_tpr_at_1pct_fpr"] == pytest.approx(m["flipped_tpr_at_1pct_fpr"])
    assert m["flipped_tpr_at_1pct_fpr"] > 0.03


def test_a_sweep_picks_the_value_that_leaks_most_on_either_side():
    """Choosing a hyperparameter on a shadow model: AUC 0.2 (flipped) leaks more than AUC 0.7."""
    from genleak.pipeline import best_value

    def row(auc, tpr, flipped_tpr):
        return {"auc": auc, "tpr_at_1pct_fpr": tpr, "leakage_auc": max(auc, 1 - auc),
                "leak_direction": "flipped" if auc < 0.5 else "direct", "flipped_tpr_at_1pct_fpr": flipped_tpr}

    rows = {10: row(0.7, 0.05, 0.0), 20: row(0.2, 0.0, 0.3), 30: row(0.55, 0.01, 0.0)}
    assert best_value(rows) == 20
    rows[20] = row(0.35, 0.0, 0.3)  # 0.65 two-sided < 0.7
    assert best_value(rows) == 10
    # ties on the two-sided AUC go to the leaking side's TPR
    assert best_value({1: row(0.3, 0.0, 0.02), 2: row(0.7, 0.05, 0.0)}) == 2
