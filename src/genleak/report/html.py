"""The audit report: one self-contained HTML page per audit (or per set of result folders).

Why one file: a report is mailed, attached to tickets and opened years later, offline. So the page
carries everything inline — CSS, figures as SVG, images as ``data:`` URIs — has no JavaScript and
references nothing outside itself. Everything that comes from a results file is HTML-escaped
(attack names, errors, commands and section text are user-controlled).

Machine-readable numbers: every metric cell carries ``data-run``, ``data-attack``,
``data-metric`` and ``data-value`` (the exact float from ``results.json``, ``repr``-formatted), so
tests and scrapers read the page without parsing rounded text. Section metrics use
``data-section`` + ``data-metric``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genleak.io import atomic_write_text
from genleak.report import figures
from genleak.report.compare import COMPARE_METRICS, Comparison, base_value, comparison, run_labels
from genleak.report.results import RESULTS_FILE, EvalScores, load_scores, read_results
from genleak.report.verdict import THRESHOLDS_TEXT, compute_verdict, guard_warnings
from genleak.results import RESULTS_FORMAT, RESULTS_VERSION, AuditResult, SectionResult
from genleak.style import CSS as _CSS
from genleak.style import e

REPORT_FILE = "report.html"
# Above this size results.json is not embedded verbatim in the page (huge id lists).
_EMBED_JSON_LIMIT = 512 * 1024
# Abort the AUC cross-check only beyond float noise: metrics.auc is exact integer arithmetic.
_AUC_TOLERANCE = 1e-9


@dataclass
class Run:
    """One result folder as the report sees it: its result, label and evaluation scores."""

    path: Path
    result: AuditResult
    label: str
    scores: dict[str, EvalScores | str] = field(default_factory=dict)
    results_sha256: str = ""


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Load ``results.json`` (schema-checked) and every successful attack's scores."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    result = read_results(p)  # refuses missing files, other formats and unknown versions
    raw = (p / RESULTS_FILE if p.is_dir() else p).read_bytes()
    run = Run(path=folder, result=result, label=label or folder.resolve().name,
              results_sha256=hashlib.sha256(raw).hexdigest())
    for a in result.attacks:
        if a.ok:
            run.scores[a.name] = load_scores(folder, result, a.name)
    return run


def load_runs(paths: list[str | Path], labels: list[str] | None = None) -> list[Run]:
    ps = [Path(p) for p in paths]
    names = run_labels(ps, labels)
    return [load_run(p, name) for p, name in zip(ps, names)]


# ----------------------------------------------------------------------------------------------
# Small builders
# ----------------------------------------------------------------------------------------------


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _metric_span(run: int, attack: str, metric: str, value: Any, digits: int = 3) -> str:
    return (f'<span class="v" data-run="{run}" data-attack="{e(attack)}" data-metric="{e(metric)}" '
            f'data-value="{e(repr(value))}">{e(_num(value, digits))}</span>')


def _ci_span(run: int, attack: str, metric: str, ci: list[float] | None) -> str:
    if not ci:
        return ""
    return (f' <span class="ci" data-run="{run}" data-attack="{e(attack)}" data-metric="{e(metric)}" '
            f'data-value="{e(json.dumps([float(c) for c in ci]))}">[{ci[0]:.3f}, {ci[1]:.3f}]</span>')


def _kv_table(rows: dict[str, Any], cls: str = "kv") -> str:
    out = [f'<table class="{cls}"><tbody>']
    for k, v in rows.items():
        if isinstance(v, dict | list):
            v = json.dumps(v, sort_keys=True)
        out.append(f"<tr><th>{e(k)}</th><td><code>{e(v)}</code></td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _warning_list(items: list[str], cls: str) -> str:
    if not items:
        return ""
    return f'<ul class="{cls}">' + "".join(f"<li>{e(w)}</li>" for w in items) + "</ul>"


# ----------------------------------------------------------------------------------------------
# Blocks of one run
# ----------------------------------------------------------------------------------------------


def _verdict_html(run: int, verdict: dict[str, Any]) -> str:
    details = _warning_list(verdict.get("details") or [], "verdict-details")
    return f"""
<section class="verdict level-{e(verdict['level'])}" data-run="{run}" data-level="{e(verdict['level'])}"
  data-confidence="{e(verdict['confidence'])}">
  <div class="badge">{e(verdict['label'])}</div>
  <div class="verdict-body">
    <p class="headline">{e(verdict['headline'])}</p>
    <p class="confidence">Confidence: <strong>{e(verdict['confidence'])}</strong></p>
    {details}
    <details class="rule"><summary>How the verdict is decided</summary><p>{e(THRESHOLDS_TEXT)}.
    Confidence is <em>high</em> when the point estimates give the same level as the CI lower bounds,
    <em>medium</em> when they would give a higher one, <em>low</em> without CIs or when an evaluation
    guard fired. TPR@1%FPR of a random guess is 0.01.</p></details>
  </div>
</section>"""


def _warnings_html(r: Run, idx: int) -> str:
    res = r.result
    failed = [a for a in res.attacks if not a.ok]
    guards = guard_warnings(res)
    notes = sorted({w for a in res.attacks for w in a.warnings if "\n" not in w})
    problems = [f"{n}: figures omitted, {s}" for n, s in r.scores.items() if isinstance(s, str)]
    sec_fail = [f"section '{n}' failed: {s.error or 'unknown error'}"
                for n, s in (res.sections or {}).items() if s.status == "failed"]
    check = res.split_check or {}
    if check.get("status") == "mismatch allowed":  # --allow-split-mismatch: the labels contradict the target's record
        sec_fail.insert(0, f"SPLIT MISMATCH: {check.get('message', 'the split contradicts the target record')}")
    if not (failed or guards or notes or problems or sec_fail):
        return ""
    parts = [f'<section class="warnings" data-run="{idx}"><h2>Warnings</h2>']
    if failed:
        parts.append('<ul class="failures">' + "".join(
            f'<li data-attack="{e(a.name)}" data-status="failed"><strong>attack {e(a.name)} failed:</strong> '
            f'<code>{e(a.error)}</code></li>' for a in failed) + "</ul>")
    parts.append(_warning_list([f"evaluation guard: {g}" for g in guards], "guard-warnings"))
    parts.append(_warning_list(sec_fail + problems, "problems"))
    parts.append(_warning_list(notes, "notes"))
    parts.append("</section>")
    return "".join(parts)


def _attack_table_html(r: Run, idx: int, colors: dict[str, str]) -> str:
    attacks = r.result.attacks
    has_cal = any(a.asr_calibrated is not None for a in attacks)
    head = ["attack", "status", "access", "NFE", "AUC [95% CI]", "TPR@1%FPR [95% CI]", "TPR@0.1%FPR [95% CI]",
            "TPR@0%FPR", "ASR (best thr.)", "two-sided: leakage AUC [95% CI]", "sign-flipped TPR@1%FPR [95% CI]",
            ] + (["ASR (calibrated)"] if has_cal else []) + ["runtime (s)"]
    rows = []
    for a in attacks:
        name, status, m = a.name, "ok" if a.ok else "failed", a.metrics
        swatch = f'<span class="swatch" style="background:{colors.get(name, "#999")}"></span>'
        common = (f'<td class="name">{swatch}{e(name)}</td>'
                  f'<td class="status {status}">{status}</td>'
                  f'<td>{e(a.description.get("access", "?"))}</td><td class="num">{e(a.description.get("nfe", "?"))}</td>')
        if m is None:
            tb = [w for w in a.warnings if "\n" in w]
            trace = f'<details><summary>traceback</summary><pre>{e(tb[0])}</pre></details>' if tb else ""
            rows.append(f'<tr class="failed" data-attack="{e(name)}" data-status="failed">{common}'
                        f'<td colspan="{len(head) - 5}" class="error"><strong>failed:</strong> '
                        f'<code>{e(a.error or "unknown error")}</code>{trace}</td>'
                        f'<td class="num">{_metric_span(idx, name, "seconds", a.seconds, 2)}</td></tr>')
            continue
        cells = [
            _metric_span(idx, name, "auc", m.auc) + _ci_span(idx, name, "auc_ci", m.auc_ci),
            _metric_span(idx, name, "tpr_at_1pct_fpr", m.tpr_at_1pct_fpr)
            + _ci_span(idx, name, "tpr_at_1pct_fpr_ci", m.tpr_at_1pct_fpr_ci),
            _metric_span(idx, name, "tpr_at_01pct_fpr", m.tpr_at_01pct_fpr)
            + _ci_span(idx, name, "tpr_at_01pct_fpr_ci", a.metrics_extra.get("tpr_at_01pct_fpr_ci")),
            _metric_span(idx, name, "tpr_at_0_fpr", m.tpr_at_0_fpr),
            _metric_span(idx, name, "asr", m.asr),
            # max(AUC, 1 - AUC): an AUC far below 0.5 is a reversed leak (results before it: derived from auc)
            _metric_span(idx, name, "leakage_auc", m.leakage_auc if m.leakage_auc is not None else max(m.auc, 1 - m.auc))
            + _ci_span(idx, name, "leakage_auc_ci", m.leakage_auc_ci)
            + (" sign-flipped" if m.auc < 0.5 else ""),
            _metric_span(idx, name, "flipped_tpr_at_1pct_fpr", m.flipped_tpr_at_1pct_fpr)
            + _ci_span(idx, name, "flipped_tpr_at_1pct_fpr_ci", m.flipped_tpr_at_1pct_fpr_ci),
        ]
        if has_cal:
            cells.append(_metric_span(idx, name, "asr_calibrated", a.asr_calibrated))
        cells.append(_metric_span(idx, name, "seconds", a.seconds, 2))
        rows.append(f'<tr data-attack="{e(name)}" data-status="ok">{common}'
                    + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
    split = r.result.split
    cal = split.get("calibration") or {}
    held = (f"; {cal.get('n_members')} + {cal.get('n_nonmembers')} held out to calibrate thresholds"
            if cal.get("fraction") else "")
    n_eval = next((a.metrics for a in attacks if a.metrics is not None), None)
    sizes = (f"evaluated on {n_eval.n_members} members vs {n_eval.n_nonmembers} non-members"
             if n_eval else f"{split['n_members']} members vs {split['n_nonmembers']} non-members")
    return f"""
<section class="attacks" data-run="{idx}">
  <h2>Attacks</h2>
  <p class="caption">{e(sizes)}{e(held)}. Scores: higher = more likely member. CIs: 95% percentile bootstrap
  (members and non-members resampled independently). ASR (best thr.) picks its threshold on the evaluation
  data itself (optimistic, as SecMI/PIA report it). Two-sided: an AUC below 0.5 means members score lower, a
  reversed signal an attacker flips (leakage AUC = max(AUC, 1 - AUC)), not privacy.</p>
  <table class="attack-table">
    <thead><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr></thead>
    <tbody>{''.join(rows)}</tbody>
  </table>
</section>"""


def _figures_html(r: Run, idx: int, colors: dict[str, str]) -> str:
    metrics = {a.name: a.metrics for a in r.result.attacks}
    curves: dict[str, tuple[Any, Any, str]] = {}
    notes: list[str] = []
    from genleak.metrics import auc as metric_auc

    for name, s in r.scores.items():
        if isinstance(s, str):
            notes.append(f"{name}: {s}")
            continue
        m = metrics[name]
        if m is None or abs(metric_auc(s.member, s.nonmember) - m.auc) > _AUC_TOLERANCE:
            notes.append(f"{name}: the scores file does not reproduce results.json's AUC; figure omitted")
            continue
        curves[name] = (s.member, s.nonmember, f"{name}: AUC {m.auc:.3f}, TPR@1% {m.tpr_at_1pct_fpr:.3f}")
    if not curves:
        reason = "; ".join(notes) or "no successful attack"
        return (f'<section class="roc" data-run="{idx}"><h2>ROC curves</h2>'
                f'<p class="problem">No figures: {e(reason)}</p></section>')
    roc = figures.roc_svg(curves, colors, salt=f"roc-{idx}")
    hist = figures.histograms_svg(curves, salt=f"hist-{idx}")
    missing = _warning_list(notes, "problems")
    return f"""
<section class="roc" data-run="{idx}">
  <h2>ROC curves (log-log)</h2>
  <p class="caption">The low-false-positive region is what matters for membership inference: the dashed
  diagonal is a random guess.</p>
  <figure class="roc-figure">{roc}</figure>
  {missing}
</section>
<section class="histograms" data-run="{idx}">
  <h2>Score distributions</h2>
  <p class="caption">Members (red) vs non-members (blue), per attack; the more the two separate, the more the
  model leaks.</p>
  <figure class="hist-figure">{hist}</figure>
</section>"""


def _plugin_section_html(r: Run, idx: int, name: str, sec: SectionResult) -> str:
    status = sec.status
    title = sec.title or name
    parts = [f'<section class="plugin-section kind-{e(sec.kind or "other")}" data-run="{idx}" '
             f'data-section="{e(name)}" data-status="{e(status)}"><h2>{e(title)} '
             f'<span class="status {e(status)}">{e(status)}</span></h2>']
    if sec.summary:
        parts.append(f'<p class="summary">{e(sec.summary)}</p>')
    if status == "failed":
        parts.append(f'<p class="error">{e(sec.error or "failed")}</p>')
    elif status != "ok":
        parts.append(f'<p class="muted reason">{e(status)}: {e(sec.reason or "no reason given")}</p>')
    parts.append(_warning_list([str(w) for w in sec.warnings or []], "section-warnings"))
    recommendations = sec.extra.get("recommendations")
    if status == "ok" and isinstance(recommendations, list):
        parts.append(_recommendations_html(idx, name, recommendations, sec.data or {}))
    metrics = sec.metrics or {}
    if metrics:
        rows = "".join(
            f'<tr><th>{e(k)}</th><td class="num"><span class="v" data-run="{idx}" data-section="{e(name)}" '
            f'data-metric="{e(k)}" data-value="{e(repr(v))}">{e(f"{v:.4g}" if isinstance(v, float) else v)}'
            f"</span></td></tr>" for k, v in metrics.items())
        parts.append(f'<table class="kv section-metrics"><tbody>{rows}</tbody></table>')
    curve = sec.extra.get("curve")
    if isinstance(curve, dict) and curve.get("x") and curve.get("y"):
        try:
            parts.append(f'<figure class="curve-figure">{figures.curve_svg(curve, salt=f"curve-{idx}-{name}")}'
                         f'{"<figcaption>" + e(curve["caption"]) + "</figcaption>" if curve.get("caption") else ""}</figure>')
        except (ValueError, TypeError, KeyError) as err:
            parts.append(f'<p class="problem">curve not drawable: {e(err)}</p>')
    images = sec.extra.get("images") or []
    if images:
        tiles = []
        for item in images:
            rel = item.get("path", "") if isinstance(item, dict) else str(item)
            caption = item.get("caption", rel) if isinstance(item, dict) else rel
            p = figures.safe_join(r.path, rel)
            if p is None or not p.is_file():
                tiles.append(f'<figure class="missing"><figcaption>missing or refused image: {e(rel)}</figcaption></figure>')
                continue
            width = figures.display_width(p)
            size = f' width="{width}"' if width else ""
            tiles.append(f'<figure><img alt="{e(caption)}"{size} src="{figures.image_data_uri(p)}">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        parts.append(f'<div class="image-grid">{"".join(tiles)}</div>')
    extra = sec.data
    if extra:
        parts.append(f'<details><summary>details</summary><pre>{e(json.dumps(extra, indent=2, sort_keys=True))}</pre></details>')
    parts.append("</section>")
    return "".join(parts)


def _recommendations_html(idx: int, name: str, recs: list[Any], data: dict[str, Any]) -> str:
    """The defense recommendation (``genleak.report.recommend``): one card per defense, commands verbatim."""
    cards = []
    for rec in recs:
        if not isinstance(rec, dict):
            continue
        rid, priority = rec.get("id", ""), rec.get("priority", "")
        effect = rec.get("expected_effect") or {}
        commands = "".join(f'<pre class="command" data-command="{e(c)}">{e(c)}</pre>' for c in rec.get("commands") or [])
        verify = "".join(f'<pre class="command verify" data-command="{e(c)}">{e(c)}</pre>' for c in rec.get("verify") or [])
        held = str(effect.get("paper_claim_held", ""))
        rows = [("Why", e(rec.get("reason", ""))),
                ("Apply", commands or '<span class="muted">no command</span>')]
        if verify:
            rows.append(("Check it worked", verify))
        rows += [
            ("Measured by genleak", f'{e(effect.get("measured", "not measured"))}'
                                    f'<br><span class="scale">Scale: {e(effect.get("scale") or "not recorded")}</span>'
                                    f'<br><span class="source">Source: {e(effect.get("source", "-"))}</span>'),
            ("Paper", f'{e(effect.get("paper", ""))} <span class="claim-held claim-{e(held.replace(" ", "-"))}">'
                      f"paper's claim held at tiny scale: {e(held or '?')}</span>"),
        ]
        if effect.get("caveat"):
            rows.append(("Caveat", e(effect["caveat"])))
        rows.append(("Cost", e(rec.get("cost", ""))))
        if rec.get("paper"):
            rows.append(("Cites", e(rec["paper"])))
        applies = (f'<p class="applies-if"><strong>Applies if:</strong> {e(rec["applies_if"])}</p>'
                   if rec.get("applies_if") else "")
        body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        cards.append(f'<div class="recommendation priority-{e(priority)}" data-run="{idx}" data-section="{e(name)}" '
                     f'data-recommendation="{e(rid)}" data-priority="{e(priority)}"><h3>{e(rec.get("name", rid))} '
                     f'<span class="priority">{e(priority)}</span></h3>{applies}'
                     f'<table class="kv recommendation-body"><tbody>{body}</tbody></table></div>')
    if not cards:
        cards.append('<p class="no-defense">No defense recommended: see the summary above.</p>')
    rejected = [x for x in data.get("not_recommended") or [] if isinstance(x, dict)]
    if rejected:
        cards.append('<p class="caption">Considered, not recommended:</p><ul class="not-recommended">'
                     + "".join(f"<li><strong>{e(x.get('name', ''))}</strong>: {e(x.get('why', ''))}</li>" for x in rejected)
                     + "</ul>")
    return f'<div class="recommendations" data-count="{len([r for r in recs if isinstance(r, dict)])}">{"".join(cards)}</div>'


def _monitor_html(r: Run, idx: int) -> str:
    """The leakage monitor's curve from the target's training record (``defenses/monitor.py``): the step
    at which memorisation became measurable, and where training stopped if it was told to."""
    mon = ((r.result.audit or {}).get("training") or {}).get("leakage_monitor") or {}
    curve, attacks = mon.get("curve") or [], list(mon.get("attacks") or [])
    if not curve:
        return ""
    head = "".join(f"<th>{e(a)} AUC</th><th>{e(a)} TPR@1%FPR</th>" for a in attacks)
    rows = "".join(
        f'<tr data-step="{e(p["step"])}"><td>{e(p["step"])}</td>'
        + "".join(f"<td>{_num((p.get(a) or {}).get('auc'))}</td><td>{_num((p.get(a) or {}).get('tpr_at_1pct_fpr'))}</td>"
                  for a in attacks) + "</tr>" for p in curve)
    stopped = (f" Training stopped at step {e(mon['stopped_at'])}: an attack's two-sided AUC reached {e(mon.get('stop_auc'))}."
               if mon.get("stopped_at") is not None else "")
    return (f'<section class="monitor" data-run="{idx}"><h2>Leakage during training</h2>'
            f'<p>Recorded while the target trained: {e(mon.get("n_members"))} training members vs '
            f'{e(mon.get("n_nonmembers"))} held-out non-members, every {e(mon.get("every"))} steps, on the weights '
            f'the run would have published then.{stopped}</p>'
            f'<table class="monitor-curve"><thead><tr><th>step</th>{head}</tr></thead><tbody>{rows}</tbody></table></section>')


def _provenance_html(r: Run, idx: int) -> str:
    res = r.result
    split = dict(res.split)
    cal = split.pop("calibration", None)
    if cal:
        split["calibration"] = {k: v for k, v in cal.items() if not k.endswith("_ids")}
    audit = res.audit or {}
    general = {
        "genleak version": res.genleak_version,
        "results schema": f"{RESULTS_FORMAT} v{RESULTS_VERSION}",
        "created": res.created,
        "seed": res.seed,
        "target fingerprint": res.target.get("fingerprint"),
        "split manifest hash (sha256 of the canonical manifest)": split.get("fingerprint"),
        "results.json sha256": r.results_sha256,
        "result folder": str(r.path.resolve()),
    }
    if audit.get("split_manifest_sha256"):
        general["split manifest file sha256"] = audit["split_manifest_sha256"]
    hyper = []
    for a in res.attacks:
        desc = a.description
        cfg_rows = "".join(f"<tr><th>{e(k)}</th><td><code>{e(json.dumps(v))}</code></td></tr>"
                           for k, v in (desc.get("config") or {}).items())
        hyper.append(f'<div class="hyper" data-attack="{e(a.name)}"><h4>{e(a.name)}</h4>'
                     f'<p class="muted">{e(desc.get("paper", ""))}; {e(desc.get("access", "?"))}, NFE {e(desc.get("nfe", "?"))}</p>'
                     f'<table class="kv"><tbody>{cfg_rows or "<tr><td>(no parameters)</td></tr>"}</tbody></table></div>')
    def block(title: str, rows: dict[str, Any]) -> str:
        return f'<div class="prov-block"><h3>{e(title)}</h3>{_kv_table(rows)}</div>'

    grid = [block("Target", res.target)]
    if audit.get("training"):
        grid.append(block("Target training record", audit["training"]))
    grid.append(block("Split", split))
    if res.settings:
        grid.append(block("Run settings", res.settings))
    other_audit = {k: v for k, v in audit.items() if k not in ("training", "split_manifest_sha256")}
    if other_audit:
        grid.append(block("Audit inputs", other_audit))
    grid.append(block("Machine", res.machine or {}))
    for key, value in res.extra.items():  # optional records other commands add (e.g. IAR threshold calibration)
        grid.append(block(key, value if isinstance(value, dict) else {key: value}))
    blocks = [
        f'<section class="provenance" data-run="{idx}"><h2>Provenance</h2>',
        f'<p>Command:</p><pre class="command">{e(res.command or "(not recorded)")}</pre>',
        _kv_table(general),
        '<h3>Attack hyperparameters</h3><div class="hypers">', *hyper, "</div>",
        f'<div class="prov-grid">{"".join(grid)}</div>',
    ]
    raw = json.dumps(res.to_json(), indent=2)
    if len(raw) <= _EMBED_JSON_LIMIT:
        blocks.append(f'<details class="raw"><summary>results.json (verbatim)</summary><pre>{e(raw)}</pre></details>')
    blocks.append("</section>")
    return "".join(blocks)


def attack_colors(runs: list[Run]) -> dict[str, str]:
    """One colour per attack name across all runs on a page."""
    names: list[str] = []
    for r in runs:
        names += [a.name for a in r.result.attacks if a.name not in names]
    return {n: figures.color(i) for i, n in enumerate(names)}


def _run_html(r: Run, idx: int, colors: dict[str, str], heading: bool) -> str:
    res = r.result
    split = res.split
    verdict = compute_verdict(res)
    sections = res.sections or {}
    title = (f'<h1 class="run-title">{e(r.label)}</h1>' if heading else "")
    meta = (f'<p class="meta">target <code>{e(str(res.target.get("fingerprint", ""))[:16])}</code> '
            f'({e(res.target.get("kind", "model"))}) · split <strong>{e(split["name"])}</strong> '
            f'<code>{e(split["fingerprint"][:16])}</code> · {e(split["n_members"])} members / '
            f'{e(split["n_nonmembers"])} non-members · created {e(res.created or "?")} · '
            f'genleak {e(res.genleak_version or "?")}</p>')
    if (res.split_check or {}).get("status") == "not recorded":  # e.g. a diffusers folder genleak did not train
        meta += ('<p class="meta split-check" data-status="not recorded">training split not recorded: the target '
                 'folder has no split.json, so the member / non-member labels come from the split alone and were '
                 'not checked against the training data</p>')
    body = [
        f'<article class="run" id="run-{idx}" data-run="{idx}">', title, meta,
        _verdict_html(idx, verdict), _warnings_html(r, idx), _attack_table_html(r, idx, colors),
        _figures_html(r, idx, colors), _monitor_html(r, idx),
    ]
    body += [_plugin_section_html(r, idx, n, s) for n, s in sections.items()]
    body += [_provenance_html(r, idx), "</article>"]
    return "\n".join(b for b in body if b)


def _compare_html(cmp: Comparison) -> str:
    head = "".join(f'<th colspan="{len(COMPARE_METRICS)}">{e(label)}</th>' for label in cmp.labels)
    sub = "".join(f"<th>{e(h)}</th>" for _ in cmp.labels for _, h, _ in COMPARE_METRICS)
    verdict_cells = "".join(
        f'<td colspan="{len(COMPARE_METRICS)}" class="level-{e(v["level"])}" data-run="{i}" data-level="{e(v["level"])}">'
        f'<strong>{e(v["label"])}</strong> <span class="muted">({e(v["confidence"])} confidence)</span></td>'
        for i, v in enumerate(cmp.verdicts))
    rows = [f'<tr class="verdict-row"><th>verdict</th>{verdict_cells}</tr>']
    for attack in cmp.attacks:
        cells = []
        for i in range(len(cmp.labels)):
            entry = cmp.cell(i, attack)
            for key, _, ci_key in COMPARE_METRICS:
                if entry is None:
                    cells.append('<td class="num muted">–</td>')
                elif entry.metrics is None:
                    cells.append(f'<td class="num failed" data-run="{i}" data-attack="{e(attack)}" data-status="failed">failed</td>')
                else:
                    value = getattr(entry.metrics, key)
                    base = base_value(cmp, attack, key) if i > 0 else None
                    delta = (f' <span class="delta">({value - base:+.3f})</span>' if base is not None else "")
                    cells.append(f'<td class="num">{_metric_span(i, attack, key, value)}'
                                 f'{_ci_span(i, attack, ci_key, getattr(entry.metrics, ci_key)) if ci_key else ""}{delta}</td>')
        rows.append(f'<tr data-attack="{e(attack)}"><th>{e(attack)}</th>{"".join(cells)}</tr>')
    notes = _warning_list(cmp.notes, "notes")
    return f"""
<section class="compare">
  <h2>Side by side</h2>
  <p class="caption">AUC and TPR@1%FPR with 95% bootstrap CIs; in brackets after a value: the difference to the
  first run ({e(cmp.labels[0])}).</p>
  <table class="compare-table"><thead><tr><th rowspan="2">attack</th>{head}</tr><tr>{sub}</tr></thead>
  <tbody>{''.join(rows)}</tbody></table>
  {notes}
</section>"""


def render_report(runs: list[Run], *, title: str | None = None, compare_only: bool = False) -> str:
    """The full page for one or more runs (several runs get a side-by-side table on top)."""
    if not runs:
        raise ValueError("render_report needs at least one run")
    colors = attack_colors(runs)
    multi = len(runs) > 1
    if title is None:
        title = (f"genleak audit: {runs[0].result.split['name']}" if not multi
                 else "genleak comparison: " + " vs ".join(r.label for r in runs))
    parts = [f"<header><h1>{e(title)}</h1></header>"]
    if multi:
        parts.append(_compare_html(comparison([r.result for r in runs], [r.label for r in runs])))
    if not compare_only:
        parts += [_run_html(r, i, colors, heading=multi) for i, r in enumerate(runs)]
    else:
        parts += ['<section class="verdicts">'] + [
            f"<h2>{e(r.label)}</h2>" + _verdict_html(i, compute_verdict(r.result)) for i, r in enumerate(runs)
        ] + ["</section>"]
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="generator" content="genleak">
<title>{e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
{body}
<footer>Generated by genleak. This page is self-contained: it loads nothing from the network.</footer>
</body>
</html>
"""


def write_report(
    run_dirs: list[str | Path], out: str | Path, *, labels: list[str] | None = None, title: str | None = None,
    compare_only: bool = False,
) -> Path:
    """Render result folders into one HTML file at ``out`` (atomically); return its path."""
    runs = load_runs(list(run_dirs), labels)
    text = render_report(runs, title=title, compare_only=compare_only)
    return atomic_write_text(out, text)
