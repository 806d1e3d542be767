"""A small VQ-VAE tokenizer shared by the discrete IARs (VAR-style and RAR-style targets).

One encoder, one codebook, one decoder, two ways to turn an image into tokens:

* ``tokenize``: plain vector quantisation of the ``h x w`` latent map (VQ-GAN style, what RAR's
  raster-order next-token prediction consumes; thesis ch. 9.2, "VQ-GAN transforms the task from
  next-pixel to next-token prediction").
* ``tokenize_scales``: VAR's multi-scale *residual* quantisation (Tian et al. 2024, Alg. 1): the
  latent is quantised at scales 1x1, 2x2, ..., hxw, each scale quantising what the coarser scales
  left over, so the sum of the upsampled code vectors reconstructs the latent (thesis ch. 9.2, "VAR
  ... encoding images into hierarchical 2D token maps").

Both are trained jointly (the loss is the sum of both reconstructions), so one tokenizer serves
both model families, as in the thesis where every IAR consumes VQ tokens. Tiny on purpose: a target
for attacks, not research code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genleak.config import JsonConfig


@dataclass
class VQConfig(JsonConfig):
    """Tokenizer shape. Defaults fit 8x8 single-channel digits: a 4x4 token map, 64 codes."""

    image_size: int = 8
    channels: int = 1
    hidden: int = 32
    latent_dim: int = 16
    codebook_size: int = 64
    downsample: int = 2  # image_size / latent size; 1, 2 or 4
    scales: tuple[int, ...] = (1, 2, 3, 4)  # VAR token-map side lengths, the last = latent size
    commitment: float = 0.25  # beta of the VQ-VAE loss (van den Oord et al. 2017)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample


def conv_encoder(channels: int, hidden: int, out: int, downsample: int) -> nn.Sequential:
    """Conv stack that shrinks the image by ``downsample`` (a power of two, stride-2 convs)."""
    layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU()]
    d = downsample
    while d > 1:
        layers += [nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.SiLU()]
        d //= 2
    layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, out, 1)]
    return nn.Sequential(*layers)


def conv_decoder(latent: int, hidden: int, channels: int, downsample: int) -> nn.Sequential:
    """Mirror of :func:`conv_encoder`: transposed convs grow the map back to the image size."""
    layers: list[nn.Module] = [nn.Conv2d(latent, hidden, 3, padding=1), nn.SiLU()]
    d = downsample
    while d > 1:
        layers += [nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.SiLU()]
        d //= 2
    layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1)]
    return nn.Sequential(*layers)


class VQTokenizer(nn.Module):
    """Encoder -> nearest-code quantiser -> decoder, with single- and multi-scale tokenisation."""

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        if config.image_size % config.downsample or config.downsample not in (1, 2, 4):
            raise ValueError(f"downsample must be 1, 2 or 4 and divide image_size, got {config.downsample}")
        if config.scales[-1] != config.latent_size or list(config.scales) != sorted(set(config.scales)):
            raise ValueError(f"scales {config.scales} must increase and end at the latent size {config.latent_size}")
        self.config = config
        self.encoder = conv_encoder(config.channels, config.hidden, config.latent_dim, config.downsample)
        self.decoder = conv_decoder(config.latent_dim, config.hidden, config.channels, config.downsample)
        self.codebook = nn.Embedding(config.codebook_size, config.latent_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / config.codebook_size, 1.0 / config.codebook_size)

    # -- quantisation --------------------------------------------------------------------------
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each vector of a (B, C, h, w) map -> (B, h, w)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        dist = torch.cdist(flat, self.codebook.weight)
        return dist.argmin(dim=1).view(b, h, w)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code vectors of a (B, h, w) index map -> (B, C, h, w)."""
        return self.codebook(idx).permute(0, 3, 1, 2)

    def _resize(self, z: torch.Tensor, size: int) -> torch.Tensor:
        if z.shape[-1] == size:
            return z
        if size < z.shape[-1]:
            return F.interpolate(z, size=(size, size), mode="area")
        return F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)

    def quantize_single(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain VQ of the latent: (indices (B, h, w), quantised latent)."""
        idx = self.nearest(f)
        return idx, self.lookup(idx)

    def quantize_scales(self, f: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """VAR's residual multi-scale quantisation (Tian et al. 2024, Alg. 1).

        Returns the index map of every scale and the reconstructed latent f_hat = sum_k up(e(r_k)).
        """
        size = f.shape[-1]
        rest = f
        f_hat = torch.zeros_like(f)
        maps = []
        for s in self.config.scales:
            idx = self.nearest(self._resize(rest, s))
            up = self._resize(self.lookup(idx), size)
            f_hat = f_hat + up
            rest = rest - up
            maps.append(idx)
        return maps, f_hat

    # -- public token API ----------------------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> single-scale tokens (B, h*w), raster order."""
        idx, _ = self.quantize_single(self.encoder(images))
        return idx.flatten(1)

    @torch.no_grad()
    def tokenize_scales(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> the concatenated multi-scale tokens (B, sum_k s_k^2), coarse to fine."""
        maps, _ = self.quantize_scales(self.encoder(images))
        return torch.cat([m.flatten(1) for m in maps], dim=1)

    def split_scales(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) concatenated multi-scale tokens -> list of (B, s, s) index maps."""
        out, start = [], 0
        for s in self.config.scales:
            out.append(tokens[:, start : start + s * s].reshape(-1, s, s))
            start += s * s
        return out

    def scales_to_latent(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sum of the upsampled code vectors of all scales: the latent the decoder reads."""
        size = self.config.latent_size
        maps = self.split_scales(tokens)
        return sum(self._resize(self.lookup(m), size) for m in maps)

    def next_scale_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """VAR's teacher-forcing inputs: for k = 1..K-1 the accumulated latent f_hat_k (scales
        1..k) resized to scale k+1, flattened and concatenated -> (B, sum_{k>=2} s_k^2, C).

        Token j of scale k+1 is predicted from these; scale 1 is predicted from the class token.
        """
        size = self.config.latent_size
        maps = self.split_scales(tokens)
        f_hat = torch.zeros(tokens.shape[0], self.config.latent_dim, size, size, device=tokens.device)
        inputs = []
        for k in range(len(maps) - 1):
            f_hat = f_hat + self._resize(self.lookup(maps[k]), size)
            nxt = self._resize(f_hat, self.config.scales[k + 1])
            inputs.append(nxt.flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Single-scale tokens (B, h*w) -> images in [-1, 1]."""
        s = self.config.latent_size
        return self.decoder(self.lookup(tokens.view(-1, s, s))).clamp(-1, 1)

    @torch.no_grad()
    def decode_scales(self, tokens: torch.Tensor) -> torch.Tensor:
        """Multi-scale tokens (B, L) -> images in [-1, 1]."""
        return self.decoder(self.scales_to_latent(tokens)).clamp(-1, 1)

    @property
    def sequence_length(self) -> int:
        return self.config.latent_size**2

    @property
    def multiscale_length(self) -> int:
        return sum(s * s for s in self.config.scales)

    # -- training ------------------------------------------------------------------------------
    def training_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of the single-scale and the multi-scale VQ-VAE losses (straight-through estimator),
        and the codes this batch used (for dead-code restarts).

        Each: ||x - D(f_q)||^2 + ||sg(f) - f_q||^2 + beta ||f - sg(f_q)||^2 (van den Oord et al. 2017).
        """
        f = self.encoder(images)
        beta = self.config.commitment
        idx1, q1 = self.quantize_single(f)
        maps, q2 = self.quantize_scales(f)
        both = torch.cat([f + (q1 - f).detach(), f + (q2 - f).detach()])
        rec = F.mse_loss(self.decoder(both), torch.cat([images, images]))
        vq = sum(F.mse_loss(q, f.detach()) + beta * F.mse_loss(f, q.detach()) for q in (q1, q2))
        used = torch.cat([idx1.flatten()] + [m.flatten() for m in maps]).unique()
        return 2 * rec + vq, used

    @torch.no_grad()
    def restart_dead_codes(self, images: torch.Tensor, used: torch.Tensor, generator: torch.Generator) -> int:
        """Move codes no batch used since the last call onto random encoder outputs (keeps the
        whole codebook alive on tiny data; a standard VQ-VAE trick). Returns how many moved."""
        dead = (~used).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        f = self.encoder(images).permute(0, 2, 3, 1).reshape(-1, self.config.latent_dim)
        pick = torch.randint(0, f.shape[0], (dead.numel(),), generator=generator)
        self.codebook.weight[dead] = f[pick.to(f.device)] + 0.01 * torch.randn(
            dead.numel(), f.shape[1], generator=generator
        ).to(f.device)
        return int(dead.numel())
