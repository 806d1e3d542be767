"""The results table printed after an audit (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from genleak.results import AuditResult


def results_table(result: AuditResult) -> Table:
    """A table of a result: one row per attack, the split sizes in the title."""
    split = result.split
    cal = split.get("calibration") or {}
    held = f"; {cal['n_members']}+{cal['n_nonmembers']} held out to calibrate thresholds" if cal.get("fraction") else ""
    table = Table(
        title=f"{split['name']}: {split['n_members']} members vs {split['n_nonmembers']} non-members "
        f"(split {split['fingerprint'][:12]}{held})",
    )
    for col in ("attack", "access", "NFE", "AUC [95% CI]", "TPR@1%FPR", "TPR@0.1%FPR", "TPR@0%FPR", "ASR best", "ASR cal.", "seconds"):
        table.add_column(col, justify="left" if col in ("attack", "access") else "right")
    for a in result.attacks:
        access, nfe, m = str(a.description.get("access", "?")), str(a.description.get("nfe", "?")), a.metrics
        if m is None:
            table.add_row(a.name, access, nfe, "[red]failed[/red]", (a.error or "")[:40], "", "", "", "", "")
            continue
        auc = f"{m.auc:.3f}"
        if m.auc_ci:
            auc += f" [{m.auc_ci[0]:.3f}, {m.auc_ci[1]:.3f}]"
        table.add_row(
            a.name, access, nfe, auc, f"{m.tpr_at_1pct_fpr:.3f}", f"{m.tpr_at_01pct_fpr:.3f}", f"{m.tpr_at_0_fpr:.3f}",
            f"{m.asr:.3f}", "-" if a.asr_calibrated is None else f"{a.asr_calibrated:.3f}", f"{a.seconds:.2f}",
        )
    return table


def print_results(result: AuditResult, console: Console | None = None) -> None:
    # Pipes and CI logs get rich's 80-column default, which truncates the metric headers.
    console = console or Console(width=max(Console().width, 120))
    console.print(results_table(result))
    notes = sorted({w for a in result.attacks for w in a.warnings if "\n" not in w})
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
