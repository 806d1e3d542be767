"""Before/after comparison of membership inference on an original and an altered target.

Shake-to-Leak (002) measures privacy amplification as the change in MIA AUC and TPR@1%FPR when
the *same* attacks are run on the *same* member / non-member split against the original model and
against the fine-tuned or perturbed one ("+5.4 points AUC" on SD, 002 Key Results). Both
numbers come from ``genleak.metrics`` via ``genleak.pipeline.run_attacks``; this module only
subtracts and lays out the table (``s2l.json`` for the HTML report, ``s2l.md`` for people).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genleak.results import AuditResult

__all__ = ["S2L_FORMAT", "Comparison", "compare", "write_report"]

S2L_FORMAT = "genleak.s2l"
JSON_FILE = "s2l.json"
MARKDOWN_FILE = "s2l.md"


def _metrics(audit: AuditResult) -> dict[str, dict[str, float] | None]:
    out: dict[str, dict[str, float] | None] = {}
    for a in audit.attacks:
        out[a.name] = None if a.metrics is None else {"auc": float(a.metrics.auc), "tpr_at_1pct_fpr": float(a.metrics.tpr_at_1pct_fpr)}
    return out


def compare(base: AuditResult, variant: AuditResult) -> dict[str, dict[str, Any]]:
    """Per attack: AUC and TPR@1%FPR before and after, and their differences (after - before)."""
    before, after = _metrics(base), _metrics(variant)
    rows: dict[str, dict[str, Any]] = {}
    for name, b in before.items():
        a = after.get(name)
        if b is None or a is None:
            rows[name] = {"status": "failed"}
            continue
        rows[name] = {
            "auc_before": b["auc"],
            "auc_after": a["auc"],
            "delta_auc": a["auc"] - b["auc"],
            "tpr_at_1pct_fpr_before": b["tpr_at_1pct_fpr"],
            "tpr_at_1pct_fpr_after": a["tpr_at_1pct_fpr"],
            "delta_tpr_at_1pct_fpr": a["tpr_at_1pct_fpr"] - b["tpr_at_1pct_fpr"],
        }
    return rows


@dataclass
class Comparison:
    """One experiment: the original target's audit and one row per variant (method/rank or sigma/draw)."""

    kind: str  # "s2l" or "perturb"
    base: AuditResult
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"variant": {...}, "attacks": compare(...), ...}
    settings: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    warnings: list[str] = field(default_factory=list)

    def add(self, variant: dict[str, Any], audit: AuditResult, **extra: Any) -> dict[str, Any]:
        row = {"variant": variant, "target_fingerprint": audit.target.get("fingerprint"), "attacks": compare(self.base, audit), **extra}
        self.rows.append(row)
        return row

    def summary(self) -> list[dict[str, Any]]:
        """Mean (and min/max) deltas per variant group, averaging repeated draws (perturbation)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            key = ",".join(f"{k}={v}" for k, v in r["variant"].items() if k != "draw")
            groups.setdefault(key, []).append(r)
        out = []
        for key, rows in groups.items():
            entry: dict[str, Any] = {"variant": key, "n": len(rows), "attacks": {}}
            for attack in rows[0]["attacks"]:
                vals = [r["attacks"][attack] for r in rows if "delta_auc" in r["attacks"].get(attack, {})]
                if not vals:
                    continue
                entry["attacks"][attack] = {
                    m: {
                        "mean": sum(v[m] for v in vals) / len(vals),
                        "min": min(v[m] for v in vals),
                        "max": max(v[m] for v in vals),
                    }
                    for m in ("auc_after", "delta_auc", "tpr_at_1pct_fpr_after", "delta_tpr_at_1pct_fpr")
                }
            out.append(entry)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": S2L_FORMAT,
            "version": 1,
            "kind": self.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
            "settings": self.settings,
            "split": self.base.split,
            "target": self.base.target,
            "base": _metrics(self.base),
            "rows": self.rows,
            "summary": self.summary(),
            "warnings": self.warnings,
        }

    def markdown(self) -> str:
        attacks = [a.name for a in self.base.attacks]
        lines = [
            f"# {'Shake-to-Leak' if self.kind == 's2l' else 'Gaussian parameter perturbation'}: before vs after",
            "",
            f"split `{self.base.split.get('name')}` ({self.base.split.get('n_members')} members / "
            f"{self.base.split.get('n_nonmembers')} non-members); deltas = after - before.",
            "",
            "| variant | n | " + " | ".join(f"{a} AUC (Δ) | {a} TPR@1% (Δ)" for a in attacks) + " |",
            "|---|---|" + "---|---|" * len(attacks),
        ]
        base = _metrics(self.base)
        cells = []
        for a in attacks:
            m = base[a]
            cells.append("failed | failed" if m is None else f"{m['auc']:.4f} | {m['tpr_at_1pct_fpr']:.4f}")
        lines.append("| original | 1 | " + " | ".join(cells) + " |")
        for g in self.summary():
            cells = []
            for a in attacks:
                s = g["attacks"].get(a)
                if s is None:
                    cells.append("failed | failed")
                    continue
                cells.append(
                    f"{s['auc_after']['mean']:.4f} ({s['delta_auc']['mean']:+.4f}) | "
                    f"{s['tpr_at_1pct_fpr_after']['mean']:.4f} ({s['delta_tpr_at_1pct_fpr']['mean']:+.4f})"
                )
            lines.append(f"| {g['variant']} | {g['n']} | " + " | ".join(cells) + " |")
        if self.warnings:
            lines += ["", *[f"- {w}" for w in self.warnings]]
        return "\n".join(lines) + "\n"


def write_report(comparison: Comparison, out_dir: str | Path) -> Path:
    """Write ``s2l.json`` and ``s2l.md`` into ``out_dir`` (atomically)."""
    from genleak.io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKDOWN_FILE, comparison.markdown())
    return atomic_write_json(out / JSON_FILE, comparison.to_dict())
