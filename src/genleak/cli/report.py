"""Report commands: ``genleak audit``, ``genleak report html``, ``genleak report compare``.

Parsing and printing only; the work is in ``genleak.audit`` and ``genleak.report.html``. Heavy
imports (torch, matplotlib, mlflow) stay inside the command bodies so ``genleak --help`` is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from genleak.cli.args import (
    BATCH,
    CALIBRATION,
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PARAM,
    PRECISION,
    SEED,
    THREADS,
    command_line,
    group,
    load_checked_split,
    out_option,
    parse_params,
    set_threads,
    split_csv,
)

if TYPE_CHECKING:
    from genleak.results import AuditResult


def _csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return split_csv(text)


def _log_mlflow(run_dir: Path, uri: str | None, experiment: str) -> None:
    from genleak.report.mlflow_log import log_to_mlflow

    run_id, used = log_to_mlflow(run_dir, tracking_uri=uri, experiment=experiment)
    typer.echo(f"logged to MLflow run {run_id} ({used}, experiment '{experiment}')")


def print_audit(result: AuditResult, out: Path) -> None:
    """The audit's output: the results table, the verdict, failed sections and the defense recommendation."""
    from genleak.report.table import print_results

    print_results(result)
    verdict = result.verdict or {}
    typer.echo(f"verdict: {verdict['label']}: {verdict['headline']} (confidence {verdict['confidence']})")
    sections = result.sections or {}
    for name, sec in sections.items():
        if sec.status != "ok":
            typer.echo(f"section {name}: {sec.status}: {sec.error or sec.reason}")
    for sec in sections.values():  # the defense recommendation ends the audit's output
        if sec.kind == "defense" and sec.status == "ok":
            typer.echo(f"defense: {sec.summary or ''}")
            for rec in sec.extra.get("recommendations") or []:
                typer.echo(f"  [{rec['priority']}] {rec['name']}")
                for command in rec.get("commands") or []:
                    typer.echo(f"    $ {command}")
    typer.echo(f"wrote {out / 'results.json'} and {out / 'roc.png'}")
    typer.echo(f"report: {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        target: Path = typer.Option(..., help="Target model folder (diffusers)."),
        split: Path = typer.Option(..., help="Split manifest (members vs non-members)."),
        out: Path = out_option("audit", "results.json, report.html, scores/, roc.png"),
        attacks: str = typer.Option(None, help="Comma-separated attacks (default: the standard set for the target type: the core five + genbox, + clid for text-to-image, iar-* for IARs)."),
        sections: str = typer.Option(None, help="Comma-separated audit sections (default: all default ones; '' for none)."),
        param: list[str] = PARAM,
        seed: int = SEED,
        batch_size: int = BATCH,
        bootstrap: int = typer.Option(1000, help="Bootstrap resamples for confidence intervals (0: none)."),
        calibration: float = CALIBRATION,
        device: str = DEVICE,
        threads: int = THREADS,
        mlflow: bool = typer.Option(False, "--mlflow", help="Also log metrics and artifacts to MLflow."),
        mlflow_uri: str = typer.Option(None, help="MLflow tracking URI or folder (default: ./mlruns, a local file store)."),
        mlflow_experiment: str = typer.Option("genleak", help="MLflow experiment name."),
        allow_split_mismatch: bool = typer.Option(False, "--allow-split-mismatch", help="Run even if --split contradicts the target's recorded training split (recorded in the results)."),
        precision: str = PRECISION,
        compile_networks: bool = COMPILE,
        channels_last: bool = CHANNELS_LAST,
    ) -> None:
        """Run the standard audit and write results.json and a self-contained report.html."""
        from genleak.audit import run_audit
        from genleak.cli.args import main_process, rank_out
        from genleak.targets.base import optimize
        from genleak.targets.loading import load_target

        set_threads(threads)
        s, check = load_checked_split(target, split, allow_split_mismatch)
        t = optimize(load_target(target, device=device), compile=compile_networks, channels_last=channels_last)
        result = run_audit(t, s, rank_out(out), attacks=_csv(attacks), sections=_csv(sections), attack_params=parse_params(param),
                         seed=seed, batch_size=batch_size, bootstrap=bootstrap, command=command_line(),
                         target_path=target, split_path=split, split_check=check, calibration_fraction=calibration,
                         precision=precision)
        if not main_process():  # the other ranks helped score; rank 0 writes and prints
            return
        print_audit(result, out)
        if mlflow:
            _log_mlflow(out, mlflow_uri, mlflow_experiment)

    report = group(app, "report")

    @report.command("html")
    def report_cmd(
        runs: list[Path] = typer.Argument(..., help="Result folders (each with results.json)."),
        out: Path = typer.Option(None, help="HTML file (default: RUN/report.html for one run, ./report.html for several)."),
        labels: str = typer.Option(None, help="Comma-separated run labels (default: folder names)."),
        title: str = typer.Option(None, help="Page title."),
        mlflow: bool = typer.Option(False, "--mlflow", help="Also log each run to MLflow."),
        mlflow_uri: str = typer.Option(None, help="MLflow tracking URI or folder (default: ./mlruns)."),
        mlflow_experiment: str = typer.Option("genleak", help="MLflow experiment name."),
    ) -> None:
        """Render result folders into one self-contained HTML report (works offline)."""
        from genleak.report.html import REPORT_FILE, write_report

        target = out or (runs[0] / REPORT_FILE if len(runs) == 1 else Path(REPORT_FILE))
        path = write_report(runs, target, labels=_csv(labels), title=title)
        typer.echo(f"wrote {path}")
        if mlflow:
            for run in runs:
                _log_mlflow(run, mlflow_uri, mlflow_experiment)

    @report.command("compare")
    def compare_cmd(
        runs: list[Path] = typer.Argument(..., help="Result folders to compare, baseline first."),
        out: Path = typer.Option(Path("compare.html"), help="HTML file with the side-by-side table."),
        labels: str = typer.Option(None, help="Comma-separated run labels (default: folder names)."),
        full: bool = typer.Option(False, "--full", help="Also include every run's full report in the page."),
    ) -> None:
        """Print a side-by-side table of result folders (e.g. baseline vs DistillMD vs DualMD) and render it."""
        from genleak.io import atomic_write_text
        from genleak.report.compare import comparison, print_comparison
        from genleak.report.html import load_runs, render_report

        loaded = load_runs(list(runs), _csv(labels))
        print_comparison(comparison([r.result for r in loaded], [r.label for r in loaded]))
        if len(loaded) < 2:
            typer.echo("note: one run only; nothing to compare side by side")
        atomic_write_text(out, render_report(loaded, compare_only=not full,
                                             title="genleak comparison: " + " vs ".join(r.label for r in loaded)))
        typer.echo(f"wrote {out}")
