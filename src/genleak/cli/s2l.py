"""Shake-to-Leak commands: ``genleak s2l shake`` (fine-tune on self-generated data) and ``genleak s2l perturb``.

Parsing and printing only; the work is done in ``genleak.s2l``. torch/diffusers/peft are imported
inside the command bodies so ``genleak --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from genleak.cli.args import (
    SEED,
    THREADS,
    command_line,
    group,
    out_option,
    parse_floats,
    parse_ints,
    set_threads,
    split_csv,
)


def _print(comparison, path: Path) -> None:
    typer.echo(comparison.markdown())
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    s2l = group(app, "s2l")

    @s2l.command("shake")
    def s2l_cmd(
        target: Path = typer.Option(..., help="Target folder: pixel DDPM or SD-style latent folder."),
        split: Path = typer.Option(..., help="The ORIGINAL member / non-member split to re-attack."),
        domain: str = typer.Option("all", help="'all' (unconditional UNet), a class index, or a prompt (text targets)."),
        method: str = typer.Option("full,lora", help="Comma-separated: full, lora, embedding (textual inversion, text targets)."),
        rank: str = typer.Option("4", help="LoRA ranks, comma-separated (one run per rank)."),
        attacks: str = typer.Option("loss,pia,sima", help="Attacks to re-run."),
        out: Path = out_option("s2l shake", "s2l.json, s2l.md, the synthetic set and per-variant scores"),
        n_synthetic: int = typer.Option(256, help="Size of the self-generated domain set."),
        sample_steps: int = typer.Option(50, help="DDIM steps for generating it."),
        steps: int = typer.Option(300, help="Fine-tuning steps."),
        lr: float = typer.Option(1e-4, help="Learning rate, full fine-tuning."),
        lora_lr: float = typer.Option(1e-3, help="Learning rate, LoRA."),
        embedding_lr: float = typer.Option(5e-3, help="Learning rate, textual inversion (Gal et al. 2022: 0.005)."),
        placeholder: str = typer.Option("<s2l-domain>", help="The new token textual inversion learns."),
        embedding_template: str = typer.Option(
            "{prompt} {token}", help="Prompt with the learnt token, for training and the re-attack ({prompt}: caption)."),
        batch_size: int = typer.Option(32),
        seed: int = SEED,
        threads: int = THREADS,
    ) -> None:
        """Shake-to-Leak: fine-tune on the target's own domain samples, report ΔAUC / ΔTPR@1%FPR."""

        from genleak.data import MembershipSplit
        from genleak.s2l.report import write_report
        from genleak.s2l.shake import ShakeConfig, parse_variants, run_s2l
        from genleak.targets.loading import load_target

        set_threads(threads)
        variants = parse_variants(split_csv(method), list(parse_ints(rank)))
        config = ShakeConfig(n_synthetic=n_synthetic, sample_steps=sample_steps, steps=steps, lr=lr, lora_lr=lora_lr,
                             embedding_lr=embedding_lr, placeholder=placeholder, embedding_template=embedding_template,
                             batch_size=batch_size, seed=seed)
        comp = run_s2l(load_target(target), MembershipSplit.load(split), domain, variants, split_csv(attacks), config,
                       out_dir=out, seed=seed, command=command_line())
        _print(comp, write_report(comp, out))

    @s2l.command("perturb")
    def perturb_cmd(
        target: Path = typer.Option(..., help="Target folder (pixel DDPM)."),
        split: Path = typer.Option(..., help="The member / non-member split to attack."),
        sigma: str = typer.Option("0.001,0.003,0.01,0.03", help="Comma-separated noise levels to sweep."),
        draws: int = typer.Option(3, help="Noise draws per sigma (mean, min, max reported)."),
        scale: str = typer.Option("relative", help="relative: sigma * rms(W) per tensor; absolute: sigma."),
        domain: str = typer.Option("all", help="Evaluate on 'all' or one class of the split."),
        attacks: str = typer.Option("loss,pia,sima"),
        out: Path = out_option("s2l perturb", "s2l.json and s2l.md, kind = perturb"),
        seed: int = SEED,
        threads: int = typer.Option(0),
    ) -> None:
        """Gaussian parameter perturbation (S2L mechanism 3), swept over sigma: before vs after."""

        from genleak.data import MembershipSplit
        from genleak.s2l.perturb import perturbation_sweep
        from genleak.s2l.report import write_report
        from genleak.targets.loading import load_target

        set_threads(threads)
        comp = perturbation_sweep(load_target(target), MembershipSplit.load(split), parse_floats(sigma), split_csv(attacks),
                                  draws=draws, seed=seed, scale=scale, domain=domain, out_dir=out,
                                  command=command_line())
        _print(comp, write_report(comp, out))
