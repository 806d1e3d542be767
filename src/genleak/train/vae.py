"""Train the first stage of a latent diffusion model: a beta-VAE (diffusers ``AutoencoderKL``).

The loss follows the KL autoencoders of latent diffusion (Rombach et al. 2022,
``LPIPSWithDiscriminator``) without the perceptual term, which needs pretrained weights:

    L = sum_pixels |x - D(z)| + beta * KL(q(z|x) || N(0, I)) [+ lambda * hinge-GAN generator loss]

with per-sample sums averaged over the batch. ``kl_weight`` (beta) is the knob SimA
(arXiv 2509.25003) turns to harden LDMs: a stronger KL pull widens the posterior, so the latent
UNet, which is trained on posterior *samples*, never sees the same latent of a member twice.
``adversarial`` adds a PatchGAN discriminator (Isola et al. 2017, as in the LDM autoencoders) with
LDM's adaptive generator weight, SimA's second hardening. Reconstruction error is recorded next to
every run, because both knobs trade reconstruction quality for privacy.

After training, ``scaling_factor`` is set to 1 / std of the training latents, as Stable Diffusion's
0.18215 was chosen (Rombach et al. 2022, section 4.3.2 / appendix), and saved in the VAE config.
Resumable like ``train_ddpm``: atomic checkpoints, the same command continues a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genleak.config import JsonConfig
from genleak.errors import GenleakError
from genleak.io import atomic_write_json, publish_folder
from genleak.train.loop import CHECKPOINT, LoopConfig, TrainHooks, make_accelerator, run_loop  # noqa: F401
from genleak.train.runs import check_config, check_loss, finished_run, output_folder, training_data

VAE_RECORD = "genleak_vae.json"


@dataclass
class VAEConfig(JsonConfig):
    """Hyperparameters of a small KL autoencoder. Defaults: tiny digits (8x8 -> 4x4x4 latents)."""

    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    block_out_channels: tuple[int, ...] = (16, 32)
    latent_channels: int = 4
    layers_per_block: int = 1
    # 1e-6: the KL weight of LDM's KL-regularised autoencoders (Rombach et al. 2022, configs
    # autoencoder_kl_*.yaml "kl_weight: 0.000001"), which Stable Diffusion's VAE uses.
    kl_weight: float = 1e-6
    adversarial: bool = False
    # 0.5: LDM's disc_weight; the discriminator starts after disc_start steps (LDM: 50001 of ~several
    # 100k; we start at half the run by default, 0 = from the beginning if adversarial).
    disc_weight: float = 0.5
    disc_start: int | None = None
    disc_channels: int = 32
    disc_lr: float | None = None  # default: lr
    seed: int = 0
    checkpoint_every: int = 400
    grad_accum: int = 1  # micro-batches of batch_size per optimiser step (accelerate)
    mixed_precision: str = "no"  # accelerate's "no", "fp16" (GPU) or "bf16"

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def disc_start_step(self) -> int:
        return self.steps // 2 if self.disc_start is None else int(self.disc_start)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix, Isola et al. 2017; LDM's ``NLayerDiscriminator``), sized for
    tiny images: conv(4, stride 2) -> conv(4, stride 1) -> conv(4, stride 1) giving a logit map."""

    def __init__(self, in_channels: int = 1, channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(channels, channels * 2, 4, 1, 1, bias=False),
            nn.BatchNorm2d(channels * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(channels * 2, 1, 4, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_vae(
    images: torch.Tensor,
    config: VAEConfig,
    out_dir: str | Path | None = None,
    *,
    heldout: torch.Tensor | None = None,
    split_manifest: dict[str, Any] | None = None,
    progress: bool = True,
) -> Any:
    """Train a KL autoencoder on ``images`` in [-1, 1] (N, C, H, W); returns the diffusers
    ``AutoencoderKL`` (eval mode) with ``scaling_factor`` set. With ``out_dir``: resumable, and the
    folder ends up a standard diffusers model folder plus ``genleak_vae.json`` (config, losses,
    reconstruction MSE on the training images and on ``heldout``, and what it was trained on:
    ``split_manifest``'s fingerprint and the images' ``data_fingerprint``, as for ``train_ddpm``)."""
    from genleak.targets.latent import build_vae

    if images.ndim != 4 or images.shape[0] == 0:
        raise GenleakError(f"VAE training needs a non-empty (N, C, H, W) image tensor, got {tuple(images.shape)}")
    check_config(config)
    out = output_folder(out_dir)
    data_info = training_data(images, split_manifest) if out is not None else {}
    if out is not None and finished_run(out, config.to_dict(), what="VAE run", record=VAE_RECORD, data=data_info):
        return load_vae(out)

    loop = LoopConfig(config.steps, config.batch_size, config.seed * 1000, None, config.checkpoint_every,
                      config.grad_accum, config.mixed_precision)
    accelerator = make_accelerator(loop)
    torch.manual_seed(config.seed)
    try:
        vae = build_vae(images.shape[-1], images.shape[1], tuple(config.block_out_channels), config.latent_channels,
                        config.layers_per_block)
    except ValueError as err:
        raise GenleakError(str(err)) from err
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.5, 0.9))
    hooks = _VAEHooks(config, images.shape[1], accelerator)
    data = images.to(accelerator.device)
    last_layer = vae.decoder.conv_out.weight

    def loss_step(model: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        """L1 reconstruction + beta KL (+ the adaptive hinge-GAN generator term once the discriminator is on)."""
        x = data[idx.to(data.device)]
        posterior = model.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(x.device)
        rec = model.decode(z).sample
        rec_loss = (rec - x).abs().flatten(1).sum(1).mean()
        kl = posterior.kl().mean()
        loss = rec_loss + config.kl_weight * kl
        g_loss = torch.zeros(())
        if hooks.disc is not None and step >= config.disc_start_step:
            g_loss = -hooks.disc(rec).mean()  # hinge-GAN generator loss (LDM)
            loss = loss + _adaptive_weight(rec_loss, g_loss, last_layer, config.disc_weight) * g_loss
            hooks.batch = (x, rec.detach())
        hooks.parts.append([rec_loss.item(), kl.item(), g_loss.item()])
        return loss

    vae, _, seconds = run_loop(vae, opt, loop, loss_step, accelerator=accelerator, n=images.shape[0], hooks=hooks,
                               out=out, config=config.to_dict(), data_info=data_info, desc="train-vae",
                               progress=progress)
    vae = vae.eval().requires_grad_(False)
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, images))
    if out is not None and accelerator.is_main_process:
        _save_vae(vae, out, config, hooks.history, seconds, images, heldout, data_info)
    return vae


class _VAEHooks(TrainHooks):
    """The VAE's own part of the loop: the PatchGAN discriminator's step after each VAE step (on the
    batch and reconstruction the loss step left), and the per-step history [rec, kl, g, d]."""

    def __init__(self, config: VAEConfig, channels: int, accelerator: Any) -> None:
        self.disc = self.opt_d = None
        if config.adversarial:
            if config.grad_accum > 1:
                raise GenleakError("adversarial VAE training steps its discriminator on every batch; use grad_accum 1")
            disc = PatchDiscriminator(channels, config.disc_channels)
            opt_d = torch.optim.AdamW(disc.parameters(), lr=config.disc_lr or config.lr, weight_decay=0.0,
                                      betas=(0.5, 0.9))
            self.disc, self.opt_d = accelerator.prepare(disc, opt_d)
        self.accelerator = accelerator
        self.history: list[list[float]] = []
        self.parts: list[list[float]] = []  # [rec, kl, g] of this step's micro-batches
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def after_step(self, step: int) -> None:
        d_loss = torch.zeros(())
        if self.batch is not None:
            x, rec = self.batch
            d_loss = 0.5 * (torch.relu(1 - self.disc(x)).mean() + torch.relu(1 + self.disc(rec)).mean())
            self.opt_d.zero_grad(set_to_none=True)
            self.accelerator.backward(d_loss)
            self.opt_d.step()
        self.history.append([sum(p[k] for p in self.parts) / len(self.parts) for k in range(3)] + [d_loss.item()])
        self.parts, self.batch = [], None
        check_loss(d_loss.item(), step)

    def state_dict(self) -> dict[str, Any]:
        disc = self.accelerator.unwrap_model(self.disc).state_dict() if self.disc is not None else None
        return {"history": self.history, "disc": disc, "opt_d": self.opt_d.state_dict() if self.opt_d else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = state["history"]
        if self.disc is not None:
            self.accelerator.unwrap_model(self.disc).load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])


def _adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float) -> torch.Tensor:
    """LDM's adaptive GAN weight: ||grad nll|| / ||grad g_loss|| at the decoder's last layer, times
    disc_weight, so the adversarial term never swamps reconstruction."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_nll.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach() * disc_weight


@torch.no_grad()
def latent_scaling_factor(vae: Any, images: torch.Tensor, batch_size: int = 256, seed: int = 0) -> float:
    """1 / std of posterior samples over ``images``: the factor that gives the UNet unit-variance
    latents (Stable Diffusion's 0.18215 is this statistic of its VAE)."""
    gen = torch.Generator().manual_seed(seed)
    zs = []
    for start in range(0, images.shape[0], batch_size):
        post = vae.encode(images[start : start + batch_size].to(vae.device)).latent_dist
        zs.append(post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(post.mean.device))
    std = float(torch.cat(zs).float().std())
    return 1.0 / max(std, 1e-8)


@torch.no_grad()
def reconstruction_mse(vae: Any, images: torch.Tensor, batch_size: int = 256) -> float:
    """Mean squared error of D(mean of q(z|x)) against x over pixels in [-1, 1]: the quality cost."""
    total, count = 0.0, 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(vae.device)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        total += float((rec - x).pow(2).sum())
        count += x.numel()
    return total / max(count, 1)


@torch.no_grad()
def posterior_stats(vae: Any, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """How wide the posterior is relative to the spread of its means: the noise the latent UNet
    sees around each member's latent (ratio -> 0: deterministic latents, easy to memorise)."""
    means, stds = [], []
    for start in range(0, images.shape[0], batch_size):
        post = vae.encode(images[start : start + batch_size].to(vae.device)).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    m, s = torch.cat(means), torch.cat(stds)
    return {"posterior_std": float(s.mean()), "mean_spread": float(m.std(0).mean()),
            "noise_to_signal": float(s.mean() / m.std(0).mean().clamp_min(1e-12))}


def load_vae(folder: str | Path) -> Any:
    """An ``AutoencoderKL`` from a VAE folder (``genleak train vae`` output) or an SD-style folder's ``vae/``."""
    from diffusers import AutoencoderKL

    path = Path(folder)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise GenleakError(f"'{folder}' holds no VAE (config.json or vae/config.json); train one with `genleak train vae`")
    try:
        return AutoencoderKL.from_pretrained(str(path), local_files_only=True).eval().requires_grad_(False)
    except (OSError, ValueError) as err:
        raise GenleakError(f"could not load a VAE from '{folder}': {str(err).splitlines()[0]}") from err


def _save_vae(vae: Any, out: Path, config: VAEConfig, history: list[list[float]], seconds: float,
              images: torch.Tensor, heldout: torch.Tensor | None, data_info: dict[str, Any]) -> None:
    publish_folder(out, lambda staging: vae.save_pretrained(str(staging), safe_serialization=True))
    recent = history[-50:] or [[0.0, 0.0, 0.0, 0.0]]
    record = {
        "format": "genleak.vae",
        "version": 1,
        "config": config.to_dict(),
        "steps": len(history),
        "final_rec_l1": sum(h[0] for h in recent) / len(recent),
        "final_kl": sum(h[1] for h in recent) / len(recent),
        "scaling_factor": float(vae.config.scaling_factor),
        "recon_mse_train": reconstruction_mse(vae, images),
        "recon_mse_heldout": reconstruction_mse(vae, heldout) if heldout is not None else None,
        **posterior_stats(vae, images),
        "train_seconds_this_session": round(seconds, 2),
        **data_info,
    }
    atomic_write_json(out / VAE_RECORD, record)
