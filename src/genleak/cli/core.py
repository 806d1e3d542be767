"""Core commands: data split, data inspect, train ddpm, attack, sweep, demo.

Parsing and printing only; the work is done by library functions. torch/diffusers are imported
inside the command bodies so that ``genleak --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

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
    TRAIN,
    command_line,
    group,
    load_checked_split,
    out_option,
    parse_ints,
    parse_params,
    set_threads,
    split_csv,
)


def register(app: typer.Typer) -> None:
    data, train = group(app, "data"), group(app, "train")

    @data.command("split")
    def split_cmd(
        out: Path = typer.Option(..., "--out", help="Where to write the split manifest (JSON)."),
        source: str = typer.Option("digits:16", help="digits[:SIZE] | folder:PATH | npz:PATH | hf:PATH | cifar10:PATH | list:FILE?root=DIR"),
        members: int = typer.Option(None, help="Number of members (default 64); with --member-source: draw this many of them."),
        nonmembers: int = typer.Option(None, help="Number of non-members (default: as many as members); with --nonmember-source: draw this many."),
        member_source: str = typer.Option(None, "--member-source", help="The images the model was trained on (a --source form); with --nonmember-source, instead of a random split of --source."),
        nonmember_source: str = typer.Option(None, "--nonmember-source", help="Images the model was not trained on (a --source form)."),
        index_file: Path = typer.Option(None, help="SecMI/PIA index .npz (mia_train_idxs, mia_eval_idxs) instead of a random split."),
        seed: int = SEED,
        name: str = typer.Option("split"),
    ) -> None:
        """Build a membership split (random, from an index file, or from known member and non-member sources) and save its manifest."""
        from genleak.data import (
            load_source,
            make_split,
            parse_source_spec,
            split_from_index_file,
            split_from_sources,
        )
        from genleak.errors import GenleakError

        if (member_source is None) != (nonmember_source is None) or (member_source and index_file):
            raise GenleakError("give --member-source and --nonmember-source together, without --index-file")
        if member_source is not None:
            split = split_from_sources(member_source, nonmember_source, members, nonmembers, seed=seed)
        elif index_file is not None:
            split = split_from_index_file(load_source(source), index_file, source=parse_source_spec(source))
        else:
            split = make_split(load_source(source), 64 if members is None else members, nonmembers, seed=seed, source=parse_source_spec(source))
        split.name = name
        split.save(out)
        typer.echo(f"wrote {out}: {len(split.members)} members, {len(split.nonmembers)} non-members, shape {split.members.shape}")

    @train.command("ddpm")
    def train_cmd(
        split: Path = typer.Option(..., help="Split manifest; the target trains on its members."),
        out: Path = typer.Option(..., help="Output diffusers folder (resumes if it holds a checkpoint)."),
        channels: str = typer.Option("32,64", help="UNet block_out_channels, comma-separated."),
        steps: int = TRAIN.steps(2000),
        batch_size: int = TRAIN.batch_size(32),
        lr: float = TRAIN.LR,
        ema: float = TRAIN.EMA,
        grad_accum: int = TRAIN.GRAD_ACCUM,
        mixed_precision: str = TRAIN.MIXED_PRECISION,
        seed: int = TRAIN.SEED,
        threads: int = TRAIN.THREADS,
        monitor_every: int = typer.Option(0, "--monitor-every", help="Every N steps, score training members vs the "
                                          "split's held-out non-members with SimA and loss; the curve goes into the "
                                          "training record and the audit report (0: off)."),
        monitor_members: int = typer.Option(None, "--monitor-members", help="Members the monitor scores (a seeded "
                                            "sample; default all)."),
        monitor_stop_auc: float = typer.Option(None, "--monitor-stop-auc", help="Stop (and publish) at the first "
                                               "check where an attack's two-sided AUC reaches this."),
    ) -> None:
        """Train a pixel DDPM (diffusers UNet2DModel + DDPMScheduler) on a split's members."""

        from genleak.data import MembershipSplit
        from genleak.defenses.hooks import make_monitor
        from genleak.train import TrainConfig, train_ddpm

        set_threads(threads)
        s = MembershipSplit.load(split)
        config = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, block_out_channels=parse_ints(channels),
                             ema_decay=ema or None, seed=seed, grad_accum=grad_accum, mixed_precision=mixed_precision)
        hooks = (make_monitor(s, monitor_every, n_members=monitor_members, stop_auc=monitor_stop_auc, seed=seed)
                 if monitor_every else None)
        target = train_ddpm(s.members.images, config, out, split_manifest=s.to_manifest(), hooks=hooks)
        typer.echo(f"trained {out} ({target.describe()['parameters']} parameters, fingerprint {target.fingerprint()[:12]})")

    @app.command("attack")
    def attack_cmd(
        target: Path = typer.Option(..., help="diffusers folder of the target model."),
        split: Path = typer.Option(..., help="Split manifest (members vs non-members)."),
        attacks: str = typer.Option("loss,secmi,pia,pian,sima", help="Comma-separated attack names."),
        param: list[str] = PARAM,
        out: Path = out_option("attack", "scores/, results.json, roc.png"),
        seed: int = SEED,
        batch_size: int = BATCH,
        bootstrap: int = typer.Option(1000, help="Bootstrap resamples for confidence intervals (0: none)."),
        device: str = DEVICE,
        threads: int = THREADS,
        calibration: float = CALIBRATION,
        guidance_scale: float = typer.Option(None, "--guidance-scale", help="CFG scale for text-to-image targets (default 1: conditional only)."),
        allow_split_mismatch: bool = typer.Option(False, "--allow-split-mismatch", help="Run even if --split contradicts the target's recorded training split (recorded in the results)."),
        precision: str = PRECISION,
        compile_networks: bool = COMPILE,
        channels_last: bool = CHANNELS_LAST,
    ) -> None:
        """Score members and non-members; write per-sample scores, metrics and a ROC plot."""
        from genleak.cli.args import main_process, rank_out
        from genleak.pipeline import run_attacks
        from genleak.report.results import write_results
        from genleak.report.table import print_results
        from genleak.targets.base import optimize
        from genleak.targets.loading import load_target

        set_threads(threads)
        s, check = load_checked_split(target, split, allow_split_mismatch)
        t = optimize(load_target(target, device=device, guidance_scale=guidance_scale), compile=compile_networks,
                     channels_last=channels_last)
        result = run_attacks(t, s, split_csv(attacks), rank_out(out), attack_params=parse_params(param), seed=seed,
                             batch_size=batch_size, bootstrap=bootstrap, command=command_line(),
                             calibration_fraction=calibration, precision=precision)
        if not main_process():  # the other ranks helped score; rank 0 writes and prints
            return
        inputs = {"target_path": str(target.resolve()), "split_path": str(split.resolve())}
        path = write_results(result, out, extra={"split_check": check, "inputs": inputs})
        print_results(result)
        if "queries" in result.extra:  # the query plan (issue 14 §4): what ran against what each attack alone asks
            q = result.extra["queries"]
            typer.echo(f"denoiser queries per sample: {q['run']:g} run, {q['attacks_nfe']:g} the attacks' NFE summed")
        typer.echo(f"wrote {path} and {out / 'roc.png'}")

    @data.command("inspect")
    def inspect_cmd(path: Path = typer.Argument(..., help="A target folder or a split manifest.")) -> None:
        """Print a target's or a split's summary."""
        import json

        if path.is_dir():
            from genleak.targets.loading import load_target

            typer.echo(json.dumps(load_target(path).describe(), indent=2))
        else:
            from genleak.data import MembershipSplit
            from genleak.pipeline import split_summary

            typer.echo(json.dumps(split_summary(MembershipSplit.load(path)), indent=2))

    @app.command("sweep")
    def sweep_cmd(
        target: Path = typer.Option(..., help="Target folder (use a shadow/calibration model)."),
        split: Path = typer.Option(..., help="A CALIBRATION split, never the evaluation split."),
        attack: str = typer.Option("sima"),
        vary: str = typer.Option("t", help="The hyperparameter swept."),
        grid: str = typer.Option("0,10,20,50,100", help="Comma-separated values of --vary."),
        param: list[str] = PARAM,
        out: Path = out_option("sweep", "sweep.json"),
        seed: int = SEED,
        batch_size: int = BATCH,
        device: str = DEVICE,
        threads: int = THREADS,
    ) -> None:
        """Sweep one attack hyperparameter on a calibration split and print AUC per value (--param fixes others)."""
        from genleak.data import MembershipSplit
        from genleak.io import atomic_write_json
        from genleak.pipeline import best_value, sweep_parameter
        from genleak.targets.loading import load_target

        set_threads(threads)
        rows = sweep_parameter(load_target(target, device=device), MembershipSplit.load(split), attack, vary,
                               [float(v) if "." in v else int(v) for v in split_csv(grid)], seed=seed,
                               batch_size=batch_size, params=parse_params(param).get(attack))
        for value, m in rows.items():
            flipped = f"  (flipped: AUC {m['leakage_auc']:.4f})" if m["leak_direction"] == "flipped" else ""
            typer.echo(f"{attack} {vary}={value}: AUC {m['auc']:.4f}  TPR@1%FPR {m['tpr_at_1pct_fpr']:.4f}{flipped}")
        best = best_value(rows)
        typer.echo(f"best {vary} = {best} (by two-sided AUC max(AUC, 1 - AUC), then the leaking side's TPR@1%FPR)")
        atomic_write_json(out / "sweep.json", {"command": command_line(), "attack": attack, "vary": vary, "best": best,
                                               "rows": [{"value": v, **m} for v, m in rows.items()]})
        typer.echo(f"wrote {out / 'sweep.json'}")

    @app.command("demo")
    def demo_cmd(
        out: Path = out_option("demo", "split.json, target/, results.json, roc.png, report.html"),
        steps: int = typer.Option(2000, help="Training steps (2000 overfits 64 digits at 16x16)."),
        members: int = typer.Option(64),
        nonmembers: int = typer.Option(512),
        size: int = typer.Option(16),
        seed: int = SEED,
    ) -> None:
        """End-to-end audit on the built-in data: split, train a tiny DDPM, run `genleak audit` on it."""
        from genleak.cli.demo import run_demo

        run_demo(out, steps=steps, members=members, nonmembers=nonmembers, size=size, seed=seed,
                 command=command_line())
