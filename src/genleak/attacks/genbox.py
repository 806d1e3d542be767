"""genbox: black-box membership inference by generation distance (Pang & Wang 2023 style).

The attacker only calls the model's sampler. For each query image it generates ``n_gen`` images,
either from a partially noised copy of the query (image-to-image with ``strength`` s: noise the
query to the timestep s selects and denoise it with DDIM) or from pure noise (s = 1), and scores
the query by how close the nearest generation comes: score = -min_k d(query, generation_k). An
overfit model pulls a noised member back onto itself and a noised non-member onto some other
training image, so members score higher. Distances are measured in pixel space and, with an
``encoder`` (a genleak encoder folder; ``genleak train encoder``
trains the offline default on reference data), in its feature space, as Pang & Wang compare
generations with an image embedding.

This is the attack DualMD (section 3.4) is designed to stop; it samples through
``genleak.targets.sampling``, so it runs unchanged on a ``DualTarget``. Access: black-box. Cost:
NFE = n_gen x (denoising steps actually run) per query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource, repeat_cond
from genleak.errors import GenleakError
from genleak.targets.base import Target
from genleak.targets.sampling import denoise, img2img_timesteps, sampling_scheduler


@dataclass(frozen=True)
class GenBoxConfig(AttackConfig):
    # 3 generations per query and 50-step DDIM: the DualMD paper's black-box setting (appendix A.2.2:
    # "we generate 3 images for each prompt, each is generated using DDIM with 50 inference steps").
    n_gen: int = 3
    steps: int = 50
    # Image-to-image strength. The paper's attack guides generation with the query's caption; an
    # unconditional model has no caption, and starting from the noised query is the analogue.
    # 0.3 was best of {0.3, 0.5, 0.7, 1.0} on a calibration model (digits 8x8, split seed 0; the
    # tests evaluate on split seed 1): AUC 0.90 / 0.75 / 0.65 / 0.60 (run not kept; benchmarks/RESULTS.md, "genbox's strength", re-measures it).
    strength: float = 0.3
    space: str = "pixel"  # which distance is the score: "pixel" or "feature" (needs ``encoder``)
    encoder: str = ""  # path: a genleak encoder folder (never TorchScript: an attack config must not run code)
    eta: float = 0.0  # DDIM eta (0: deterministic given the starting noise)


class GenBoxAttack(Attack):
    """Score = -min over n_gen generations of the distance to the query (pixel or feature space)."""

    name = "genbox"
    access = Access.BLACK_BOX
    pixel_queries = True
    config_class = GenBoxConfig
    paper = "Pang & Wang 2023, 'Black-box membership inference attacks against fine-tuned diffusion models'"

    def __init__(self, config: GenBoxConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        if c.n_gen < 1:
            raise GenleakError(f"{self.name}: n_gen must be >= 1, got {c.n_gen}")
        if not 0.0 < c.strength <= 1.0:
            raise GenleakError(f"{self.name}: strength must be in (0, 1], got {c.strength}")
        if c.space not in ("pixel", "feature"):
            raise GenleakError(f"{self.name}: space must be 'pixel' or 'feature', got {c.space!r}")
        if c.space == "feature" and not c.encoder:
            raise GenleakError(f"{self.name}: space='feature' needs encoder=PATH (train one with `genleak train encoder`)")
        if min(int(c.steps * c.strength), c.steps) < 1:
            raise GenleakError(f"{self.name}: strength {c.strength} x {c.steps} steps runs no denoising step")
        self._extractor: Any = None

    # -- cost ------------------------------------------------------------------------------------
    @property
    def steps_run(self) -> int:
        """Denoising steps per generation (diffusers' img2img: int(steps * strength))."""
        return min(int(self.config.steps * self.config.strength), self.config.steps)

    @property
    def nfe(self) -> int:
        return self.config.n_gen * self.steps_run

    @property
    def columns(self) -> list[str]:
        if not self.config.encoder:
            return [self.name]
        return [self.name, f"{self.name}-pixel", f"{self.name}-feature"]

    # -- scoring ---------------------------------------------------------------------------------
    def extractor(self) -> Any:
        if self._extractor is None and self.config.encoder:
            from genleak.quality import load_extractor

            self._extractor = load_extractor(self.config.encoder)
        return self._extractor

    def start(self, target: Target, queries: torch.Tensor, noise: NoiseSource, scheduler: Any,
              timesteps: list[int]) -> torch.Tensor:
        """(B * n_gen) starting points at ``timesteps[0]``, sample-major, in the working space.

        strength < 1: image-to-image, the encoded query noised to ``timesteps[0]`` (diffusers' img2img).
        strength = 1: pure noise, i.e. generation from the condition alone (text-to-image with the
        query's caption: the setting of 001 table 5); the query is not even encoded.
        """
        k = self.config.n_gen
        draws = noise.draw(k).reshape(queries.shape[0] * k, *noise.shape)
        if self.config.strength >= 1.0:
            return draws * scheduler.init_noise_sigma
        x0 = target.encode(queries)
        return scheduler.add_noise(x0.repeat_interleave(k, dim=0), draws, torch.tensor([timesteps[0]]))

    def generations(self, target: Target, queries: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        """(B, n_gen, C, H, W) generations in image space for query images in [-1, 1], seeded per query."""
        scheduler = sampling_scheduler(target, self.config.steps)
        timesteps = img2img_timesteps(scheduler, self.config.steps, self.config.strength)
        x = self.start(target, queries, noise, scheduler, timesteps)
        x = denoise(target, x, timesteps, scheduler, repeat_cond(cond, self.config.n_gen), eta=self.config.eta)
        return decode_generations(target, x, queries.shape[0])

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        # x0 holds the query images (``pixel_queries``): distances are to the image itself, not to
        # a VAE reconstruction of it, as a black-box attacker holding the image measures them
        return self.distance_scores(x0, self.generations(target, x0, noise, cond))

    def distance_scores(self, queries: torch.Tensor, gens: torch.Tensor) -> torch.Tensor:
        """-min_k distance; (B,) or (B, 3) = (chosen space, pixel, feature) with an encoder."""
        b, k = gens.shape[:2]
        pixel = -(gens - queries.unsqueeze(1)).flatten(2).norm(dim=2).min(1).values
        extractor = self.extractor()
        if extractor is None:
            return pixel
        fq = torch.as_tensor(extractor(queries.float().cpu()))
        fg = torch.as_tensor(extractor(gens.reshape(b * k, *gens.shape[2:]).float().cpu())).view(b, k, -1)
        feature = -(fg - fq.unsqueeze(1)).norm(dim=2).min(1).values.float().to(pixel.device)
        primary = feature if self.config.space == "feature" else pixel
        return torch.stack([primary, pixel, feature], dim=1)


def decode_generations(target: Target, x: torch.Tensor, b: int) -> torch.Tensor:
    """Decode (B * k) working-space samples to (B, k, C, H, W) images in [-1, 1]."""
    images = target.decode(x).clamp(-1, 1)
    return images.reshape(b, images.shape[0] // b, *images.shape[1:])
