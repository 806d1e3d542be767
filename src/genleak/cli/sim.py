"""``genleak sim {data,train,generate,evaluate,benchmark}``: the ch. 4-5 detector simulators.

Only typer at module level; numpy, torch and the simulators load inside the commands so
``genleak --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from genleak.cli.args import set_threads
from genleak.errors import GenleakError

sim = typer.Typer(help="Fast detector simulation with SDI-GAN and ExpertSim (thesis ch. 4-5).", no_args_is_help=True)


@sim.command("data")
def data_cmd(
    out: Path = typer.Option(..., "--out", help="data file to write (.npz)"),
    kind: str = typer.Option("synthetic", "--kind", help="synthetic | zdc-neutron (44x44) | zdc-proton (56x30)"),
    n: int = typer.Option(1000, "--n", help="points per (class, spread) cell, or particles for ZDC"),
    repeats: int = typer.Option(5, "--repeats", help="ZDC: simulated outcomes per particle"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Make the synthetic 2-D benchmark or simulate ZDC-like responses."""
    from genleak.sim.data import make_data

    d = make_data(kind, n, seed, repeats)
    d.save(out)
    typer.echo(f"{out}: {len(d.x)} samples {tuple(d.x.shape[1:])}, {int(d.train.sum())} train / {int((~d.train).sum())} test")


@sim.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="file from `genleak sim data`"),
    out: Path = typer.Option(..., "--out", help="run folder (an unfinished run there is resumed)"),
    model: str = typer.Option("sdigan", "--model", help="dcgan | msgan | sdigan | expertsim"),
    steps: int = typer.Option(1000, "--steps"),
    experts: int = typer.Option(1, "--experts", help="ExpertSim: number of experts K (thesis default 3)"),
    batch_size: int = typer.Option(64, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    config: Path | None = typer.Option(None, "--config", help="JSON with further SimTrainConfig fields (lr_g, lambda_in, ...)"),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: torch's default)"),
) -> None:
    """Train a simulator; checkpoints (safetensors + state.json) make it resumable."""
    from genleak.config import read_config
    from genleak.sim.data import SimData
    from genleak.sim.train import SimTrainConfig, train

    set_threads(threads)
    extra = read_config(config, known=SimTrainConfig.field_names()) if config else {}
    cfg = SimTrainConfig.from_dict({**extra, "model": model, "steps": steps, "experts": experts,
                                    "batch_size": batch_size, "seed": seed})
    state = train(SimData.load(data), cfg, out)
    last = state["history"][-1] if state.get("history") else {}
    typer.echo(f"{out}: step {state['step']}, {state['seconds']:.1f} s; last losses "
               + ", ".join(f"{k} {v:.3g}" for k, v in last.items() if k != "step"))


@sim.command("generate")
def generate_cmd(
    run: Path = typer.Option(..., "--run", help="run folder from `genleak sim train`"),
    data: Path = typer.Option(..., "--data", help="data file: one response is generated per test sample"),
    out: Path = typer.Option(..., "--out", help="generations file to write (.npz)"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(0, "--threads"),
) -> None:
    """Generate one response for every test condition of a data file."""
    from genleak.io import atomic_save_npz
    from genleak.sim.data import SimData
    from genleak.sim.train import generate, load_run

    set_threads(threads)
    test = SimData.load(data).part(False)
    model, scaling, state = load_run(run)
    if list(test.x.shape[1:]) != state["shape"]:
        raise GenleakError(f"{run} was trained on shape {state['shape']}, the data has {list(test.x.shape[1:])}")
    x, assign = generate(model, scaling, test.cond, seed)
    atomic_save_npz(out, x=x, cond=test.cond, assign=assign, experts=len(model.experts))
    typer.echo(f"{out}: {len(x)} responses")


@sim.command("evaluate")
def evaluate_cmd(
    data: Path = typer.Option(..., "--data"),
    generated: Path = typer.Option(..., "--generated", help="file from `genleak sim generate`"),
    out: Path | None = typer.Option(None, "--out", help="metrics JSON to write"),
) -> None:
    """Thesis metrics: per-spread variance and WS (synthetic) or the 5-channel WS (ZDC)."""
    import numpy as np

    from genleak.io import atomic_write_json
    from genleak.sim.data import SimData
    from genleak.sim.metrics import evaluate

    d = SimData.load(data)
    try:
        with np.load(generated) as g:
            gx, gc, ga, k = g["x"], g["cond"], g["assign"], int(g["experts"])
    except (OSError, KeyError, ValueError) as err:
        raise GenleakError(f"{generated}: not a `genleak sim generate` file ({err})") from None
    metrics = evaluate(d, gx, gc, ga, k)
    if out:
        atomic_write_json(out, metrics)
    typer.echo(json.dumps(metrics, indent=1))


@sim.command("benchmark")
def benchmark_cmd(
    config: Path = typer.Option(..., "--config", help="benchmark JSON (configs/sim_*.json)"),
    out: Path = typer.Option(Path("runs/sim"), "--out", help="folder for runs, results.json, tables.md, report.html"),
    threads: int = typer.Option(0, "--threads"),
) -> None:
    """Train every row of a benchmark config over its seeds and write the thesis-style tables and figures."""
    from genleak.sim.bench import load_config, run_benchmark

    set_threads(threads)
    result = run_benchmark(load_config(config), out, log=lambda m: typer.echo(m, err=True))
    typer.echo((out / "tables.md").read_text())
    typer.echo(f"{out / 'report.html'} ({result['seconds']:.0f} s)")


def register(app: typer.Typer) -> None:
    """Add the ``sim`` command group to the genleak app."""
    app.add_typer(sim, name="sim")
