"""The one-line answer at the top of a report: how leaky is this model, and how sure are we?

Why a rule and not a score: an auditor needs a sentence that two people reading the same
``results.json`` agree on. The rule is written down here once (and in docs/results-schema.md),
applied to the numbers ``genleak.metrics`` produced, and never to anything recomputed.

The rule
--------
For every attack that succeeded, and for its sign-flipped twin (scores negated: AUC 1 - AUC, its own
TPR@1%FPR, ``genleak.metrics`` "Two-sided leakage"), take the *lower* end of the 95% bootstrap CI of
the AUC and of the TPR@1%FPR (the point estimate when the run has no CIs) and find the highest level
whose bar either figure clears:

=========  =========================  ==============================  ===========================
level      AUC lower bound            TPR@1%FPR lower bound           reads as
=========  =========================  ==============================  ===========================
high       >= 0.80                    >= 0.10 (10x chance)            members are readily told apart
moderate   >= 0.60                    >= 0.03 (3x chance)             a clear, exploitable signal
low        > 0.50                     --                              a detectable but weak signal
none       otherwise                  --                              no leakage detectable at this size
=========  =========================  ==============================  ===========================

Two-sided: an attack whose AUC lies far below 0.5 (members score *lower*) leaks a reversed signal
that an attacker who knows the direction flips; the verdict names it "sign-flipped" and judges it
like any attack, never as privacy.

Several attacks, one verdict: taking the best of k attacks' 95% lower bounds overstates the level
about k times as often as one bound would. When the audit computed them (``genleak audit`` with
bootstrap CIs), the rule therefore uses *simultaneous* lower bounds (``metrics.simultaneous_lower``):
each the lower end of a percentile bootstrap interval at confidence 1 - 0.05 / (4k), Bonferroni
over the k attacks x 2 directions x 2 figures, so the chance that any bound used exceeds its true
value stays <= 2.5% as for a single 95% interval. Results without them (``genleak attack`` runs) are
judged on the 95% CIs, as the table says (with both directions, up to 5% for a null AUC).

With fewer than ``MIN_NONMEMBERS_FOR_TPR`` (100) non-members TPR@1%FPR is TPR@0%FPR, which one
member scoring above every non-member meets by chance; the TPR bars then do not count.

TPR@1%FPR is the figure that matters for MIAs (Carlini et al. 2022, "Membership inference attacks
from first principles"): a random guess reaches 0.01, so 0.03 and 0.10 are 3x and 10x chance. AUC
0.6 / 0.8 are the conventional "weak" / "strong" discrimination bars. The report's level is the
highest over attacks (an auditor assumes the best attacker); the deciding attack is named.

Confidence says whether the sample size supports the level:

* ``high``: CIs exist, and the point estimates give the same level as the lower bounds;
* ``medium``: CIs exist, but the point estimates alone would give a *higher* level (more samples
  would tell; the report says which level the point estimates suggest);
* ``low``: no CIs (the run had ``--bootstrap 0``), or an evaluation guard fired (distribution
  shift / duplicates: then the attacks may measure the shift, not membership).

Distribution shift downgrades the level itself (thesis ch. 7, pitfall 2): when the guards section's
model-free blind classifier separates members from non-members significantly (permutation p-value
< ``SHIFT_ALPHA``, the guard's own alarm) *and* its AUC is comparable to the best attack's two-sided
AUC L = max(AUC, 1 - AUC) over the attacks -- blind AUC >= L - ``SHIFT_MARGIN``, or the deciding
attack's judged AUC lower bound is not above the blind AUC -- no attack is shown to do better than
a classifier that never queried the model, so the verdict becomes "Inconclusive" (level
``unknown``) with the reason in its headline; ``level_before_shift`` keeps the level the attacks
alone give. A "none" verdict is not downgraded (a shift did not hide a leak the attacks missed).
"""

from __future__ import annotations

from typing import Any

from genleak.metrics import MetricReport
from genleak.results import AttackResult, AuditResult

# (level, AUC lower-bound bar, TPR@1%FPR lower-bound bar, label). Ordered from most to least leaky.
LEVELS: tuple[tuple[str, float, float | None, str], ...] = (
    ("high", 0.80, 0.10, "High leakage"),
    ("moderate", 0.60, 0.03, "Moderate leakage"),
    ("low", 0.50, None, "Low leakage"),  # AUC strictly above 0.5
)
NONE_LEVEL = ("none", "No leakage detected")
UNKNOWN_LEVEL = ("unknown", "Inconclusive")
_RANK = {"unknown": -1, "none": 0, "low": 1, "moderate": 2, "high": 3}

THRESHOLDS_TEXT = (
    "high: AUC >= 0.80 or TPR@1%FPR >= 0.10; moderate: AUC >= 0.60 or TPR@1%FPR >= 0.03; "
    "low: AUC > 0.50; TPR bars only with >= 100 non-members; judged on the lower end of the 95% bootstrap CI (point estimate without CIs; "
    "Bonferroni-adjusted over the attacks and both directions when the audit computed simultaneous bounds), "
    "highest level over all attacks and their sign-flipped twins "
    "(an AUC below 0.5 is a reversed leak, not privacy)"
)


# Below 1/0.01 non-members TPR@1%FPR is TPR@0%FPR: with n non-members the top-scoring member beats
# them all with probability ~ n_m / (n_m + n) under no leakage at all, so a TPR bar of 0.03 is met by
# one lucky member (1/32 > 0.03); the TPR bars count only from 100 non-members (metrics module doc).
MIN_NONMEMBERS_FOR_TPR = 100

# Shift downgrade (module docstring). SHIFT_ALPHA = inference.guards.BLIND_ALPHA (not imported: the
# verdict stays a torch-free function of results.json; tests/test_realistic.py checks they agree).
# SHIFT_MARGIN 0.05: ~2.5 standard errors of an AUC at 500 + 500 (sd ~0.018), so an attack that
# beats the blind baseline by less is not shown, at audit sizes, to measure more than the shift.
SHIFT_ALPHA = 0.01
SHIFT_MARGIN = 0.05

# Family-wise error of the verdict's lower bounds: one-sided 2.5%, as a single two-sided 95% CI's.
FAMILY_ALPHA = 0.05


def simultaneous_confidence(n_attacks: int) -> float:
    """Two-sided confidence of each interval so that the 4 x ``n_attacks`` lower bounds the verdict
    uses (2 directions x 2 figures per attack) are jointly valid at FAMILY_ALPHA (Bonferroni)."""
    return 1.0 - FAMILY_ALPHA / (4 * max(1, n_attacks))


def level_of(auc: float, tpr1: float) -> str:
    """The leakage level of one (AUC, TPR@1%FPR) pair under the rule above."""
    for name, auc_bar, tpr_bar, _ in LEVELS:
        if name == "low":
            if auc > auc_bar:
                return name
        elif auc >= auc_bar or (tpr_bar is not None and tpr1 >= tpr_bar):
            return name
    return NONE_LEVEL[0]


def label_of(level: str) -> str:
    for name, _, _, label in LEVELS:
        if name == level:
            return label
    return NONE_LEVEL[1] if level == NONE_LEVEL[0] else UNKNOWN_LEVEL[1]


def judged_side(attack: AttackResult) -> tuple[str, float, float, bool]:
    """(direction, AUC, TPR@1%FPR, has CIs): the figures the rule judges one successful attack on,
    for the more leaky of the attack as scored ("direct") and its sign-flipped twin ("flipped"): the
    multiplicity-adjusted lower bounds if stored, else the 95% CI's lower ends, else the point
    estimates; TPR counts as 0 below ``MIN_NONMEMBERS_FOR_TPR`` non-members. Results written before
    the two-sided view lack the flipped TPRs: the flipped twin is then judged on its AUC alone."""
    m = _metrics(attack)
    has_ci = bool(m.auc_ci) and bool(m.tpr_at_1pct_fpr_ci)
    if m.auc_ci and m.tpr_at_1pct_fpr_ci:
        flip_ci = m.flipped_tpr_at_1pct_fpr_ci
        sides = {"direct": (m.auc_ci[0], m.tpr_at_1pct_fpr_ci[0]),
                 "flipped": (1.0 - m.auc_ci[1], flip_ci[0] if flip_ci else 0.0)}
    else:
        sides = {"direct": (m.auc, m.tpr_at_1pct_fpr), "flipped": (1.0 - m.auc, m.flipped_tpr_at_1pct_fpr or 0.0)}
    joint = attack.metrics_extra.get("simultaneous_lower")
    if has_ci and joint:  # multiplicity-adjusted (module docstring)
        sides = {"direct": (joint["auc"], joint["tpr_at_1pct_fpr"]),
                 "flipped": (joint.get("flipped_auc", sides["flipped"][0]),
                             joint.get("flipped_tpr_at_1pct_fpr", sides["flipped"][1]))}
    if not _tpr_counts(m):  # TPR@1%FPR is TPR@0%FPR of a handful of samples: judge on AUC alone
        sides = {d: (a, 0.0) for d, (a, _) in sides.items()}
    # The flipped twin is named only when it leaks (a chance-level attack stays "direct").
    rank = {d: _RANK[level_of(*v)] for d, v in sides.items()}
    flipped = rank["flipped"] > rank["direct"] or (rank["flipped"] == rank["direct"] > 0
                                                  and sides["flipped"] > sides["direct"])
    direction = "flipped" if flipped else "direct"
    return direction, float(sides[direction][0]), float(sides[direction][1]), has_ci


def point_level(attack: AttackResult) -> str:
    """The level the point estimates give, two-sided (the attack or its sign-flipped twin)."""
    m = _metrics(attack)
    counts = _tpr_counts(m)
    direct = level_of(m.auc, m.tpr_at_1pct_fpr if counts else 0.0)
    flipped = level_of(1.0 - m.auc, (m.flipped_tpr_at_1pct_fpr or 0.0) if counts else 0.0)
    return max(direct, flipped, key=_RANK.__getitem__)


def _metrics(attack: AttackResult) -> MetricReport:
    if attack.metrics is None:
        raise ValueError(f"attack '{attack.name}' has no metrics to judge")
    return attack.metrics


def _tpr_counts(m: MetricReport) -> bool:
    return (m.n_nonmembers or 0) >= MIN_NONMEMBERS_FOR_TPR


def compute_verdict(result: AuditResult) -> dict[str, Any]:
    """The verdict of one result: level, label, confidence, deciding attack, text.

    Pure function of the stored metrics (no scores needed), so ``genleak report html`` on an old run
    and the audit that wrote it agree.
    """
    ok = [a for a in result.attacks if a.ok and a.metrics is not None]
    failed = [a.name for a in result.attacks if not a.ok]
    guard_alerts = guard_warnings(result)
    details: list[str] = []
    if failed:
        details.append(f"{len(failed)} of {len(result.attacks)} attacks failed ({', '.join(failed)}); "
                       "the verdict rests on the others.")
    if not ok:
        return {
            "level": UNKNOWN_LEVEL[0], "label": UNKNOWN_LEVEL[1], "confidence": "none", "attack": None,
            "headline": "no attack produced a result.",
            "details": details, "thresholds": THRESHOLDS_TEXT,
        }
    rows = []
    for a in ok:
        direction, auc_lo, tpr_lo, has_ci = judged_side(a)
        rows.append({
            "attack": a.name, "has_ci": has_ci, "direction": direction,
            "level": level_of(auc_lo, tpr_lo), "point_level": point_level(a),
            "auc_lo": auc_lo, "tpr_lo": tpr_lo, "result": a, "metrics": _metrics(a),
        })
    # The most leaky attack decides; ties go to the larger AUC lower bound, then TPR lower bound.
    best = max(rows, key=lambda r: (_RANK[r["level"]], r["auc_lo"], r["tpr_lo"]))
    point_best = max(rows, key=lambda r: (_RANK[r["point_level"]], abs(r["metrics"].auc - 0.5)))
    level = best["level"]
    all_ci = all(r["has_ci"] for r in rows)
    joint = best["result"].metrics_extra.get("simultaneous_lower") if all_ci else None
    bound_name = "95% CI"
    if joint:
        bound_name = f"simultaneous {joint['confidence'] * 100:.2f}% interval"
        details.append(f"Judged on lower bounds adjusted for choosing the most leaky of {len(rows)} attacks "
                       f"(Bonferroni over {joint['family_size']} figures: {bound_name}s).")
    if not all_ci:
        confidence = "low"
        details.append("No bootstrap confidence intervals: judged on point estimates (rerun with --bootstrap 1000).")
    elif _RANK[point_best["point_level"]] > _RANK[level]:
        confidence = "medium"
        details.append(
            f"The point estimates of {point_best['attack']} suggest {label_of(point_best['point_level']).lower()}, "
            f"but the {bound_name} does not exclude a lower level: more members/non-members would tell."
        )
    else:
        confidence = "high"
    if guard_alerts:
        confidence = "low"
        details.append("An evaluation guard fired (see warnings): the attacks may measure a difference between "
                       "the member and non-member sets rather than membership.")
    m = best["metrics"]
    n_m, n_n = m.n_members, m.n_nonmembers
    if n_n is not None and n_n < 100:
        details.append(f"Only {n_n} non-members: TPR@1%FPR is really TPR@0%FPR (needs >= 100), so the level "
                       "is judged on AUC alone.")
    if best["direction"] == "flipped":
        ci = m.auc_ci
        headline = (
            f"{best['attack']}, sign-flipped, reaches AUC {_fmt(1 - m.auc)}{_ci(ci and (1 - ci[1], 1 - ci[0]))} "
            f"and TPR@1%FPR {_fmt(m.flipped_tpr_at_1pct_fpr or 0.0)}"
            f"{_ci(m.flipped_tpr_at_1pct_fpr_ci)} on {n_m} members vs {n_n} non-members."
        )
        details.append(f"{best['attack']} leaks a reversed signal: members score lower (AUC {_fmt(m.auc)}). "
                       "An attacker who knows the direction flips the score; this is a leak, not privacy.")
    else:
        headline = (
            f"{best['attack']} reaches AUC {_fmt(m.auc)}{_ci(m.auc_ci)} and "
            f"TPR@1%FPR {_fmt(m.tpr_at_1pct_fpr)}{_ci(m.tpr_at_1pct_fpr_ci)} "
            f"on {n_m} members vs {n_n} non-members."
        )
    verdict = {
        "level": level, "label": label_of(level), "confidence": confidence, "attack": best["attack"],
        "direction": best["direction"],
        "auc_lower": best["auc_lo"], "tpr_at_1pct_fpr_lower": best["tpr_lo"],
        "point_level": point_best["point_level"],
        "headline": headline, "details": details, "thresholds": THRESHOLDS_TEXT,
    }
    reason = shift_reason(result, rows, best) if _RANK[level] > _RANK[NONE_LEVEL[0]] else None
    if reason:
        verdict.update(level=UNKNOWN_LEVEL[0], label=UNKNOWN_LEVEL[1], confidence="low", level_before_shift=level,
                       headline=f"{reason[0].upper()}{reason[1:]}. The attacks alone: {headline}")
        details.insert(0, f"Downgraded from {label_of(level).lower()} to inconclusive: {reason}. The attacks may "
                          "measure the difference between the member and non-member sets, not membership; "
                          "draw non-members from the members' source and preprocessing.")
    return verdict


def shift_reason(result: AuditResult, rows: list[dict[str, Any]], best: dict[str, Any]) -> str | None:
    """Why the verdict is downgraded for distribution shift (module docstring), or None."""
    blind = None
    for sec in (result.sections or {}).values():
        m = sec.metrics or {}
        if sec.kind == "guards" and sec.status == "ok" and m.get("blind_classifier_auc") is not None:
            blind = (float(m["blind_classifier_auc"]), m.get("blind_classifier_p_value"))
    if blind is None or blind[1] is None or blind[1] >= SHIFT_ALPHA:
        return None
    b = blind[0]
    top = max(rows, key=lambda r: max(r["metrics"].auc, 1 - r["metrics"].auc))
    leak = max(top["metrics"].auc, 1 - top["metrics"].auc)
    if b < leak - SHIFT_MARGIN and best["auc_lo"] > b:
        return None
    return (f"distribution shift: a model-free classifier separates the sets with AUC {_fmt(b)} "
            f"(p = {blind[1]:.2g}), comparable to the best attack's {_fmt(leak)} ({top['attack']}"
            f"{', sign-flipped' if top['metrics'].auc < 0.5 else ''})")


def guard_warnings(result: AuditResult) -> list[str]:
    """Warnings raised by evaluation-guard sections (``kind: "guards"``) of a result."""
    out: list[str] = []
    for sec in (result.sections or {}).values():
        if sec.kind == "guards":
            out.extend(str(w) for w in sec.warnings or [])
    return out


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
