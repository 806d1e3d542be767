"""Extraction commands: ``genleak extract generate`` (generate-and-filter) and ``genleak extract memorization``.

Parsing and printing only; the work is done in ``genleak.extraction``. torch/diffusers are imported
inside the command bodies so ``genleak --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from genleak.cli.args import SEED, THREADS, command_line, group, out_option, set_threads, split_csv
from genleak.errors import GenleakError

_TRUE = {"1", "true", "yes", "memorised", "memorized", "m"}
_FALSE = {"0", "false", "no", "normal", "n"}


def read_prompts(path: Path) -> tuple[list[str], list[bool] | None]:
    """Conditions file: one class label or prompt per line, optionally ``<TAB>label`` (1/0,
    memorised/normal). Blank lines and lines starting with '#' are skipped. Labels must be given
    for every line or for none."""
    if not path.is_file():
        raise GenleakError(f"prompts file '{path}' does not exist")
    conds: list[str] = []
    labels: list[bool | None] = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        text, _, flag = raw.partition("\t")
        conds.append(text.strip())
        flag = flag.strip().lower()
        if not flag:
            labels.append(None)
        elif flag in _TRUE:
            labels.append(True)
        elif flag in _FALSE:
            labels.append(False)
        else:
            raise GenleakError(f"{path}:{n}: label {flag!r} is not 1/0 or memorised/normal")
    if not conds:
        raise GenleakError(f"prompts file '{path}' lists no conditions")
    given = [v is not None for v in labels]
    if any(given) and not all(given):
        raise GenleakError(f"{path}: give a memorised/normal label on every line or on none")
    return conds, ([bool(v) for v in labels] if all(given) else None)


def _load_images(spec: str):
    """A split manifest (.json: members then non-members) or a source spec (npz:PATH, folder:PATH, ...)."""
    from genleak.data import MembershipSplit, load_source, parse_source_spec

    if spec.endswith(".json") and Path(spec).is_file():
        s = MembershipSplit.load(spec)
        return s.members.concat(s.nonmembers)
    return load_source(parse_source_spec(spec))


def register(app: typer.Typer) -> None:
    extract = group(app, "extract")

    @extract.command("generate")
    def extract_cmd(
        target: Path = typer.Option(..., help="Target folder (pixel DDPM, latent, DualMD)."),
        split: Path = typer.Option(..., help="Split manifest: members = training set, non-members = held-out guard."),
        n: int = typer.Option(1000, help="Generations (per condition for class/prompt-conditioned targets)."),
        out: Path = out_option("extract generate", "extraction.json, extraction_grid.png, extraction_samples.npz"),
        steps: int = typer.Option(50, help="DDIM steps per generation."),
        tau: float = typer.Option(0.15, help="Normalised-l2 threshold (S2L's 0.15)."),
        ratio: float = typer.Option(0.5, help="Also require d_train < ratio * d_heldout (Carlini et al.'s 0.5)."),
        conditions: str = typer.Option(None, help="Comma-separated class labels to extract from (default: all in the split)."),
        heldout: str = typer.Option(None, help="Held-out images instead of the split's non-members (source spec)."),
        eta: float = typer.Option(0.0, help="DDIM eta (0 deterministic, 1 ancestral)."),
        seed: int = SEED,
        batch_size: int = typer.Option(256),
        device: str = typer.Option(None, help="torch device (default: cuda if available)."),
        threads: int = THREADS,
    ) -> None:
        """Generate-and-filter extraction: flag generations that copy a training image."""
        from genleak.data import MembershipSplit, load_source, parse_source_spec
        from genleak.extraction import ExtractionConfig, extract, write_extraction
        from genleak.targets.loading import load_target

        set_threads(threads)
        s = MembershipSplit.load(split)
        held = load_source(parse_source_spec(heldout)) if heldout else s.nonmembers
        t = load_target(target, device=device)
        config = ExtractionConfig(n=n, steps=steps, eta=eta, tau=tau, ratio=ratio, seed=seed, batch_size=batch_size)
        result = extract(t, s.members, held, config, conditions=split_csv(conditions) or None, command=command_line(),
                         nn_device=device)
        path = write_extraction(result, out, s.members, held)
        d = result.to_dict()
        typer.echo(
            f"{d['n_generated']} generations ({steps} DDIM steps, {d['seconds']['generate']:.1f} s; nearest neighbours "
            f"{d['seconds']['nearest_neighbour']:.2f} s): {d['n_extracted_generations']} extracted, "
            f"{d['n_extracted_train_images']} distinct training images; held-out false positives "
            f"{d['heldout_false_positives']}"
        )
        typer.echo(f"wrote {path} and {out / 'extraction_grid.png'}")

    @extract.command("memorization")
    def memorization_cmd(
        target: Path = typer.Option(..., help="Target folder."),
        prompts: Path = typer.Option(None, help="Conditions file: one class label / prompt per line, optional TAB label 1/0."),
        images: str = typer.Option(None, help="Rank images instead: a split manifest (.json) or a source spec (npz:PATH)."),
        memorised: Path = typer.Option(None, help="With --images: file of ids known to be memorised, one per line."),
        out: Path = out_option("extract memorization", "memorization.json, + memorization_hist.png with labels"),
        k: int = typer.Option(8, help="Generations per condition (--prompts)."),
        steps: int = typer.Option(50, help="DDIM steps for those generations."),
        t_sec: int = typer.Option(110, help="SecMI t_sec, public SecMI code's convention: the t-error is measured at t_sec - 10 (001 app. A.2.3: t = 100; 30 was the reliable choice on tiny DDPMs, see benchmarks/RESULTS.md, t-error claim)."),
        interval: int = typer.Option(10, help="SecMI DDIM interval (001 app. A.2.3: 10)."),
        seed: int = SEED,
        device: str = typer.Option(None),
        threads: int = typer.Option(0),
    ) -> None:
        """Rank conditions or images by the SecMI t-error (lower = more memorised)."""
        from genleak.extraction.memorization import rank_conditions, rank_images, write_memorization
        from genleak.targets.loading import load_target

        set_threads(threads)
        if (prompts is None) == (images is None):
            raise GenleakError("give exactly one of --prompts FILE (per condition) or --images SPLIT|SOURCE (per image)")
        t = load_target(target, device=device)
        if prompts is not None:
            conds, labels = read_prompts(prompts)
            classes = t.num_classes
            if classes is not None:
                try:
                    values = [int(c) for c in conds]
                except ValueError:
                    raise GenleakError("the target is class-conditional: list class indices, one per line") from None
            elif t.text_conditioned:
                values = conds
            else:
                raise GenleakError("the target is unconditional: rank images with --images instead of --prompts")
            result = rank_conditions(t, values, labels, k=k, steps=steps, t_sec=t_sec, interval=interval, seed=seed)
        else:
            ids = None
            if memorised is not None:
                if not memorised.is_file():
                    raise GenleakError(f"memorised-ids file '{memorised}' does not exist")
                ids = [x.strip() for x in memorised.read_text().splitlines() if x.strip()]
            result = rank_images(t, _load_images(images), ids, t_sec=t_sec, interval=interval, seed=seed)
        result.command = command_line()
        path = write_memorization(result, out)
        top = [result.names[i] for i in result.ranking()[:5]]
        typer.echo(f"ranked {len(result.names)} {result.mode}s; most memorised: {', '.join(top)}")
        sep = result.separation()
        if sep is not None:
            typer.echo(f"memorised vs normal: AUC {sep['auc']:.4f}, TPR@1%FPR {sep['tpr_at_1pct_fpr']:.4f}")
        typer.echo(f"wrote {path}")
