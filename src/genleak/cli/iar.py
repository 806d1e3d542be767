"""IAR commands: ``genleak iar {train,attack,infer,extract,mitigate,experiment}`` (``train iar`` too).

They are a separate group (not a dispatch inside ``genleak attack``/``extract``) because
IAR targets need class labels, calibration of the "best K" hyperparameters and different outputs
(DI tables, prefix completions). Parsing and printing only; heavy imports stay in the bodies.
"""

from __future__ import annotations

from pathlib import Path

import typer

from genleak.cli.args import (
    BATCH,
    DEVICE,
    PARAM,
    SEED,
    THREADS,
    TRAIN,
    command_line,
    group,
    out_option,
    parse_floats,
    parse_params,
    set_threads,
    split_csv,
)
from genleak.errors import GenleakError


def _load(target: Path, split: Path, device: str | None = None):
    from genleak.data import MembershipSplit
    from genleak.targets.iar import load_iar_target

    return load_iar_target(target, device), MembershipSplit.load(split)


def register(app: typer.Typer) -> None:
    iar = group(app, "iar")

    @group(app, "train").command("iar")
    @iar.command("train")
    def train_cmd(
        split: Path = typer.Option(..., help="Split manifest; the IAR trains on its members (class labels needed)."),
        out: Path = typer.Option(..., help="Output IAR target folder."),
        kind: str = typer.Option("rar", help="var (next-scale), rar (next-token) or mar (masked, continuous)."),
        tokenizer_steps: int = typer.Option(600),
        tokenizer_data: str = typer.Option("public", help="public: source images outside the split (the tokenizer "
                                           "then leaks nothing); members: the split's members."),
        tokenizer_from: Path = typer.Option(None, help="Reuse the tokenizer of this IAR folder (VAR and RAR share one)."),
        config: Path = typer.Option(None, help="JSON with further IARTrainConfig keys (e.g. model/tokenizer overrides)."),
        steps: int = TRAIN.steps(500),
        batch_size: int = TRAIN.batch_size(32),
        lr: float = TRAIN.LR,
        grad_accum: int = TRAIN.GRAD_ACCUM,
        mixed_precision: str = TRAIN.MIXED_PRECISION,
        seed: int = TRAIN.SEED,
        threads: int = TRAIN.THREADS,
    ) -> None:
        """Train a tiny class-conditional IAR (tokenizer + VAR/RAR/MAR model) on a split's members."""
        import torch

        from genleak.config import read_config
        from genleak.data import MembershipSplit, load_source
        from genleak.iar.experiment import public_images
        from genleak.iar.train import IARTrainConfig, train_iar, train_tokenizer
        from genleak.targets.folders import TRAIN_RECORD
        from genleak.targets.iar import load_iar_target

        set_threads(threads)
        s = MembershipSplit.load(split)
        if s.members.labels is None:
            raise GenleakError(f"split '{split}' has no class labels; IAR targets are class-conditional")
        extra = read_config(config, known=IARTrainConfig.field_names()) if config else {}
        cfg = IARTrainConfig.from_dict({"kind": kind, "steps": steps, "batch_size": batch_size, "lr": lr,
                                        "tokenizer_steps": tokenizer_steps, "seed": seed, "grad_accum": grad_accum,
                                        "mixed_precision": mixed_precision, **extra})
        tok = None
        if (out / TRAIN_RECORD).is_file():
            pass  # a finished run: train_iar loads it (or refuses a different config) without retraining
        elif tokenizer_from is not None:
            tok = load_iar_target(tokenizer_from).tokenizer
        elif tokenizer_data == "public":
            pub = public_images(load_source(s.source), s.members, s.nonmembers)
            tok = train_tokenizer(pub.images, cfg)
        elif tokenizer_data != "members":
            raise GenleakError(f"--tokenizer-data must be 'public' or 'members', got '{tokenizer_data}'")
        t = train_iar(s.members.images, torch.as_tensor(s.members.labels), cfg, out, tokenizer=tok,
                      split_manifest=s.to_manifest())
        d = t.describe()
        typer.echo(f"trained {out}: {d['kind']}, {d['parameters']} parameters, {d['sequence_length']} tokens, "
                   f"fingerprint {d['fingerprint'][:12]}")

    @iar.command("attack")
    def attack_cmd(
        target: Path = typer.Option(..., help="IAR target folder."),
        split: Path = typer.Option(..., help="Split manifest (members vs non-members)."),
        attacks: str = typer.Option("", help="Comma-separated iar-* attacks (default: all, plain and -cfg)."),
        param: list[str] = PARAM,
        out: Path = out_option("iar attack", "scores/, results.json, roc.png"),
        calibration_split: Path = typer.Option(None, help="A separate CALIBRATION split of the same target; default: "
                                               "--calibration of both sides of --split is held out for it."),
        calibration: float = typer.Option(0.5, "--calibration", help="Fraction of each side of the split held out "
                                          "to choose K/eps/signal (metrics use the rest)."),
        seed: int = SEED,
        batch_size: int = BATCH,
        bootstrap: int = typer.Option(1000, help="Bootstrap resamples for confidence intervals (0: none)."),
        device: str = DEVICE,
        threads: int = THREADS,
    ) -> None:
        """MIAs on an IAR: hyperparameters chosen on calibration data, metrics on the rest."""
        from genleak.attacks.iar import calibrate, iar_attack_names
        from genleak.data import MembershipSplit
        from genleak.iar.audit import AuditData, set_features
        from genleak.pipeline import run_attacks
        from genleak.report.results import write_results
        from genleak.report.table import print_results

        set_threads(threads)
        t, s = _load(target, split, device)
        names = split_csv(attacks) or iar_attack_names(t.discrete)
        if calibration_split is not None:
            cal = MembershipSplit.load(calibration_split)
            eval_split = s
        else:
            data = AuditData.from_split(s, cal_fraction=calibration, seed=seed)
            cal = MembershipSplit(data.cal_members, data.cal_nonmembers, s.source, s.seed, f"{s.name}-calibration")
            eval_split = MembershipSplit(data.eval_members, data.eval_nonmembers, s.source, s.seed, f"{s.name}-evaluation")
        fm, fn = (set_features(t, side, seed=seed, progress=True) for side in (cal.members, cal.nonmembers))
        chosen = calibrate(fm, fn)
        given = parse_params(param)  # --param overrides the calibrated choice
        params = {a: {**chosen.params.get(a, {}), **given.get(a, {})} for a in names}
        result = run_attacks(t, eval_split, names, out, attack_params=params, seed=seed, batch_size=batch_size,
                             bootstrap=bootstrap, command=command_line())
        path = write_results(result, out, extra={"calibration": {"split": cal.name, "n_members": len(cal.members),
                                                                 "n_nonmembers": len(cal.nonmembers), **chosen.to_dict()}})
        print_results(result)
        typer.echo(f"wrote {path}")

    @iar.command("infer")
    def infer_cmd(
        target: Path = typer.Option(..., help="IAR target folder."),
        split: Path = typer.Option(..., help="Split: members = suspect set P, non-members = validation set U."),
        out: Path = out_option("iar infer", "di.json"),
        resamples: int = typer.Option(1000, help="Random subsets per suspect-set size (supp. C.5)."),
        seed: int = SEED,
        threads: int = typer.Option(0),
    ) -> None:
        """Dataset inference on an IAR: the IAR variant (min-max + sum) and the CDI classifier, both."""
        from genleak.iar.audit import set_features
        from genleak.iar.inference import iar_di_table
        from genleak.io import atomic_write_json

        set_threads(threads)
        t, s = _load(target, split)
        fp, fu = (set_features(t, side, seed=seed, progress=True) for side in (s.members, s.nonmembers))
        rows = iar_di_table(fp, fu, n_resamples=resamples, seed=seed)
        for key, r in rows.items():
            typer.echo(f"{key:12s} ({r.method}, {len(r.features)} features): min |P| = "
                       f"{r.min_size if r.min_size is not None else '> ' + str(r.curve[-1].n_suspect)}, "
                       f"mean p at |P|={r.curve[-1].n_suspect}: {r.p_at_max:.2e}, null mean p {r.null_p_at_max:.3f}")
        atomic_write_json(out / "di.json", {"command": command_line(), "target": t.describe(),
                                            "rows": {k: v.to_dict() for k, v in rows.items()}})
        typer.echo(f"wrote {out / 'di.json'}")

    @iar.command("extract")
    def extract_cmd(
        target: Path = typer.Option(..., help="IAR target folder."),
        split: Path = typer.Option(..., help="Members = training images; non-members = validation (false-positive check)."),
        out: Path = out_option("iar extract", "extraction.json, extracted.png"),
        prefix_len: int = typer.Option(None, help="Prefix tokens kept (default: a quarter of the sequence)."),
        top_k: int = typer.Option(5, help="Candidates per class (ch. 9.5.3: top-5)."),
        threshold: float = typer.Option(0.95, help="Similarity (1 - RMS distance in [0,1]) counted as extracted."),
        seed: int = SEED,
        threads: int = typer.Option(0),
    ) -> None:
        """Prefix-completion extraction with candidate selection and the validation false-positive check."""
        from genleak.extraction.grids import comparison_grid, save_png
        from genleak.iar.extraction import IARExtractionConfig, extract_iar
        from genleak.io import atomic_write_json

        set_threads(threads)
        t, s = _load(target, split)
        r = extract_iar(t, s.members, s.nonmembers, IARExtractionConfig(top_k_per_class=top_k, prefix_len=prefix_len,
                                                                        threshold=threshold, seed=seed))
        atomic_write_json(out / "extraction.json", {"command": command_line(), "target": t.describe(), **r.to_dict()})
        if r.generated is not None and r.generated.shape[0]:
            save_png(comparison_grid(r.generated, r.originals), out / "extracted.png")
        fp = r.validation.count if r.validation is not None else 0
        typer.echo(f"prefix {r.prefix_len}/{r.sequence_length} tokens: extracted {r.train.count} of "
                   f"{len(r.train.candidate_ids)} candidates; false positives on validation images: {fp}; "
                   f"{r.seconds_per_candidate * 1e3:.2f} ms per candidate")
        if fp:
            typer.secho("warning: validation images were 'extracted' too; the prefix alone determines the image, "
                        "use a shorter --prefix-len", fg=typer.colors.YELLOW)
        typer.echo(f"wrote {out / 'extraction.json'}")

    @iar.command("mitigate")
    def mitigate_cmd(
        target: Path = typer.Option(..., help="IAR target folder."),
        split: Path = typer.Option(..., help="Split manifest (members vs non-members)."),
        sigma: str = typer.Option("0,1,3,10", help="Output-noise scales (logits for VAR/RAR, tokens for MAR)."),
        out: Path = out_option("iar mitigate", "mitigation.json, table.md"),
        n_per_class: int = typer.Option(20, help="Samples per class for the quality figures."),
        resamples: int = typer.Option(1000),
        seed: int = SEED,
        threads: int = typer.Option(0),
    ) -> None:
        """Output-noise defense (supp. D.11): MIA, DI, extraction and quality before/after, per sigma."""
        from genleak.data import load_source
        from genleak.iar.audit import AuditData, QualityJudge
        from genleak.iar.experiment import public_images
        from genleak.iar.mitigation import noise_sweep, noise_table
        from genleak.io import atomic_write_json, atomic_write_text

        set_threads(threads)
        t, s = _load(target, split)
        pub = public_images(load_source(s.source), s.members, s.nonmembers)
        data = AuditData.from_split(s, pub, seed=seed)
        rows = noise_sweep(t, data, parse_floats(sigma), judge=QualityJudge.train(pub, seed=seed), n_per_class=n_per_class,
                           di_resamples=resamples, seed=seed)
        table = noise_table(rows)
        atomic_write_json(out / "mitigation.json", {"command": command_line(), "target": t.describe(), "rows": rows})
        atomic_write_text(out / "table.md", table + "\n")
        typer.echo(table)

    @iar.command("experiment")
    def experiment_cmd(
        config: Path = typer.Option(..., help="Experiment JSON (configs/iar_*.json)."),
        out: Path = typer.Option(..., help="Output folder (results.json, summary.md, targets/)."),
        threads: int = typer.Option(1),
    ) -> None:
        """A whole IAR study: train targets (and a pixel DDPM), MIA, DI, extraction, noise sweep."""
        from genleak.iar.experiment import load_config, run_experiment

        set_threads(threads)
        r = run_experiment(load_config(config), out)
        typer.echo(r["summary"])
        typer.echo(f"wrote {out / 'results.json'} and {out / 'summary.md'}")
