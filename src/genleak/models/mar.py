"""MAR-style model (its target, ``MARTarget``, is in ``genleak.targets.iar``): masked autoregressive prediction of *continuous* tokens with a small diffusion
head (Li et al. 2024; thesis ch. 9.2, eq. 9.3).

* Tokenizer: a tiny KL-VAE; tokens are the posterior means of the latent map, one C-dim vector per
  latent position, scaled to unit variance (MAR scales its KL-16 latents by 0.2325 for the same
  reason).
* Backbone: a bidirectional transformer over [class token, tokens]; masked positions are replaced
  by a learned mask embedding; its output z_n conditions the head at every position.
* Diffusion head: an MLP eps_theta(t_n^s | s, z_n) trained with the loss of eq. 9.3 on the masked
  tokens, 4 noise draws per token (MAR's training default, supp. D.8), a cosine schedule of 1000
  steps (diffusers' ``squaredcos_cap_v2``), sampled with diffusers' DDIM.
* Training masks: the ratio is drawn from a normal N(1.0, 0.25) truncated to [0.7, 1.0] (MAR), whose
  mean 0.86 is the "training average" the thesis raises to 0.95 for its attack (supp. D.8).
* Generation: MaskGIT-style cosine schedule of revealed tokens over a few iterations, in a random
  order per sample; the output-noise defense adds N(0, sigma^2) to every sampled token (D.11.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genleak.config import JsonConfig
from genleak.models.layers import Trunk, drop_labels
from genleak.models.vq import conv_decoder, conv_encoder


# ----------------------------------------------------------------------------------------------
# KL tokenizer
# ----------------------------------------------------------------------------------------------
@dataclass
class KLConfig(JsonConfig):
    image_size: int = 8
    channels: int = 1
    hidden: int = 32
    latent_dim: int = 4
    downsample: int = 2
    kl_weight: float = 1e-3

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample


class KLTokenizer(nn.Module):
    """KL-VAE whose scaled posterior means are MAR's continuous tokens (B, h*w, C)."""

    def __init__(self, config: KLConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = conv_encoder(config.channels, config.hidden, 2 * config.latent_dim, config.downsample)
        self.decoder = conv_decoder(config.latent_dim, config.hidden, config.channels, config.downsample)
        self.register_buffer("scale", torch.tensor(1.0))

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return mean, logvar.clamp(-10, 10)

    def training_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        mean, logvar = self.moments(images)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        rec = F.mse_loss(self.decoder(z), images)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
        return rec + self.config.kl_weight * kl, None

    @torch.no_grad()
    def fit_scale(self, images: torch.Tensor) -> None:
        """Scale tokens to unit standard deviation over ``images`` (the tokenizer's training data)."""
        self.scale.fill_(1.0 / float(self.moments(images)[0].std().clamp_min(1e-6)))

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        mean = self.moments(images)[0] * self.scale
        return mean.flatten(2).transpose(1, 2).contiguous()

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        s = self.config.latent_size
        z = tokens.transpose(1, 2).reshape(-1, self.config.latent_dim, s, s) / self.scale
        return self.decoder(z).clamp(-1, 1)


# ----------------------------------------------------------------------------------------------
# MAR backbone + diffusion head
# ----------------------------------------------------------------------------------------------
@dataclass
class MARConfig(JsonConfig):
    token_dim: int = 4
    seq_len: int = 16
    num_classes: int = 10
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    class_dropout: float = 0.1
    head_width: int = 64
    head_depth: int = 3
    num_train_timesteps: int = 1000
    train_noise_draws: int = 4  # supp. D.8: "During training, MAR uses four different noise samples"
    mask_mean: float = 1.0  # MAR's truncated normal of mask ratios, mean 0.86 (supp. D.8)
    mask_std: float = 0.25
    mask_min: float = 0.7


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps (Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class DiffusionHead(nn.Module):
    """eps_theta(x_t, t, z): an MLP on [x_t, emb(t), z] with residual blocks."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int) -> None:
        super().__init__()
        self.inp = nn.Linear(token_dim + width + cond_dim, width)
        self.t_dim = width
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, token_dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([x_t, timestep_embedding(t, self.t_dim), z], dim=-1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class MARModel(nn.Module):
    def __init__(self, config: MARConfig) -> None:
        super().__init__()
        from diffusers import DDPMScheduler

        self.config = config
        d, n = config.dim, config.seq_len
        self.null_class = config.num_classes
        self.token_in = nn.Linear(config.token_dim, d)
        self.mask_emb = nn.Parameter(torch.zeros(d))
        self.cls_emb = nn.Embedding(config.num_classes + 1, d)
        self.pos_emb = nn.Parameter(torch.randn(n + 1, d) * 0.02)
        self.trunk = Trunk(d, config.depth, config.heads, config.mlp_ratio)
        self.head = DiffusionHead(config.token_dim, d, config.head_width, config.head_depth)
        self.scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                                       beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.float().clone(), persistent=False)

    def context(self, tokens: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (B, N, d) for every position; ``mask`` True = hidden from the backbone."""
        x = self.token_in(tokens)
        x = torch.where(mask[..., None], self.mask_emb.expand_as(x), x)
        c = self.cls_emb(labels)[:, None]
        x = torch.cat([c, x], dim=1) + self.pos_emb + c
        return self.trunk(x)[:, 1:]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def training_loss(self, tokens: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Eq. 9.3 on the masked tokens, ``train_noise_draws`` noise draws and timesteps per token."""
        b, n, c = tokens.shape
        cfg = self.config
        ratio = torch.empty(b)
        for i in range(b):  # truncated normal by rejection (cheap: acceptance ~ 0.5)
            r = cfg.mask_mean + cfg.mask_std * torch.randn((), generator=generator)
            while not (cfg.mask_min <= float(r) <= 1.0):
                r = cfg.mask_mean + cfg.mask_std * torch.randn((), generator=generator)
            ratio[i] = r
        n_mask = (ratio * n).ceil().clamp(1, n).long()
        order = torch.argsort(torch.rand(b, n, generator=generator), dim=1)
        rank = torch.argsort(order, dim=1)
        mask = (rank < n_mask[:, None]).to(tokens.device)
        labels = drop_labels(labels, self.null_class, cfg.class_dropout, generator)
        z = self.context(tokens, mask, labels)
        k = cfg.train_noise_draws
        x0 = tokens[mask].repeat(k, 1)
        zz = z[mask].repeat(k, 1)
        t = torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return F.mse_loss(self.head(self.q_sample(x0, t, noise), t, zz), noise)

    @torch.no_grad()
    def sample_tokens(self, z: torch.Tensor, init: torch.Tensor, steps: int = 25,
                      z_null: torch.Tensor | None = None, cfg_scale: float = 1.0) -> torch.Tensor:
        """DDIM (eta = 0) from ``init`` noise (M, C) given conditions z (M, d) (diffusers' scheduler)."""
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(steps)
        x = init
        for t in sched.timesteps:
            tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
            eps = self.head(x, tt, z)
            if z_null is not None and cfg_scale != 1.0:
                eps_u = self.head(x, tt, z_null)
                eps = eps_u + cfg_scale * (eps - eps_u)
            x = sched.step(eps, t, x).prev_sample
        return x
