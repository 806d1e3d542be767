"""The standard audit: every applicable attack, optional extra sections, ``results.json`` + ``report.html``.

An audit is ``run_attacks`` (the core flow) followed by *sections*: further analyses that need the
same target, split and scores — evaluation guards, dataset inference (CDI) with the members as
the suspect set, extraction, a defense recommendation. Sections are plug-ins so that each area
adds its analysis without touching this file's logic:

* a section is a callable ``section(target, split, out) -> dict``; it runs after the attacks, when
  ``out/results.json`` and ``out/scores/<attack>.npz`` already exist (read them for MIA features);
* it is a ``SectionSpec`` (``genleak.report.sections``) named by an entry point of group
  ``genleak.audit_sections`` (pyproject.toml; loaded when an audit runs, so a plug-in package adds
  its sections the same way); ``register_section`` adds one at run time (tests, notebooks);
* sections run in ``order``; each finished section is added to ``out/results.json["sections"]``
  at once, so a later section reads the earlier ones (the defense recommendation reads CDI,
  extraction and the guards);
* the dict it returns is stored under ``results.json["sections"][name]`` and rendered by
  ``genleak.report.html``; the keys the page understands (``summary``, ``warnings``, ``metrics``,
  ``curve``, ``images``, ``data``) are documented in docs/results-schema.md;
* raising ``GenleakError`` (or ``SectionSkipped``) records the section as *skipped* with the
  message (e.g. "too few members for CDI"); any other exception records it as *failed* with the
  error: like a failed attack, a failed section is shown on the page, never a silent gap. An entry
  point that fails to load is such a failed section too.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genleak.errors import GenleakError
from genleak.io import jsonable
from genleak.report.sections import SectionFn, SectionSkipped, SectionSpec
from genleak.results import AuditResult

SECTIONS_ENTRY_POINTS = "genleak.audit_sections"
_REGISTERED: dict[str, SectionSpec] = {}  # register_section, at run time


def register_section(
    name: str, *, title: str | None = None, kind: str = "other", default: bool = True, order: int = 100
) -> Callable[[SectionFn], SectionFn]:
    """Decorator: add ``fn`` as the audit section ``name`` in this process (``SectionSpec`` for the rest)."""

    def deco(fn: SectionFn) -> SectionFn:
        _REGISTERED[name] = SectionSpec(name=name, fn=fn, title=title or name, kind=kind, default=default, order=order)
        return fn

    return deco


def _load_sections() -> tuple[dict[str, SectionSpec], dict[str, str]]:
    """The installed sections (entry points, then ``register_section``'s) and entry point -> why it failed to load."""
    from importlib.metadata import entry_points

    specs: dict[str, SectionSpec] = {}
    errors: dict[str, str] = {}
    for ep in entry_points(group=SECTIONS_ENTRY_POINTS):
        try:
            spec = ep.load()
            if not isinstance(spec, SectionSpec) or spec.name != ep.name:
                raise TypeError(f"{ep.value} is not a SectionSpec named '{ep.name}'")
            specs[ep.name] = spec
        except Exception as err:  # a broken plug-in shows up as a failed section, not a crashed audit
            errors[ep.value] = f"{type(err).__name__}: {err}"
    return {**specs, **_REGISTERED}, errors


def available_sections() -> dict[str, SectionSpec]:
    return dict(sorted(_load_sections()[0].items(), key=lambda kv: (kv[1].order, kv[0])))


def resolve_sections(names: Sequence[str] | None) -> list[SectionSpec]:
    """``None``: the default sections; ``[]``: none; else exactly the named ones (unknown names fail)."""
    loaded, errors = _load_sections()
    specs = dict(sorted(loaded.items(), key=lambda kv: (kv[1].order, kv[0])))
    if names is None:
        broken = [SectionSpec(name=m, fn=_import_failure(m, why), title=f"section {m}", kind="other",
                              default=True, order=1000) for m, why in errors.items()]
        return [s for s in specs.values() if s.default] + broken
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise GenleakError(f"unknown audit section(s) {unknown}; available: {', '.join(specs) or 'none'}")
    return [specs[n] for n in names]


def _import_failure(module: str, why: str) -> SectionFn:
    def fail(target: Any, split: Any, out: Path) -> dict[str, Any]:
        raise RuntimeError(f"section {module} failed to load: {why}")

    return fail


# ----------------------------------------------------------------------------------------------
# Built-in section: evaluation guards (genleak.inference.guards)
# ----------------------------------------------------------------------------------------------


def guards_section(target: Any, split: Any, out: Path) -> dict[str, Any]:
    """Distribution shift (blind classifier) and member/non-member duplicates (thesis ch. 7).

    If a model-free classifier separates members from non-members, or the two sides share
    (near-)duplicates, the attacks measure that difference rather than membership; the verdict's
    confidence drops to low and the page says so. A significant blind AUC comparable to the best
    attack's makes the verdict itself "Inconclusive" (``report.verdict.shift_reason``).
    """
    from genleak.inference import guards

    members, nonmembers = split.members, split.nonmembers
    blind = guards.blind_classifier(members.images, nonmembers.images)
    dups = guards.find_duplicates(members.images, list(members.hashes), list(members.ids),
                                  nonmembers.images, list(nonmembers.hashes), list(nonmembers.ids))
    warnings: list[str] = []
    if blind.shift_detected:
        warnings.append(blind.message())
    dd = dups.to_dict()
    if dd["exact"]:
        warnings.append(f"DUPLICATES: {dd['exact']} images appear as both member and non-member")
    if dd["near"]:
        warnings.append(f"NEAR-DUPLICATES: {dd['near']} non-members are within RMS {dd['threshold_rms']} "
                        "of a member; they inflate or deflate attack scores")
    return {
        "summary": ("no distribution shift or duplicates detected" if not warnings
                    else "the member and non-member sets differ: read the verdict with care"),
        "warnings": warnings,
        "metrics": {
            "blind_classifier_auc": blind.auc, "blind_classifier_p_value": blind.p_value,
            "exact_duplicates": dd["exact"], "near_duplicates": dd["near"],
            "min_rms_distance": dd["min_rms_distance"],
        },
        "data": {"blind_classifier": blind.to_dict(), "duplicates": dd},
    }


GUARDS_SECTION = SectionSpec("guards", guards_section, "Evaluation guards", kind="guards", order=10)


# ----------------------------------------------------------------------------------------------
# Built-in section: dataset inference (CDI, genleak.inference) with the members as suspect set
# ----------------------------------------------------------------------------------------------


def _run_seed(out: Path) -> int:
    """The audit's seed, read from the results.json the attacks just wrote (sections get no seed)."""
    from genleak.report.results import read_results

    try:
        return read_results(out).seed
    except GenleakError:
        return 0


def cdi_section(target: Any, split: Any, out: Path) -> dict[str, Any]:
    """CDI (thesis ch. 8) with P = the members, U = the non-members: the set-level view of leakage.

    Even when single-sample MIAs are weak, a data owner with many images can prove training use;
    the minimum-|P| curve says how many images that takes. Writes ``out/cdi/`` (cdi.json, scores,
    plot) and caches features in ``out/cdi/features``.
    """
    from genleak.targets.base import TargetKind

    if target.target_kind is TargetKind.IAR:
        # IARs have their own dataset inference (thesis ch. 9.5.2: no scoring model on token features)
        raise SectionSkipped("image autoregressive target: run `genleak iar infer` for its dataset inference")
    import warnings as _warnings

    from genleak.inference import CDIConfig, run_cdi, write_cdi
    from genleak.results import CDIOutcome

    folder = out / "cdi"
    config = CDIConfig(seed=_run_seed(out))
    with _warnings.catch_warnings(record=True) as caught:  # kept in the section, not printed mid-audit
        _warnings.simplefilter("always")
        result = run_cdi(target, split.members, split.nonmembers, config, cache_dir=folder / "features", progress=False)
    write_cdi(result, folder)
    messages = list(result.warnings)
    messages += [str(w.message) for w in caught if str(w.message) not in messages]
    d = result.to_json()
    points = d["min_p_curve"]["points"]
    curve = None
    if points:
        curve = {
            "x": [p["n_suspect"] for p in points], "y": [max(p["mean_p"], 1e-300) for p in points],
            "y_lo": [max(p["p_ci"][0], 1e-300) for p in points], "y_hi": [max(p["p_ci"][1], 1e-300) for p in points],
            "x_label": "|P| (suspect-set size)", "y_label": "p-value (mean over resamples)", "label": "mean p-value",
            "log_x": True, "log_y": True, "hline": result.alpha, "hline_label": f"alpha = {result.alpha:g}",
            "caption": f"Welch's t-test of the CDI scores of |P| members against non-members; band: 95% of "
                       f"{config.n_resamples} resamples. Below the red line the members are detected as training data.",
        }
    return {
        "summary": result.verdict,
        "warnings": messages,
        "metrics": CDIOutcome(
            p_value=result.p_value, alpha=result.alpha, rejected=result.rejected,
            min_suspect_size=result.min_suspect_size, n_suspect=result.n_suspect,
            n_reference=result.n_reference, scorer_auc=result.scorer_auc, power_at_alpha=result.power,
            access=result.access,
        ).to_json(),
        "curve": curve,
        "data": {"features": d["features"], "test": d["test"], "scorer": d["scorer"], "guards": d["guards"],
                 "config": d["provenance"].get("config"), "files": "cdi/cdi.json, cdi/scores.npz, cdi/min_p_curve.png"},
    }


CDI_SECTION = SectionSpec("cdi", cdi_section, "Dataset inference (CDI): is the member set detected as training data?",
                          kind="cdi", order=20)


# ----------------------------------------------------------------------------------------------
# Built-in section (opt-in: generation is expensive): generate-and-filter extraction
# ----------------------------------------------------------------------------------------------


def extraction_section(target: Any, split: Any, out: Path) -> dict[str, Any]:
    """Generate images and flag near-copies of members (non-members as the false-positive guard).

    Opt-in (``--sections guards,cdi,extraction``): 1,000 generations x 50 DDIM steps by default.
    """
    from genleak.extraction import ExtractionConfig, extract, write_extraction

    folder = out / "extraction"
    result = extract(target, split.members, split.nonmembers, ExtractionConfig(seed=_run_seed(out)), progress=False)
    write_extraction(result, folder, split.members, split.nonmembers)
    doc = json.loads((folder / "extraction.json").read_text())
    n_gen, n_img = doc["n_extracted_generations"], doc["n_extracted_train_images"]
    warnings = []
    if doc.get("heldout_false_positives"):
        warnings.append(f"{doc['heldout_false_positives']} generations are near-copies of *non-members*: the "
                        "distance threshold also flags images the model never saw")
    return {
        "summary": f"{n_gen} of {doc['n_generated']} generations are near-copies of {n_img} member images ({doc['rule']})",
        "warnings": warnings,
        "metrics": {"n_generated": doc["n_generated"], "n_extracted_generations": n_gen,
                    "n_extracted_train_images": n_img, "heldout_false_positives": doc["heldout_false_positives"]},
        "images": [{"path": f"extraction/{doc['grid']}",
                    "caption": f"{doc.get('grid_shows', 'grid')}: generated (top), nearest member, nearest non-member"}],
        "data": {k: doc[k] for k in ("config", "rule", "distance", "train_distance_quantiles",
                                     "heldout_distance_quantiles", "seconds") if k in doc},
    }


EXTRACTION_SECTION = SectionSpec("extraction", extraction_section, "Training-data extraction (generate and filter)",
                                 kind="extraction", default=False, order=30)


# ----------------------------------------------------------------------------------------------
# The audit
# ----------------------------------------------------------------------------------------------


def audit_attacks(target: Any) -> list[str]:
    """The standard audit's attacks for this target type: "all applicable attacks" (issue 7).

    Diffusion targets: the core gray-box five (``DEFAULT_ATTACKS``) plus the black-box ``genbox``
    (what DualMD defends against, and what the defense recommendation needs to tell a black-box
    leak from a gray-box one); text-conditioned ones add ``clid`` (conditional overfitting, thesis
    supp. C.8.1). Image autoregressive targets: every ``iar-*`` attack, plain and CFG (thesis ch. 9).
    """
    from genleak.attacks import DEFAULT_ATTACKS, available_attacks
    from genleak.targets.base import TargetKind

    if target.target_kind is TargetKind.IAR:
        return [a for a in available_attacks() if a.startswith("iar-")]
    names = [*DEFAULT_ATTACKS, "genbox"]
    if target.text_conditioned:
        names.append("clid")
    return names


def applicable_attacks(target: Any, candidates: Sequence[str] | None = None) -> list[str]:
    """``candidates`` (default: ``audit_attacks(target)``), each checked against the target's kind
    (``Attack.check``: an attack of another kind is refused with one line before any scoring)."""
    from genleak.attacks import attack_class

    names = list(candidates) if candidates is not None else audit_attacks(target)
    if not names:
        raise GenleakError("no attacks to run; pass --attacks explicitly")
    for name in names:
        attack_class(name).check(target)
    return names


def run_sections(target: Any, split: Any, out: Path, specs: Sequence[SectionSpec]) -> dict[str, dict[str, Any]]:
    """Run each section; record ok / skipped / failed with timing (one failure never stops the rest)."""
    from genleak.results import SectionResult

    results: dict[str, dict[str, Any]] = {}
    for spec in specs:
        start = time.perf_counter()
        base = {"title": spec.title, "kind": spec.kind}
        try:
            got = spec.fn(target, split, out)
            if not isinstance(got, dict):
                raise TypeError(f"section returned {type(got).__name__}, expected a dict")
            sec = {**base, **jsonable(got), "status": got.get("status", "ok")}
            json.dumps(sec, allow_nan=False)
            try:  # a malformed section is a failed one (a bug), not a skipped one
                SectionResult.from_json(spec.name, sec, f"section {spec.name}")
            except GenleakError as bad:
                raise TypeError(str(bad)) from bad
        except GenleakError as err:
            sec = {**base, "status": "skipped", "reason": str(err)}
        except Exception as err:  # a section bug must not lose the audit
            sec = {**base, "status": "failed", "error": f"{type(err).__name__}: {err}",
                   "data": {"traceback": traceback.format_exc(limit=4)}}
        sec["seconds"] = round(time.perf_counter() - start, 3)
        results[spec.name] = sec
        _publish_sections(out, results)
    return results


def _publish_sections(out: Path, sections: dict[str, dict[str, Any]]) -> None:
    """Add the finished sections to ``out/results.json`` (if there is one) for the sections after them."""
    from genleak.report.results import RESULTS_FILE, read_results, save_results
    from genleak.results import SectionResult

    if not (Path(out) / RESULTS_FILE).is_file():
        return
    try:
        result = read_results(out)
        result.sections = {**(result.sections or {}),
                           **{n: SectionResult.from_json(n, s) for n, s in sections.items()}}
        save_results(result, out)
    except (OSError, GenleakError):  # a damaged file is the reader's problem, not this loop's
        return


def run_audit(
    target: Any,
    split: Any,
    out: str | Path,
    *,
    attacks: Sequence[str] | None = None,
    sections: Sequence[str] | None = None,
    attack_params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    bootstrap: int = 1000,
    progress: bool = True,
    command: str = "",
    target_path: str | Path | None = None,
    split_path: str | Path | None = None,
    split_check: dict[str, Any] | None = None,
    calibration_fraction: float = 0.0,
    precision: str = "fp32",
) -> AuditResult:
    """Attacks -> extra CIs -> sections -> verdict -> ``results.json`` + ``report.html`` in ``out``.

    ``split_check`` (``pipeline.check_target_split``'s record) is stored as ``results.json["split_check"]``.
    Returns the result as written. Resumable like ``run_attacks``: cached scores are reused.
    """
    from genleak.pipeline import run_attacks
    from genleak.report.html import REPORT_FILE, write_report
    from genleak.report.results import evaluation_masks, read_results, save_results, write_results
    from genleak.report.verdict import compute_verdict
    from genleak.results import SectionResult

    out = Path(out)
    names = applicable_attacks(target, attacks)
    specs = resolve_sections(sections)  # fail on unknown names before hours of scoring
    result = run_attacks(target, split, names, out, attack_params=attack_params, seed=seed,
                         batch_size=batch_size, bootstrap=bootstrap, progress=progress, command=command,
                         calibration_fraction=calibration_fraction, precision=precision)
    settings = {
        "attacks": names, "attack_params": attack_params or {}, "seed": seed, "batch_size": batch_size,
        "bootstrap": bootstrap, "sections": [s.name for s in specs], "calibration_fraction": calibration_fraction,
    }
    extra = {"settings": settings, "audit": _audit_inputs(target_path, split_path)}
    if split_check is not None:
        extra["split_check"] = split_check
    write_results(result, out, extra=extra)
    written = read_results(out)
    if bootstrap:
        _add_audit_bounds({a.name: a.metrics_extra for a in written.attacks}, result, evaluation_masks(split.members.ids, split.nonmembers.ids, written.split),
                          bootstrap, seed)
        save_results(written, out)
    written.sections = {n: SectionResult.from_json(n, s) for n, s in run_sections(target, split, out, specs).items()}
    written.verdict = compute_verdict(written)
    save_results(written, out)
    write_report([out], out / REPORT_FILE)
    return written


def _add_audit_bounds(metrics_of: dict[str, dict[str, Any]], result: Any, masks: tuple[Any, Any], bootstrap: int,
                      seed: int) -> None:
    """The audit's extra intervals per successful attack, with the CIs' seed and resample count:
    the TPR@0.1%FPR CIs, direct and sign-flipped (``evaluate`` only bootstraps the 1% ones) and lower
    bounds of AUC and TPR@1%FPR, both directions, that stay valid when the verdict picks the most
    leaky of the k attacks (Bonferroni; ``genleak.report.verdict``), stored as ``metrics.simultaneous_lower``."""
    from genleak.metrics import bootstrap_ci, simultaneous_lower
    from genleak.report.verdict import simultaneous_confidence

    mask_m, mask_n = masks
    ok = [a for a in result.attacks if a.ok and a.member_scores is not None]
    confidence = simultaneous_confidence(len(ok))
    for a in ok:
        ms, ns = a.member_scores, a.nonmember_scores
        if ms.ndim > 1:
            ms, ns = ms[:, 0], ns[:, 0]
        ms, ns = ms[mask_m], ns[mask_n]
        metrics = metrics_of[a.name]
        for prefix in ("", "flipped_"):
            metrics[f"{prefix}tpr_at_01pct_fpr_ci"] = list(bootstrap_ci(ms, ns, f"{prefix}tpr_at_fpr", n_resamples=bootstrap,
                                                                      seed=seed, max_fpr=0.001))
        metrics["simultaneous_lower"] = {
            **simultaneous_lower(ms, ns, confidence=confidence, n_resamples=bootstrap, seed=seed),
            "confidence": confidence, "family_size": 4 * len(ok),
            "rule": "Bonferroni over attacks x {direct, sign-flipped} x {AUC, TPR@1%FPR}; percentile bootstrap "
                    "with the CIs' seed and resamples count",
        }


def _audit_inputs(target_path: str | Path | None, split_path: str | Path | None) -> dict[str, Any]:
    """Where the inputs came from: paths, the manifest file's hash, the target's training record."""
    from genleak.targets.folders import TRAIN_RECORD  # here: the targets package imports torch

    info: dict[str, Any] = {}
    if target_path is not None:
        info["target_path"] = str(Path(target_path).resolve())
        record = Path(target_path) / TRAIN_RECORD
        if record.is_file():
            try:
                rec = json.loads(record.read_text())
                info["training"] = {k: v for k, v in rec.items() if k not in ("losses",)}
            except json.JSONDecodeError:
                info["training"] = {"error": "genleak_train.json is not valid JSON"}
    if split_path is not None:
        p = Path(split_path)
        info["split_path"] = str(p.resolve())
        if p.is_file():
            info["split_manifest_sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return info
