"""The results table printed after an audit (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def results_table(results: dict[str, Any]) -> Table:
    """A table from a ``results.json`` dict: one row per attack, the split sizes in the title."""
    split = results["split"]
    cal = split.get("calibration") or {}
    held = f"; {cal['n_members']}+{cal['n_nonmembers']} held out to calibrate thresholds" if cal.get("fraction") else ""
    table = Table(
        title=f"{split['name']}: {split['n_members']} members vs {split['n_nonmembers']} non-members "
        f"(split {split['fingerprint'][:12]}{held})",
    )
    for col in ("attack", "access", "NFE", "AUC [95% CI]", "TPR@1%FPR", "TPR@0.1%FPR", "TPR@0%FPR", "ASR best", "ASR cal.", "seconds"):
        table.add_column(col, justify="left" if col in ("attack", "access") else "right")
    for name, a in results["attacks"].items():
        if a["status"] != "ok":
            table.add_row(name, a["access"], str(a["nfe"]), "[red]failed[/red]", a.get("error", "")[:40], "", "", "", "", "")
            continue
        m = a["metrics"]
        auc = f"{m['auc']:.3f}"
        if m.get("auc_ci"):
            auc += f" [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]"
        table.add_row(
            name, a["access"], str(a["nfe"]), auc,
            f"{m['tpr_at_1pct_fpr']:.3f}", f"{m['tpr_at_01pct_fpr']:.3f}", f"{m['tpr_at_0_fpr']:.3f}",
            f"{m['asr']:.3f}", "-" if m.get("asr_calibrated") is None else f"{m['asr_calibrated']:.3f}",
            f"{a['seconds']:.2f}",
        )
    return table


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    # Pipes and CI logs get rich's 80-column default, which truncates the metric headers.
    console = console or Console(width=max(Console().width, 120))
    console.print(results_table(results))
    notes = sorted({w for a in results["attacks"].values() for w in a.get("warnings", []) if "\n" not in w})
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
