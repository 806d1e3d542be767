"""Defense commands: ``genleak defend {disjoint,distill,kd,dpsgd,experiment,evaluate,sample}`` and
``genleak train encoder``.

Parsing and printing only; the work is done in ``genleak.defenses``. torch/diffusers/opacus are
imported inside the command bodies so ``genleak --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from genleak.cli.args import BATCH as SCORE_BATCH
from genleak.cli.args import (
    PARAM,
    THREADS,
    TRAIN,
    command_line,
    group,
    out_option,
    parse_ints,
    parse_params,
    set_threads,
    split_csv,
)
from genleak.errors import GenleakError


def _train_config(steps: int, channels: str, lr: float, batch_size: int, ema: float, seed: int):
    from genleak.train import TrainConfig

    if steps < 1:
        raise GenleakError(f"--steps must be >= 1, got {steps}")
    return TrainConfig(steps=steps, lr=lr, batch_size=batch_size, block_out_channels=parse_ints(channels),
                       ema_decay=ema or None, seed=seed)


# The training options every defense shares with `genleak train` (same defaults: a fair comparison
# trains baseline, teachers and student with the same budget; DualMD paper appendix A.2.2).
STEPS = TRAIN.steps(2000)
CHANNELS = typer.Option("32,64", help="UNet block_out_channels (use the baseline's).")
LR = TRAIN.LR
BATCH = typer.Option(32, "--batch-size", help="Batch size (DistillMD: per step, drawn from one half).")
EMA = TRAIN.EMA
SEED = TRAIN.SEED
TARGET = typer.Option(None, help="The audited model's folder: train its UNet architecture, scheduler and conditioning "
                      "(pixel or latent) on the split's members instead of genleak's default UNet (--channels is ignored).")


def register(app: typer.Typer) -> None:
    defend = group(app, "defend")

    @defend.command("disjoint")
    def disjoint_cmd(
        split: Path = typer.Option(..., help="Split manifest; its members are divided into two halves."),
        out: Path = typer.Option(..., help="Output DualMD folder (model_1/, model_2/, model_index.json, split.json)."),
        steps: int = STEPS, channels: str = CHANNELS, lr: float = LR, batch_size: int = BATCH,
        ema: float = EMA, seed: int = SEED,
        halves_seed: int = typer.Option(0, help="Seed of the random halves (kept if the split already has halves)."),
        dual_steps: int = typer.Option(50, help="DDIM steps of the deployed DualMD sampler (for gray-box routing)."),
        latent: Path = typer.Option(None, help="SD-style folder (e.g. the baseline LDM): train latent teachers on its VAE, "
                                    "noise schedule and, for text-to-image models, its text encoder and caption template."),
        target: Path = TARGET,
        threads: int = THREADS,
    ) -> None:
        """Algorithm 1: split the members into two disjoint halves and train one teacher on each."""
        from genleak.data import MembershipSplit
        from genleak.defenses.disjoint import train_disjoint, train_disjoint_latent

        set_threads(threads)
        s = MembershipSplit.load(split)
        config = _train_config(steps, channels, lr, batch_size, ema, seed)
        if target is not None and latent is not None:
            raise GenleakError("give --target or --latent, not both (--target also copies a latent folder's VAE and text encoder)")
        if latent is None:
            dual = train_disjoint(s, config, out, halves_seed=halves_seed, dual_steps=dual_steps, target=target)
        else:
            from genleak.targets.latent import DEFAULT_CAPTION_TEMPLATE, LatentDiffusionTarget, caption_sets
            from genleak.train.latent import LatentTrainConfig

            base = LatentDiffusionTarget.from_pretrained(latent)
            template = base.caption_template or DEFAULT_CAPTION_TEMPLATE
            sched = base.scheduler.config
            lconfig = LatentTrainConfig(steps=steps, batch_size=batch_size, lr=lr, block_out_channels=config.block_out_channels,
                                        text=base.conditional, beta_schedule=sched.beta_schedule,
                                        num_train_timesteps=int(sched.num_train_timesteps), ema_decay=ema or None, seed=seed,
                                        extra={"latent_base": base.fingerprint()})
            dual = train_disjoint_latent(s, base.vae, lconfig, out, captions=caption_sets(s.members, 0, template) if base.conditional else None,
                                         text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                         caption_template=template if base.conditional else None,
                                         halves_seed=halves_seed, dual_steps=dual_steps)
        typer.echo(f"wrote DualMD folder {out} (halves recorded in {out / 'split.json'}; fingerprint {dual.fingerprint()[:12]})")

    @defend.command("distill")
    def distill_cmd(
        teachers: Path = typer.Option(..., help="Folder written by `genleak defend disjoint`."),
        out: Path = typer.Option(..., help="Output diffusers folder for the student (SD-style for latent teachers)."),
        init: str = typer.Option("scratch", help="Student initialisation: scratch | teacher1 | teacher2 | a diffusers folder."),
        steps: int = STEPS, channels: str = CHANNELS, lr: float = LR, batch_size: int = BATCH,
        ema: float = EMA, seed: int = SEED, target: Path = TARGET, threads: int = THREADS,
    ) -> None:
        """Algorithm 2 (DistillMD): a student taught on each half by the other half's teacher.
        Latent and text-to-image teachers (from `defend disjoint --latent`) give a latent student."""
        from genleak.defenses.distill import train_distillmd

        set_threads(threads)
        student = train_distillmd(teachers, _train_config(steps, channels, lr, batch_size, ema, seed), out, init=init,
                                  target=target)
        typer.echo(f"wrote student {out} (fingerprint {student.fingerprint()[:12]})")

    @defend.command("kd")
    def kd_cmd(
        teacher: Path = typer.Option(..., help="Teacher trained on all members (usually the baseline)."),
        split: Path = typer.Option(..., help="Split manifest; the student trains on its members."),
        out: Path = typer.Option(..., help="Output diffusers folder for the student."),
        init: str = typer.Option("scratch", help="Student initialisation: scratch | a diffusers folder."),
        steps: int = STEPS, channels: str = CHANNELS, lr: float = LR, batch_size: int = BATCH,
        ema: float = EMA, seed: int = SEED, target: Path = TARGET, threads: int = THREADS,
    ) -> None:
        """Normal single-teacher knowledge distillation (table 10's baseline)."""
        from genleak.data import MembershipSplit
        from genleak.defenses.kd import train_kd

        set_threads(threads)
        student = train_kd(teacher, MembershipSplit.load(split), _train_config(steps, channels, lr, batch_size, ema, seed),
                           out, init=init, target=target)
        typer.echo(f"wrote KD student {out} (fingerprint {student.fingerprint()[:12]})")

    @defend.command("dpsgd")
    def dpsgd_cmd(
        split: Path = typer.Option(..., help="Split manifest; the model trains on its members."),
        out: Path = typer.Option(..., help="Output diffusers folder (+ dp.json with the spent epsilon)."),
        noise_multiplier: float = typer.Option(None, help="Gaussian noise std / clipping norm."),
        target_epsilon: float = typer.Option(None, help="Solve the noise multiplier for this epsilon instead."),
        delta: float = typer.Option(1e-5, help="delta of the (epsilon, delta) guarantee; must be < 1/N."),
        max_grad_norm: float = typer.Option(1.0, help="Per-sample gradient clipping norm."),
        accountant: str = typer.Option("rdp", help="rdp | prv | gdp"),
        steps: int = STEPS, channels: str = CHANNELS, lr: float = LR,
        batch_size: int = typer.Option(32, help="Expected batch size; sample rate = batch / members (Poisson)."),
        ema: float = EMA, seed: int = SEED, target: Path = TARGET, threads: int = THREADS,
        reproducible_noise: bool = typer.Option(False, "--reproducible-noise", help="Seed the privacy noise from "
                                                "--seed (anyone with the run record can replay it: tests only)."),
    ) -> None:
        """DP-SGD training with Opacus; reports the epsilon spent."""
        from genleak.data import MembershipSplit
        from genleak.defenses.dpsgd import DPConfig, train_dpsgd

        set_threads(threads)
        dp = DPConfig(noise_multiplier=noise_multiplier, target_epsilon=target_epsilon, delta=delta,
                      max_grad_norm=max_grad_norm, accountant=accountant, reproducible_noise=reproducible_noise)
        _, report = train_dpsgd(MembershipSplit.load(split), _train_config(steps, channels, lr, batch_size, ema, seed),
                                dp, out, target=target)
        typer.echo(f"wrote {out}: epsilon = {report['epsilon']:.3f} at delta = {report['delta']:g} "
                   f"(noise multiplier {report['noise_multiplier']:.3f}, q = {report['sample_rate']:.3f}, "
                   f"{report['steps']} steps, {report['accountant']}, noise from {report['noise_source']})")

    @defend.command("experiment")
    def experiment_cmd(
        config: Path = typer.Option(..., help="Experiment config (JSON), e.g. configs/defense_digits8.json."),
        out: Path = typer.Option(..., help="Output folder (resumable: finished models are reused)."),
        threads: int = THREADS,
    ) -> None:
        """Split, baseline, every defense, evaluation: one config, one results table."""
        from genleak.defenses.evaluate import print_table
        from genleak.defenses.experiment import run_experiment

        set_threads(threads)
        result = run_experiment(config, out, command=command_line())
        print_table(result)
        typer.echo(f"wrote {out / 'defense_eval.json'} and {out / 'defense_eval.md'}")

    @defend.command("evaluate")
    def evaluate_cmd(
        baseline: Path = typer.Option(..., help="Undefended model folder."),
        defended: list[Path] = typer.Option(..., help="Defended model folder(s) (diffusers or DualMD); repeat the option."),
        split: Path = typer.Option(..., help="Split manifest the baseline was trained on."),
        out: Path = out_option("defend evaluate", "defense_eval.json, defense_eval.md, per-model scores"),
        attacks: str = typer.Option("loss,secmi,pia,sima,genbox", help="Comma-separated attack names."),
        adaptive_rounds: str = typer.Option("", help="Also run the appendix A.5 adaptive attack, e.g. 2,3."),
        param: list[str] = PARAM,
        encoder: Path = typer.Option(None, help="Feature extractor: genleak encoder folder or TorchScript Inception file."),
        trust_torchscript: bool = typer.Option(False, help="Allow a TorchScript --encoder file: it is code and runs on load."),
        reference: str = typer.Option(None, help="Source of reference images (default: the split's source minus the split)."),
        n_quality: int = typer.Option(500, help="Images generated per model for FID/precision/recall/memorisation."),
        quality_steps: int = typer.Option(50, help="DDIM steps for the quality generations."),
        seed: int = SEED,
        bootstrap: int = typer.Option(0, help="Bootstrap resamples for CIs (0: none)."),
        batch_size: int = SCORE_BATCH,
        threads: int = THREADS,
    ) -> None:
        """Each attack's AUC and TPR@1%/0.1% FPR for baseline vs defended models, plus each model's quality."""
        from genleak.data import MembershipSplit, parse_source_spec
        from genleak.defenses.evaluate import evaluate_defense, print_table, reference_images

        set_threads(threads)
        s = MembershipSplit.load(split)
        params = parse_params(param)
        ref = reference_images(s, seed=seed, source=parse_source_spec(reference)) if reference else None
        result = evaluate_defense(baseline, defended, s, out, attacks=split_csv(attacks), attack_params=params,
                                  adaptive_rounds=parse_ints(adaptive_rounds), encoder=encoder,
                                  trust_torchscript=trust_torchscript, reference=ref,
                                  n_quality=n_quality, quality_steps=quality_steps, seed=seed, bootstrap=bootstrap,
                                  batch_size=batch_size, command=command_line())
        print_table(result)
        typer.echo(f"wrote {out / 'defense_eval.json'} and {out / 'defense_eval.md'}")

    @defend.command("sample")
    def sample_cmd(
        target: Path = typer.Option(..., help="Model folder: diffusers or DualMD (alternates its two models)."),
        out: Path = typer.Option(Path("samples.npz"), help="Output .npz (images in [-1, 1]); a .png grid is written beside it."),
        n: int = typer.Option(64, help="Number of images."),
        steps: int = typer.Option(50, help="DDIM steps."),
        seed: int = SEED,
        init: Path = typer.Option(None, help="Image-to-image: an .npz of query images (key 'images', NCHW in [-1, 1])."),
        strength: float = typer.Option(1.0, help="Image-to-image strength in (0, 1]."),
        threads: int = THREADS,
    ) -> None:
        """Generate images with DDIM from any target (a DualMD folder alternates its models step by step)."""
        import numpy as np
        import torch

        from genleak.io import atomic_save_npz
        from genleak.targets.loading import load_target
        from genleak.targets.sampling import generate

        set_threads(threads)
        t = load_target(target)
        images = None
        if init is not None:
            if not init.is_file():
                raise GenleakError(f"--init '{init}' does not exist")
            with np.load(init) as z:
                if "images" not in z.files:
                    raise GenleakError(f"--init '{init}' has no 'images' array")
                images = torch.as_tensor(z["images"], dtype=torch.float32)[:n]
            n = images.shape[0]
        x = generate(t, n, steps, seed, images=images, strength=strength, progress=True)
        atomic_save_npz(out, images=x.numpy())
        png = out.with_suffix(".png")
        save_grid(x, png)
        typer.echo(f"wrote {n} images to {out} and {png}")

    @group(app, "train").command("encoder")
    def encoder_cmd(
        split: Path = typer.Option(..., help="Split manifest; the encoder trains on source images outside it."),
        out: Path = typer.Option(..., help="Output folder (encoder.json + encoder.safetensors)."),
        reference: str = typer.Option(None, help="Source of reference images (default: the split's source minus the split)."),
        steps: int = TRAIN.steps(600),
        seed: int = TRAIN.SEED,
        threads: int = TRAIN.THREADS,
    ) -> None:
        """Train the offline default feature extractor (for genbox's feature distance and FID)."""
        from genleak.data import MembershipSplit, parse_source_spec
        from genleak.defenses.evaluate import reference_images
        from genleak.quality import train_encoder

        set_threads(threads)
        s = MembershipSplit.load(split)
        ref = reference_images(s, seed=seed, source=parse_source_spec(reference) if reference else None)
        ext = train_encoder(ref.images, ref.labels, steps=steps, seed=seed, out_dir=out, progress=True)
        typer.echo(f"wrote {out} ({ext.meta['kind']} on {ext.meta['trained_on']} reference images)")


def save_grid(images, path: Path, columns: int = 8) -> None:
    """A PNG grid of images in [-1, 1] (NCHW), written atomically."""
    import numpy as np
    from PIL import Image

    from genleak.io import atomic_path

    x = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    n, c, h, w = x.shape
    rows = (n + columns - 1) // columns
    grid = np.zeros((rows * h, min(n, columns) * w, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        grid[r * h : (r + 1) * h, k * w : (k + 1) * w] = x[i].transpose(1, 2, 0)
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    scale = max(1, 64 // h)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
