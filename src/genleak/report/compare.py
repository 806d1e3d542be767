"""Side-by-side comparison of result folders (e.g. baseline vs DistillMD vs DualMD).

One data model (``comparison``) feeds both the terminal table (rich) and the HTML table, so the
two never disagree. Numbers are read from each ``results.json`` as written; nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from genleak.report.verdict import compute_verdict
from genleak.results import AttackResult, AuditResult

# (metrics key, column header, CI key or None): the figures a comparison shows per run.
COMPARE_METRICS: tuple[tuple[str, str, str | None], ...] = (
    ("auc", "AUC", "auc_ci"),
    ("tpr_at_1pct_fpr", "TPR@1%FPR", "tpr_at_1pct_fpr_ci"),
)


@dataclass
class Comparison:
    """Runs (labels, results, verdicts) and the union of their attacks in first-seen order."""

    labels: list[str]
    results: list[AuditResult]
    verdicts: list[dict[str, Any]]
    attacks: list[str]
    notes: list[str] = field(default_factory=list)

    def cell(self, run: int, attack: str) -> AttackResult | None:
        """The attack's result in run ``run`` (None when that run did not include the attack)."""
        return next((a for a in self.results[run].attacks if a.name == attack), None)


def run_labels(paths: list[Path], labels: list[str] | None = None) -> list[str]:
    """Labels for runs: the given ones, else folder names made unique with their parent's name."""
    if labels:
        if len(labels) != len(paths):
            from genleak.errors import GenleakError

            raise GenleakError(f"got {len(labels)} labels for {len(paths)} result folders; give one label per folder")
        return labels
    names = [p.resolve().name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def comparison(results: list[AuditResult], labels: list[str]) -> Comparison:
    """Build the comparison model; notes say when runs are not directly comparable."""
    attacks: list[str] = []
    for r in results:
        for a in r.attacks:
            if a.name not in attacks:
                attacks.append(a.name)
    notes: list[str] = []
    splits = {r.split["fingerprint"] for r in results}
    if len(splits) > 1:
        notes.append("the runs use different membership splits: differences mix model and data effects")
    sizes = {(r.split["n_members"], r.split["n_nonmembers"]) for r in results}
    if len(sizes) > 1:
        notes.append("the runs have different split sizes: CIs and TPR@low-FPR resolution differ")
    configs: dict[str, set[str]] = {}
    for r in results:
        for a in r.attacks:
            configs.setdefault(a.name, set()).add(repr(sorted((a.description.get("config") or {}).items())))
    changed = [n for n, c in configs.items() if len(c) > 1]
    if changed:
        notes.append(f"attack hyperparameters differ between runs for: {', '.join(changed)}")
    return Comparison(labels=labels, results=results, verdicts=[compute_verdict(r) for r in results],
                      attacks=attacks, notes=notes)


def _fmt_cell(entry: AttackResult | None, key: str, ci_key: str | None, base: float | None) -> str:
    if entry is None:
        return "[dim]-[/dim]"
    if entry.metrics is None:
        return "[red]failed[/red]"
    value, ci = getattr(entry.metrics, key), getattr(entry.metrics, ci_key) if ci_key else None
    text = f"{value:.3f}"
    if ci:
        text += f" [dim][{ci[0]:.2f}, {ci[1]:.2f}][/dim]"
    if base is not None:
        delta = value - base
        text += f" ({delta:+.3f})"
    return text


def base_value(cmp: Comparison, attack: str, key: str) -> float | None:
    """The first run's value of ``key`` for ``attack`` (the baseline deltas refer to), if it has one."""
    entry = cmp.cell(0, attack)
    if entry is None or entry.metrics is None:
        return None
    return float(getattr(entry.metrics, key))


def compare_table(cmp: Comparison) -> Table:
    """rich table: one row per attack, AUC and TPR@1%FPR per run, deltas against the first run."""
    table = Table(title="genleak report compare (deltas against the first run)")
    table.add_column("attack")
    for label in cmp.labels:
        for _, header, _ in COMPARE_METRICS:
            table.add_column(f"{label}\n{header}", justify="right")
    table.add_row("[bold]verdict[/bold]", *[
        v for verdict in cmp.verdicts for v in (f"[bold]{verdict['label']}[/bold]", f"confidence {verdict['confidence']}")
    ])
    for attack in cmp.attacks:
        cells = []
        for i in range(len(cmp.labels)):
            for key, _, ci_key in COMPARE_METRICS:
                base = base_value(cmp, attack, key) if i > 0 else None
                cells.append(_fmt_cell(cmp.cell(i, attack), key, ci_key, base))
        table.add_row(attack, *cells)
    return table


def print_comparison(cmp: Comparison, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 120))
    console.print(compare_table(cmp))
    for note in cmp.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
