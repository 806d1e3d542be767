"""Latent diffusion commands: data caption, train vae, train ldm.

``genleak attack`` / ``data inspect`` open SD-style folders through ``genleak.targets.loading`` (no
command here). Parsing and printing only; torch/diffusers are imported inside the command bodies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from genleak.cli.args import TRAIN, group, parse_ints, set_threads
from genleak.errors import GenleakError


def _read_caption_file(path: Path, ids: list[str]) -> list[list[str]]:
    """Captions per id from JSON ({id: [captions]}) or JSONL ({"id": .., "captions": [..]} per line)."""
    if not path.is_file():
        raise GenleakError(f"captions file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    table: dict[str, list[str]] = {}
    try:
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    caps = row["captions"]
                    table[str(row["id"])] = [caps] if isinstance(caps, str) else [str(c) for c in caps]
        else:
            raw = json.loads(text)
            table = {str(k): ([v] if isinstance(v, str) else [str(c) for c in v]) for k, v in raw.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise GenleakError(f"captions file '{path}' is not {{id: [captions]}} JSON or id/captions JSONL ({err})") from err
    missing = [i for i in ids if i not in table]
    if missing:
        raise GenleakError(f"captions file '{path}' has no captions for {len(missing)} member(s), e.g. {missing[0]!r}")
    return [table[i] for i in ids]


def vae_training_images(split: Any, extra: int, seed: int = 0) -> Any:
    """The members plus up to ``extra`` images of the split's source outside the split (never a
    non-member: the VAE must not see them, or its reconstructions would not be a fair reference)."""
    import torch

    from genleak.data import load_source

    images = split.members.images
    if extra <= 0:
        return images
    full = load_source(split.source)
    used = set(split.members.ids) | set(split.nonmembers.ids)
    pool = [i for i, id_ in enumerate(full.ids) if id_ not in used]
    gen = torch.Generator().manual_seed(seed)
    pick = [pool[int(j)] for j in torch.randperm(len(pool), generator=gen)[:extra]]
    return torch.cat([images, full.images[pick]]) if pick else images


def register(app: typer.Typer) -> None:
    train = group(app, "train")

    @group(app, "data").command("caption")
    def caption_cmd(
        out: Path = typer.Option(..., help="Output .npz (images, ids, labels, captions) usable as --source npz:OUT."),
        source: str = typer.Option("digits:8", help="A labelled source: digits:SIZE, npz:PATH, ..."),
        template: str = typer.Option(None, help="Caption template; fields {label} {name} {thickness} {slant} {width}."),
    ) -> None:
        """Give a labelled source template captions (no captioning model offline) and save it."""
        from genleak.data import load_source, parse_source_spec
        from genleak.targets.latent import DEFAULT_CAPTION_TEMPLATE, template_captions

        images = load_source(parse_source_spec(source))
        images.captions = template_captions(images, template or DEFAULT_CAPTION_TEMPLATE)
        images.save_npz(out)
        typer.echo(f"wrote {out}: {len(images)} images with captions, e.g. {images.captions[0]!r}")

    @train.command("vae")
    def train_vae_cmd(
        split: Path = typer.Option(..., help="Split manifest; the VAE trains on its members (reconstruction is also measured on the non-members)."),
        out: Path = typer.Option(..., help="Output VAE folder (diffusers AutoencoderKL; resumes from a checkpoint)."),
        kl_weight: float = typer.Option(1e-6, "--kl-weight", help="beta: weight of the KL term (LDM/SD: 1e-6; larger = harder to attack, blurrier)."),
        adversarial: bool = typer.Option(False, "--adversarial", help="Add a PatchGAN discriminator (adversarial VAE training)."),
        channels: str = typer.Option("16,32", help="VAE block_out_channels (one downsampling per extra block)."),
        latent_channels: int = typer.Option(4),
        disc_start: int = typer.Option(None, help="Step at which the discriminator starts (default: half the run)."),
        extra: int = typer.Option(512, help="Also train on up to N images of the split's source that are neither members "
                                           "nor non-members (public data: real VAEs see far more than the UNet's members)."),
        steps: int = TRAIN.steps(800),
        batch_size: int = TRAIN.batch_size(64),
        lr: float = TRAIN.LR,
        grad_accum: int = TRAIN.GRAD_ACCUM,
        mixed_precision: str = TRAIN.MIXED_PRECISION,
        seed: int = TRAIN.SEED,
        threads: int = TRAIN.THREADS,
    ) -> None:
        """Train a beta-VAE (AutoencoderKL) with a configurable KL weight, optionally adversarially."""
        from genleak.data import MembershipSplit
        from genleak.train.vae import VAE_RECORD, VAEConfig, train_vae

        set_threads(threads)
        s = MembershipSplit.load(split)
        config = VAEConfig(steps=steps, batch_size=batch_size, lr=lr, block_out_channels=parse_ints(channels),
                           latent_channels=latent_channels, kl_weight=kl_weight, adversarial=adversarial,
                           disc_start=disc_start, seed=seed, grad_accum=grad_accum, mixed_precision=mixed_precision)
        train_vae(vae_training_images(s, extra, seed), config, out, heldout=s.nonmembers.images,
                  split_manifest=s.to_manifest())
        record = json.loads((out / VAE_RECORD).read_text())
        typer.echo(f"trained {out}: reconstruction MSE {record['recon_mse_train']:.4f} (members), "
                   f"{record['recon_mse_heldout']:.4f} (non-members), KL {record['final_kl']:.1f}, "
                   f"scaling factor {record['scaling_factor']:.4f}")

    @train.command("ldm")
    def train_ldm_cmd(
        split: Path = typer.Option(..., help="Split manifest; the model trains on its members."),
        out: Path = typer.Option(..., help="Output SD-style folder: vae/ unet/ scheduler/, plus text_encoder/ tokenizer/ for text models."),
        vae: Path = typer.Option(None, help="VAE folder (`genleak train vae`) or SD-style folder; not needed with --init."),
        text: bool = typer.Option(False, "--text", help="Text-to-image: a cross-attention UNet conditioned on the members' captions."),
        init: Path = typer.Option(None, help="Fine-tune this SD-style folder instead of training from scratch."),
        lora_rank: int = typer.Option(None, help="Fine-tune LoRA adapters of this rank (peft) instead of the full UNet."),
        prompt_variants: int = typer.Option(0, help="Prompt diversification: add N template rephrasings per image (001: 5)."),
        captions_file: Path = typer.Option(None, help="Several captions per member: JSON mapping id to a list of captions, or JSONL rows with id and captions."),
        caption_template: str = typer.Option(None, help="Caption template for members without captions (saved with the model)."),
        channels: str = typer.Option("32,64", help="UNet block_out_channels."),
        schedule: str = typer.Option("scaled_linear", help="scaled_linear (Stable Diffusion) or linear (pixel DDPM)."),
        cond_dropout: float = typer.Option(0.1, help="Probability of an empty caption (for CFG; SD: 0.1)."),
        text_dim: int = typer.Option(32, help="Hidden size of the tiny text encoder built for --text from scratch."),
        steps: int = TRAIN.steps(1250),
        batch_size: int = TRAIN.batch_size(32),
        lr: float = TRAIN.LR,
        ema: float = TRAIN.EMA,
        grad_accum: int = TRAIN.GRAD_ACCUM,
        mixed_precision: str = TRAIN.MIXED_PRECISION,
        seed: int = TRAIN.SEED,
        threads: int = TRAIN.THREADS,
    ) -> None:
        """Train a latent diffusion model on a VAE's latents (unconditional or text-to-image), or fine-tune one."""
        from genleak.data import MembershipSplit
        from genleak.targets.latent import (
            DEFAULT_CAPTION_TEMPLATE,
            LatentDiffusionTarget,
            caption_sets,
            caption_vocabulary,
        )
        from genleak.train.latent import LatentTrainConfig, build_text_stack, train_latent
        from genleak.train.vae import load_vae

        set_threads(threads)
        s = MembershipSplit.load(split)
        base = LatentDiffusionTarget.from_pretrained(init) if init is not None else None
        if base is None and vae is None:
            raise GenleakError("train ldm needs --vae (train one with `genleak train vae`) or --init")
        if lora_rank is not None and base is None:
            raise GenleakError("--lora-rank fine-tunes an existing model: give --init")
        conditional = text or (base is not None and base.conditional)
        template = caption_template or (base.caption_template if base is not None else None)
        captions = text_encoder = tokenizer = None
        if conditional:
            members = s.members
            if members.captions is None and template is None and members.labels is not None:
                template = DEFAULT_CAPTION_TEMPLATE
            if captions_file is not None:
                captions = _read_caption_file(captions_file, members.ids)
            elif members.captions is None and template is None:
                raise GenleakError("the members carry no captions or labels: give --captions-file or build the split from `genleak data caption` output")
            else:
                from genleak.targets.latent import template_captions

                if members.captions is None:
                    members.captions = template_captions(members, template)
                captions = caption_sets(members, prompt_variants)
            if base is None:
                words = [c for caps in captions for c in caps] + caption_vocabulary()
                if s.nonmembers.captions is not None:
                    words += list(s.nonmembers.captions)
                text_encoder, tokenizer = build_text_stack(words, hidden_size=text_dim, seed=seed)
        config = LatentTrainConfig(
            steps=steps, batch_size=batch_size, lr=lr, block_out_channels=parse_ints(channels), text=conditional,
            cond_dropout=cond_dropout, beta_schedule=schedule, ema_decay=ema or None, lora_rank=lora_rank, seed=seed,
            grad_accum=grad_accum, mixed_precision=mixed_precision,
            extra={"prompt_variants": prompt_variants, "init": str(init) if init else None,
                   "vae": str(vae) if vae else None},
        )
        target = train_latent(
            s.members.images, load_vae(vae) if base is None else None, config, out, captions=captions,
            text_encoder=text_encoder, tokenizer=tokenizer, init=base, caption_template=template,
            split_manifest=s.to_manifest(),
        )
        info = target.describe()
        typer.echo(f"trained {out} ({info['kind']}, {info['parameters']} UNet parameters, fingerprint {target.fingerprint()[:12]})")
