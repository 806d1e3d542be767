"""``genleak verify RESULT_DIR``: the command over ``genleak.verify.verify``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_cmd(
        result_dir: Path = typer.Argument(..., help="An attack, audit or infer output folder."),
        target: Path = typer.Option(None, help="Target folder (default: the path the run recorded)."),
        split: Path = typer.Option(None, help="Split manifest (default: the path the run recorded)."),
        rescore: int = typer.Option(32, help="Samples per attack to score again and compare (0: none)."),
        seed: int = typer.Option(0, help="Seed of the choice of samples to rescore."),
    ) -> None:
        """Re-check a result: metrics from the saved scores, target and split fingerprints, K samples
        rescored. Exit 0 only if everything matches; otherwise one line per difference, exit 1."""
        from genleak.verify import verify

        v = verify(result_dir, target=target, split=split, rescore=rescore, sample_seed=seed)
        for line in v.checked:
            typer.echo(f"ok: {line}")
        for line in v.differences:
            typer.secho(f"DIFFERS: {line}", fg=typer.colors.RED)
        if v.differences:
            typer.echo(f"{result_dir}: {len(v.differences)} difference(s), {len(v.checked)} check(s) match")
            raise typer.Exit(1)
        typer.echo(f"{result_dir}: verified, all {len(v.checked)} checks match")
