"""Defense recommendation: the audit's last section (issue 7) — what to do about the leak it measured.

The section reads only what the audit measured (``results.json`` after the attacks and the earlier
sections): the verdict and its confidence, the access level of every attack that leaks, the target
type, CDI's decision and extraction's count. From these it picks defenses by fixed rules (below) and
prints, for each, the exact ``genleak`` command that applies it, the reason (the measured number
that triggered it), the effect *genleak measured* for that defense at tiny scale (with its source
and whether the paper's claim held there) and the cost. Nothing here is fitted: the thresholds are
the verdict's levels (``genleak.report.verdict``), named below with why.

The rules
---------
* Nothing is recommended unless the audit detected leakage: an attack at or above
  ``DEFEND_FROM_LEVEL``, a CDI rejection, or an extracted training image. Otherwise: "no defense
  needed at this confidence" (with the largest AUC the CIs still allow).
* Pixel DDPM: DistillMD (001 §3.3, Algorithm 2) for any leak — the one defense here measured to
  lower gray-box *and* black-box attacks; DualMD (001 §3.4) when a black-box attack leaks, or, when
  no black-box attack ran, as an option for models whose weights stay private (001 §4.1: a
  black-box defense only); DP-SGD when gray/white-box leakage reaches ``DPSGD_FROM_LEVEL`` (the
  only formal guarantee, at a large utility cost).
* DualMD folder (already defended): DistillMD from the same teachers.
* Latent diffusion: a stronger KL weight in the beta-VAE (000, SimA's first LDM hardening) unless the
  VAE already has ``KL_WEIGHT_HARDENED``; text-to-image adds prompt diversification (001 §3.5) unless
  the model was trained with ``PROMPT_VARIANTS`` rephrasings; DistillMD on latent teachers as for
  pixel models on text-to-image targets (measured there) and as "consider" on unconditional LDMs
  (not measured), DualMD as "consider" (it barely helped without prompt diversification), through
  ``genleak defend disjoint --target``, which trains the audited folder's architecture; DP-SGD as
  for pixel models (``defend dpsgd --target`` trains latent and text-to-image UNets too).
* Image autoregressive models: output noise on the logits (thesis supp. D.11).

Every command the rules can print is parsed against genleak's command tree by the tests
(``genleak.cli.parse``; this module sits below the CLI and does not import it).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genleak.errors import GenleakError
from genleak.report.sections import SectionSkipped, SectionSpec
from genleak.report.verdict import compute_verdict, guard_warnings, judged_side, level_of
from genleak.results import AuditResult, CDIOutcome

SECTION_NAME = "defense"

_RANK = {"unknown": -1, "none": 0, "low": 1, "moderate": 2, "high": 3}

# --------------------------------------------------------------------------------------------------
# Thresholds. All are levels of the verdict rule (genleak.report.verdict), i.e. bars on the lower
# end of 95% bootstrap CIs fixed before any audit; none is fitted on an audit's member labels.
# --------------------------------------------------------------------------------------------------

# "low" is the lowest verdict level whose AUC CI excludes chance (lower bound > 0.5). Below it the
# audit cannot tell a leak from sampling noise, and no defense's utility cost is justified by it.
DEFEND_FROM_LEVEL = "low"
# "moderate" is the verdict's "clear, exploitable signal" (AUC >= 0.6 or TPR@1%FPR >= 3x chance).
# From here a defense is "recommended"; a merely detectable ("low") leak gets "consider".
RECOMMEND_FROM_LEVEL = "moderate"
# DP-SGD cost FID 7.8 -> 126.7 at tiny scale (benchmarks/RESULTS.md, Defenses): suggest it only for
# an exploitable gray/white-box leak, never for a weak one.
DPSGD_FROM_LEVEL = "moderate"
# One regenerated training image is a privacy breach by itself (Carlini et al. 2023, extraction).
EXTRACTION_MIN_IMAGES = 1
# The smallest KL weight of the sweep in benchmarks/results_latent.md §1 that lowered the attacks
# (1e-3 and 1e-2 left every AUC at 1.000): measured on the benchmark's own LDMs, not on this audit.
KL_WEIGHT_HARDENED = 0.1
# 001 §4.2: five BLIP rephrasings per image, one of the six captions drawn per step.
PROMPT_VARIANTS = 5
# DP-SGD noise multiplier of the measured run (benchmarks/RESULTS.md, Defenses): sigma = 1.
DPSGD_NOISE_MULTIPLIER = 1.0
# The output-noise grid of benchmarks/RESULTS.md (IAR §5): extraction stops at 3, MIAs need >= 10.
IAR_NOISE_SIGMAS = "0,3,10,30"

PRIORITY_RECOMMENDED = "recommended"
PRIORITY_CONSIDER = "consider"
_ACCESS_ORDER = ("white-box", "gray-box", "black-box")

# --------------------------------------------------------------------------------------------------
# What genleak measured for each defense, read from evidence.json (next to this module; the benchmark
# commands that produce an entry update it, benchmarks/claims.py prints it): numbers are data, not
# code, so a rerun shows up here. "paper_claim_held" says whether the paper's claim reproduced at
# tiny scale: "yes", "partly", "no" (RESULTS.md documents each), "not claimed".
# --------------------------------------------------------------------------------------------------

EVIDENCE_FILE = Path(__file__).with_name("evidence.json")


@dataclass(frozen=True)
class Evidence:
    """The expected effect of a defense as genleak measured it: at what scale, by which commands
    (``source`` names the RESULTS.md section and the commands), and whether the paper's claim held."""

    measured: str
    source: str
    paper: str
    paper_claim_held: str
    caveat: str = ""
    scale: str = ""
    commands: tuple[str, ...] = ()


def _source(entry: dict[str, Any]) -> str:
    commands = "; ".join(f"`{c}`" for c in entry.get("commands") or []) or "no command"
    return f"{entry['section']}: {commands} ({entry.get('scale') or 'scale not recorded'})"


def load_evidence(path: Path | None = None) -> dict[str, Any]:
    """evidence.json (``EVIDENCE_FILE`` unless given), read at every call so an update is never stale."""
    p = Path(path or EVIDENCE_FILE)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise GenleakError(f"cannot read the defense evidence '{p}' ({err}); reinstall genleak") from err
    if not isinstance(doc, dict) or doc.get("format") != "genleak.evidence" or doc.get("version") != 1:
        raise GenleakError(f"'{p}' is not a genleak.evidence version 1 file")
    return doc


def _evidence(key: str, doc: dict[str, Any] | None = None) -> Evidence:
    e = (doc or load_evidence())["defenses"][key]
    return Evidence(measured=e["measured"], source=_source(e), paper=e["paper"],
                    paper_claim_held=e["paper_claim_held"], caveat=e.get("caveat", ""), scale=e.get("scale") or "",
                    commands=tuple(e.get("commands") or ()))


def _cost(key: str) -> str:
    c = load_evidence()["costs"][key]
    return f"{c['text']} (Measured at: {c.get('scale') or 'not measured'}.)"


def _rejected(key: str) -> dict[str, str]:
    r = load_evidence()["not_recommended"][key]
    return {"name": r["name"], "why": f"{r['why']} ({_source(r)})"}


def __getattr__(name: str) -> Any:
    """``EVIDENCE``, ``COSTS`` and ``NOT_RECOMMENDED`` as the dicts they were before evidence.json."""
    doc = load_evidence()
    if name == "EVIDENCE":
        return {k: _evidence(k, doc) for k in doc["defenses"]}
    if name == "COSTS":
        return {k: _cost(k) for k in doc["costs"]}
    if name == "NOT_RECOMMENDED":
        return {k: _rejected(k) for k in doc["not_recommended"]}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------
# Inputs: the facts of one audit
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackFact:
    """One successful attack as the rule sees it (levels judged like the verdict's)."""

    name: str
    access: str
    level: str
    auc: float
    auc_lower: float
    auc_upper: float | None
    tpr_at_1pct_fpr: float
    tpr_lower: float
    # "flipped": the figures above are the sign-flipped attack's (AUC 1 - AUC: members score lower);
    # auc_upper is the two-sided leakage AUC's upper bound.
    direction: str = "direct"


@dataclass
class AuditFacts:
    """What the audit measured, reduced to what the recommendation rules read."""

    target_kind: str  # pixel-ddpm | latent-diffusion | text-to-image-ldm | dualmd | iar-* | unknown
    level: str
    label: str
    confidence: str
    point_level: str | None = None
    deciding_attack: str | None = None
    attacks: list[AttackFact] = field(default_factory=list)
    guard_warnings: list[str] = field(default_factory=list)
    cdi: dict[str, Any] | None = None  # rejected, p_value, alpha, min_suspect_size, n_suspect
    extraction: dict[str, Any] | None = None  # n_extracted_train_images, n_generated
    training: dict[str, Any] = field(default_factory=dict)  # the target's genleak_train.json (config, ...)
    vae_kl_weight: float | None = None
    prompt_variants: int | None = None
    target_path: str | None = None
    split_path: str | None = None
    run_dir: str | None = None

    @classmethod
    def from_results(cls, result: AuditResult, *, vae_kl_weight: float | None = None,
                     run_dir: str | Path | None = None) -> AuditFacts:
        """Facts of a result (``results.json``, with whatever sections it holds so far)."""
        verdict = compute_verdict(result)
        rows = []
        for a in result.attacks:
            m = a.metrics
            if m is None:
                continue
            direction, auc_lo, tpr_lo, _ = judged_side(a)  # the verdict's own rule, per attack, two-sided
            flipped, ci = direction == "flipped", m.auc_ci
            rows.append(AttackFact(
                name=a.name, access=str(a.description.get("access") or "gray-box"), level=level_of(auc_lo, tpr_lo),
                auc=float(1 - m.auc if flipped else m.auc), auc_lower=float(auc_lo),
                auc_upper=float(max(ci[1], 1 - ci[0])) if ci else None,
                tpr_at_1pct_fpr=float((m.flipped_tpr_at_1pct_fpr or 0.0) if flipped else m.tpr_at_1pct_fpr),
                tpr_lower=float(tpr_lo), direction=direction))
        audit = result.audit or {}
        training = dict(audit.get("training") or {})
        extra = (training.get("config") or {}).get("extra") or {}
        variants = extra.get("prompt_variants")
        return cls(
            target_kind=str(result.target.get("kind") or "unknown"),
            level=verdict["level"], label=verdict["label"], confidence=verdict["confidence"],
            point_level=verdict.get("point_level"), deciding_attack=verdict.get("attack"),
            attacks=rows, guard_warnings=guard_warnings(result),
            cdi=_cdi_facts(result), extraction=_extraction_facts(result), training=training,
            vae_kl_weight=vae_kl_weight, prompt_variants=int(variants) if variants is not None else None,
            target_path=audit.get("target_path"), split_path=audit.get("split_path"),
            run_dir=str(run_dir) if run_dir is not None else None,
        )

    # -- derived ---------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        """pixel | latent | text | dualmd | iar | other: which defenses genleak can apply."""
        k = self.target_kind
        if k == "pixel-ddpm":
            return "pixel"
        if k == "latent-diffusion":
            return "latent"
        if k == "text-to-image-ldm":
            return "text"
        if k == "dualmd":
            return "dualmd"
        if k.startswith("iar-"):
            return "iar"
        return "other"

    def leak(self, access: Sequence[str]) -> AttackFact | None:
        """The leakiest attack among ``access`` levels that reaches ``DEFEND_FROM_LEVEL``, else None."""
        rows = [r for r in self.attacks if r.access in access and _RANK[r.level] >= _RANK[DEFEND_FROM_LEVEL]]
        return max(rows, key=lambda r: (_RANK[r.level], r.auc_lower, r.tpr_lower)) if rows else None

    def ran(self, access: str) -> bool:
        return any(r.access == access for r in self.attacks)

    @property
    def cdi_rejected(self) -> bool:
        return bool(self.cdi and self.cdi.get("rejected"))

    @property
    def extracted(self) -> int:
        return int((self.extraction or {}).get("n_extracted_train_images") or 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["family"] = self.family
        d.pop("training", None)  # already under results.json["audit"]["training"]
        return d


def _cdi_facts(result: AuditResult) -> dict[str, Any] | None:
    for sec in (result.sections or {}).values():
        if sec.kind == "cdi" and sec.status == "ok":
            m = sec.metrics or {}
            cdi = CDIOutcome.from_json(m)
            if cdi is None:  # no p-value recorded: only an explicit decision counts
                return {"rejected": bool(m.get("rejected")), "p_value": m.get("p_value"), "alpha": m.get("alpha"),
                        "min_suspect_size": m.get("min_suspect_size"), "n_suspect": m.get("n_suspect")}
            return {"rejected": cdi.rejected, "p_value": cdi.p_value, "alpha": cdi.alpha,
                    "min_suspect_size": cdi.min_suspect_size, "n_suspect": cdi.n_suspect}
    return None


def _extraction_facts(result: AuditResult) -> dict[str, Any] | None:
    for sec in (result.sections or {}).values():
        if sec.kind == "extraction" and sec.status == "ok":
            m = sec.metrics or {}
            if "n_extracted_train_images" in m:
                return {"n_extracted_train_images": m.get("n_extracted_train_images"),
                        "n_generated": m.get("n_generated")}
    return None


# --------------------------------------------------------------------------------------------------
# The recommendations
# --------------------------------------------------------------------------------------------------


@dataclass
class Recommendation:
    """One defense to apply: why, how (commands), what genleak measured it to do, and what it costs."""

    id: str
    name: str
    priority: str  # "recommended" | "consider"
    reason: str
    triggers: list[dict[str, Any]]
    commands: list[str]
    verify: list[str]
    expected_effect: Evidence
    cost: str
    paper: str
    applies_if: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["expected_effect"] = asdict(self.expected_effect)
        return d


def _cmd(*argv: str) -> str:
    return shlex.join(["genleak", *[str(a) for a in argv]])


class _Paths:
    """The paths the commands use: the audit's own inputs when recorded, else readable placeholders."""

    def __init__(self, f: AuditFacts) -> None:
        self.target = f.target_path or "TARGET"
        self.split = f.split_path or "split.json"
        self.run = f.run_dir or "AUDIT_OUT"
        base = Path(self.target)
        self.prefix = str(base.parent / base.name) if f.target_path else "defended"

    def out(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def verify(self, model: str, label: str, *attack_args: str) -> list[str]:
        audit_out = f"{model}-audit"
        return [_cmd("audit", "--target", model, "--split", self.split, "--out", audit_out, *attack_args),
                _cmd("report", "compare", self.run, audit_out, "--labels", f"baseline,{label}")]


def _pixel_train_args(training: dict[str, Any]) -> list[str]:
    """The baseline's recipe as `genleak defend ...` options (001 app. A.2.2: same steps for every model)."""
    c = training.get("config") or {}
    args: list[str] = []
    if c.get("steps"):
        args += ["--steps", str(int(c["steps"]))]
    if c.get("block_out_channels"):
        args += ["--channels", ",".join(str(int(x)) for x in c["block_out_channels"])]
    if c.get("lr") is not None:
        args += ["--lr", repr(float(c["lr"]))]
    if c.get("batch_size"):
        args += ["--batch-size", str(int(c["batch_size"]))]
    if "ema_decay" in c:
        args += ["--ema", repr(float(c["ema_decay"] or 0.0))]
    return args


def _ldm_train_args(training: dict[str, Any], text: bool) -> list[str]:
    c = training.get("config") or {}
    args = _pixel_train_args(training)
    if c.get("beta_schedule"):
        args += ["--schedule", str(c["beta_schedule"])]
    if text:
        args.append("--text")
    return args


def _trigger(kind: str, what: str, value: Any, bar: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "what": what, "value": value, "threshold": bar, **extra}


def _attack_trigger(r: AttackFact) -> dict[str, Any]:
    return _trigger("attack", f"{_name(r)} ({r.access}) AUC lower bound", round(r.auc_lower, 4),
                    f"level '{r.level}' >= '{DEFEND_FROM_LEVEL}' (verdict rule)", attack=r.name, access=r.access,
                    level=r.level, auc=r.auc, tpr_at_1pct_fpr=r.tpr_at_1pct_fpr)


def _name(r: AttackFact) -> str:
    return f"{r.name}, sign-flipped (members score lower)," if r.direction == "flipped" else r.name


def _describe(r: AttackFact) -> str:
    return (f"{r.access} attack {_name(r)} leaks ({r.level}: AUC {r.auc:.3f}, CI lower bound {r.auc_lower:.3f}; "
            f"TPR@1%FPR {r.tpr_at_1pct_fpr:.3f})")


def recommend(f: AuditFacts) -> list[Recommendation]:
    """The defenses the rules (module docstring) pick for these facts, most urgent first."""
    if f.level == "unknown":
        return []
    any_leak = _RANK[f.level] >= _RANK[DEFEND_FROM_LEVEL]
    extracted = f.extracted >= EXTRACTION_MIN_IMAGES
    if not (any_leak or f.cdi_rejected or extracted):
        return []
    strong = _RANK[f.level] >= _RANK[RECOMMEND_FROM_LEVEL] or extracted
    priority = PRIORITY_RECOMMENDED if strong else PRIORITY_CONSIDER
    bb = f.leak(["black-box"])
    gw = f.leak(["white-box", "gray-box"])
    best = f.leak(_ACCESS_ORDER)
    p = _Paths(f)

    # Reasons shared by every defense: the leakiest attack, CDI, extraction.
    base_triggers: list[dict[str, Any]] = []
    base_reasons: list[str] = []
    if best is not None:
        base_triggers.append(_attack_trigger(best))
        base_reasons.append(_describe(best))
    if f.cdi_rejected and f.cdi:
        base_triggers.append(_trigger("cdi", "CDI p-value", f.cdi.get("p_value"), f"< alpha {f.cdi.get('alpha')}",
                                      min_suspect_size=f.cdi.get("min_suspect_size")))
        pv = f.cdi.get("p_value")
        base_reasons.append(f"dataset inference detects the members as training data (CDI p = "
                            f"{pv:.3g} < {f.cdi.get('alpha')}; min |P| {f.cdi.get('min_suspect_size')})"
                            if isinstance(pv, int | float) else "dataset inference detects the members as training data")
    if extracted:
        base_triggers.append(_trigger("extraction", "training images regenerated", f.extracted,
                                      f">= {EXTRACTION_MIN_IMAGES}"))
        base_reasons.append(f"extraction regenerated {f.extracted} training images")
    why = "; ".join(base_reasons)

    recs: list[Recommendation] = []
    fam = f.family
    if fam in ("latent", "text"):
        recs += _latent_hardening(f, priority, why, base_triggers, bb, p)
    if fam in ("pixel", "latent", "text"):
        recs += _two_teacher_defenses(f, priority, why, base_triggers, bb, p)
    if fam in ("pixel", "latent", "text") and gw is not None and _RANK[gw.level] >= _RANK[DPSGD_FROM_LEVEL]:
        out = p.out("dpsgd")
        recs.append(Recommendation(
            id="dpsgd", name="DP-SGD (differentially private training)", priority=PRIORITY_CONSIDER,
            reason=(f"{_describe(gw)}: if the weights are released, every gray/white-box attack applies, and "
                    "DP-SGD is the only defense with a formal (epsilon, delta) bound. Consider it only if the "
                    "utility cost below is acceptable."),
            triggers=[_attack_trigger(gw)],
            commands=[_cmd("defend", "dpsgd", "--split", p.split, "--out", out, "--noise-multiplier",
                           repr(DPSGD_NOISE_MULTIPLIER), *_pixel_train_args(f.training), "--target", p.target)],
            verify=p.verify(out, "dpsgd"), expected_effect=_evidence("dpsgd"), cost=_cost("dpsgd"),
            paper="Abadi et al. 2016 (DP-SGD, via Opacus); the baseline of 001 §4",
            applies_if="the weights are released (white/gray-box access)"))
    if fam == "dualmd":
        leak = gw or bb
        if leak is not None or f.cdi_rejected or extracted:
            student = p.out("distillmd")
            note = ("; DualMD is a black-box defense (001 §4.1): a gray-box attacker queries one sub-model, so "
                    "distil the teachers into one student" if gw is not None else
                    "; DualMD alone does not stop this black-box leak at this scale")
            recs.append(Recommendation(
                id="distillmd", name="DistillMD from the same two teachers", priority=priority,
                reason=f"{why}{note} (001 §3.3).", triggers=base_triggers,
                commands=[_cmd("defend", "distill", "--teachers", p.target, "--out", student,
                               *_pixel_train_args(f.training))],
                verify=p.verify(student, "distillmd"), expected_effect=_evidence("distillmd-from-dualmd"),
                cost=_cost("distillmd-from-dualmd"), paper="001 §3.3 (Algorithm 2), §4.1"))
    elif fam == "iar":
        out = p.out("mitigate")
        recs.append(Recommendation(
            id="iar-output-noise", name="Output noise on the IAR's logits", priority=PRIORITY_CONSIDER,
            reason=(f"{why}. For image autoregressive models genleak has no training-time defense; noise on the served "
                    "logits is the thesis' mitigation. Measure the privacy/quality trade-off on this model first."),
            triggers=base_triggers,
            commands=[_cmd("iar", "mitigate", "--target", p.target, "--split", p.split, "--sigma", IAR_NOISE_SIGMAS,
                           "--out", out)],
            verify=[], expected_effect=_evidence("iar-output-noise"), cost=_cost("iar-output-noise"),
            paper="thesis ch. 9, supp. D.11", applies_if="only sampled images or noised logits are served"))
    order = {PRIORITY_RECOMMENDED: 0, PRIORITY_CONSIDER: 1}
    return sorted(recs, key=lambda r: order.get(r.priority, 2))  # stable: the rule order within a priority


def _two_teacher_defenses(f: AuditFacts, priority: str, why: str, base_triggers: list[dict[str, Any]],
                          bb: AttackFact | None, p: _Paths) -> list[Recommendation]:
    """DistillMD and DualMD (001 §3.2-3.4) for a single diffusion model (pixel, or latent teachers)."""
    latent = f.family != "pixel"
    gw = f.leak(["white-box", "gray-box"])
    teachers, student = p.out("dualmd"), p.out("distillmd")
    train = _pixel_train_args(f.training)
    # --target copies the audited folder's architecture, scheduler and conditioning (issue 13 item 4)
    disjoint = _cmd("defend", "disjoint", "--split", p.split, "--out", teachers, *train, "--target", p.target)
    recs = [Recommendation(
        id="distillmd", name="DistillMD (alternating distillation from two disjoint teachers)",
        # measured on pixel DDPMs and text-to-image LDMs; on unconditional LDMs an option next to the KL hardening
        priority=PRIORITY_CONSIDER if f.family == "latent" else priority,
        reason=(f"{why}. DistillMD is the only defense genleak measured to lower gray-box and black-box attacks "
                "together, on pixel DDPMs and on a text-to-image LDM (001 §3.3: the student learns each member "
                "from the teacher that never saw it)" + ("; on unconditional LDMs it is not measured yet, so the KL "
                                                         "hardening above comes first." if f.family == "latent"
                                                         else ".")),
        triggers=base_triggers,
        commands=[disjoint, _cmd("defend", "distill", "--teachers", teachers, "--out", student, *train,
                                 "--target", p.target)],
        verify=p.verify(student, "distillmd"),
        expected_effect=_evidence("distillmd-latent" if latent else "distillmd"), cost=_cost("distillmd"),
        paper="001 §3.2 (disjoint training), §3.3 (DistillMD, Algorithm 2), §4.1 tables 3-4, §4.2 table 5")]
    dual_priority, dual_reason, dual_triggers, applies = None, "", [], None
    if bb is not None:
        dual_priority, dual_triggers = priority, [_attack_trigger(bb)]
        dual_reason = (f"{_describe(bb)}: the attacker needs only generated images, and DualMD's alternating "
                       "sampler lets the teacher that never saw an image correct the one that did (001 §3.4).")
        applies = "the weights stay private (only generated images are served): DualMD is a black-box defense (001 §4.1)"
    elif gw is not None and not f.ran("black-box"):
        dual_priority, dual_triggers = PRIORITY_CONSIDER, [_attack_trigger(gw)]
        dual_reason = (f"{_describe(gw)} and no black-box attack was run; a model that overfits this much also "
                       "leaks through its generations (genbox AUC 0.854 on the overfit baseline, RESULTS.md). "
                       "Measure it with `genleak audit ... --attacks genbox` first.")
        applies = "the weights stay private (only generated images are served): DualMD does not stop gray-box attacks"
    if dual_priority is not None:
        recs.append(Recommendation(
            id="dualmd", name="DualMD (two disjoint teachers, alternating at sampling time)",
            priority=PRIORITY_CONSIDER if latent else dual_priority, reason=dual_reason, triggers=dual_triggers,
            commands=[disjoint], verify=p.verify(teachers, "dualmd", "--attacks", "genbox"),
            expected_effect=_evidence("dualmd-latent" if latent else "dualmd"), cost=_cost("dualmd"),
            paper="001 §3.2, §3.4 (self-correcting inference), §4.2 table 5", applies_if=applies))
    return recs


def _latent_hardening(f: AuditFacts, priority: str, why: str, base_triggers: list[dict[str, Any]],
                      bb: AttackFact | None, p: _Paths) -> list[Recommendation]:
    """The LDM-specific defenses: the beta-VAE's KL weight (000) and prompt diversification (001 §3.5)."""
    recs: list[Recommendation] = []
    text = f.family == "text"
    vae_out, ldm_out = p.out("vae-kl0.1"), p.out("kl0.1")
    config = f.training.get("config") or {}
    if f.vae_kl_weight is None or f.vae_kl_weight < KL_WEIGHT_HARDENED:
        known = (f"the VAE's KL weight is {f.vae_kl_weight:g}" if f.vae_kl_weight is not None
                 else "the VAE's KL weight is not recorded (Stable Diffusion's is 1e-6)")
        recs.append(Recommendation(
            id="vae-kl", name=f"Stronger KL weight in the beta-VAE (kl_weight {KL_WEIGHT_HARDENED:g})",
            priority=priority,
            reason=(f"{why}; {known}. A nearly deterministic posterior lets the UNet see the same latent of a "
                    f"member every epoch; KL {KL_WEIGHT_HARDENED:g} makes the latents jitter (000: SimA's LDM "
                    "hardening)."),
            triggers=base_triggers + [_trigger("target", "VAE KL weight", f.vae_kl_weight,
                                               f"< {KL_WEIGHT_HARDENED:g}")],
            commands=[_cmd("train", "vae", "--split", p.split, "--out", vae_out, "--kl-weight", f"{KL_WEIGHT_HARDENED:g}"),
                      _cmd("train", "ldm", "--split", p.split, "--vae", vae_out, "--out", ldm_out,
                           *_ldm_train_args(f.training, text),
                           *(["--prompt-variants", str(f.prompt_variants)] if text and f.prompt_variants else []))],
            verify=p.verify(ldm_out, "kl0.1"), expected_effect=_evidence("vae-kl"), cost=_cost("vae-kl"),
            paper="000 (SimA): LDM robustness via a stronger KL weight in the beta-VAE"))
    if text and (f.prompt_variants is None or f.prompt_variants < PROMPT_VARIANTS):
        out = p.out("promptdiv")
        extra = config.get("extra") or {}
        source = ["--init", str(extra["init"])] if extra.get("init") else ["--vae", str(extra.get("vae") or p.target)]
        lora = config.get("lora_rank")
        if bb is not None:
            pd_priority, pd_triggers = priority, [_attack_trigger(bb)]
            pd_reason = f"{_describe(bb)}: text-guided black-box attacks exploit prompt overfitting (001 §3.5)."
        else:
            pd_priority, pd_triggers = PRIORITY_CONSIDER, list(base_triggers)
            pd_reason = (f"{why}; prompt diversification mainly lowers text-guided black-box attacks "
                         f"({'none leaked' if f.ran('black-box') else 'none was run'}); it leaves gray/white-box "
                         "attacks unchanged (001 table 8).")
        recs.append(Recommendation(
            id="prompt-diversification", name=f"Prompt diversification ({PROMPT_VARIANTS} rephrasings per image)",
            priority=pd_priority, reason=pd_reason,
            triggers=pd_triggers + [_trigger("target", "captions per image (prompt variants)", f.prompt_variants,
                                             f"< {PROMPT_VARIANTS}")],
            commands=[_cmd("train", "ldm", "--split", p.split, *source, "--out", out, *_ldm_train_args(f.training, True),
                           *(["--lora-rank", str(int(lora))] if lora else []), "--prompt-variants", str(PROMPT_VARIANTS))],
            verify=p.verify(out, "promptdiv"), expected_effect=_evidence("prompt-diversification"),
            cost=_cost("prompt-diversification"), paper="001 §3.5, §4.2 table 5, app. table 8"))
    return recs


def _not_recommended(f: AuditFacts) -> list[dict[str, str]]:
    if f.family == "pixel":
        return [_rejected("kd")]
    if f.family in ("latent", "text"):
        return [_rejected("adversarial-vae")]
    return []


# --------------------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------------------


def section_from_facts(f: AuditFacts) -> dict[str, Any]:
    """The section dict (``summary``, ``warnings``, ``metrics``, ``recommendations``, ``data``) for ``f``."""
    if f.level == "unknown":
        raise SectionSkipped("no attack produced a result: nothing to base a defense recommendation on")
    recs = recommend(f)
    warnings: list[str] = []
    if f.guard_warnings:
        warnings.append("An evaluation guard fired: the attacks may measure a difference between the member and "
                        "non-member sets rather than membership. Fix the split and re-audit before paying for a defense.")
    if f.confidence == "low" and not f.guard_warnings:
        warnings.append("No bootstrap CIs: the leak level (and so this recommendation) rests on point estimates; "
                        "rerun the audit with --bootstrap 1000.")
    if f.point_level and _RANK.get(f.point_level, 0) > _RANK.get(f.level, 0):
        warnings.append(f"The point estimates suggest {f.point_level} leakage, the 95% CIs only {f.level}: "
                        "with more members/non-members the recommendation may become stronger.")
    n_rec = sum(r.priority == PRIORITY_RECOMMENDED for r in recs)
    n_con = sum(r.priority == PRIORITY_CONSIDER for r in recs)
    if recs:
        names = ", ".join(f"{r.name.split(' (')[0]} ({r.priority})" for r in recs)
        summary = f"{f.label} ({f.confidence} confidence): {names}. Commands, reasons, measured effects and costs below."
    elif _RANK[f.level] < _RANK[DEFEND_FROM_LEVEL]:
        upper = max((r.auc_upper for r in f.attacks if r.auc_upper is not None), default=None)
        bound = (f" The CIs still allow a two-sided AUC up to {upper:.3f}: a leak that weak cannot be excluded with this split."
                 if upper is not None else "")
        extra = []
        if f.cdi is not None:
            extra.append("CDI does not reject")
        if f.extraction is not None:
            extra.append("extraction found no training image")
        summary = ("No defense needed at this confidence: no attack's AUC CI lower bound, in either direction, exceeds 0.5"
                   + (" and " + " and ".join(extra) if extra else "") + "." + bound)
    else:
        summary = (f"{f.label}, but genleak has no defense command for a '{f.target_kind}' target; the measured "
                   "defenses (DistillMD, DualMD, DP-SGD, KL weight, prompt diversification) apply to diffusion models.")
    best = f.leak(_ACCESS_ORDER)
    return {
        "summary": summary,
        "warnings": warnings,
        "metrics": {"recommended": n_rec, "to_consider": n_con,
                    "auc_lower_of_deciding_attack": best.auc_lower if best else
                    max((r.auc_lower for r in f.attacks), default=None)},
        "recommendations": [r.to_dict() for r in recs],
        "data": {
            "inputs": f.to_dict(),
            "not_recommended": _not_recommended(f),
            "thresholds": {
                "DEFEND_FROM_LEVEL": DEFEND_FROM_LEVEL, "RECOMMEND_FROM_LEVEL": RECOMMEND_FROM_LEVEL,
                "DPSGD_FROM_LEVEL": DPSGD_FROM_LEVEL, "EXTRACTION_MIN_IMAGES": EXTRACTION_MIN_IMAGES,
                "KL_WEIGHT_HARDENED": KL_WEIGHT_HARDENED, "PROMPT_VARIANTS": PROMPT_VARIANTS,
            },
        },
    }


def defense_section(target: Any, split: Any, out: Path) -> dict[str, Any]:
    """Read what the audit measured (results.json with the earlier sections) and recommend defenses."""
    from genleak.report.results import read_results

    result = read_results(out)
    if not result.target.get("kind"):
        result.target = {**result.target, "kind": target.describe().get("kind") or "unknown"}
    audit = dict(result.audit or {})
    if not audit.get("training") and audit.get("target_path"):  # a DualMD folder records its recipe in its index
        from genleak.targets.folders import DUAL_LEGACY_INDEX  # here: the targets package imports torch

        folder = Path(audit["target_path"])
        dual = next((f for f in (folder / "model_index.json", folder / DUAL_LEGACY_INDEX) if f.is_file()), None)
        if dual is not None:
            try:
                audit["training"] = {"config": json.loads(dual.read_text()).get("train_config") or {}}
                result.audit = audit
            except (OSError, ValueError):
                pass
    facts = AuditFacts.from_results(result, vae_kl_weight=_vae_kl_weight(audit), run_dir=Path(out).resolve())
    return section_from_facts(facts)


DEFENSE_SECTION = SectionSpec(SECTION_NAME, defense_section, "Defense recommendation", kind="defense", order=90)


def _vae_kl_weight(audit: dict[str, Any]) -> float | None:
    """The KL weight of a latent target's VAE from its `genleak train vae` record, when it can be found."""
    from genleak.train.vae import VAE_RECORD

    extra = ((audit.get("training") or {}).get("config") or {}).get("extra") or {}
    target = Path(audit["target_path"]) if audit.get("target_path") else None
    candidates = []
    if extra.get("vae"):
        v = Path(extra["vae"])
        candidates += [v, *([target.parent / v] if target is not None and not v.is_absolute() else [])]
    if target is not None:
        candidates.append(target / "vae")
    for folder in candidates:
        record = folder / VAE_RECORD
        if record.is_file():
            try:
                return float(json.loads(record.read_text())["config"]["kl_weight"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
    return None
