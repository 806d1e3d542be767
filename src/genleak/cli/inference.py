"""``genleak infer``: dataset inference (CDI) from the command line. Parsing and printing only."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from genleak.cli.args import (
    BATCH,
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PARAM,
    SEED,
    THREADS,
    command_line,
    default_out,
    load_checked_split,
    out_option,
    parse_params,
    set_threads,
)
from genleak.errors import GenleakError


def register(app: typer.Typer) -> None:
    @app.command("infer")
    def infer_cmd(
        target: Path = typer.Option(None, help="diffusers folder of the model to audit."),
        suspect: str = typer.Option(None, help="P: the owner's published images (any --source spec: folder:, npz:, hf:, digits...)."),
        reference: str = typer.Option(None, help="U: unpublished images from the same distribution (known non-members)."),
        split: Path = typer.Option(None, help="Use a split manifest's members as P and non-members as U (experiments)."),
        features: str = typer.Option("gray", help="gray | white | comma-separated: loss,secmi,pia,pian,multiloss,gradmask,noiseopt."),
        param: list[str] = PARAM,
        out: Path = out_option("infer", "cdi.json, min_p_curve.png, scores.npz"),
        cache: Path = typer.Option(None, help="Feature cache folder, reused across runs (default OUT/feature-cache)."),
        alpha: float = typer.Option(0.01, help="Significance level of the verdict (thesis ch. 8.4.3: 0.01)."),
        two_sided: bool = typer.Option(False, help="Two-sided test instead of H1: mean score(P) > mean score(U)."),
        p_method: str = typer.Option("permutation", help="permutation (exact) | welch (the thesis' parametric p)."),
        permutations: int = typer.Option(999, help="Within-fold permutations for the exact p-value."),
        resamples: int = typer.Option(1000, help="Resamples per size for the minimum-|P| curve (supplement C.5); 0 skips it."),
        refit_resamples: int = typer.Option(0, help="Resamples per size of the refitted curve (0: --resamples; fewer where a size is settled or large, each point records its count)."),
        curve: str = typer.Option("refit", help="Headline minimum-|P| curve: refit (the thesis' and authors' procedure) | fixed (one scorer, overstates power at small n)."),
        folds: int = typer.Option(5, help="k of the k-fold scoring model (thesis ch. 8.5: 5)."),
        reference_ratio: float = typer.Option(None, help="|U| / |P| at each curve size (default: the inputs' ratio)."),
        max_samples: int = typer.Option(None, help="Randomly keep at most this many images per side."),
        seed: int = SEED,
        batch_size: int = BATCH,
        chunk_size: int = typer.Option(256, help="Samples per feature-cache flush (a crash loses at most one chunk)."),
        fail_on_shift: bool = typer.Option(False, help="Stop with an error when the blind classifier detects a P/U shift."),
        device: str = DEVICE,
        threads: int = THREADS,
        config: Path = typer.Option(None, help="Run an experiment config (configs/cdi_*.json|toml) instead."),
        quiet: bool = typer.Option(False, help="No progress bars."),
        allow_split_mismatch: bool = typer.Option(False, "--allow-split-mismatch", help="With --split: run even if it contradicts the target's recorded training split (recorded in cdi.json)."),
        compile_networks: bool = COMPILE,
        channels_last: bool = CHANNELS_LAST,
    ) -> None:
        """Dataset inference (CDI): was the suspect set P used to train the model? Verdict at alpha,
        p-value, t statistic, samples, features, and the minimum-|P| curve."""

        set_threads(threads)
        if config is not None:
            from genleak.inference.experiments import run_experiment

            # a config names its own output folder; --out overrides it only when given
            summary = run_experiment(config, None if out == default_out("infer") else out, progress=not quiet)
            typer.echo(summary.get("summary") or json.dumps({k: v for k, v in summary.items() if k not in ("config", "target") and not k.endswith("_values")}, indent=1, default=str))
            return
        if target is None:
            raise GenleakError("--target is required (or --config for an experiment)")
        if split is not None and (suspect is not None or reference is not None):
            raise GenleakError("give either --split or --suspect/--reference, not both")
        if split is None and (suspect is None or reference is None):
            raise GenleakError("give --suspect P and --reference U (or --split SPLIT.json)")

        from genleak.cli.args import main_process
        from genleak.data import load_source
        from genleak.inference.cdi import CDIConfig, format_result, run_cdi, write_cdi
        from genleak.targets.base import TargetKind, optimize
        from genleak.targets.loading import load_target

        cfg = CDIConfig(
            features=features,
            feature_params=parse_params(param),
            alpha=alpha,
            alternative="two-sided" if two_sided else "greater",
            p_method=p_method,
            permutations=permutations,
            folds=folds,
            n_resamples=resamples,
            reference_ratio=reference_ratio,
            refit_resamples=refit_resamples,
            curve=curve,
            seed=seed,
            batch_size=batch_size,
            chunk_size=chunk_size,
            fail_on_shift=fail_on_shift,
            max_samples=max_samples,
        )
        check = None
        if split is not None:
            s, check = load_checked_split(target, split, allow_split_mismatch)
            p_set, u_set = s.members, s.nonmembers
        else:
            p_set, u_set = load_source(suspect), load_source(reference)
        t = optimize(load_target(target, device=device), compile=compile_networks, channels_last=channels_last)
        if t.target_kind is TargetKind.IAR:
            raise GenleakError(f"'{target}' is an image autoregressive model: run `genleak iar infer` for its dataset inference")
        result = run_cdi(t, p_set, u_set, cfg, cache_dir=cache or out / "feature-cache", progress=not quiet,
                         command=command_line())
        if not main_process():  # the other ranks helped score the features; rank 0 alone touches the cache and out
            return
        result.provenance["inputs"] = {"target_path": str(target.resolve())}
        if split is not None:
            result.provenance["inputs"].update(split_path=str(split.resolve()), split_fingerprint=s.fingerprint())
        if check is not None:
            result.provenance["split_check"] = check
        paths = write_cdi(result, out)
        typer.echo(format_result(result))
        typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))
