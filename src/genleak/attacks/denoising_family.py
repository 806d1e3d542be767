"""The denoising-process attack family for latent (text-conditioned) models (thesis ch. 7, supp. B.4.1).

One configurable attack runs a short diffusion process on the query's latent z = E(x) with its
caption and, at every UNet query, measures the three errors of thesis section 7.6.2:

* **model loss** ||eps - eps_theta(z_t, t, c)||^2 (eps: the noise the process started from, or the
  fresh noise of that step for non-iterative processes),
* **latent error** ||z - z'||^2 with z' the model's estimate of the clean latent at that step
  (a sampler's ``pred_original_sample``),
* **pixel error** ||x - D(z')||^2 against the query image (one VAE decode per measured step).

A process is: the UNet timesteps in the order visited, the noise level(s) the latent is noised to,
and whether each step continues from the previous one's DDIM output (iterative) or gets a freshly
noised latent (non-iterative). The named presets reproduce supplement B.4.1 (and the baseline of
section 7.6.3); every field can be overridden. Scores are negated errors (higher = member): the
first column is the ``primary`` measure (model loss averaged over the steps by default); the
others are the three measures (model loss averaged over steps, latent and pixel error at the last
step) and, with ``per_step``, every measure at every step (the inputs of B.4.2's classifier attack).

CFG: ``guidance_scale`` (None = the target's own, default 1, i.e. conditional only). The thesis
applies scale 7.5 to every method and 100 to *reversed noising* (B.4.1); ``paper_guidance`` in a
preset records that value, and guidance doubles the UNet evaluations per query.

Also here: the grey-box **generation from prompt** attack (section 7.6.3): generate from the
caption alone with 50 DDIM steps, re-encode the generation with the model's VAE and score the
latent error (grey-box) and the pixel error (black-box).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genleak.attacks.base import Access, Attack, AttackConfig, NoiseSource, repeat_cond
from genleak.errors import GenleakError
from genleak.targets.base import Target, ddim_step, predict_x0, q_sample

_MEASURES = ("model_loss", "latent_error", "pixel_error")


@dataclass(frozen=True)
class Process:
    """One denoising process: UNet timesteps in order, noise level(s), iterative or not."""

    unet_timesteps: tuple[int, ...]
    noise_timesteps: tuple[int, ...]  # one start level (iterative) or one level per step
    iterative: bool
    n_draws: int = 1
    paper_guidance: float = 7.5  # B.4.1: "classifier-free guidance is applied with scale 7.5 unless otherwise stated"
    source: str = ""


# Supplement B.4.1 (and section 7.6.3 for the baseline); numbers are timesteps of SD's T = 1000.
PRESETS: dict[str, Process] = {
    # 7.6.3 "Baseline loss threshold": model loss at t = 100 on the latent noised to alpha_100; five
    # noise draws averaged (7.6.1 "average of 5 losses ... following [47]").
    "baseline": Process((100,), (100,), False, n_draws=5, source="thesis 7.6.3"),
    # B.4.1 item 1 "Partial denoising": noise once to alpha_300, denoise 300 -> 50 "for the steps 26",
    # i.e. every 10 timesteps (300, 290, ..., 50).
    "partial-denoising": Process(tuple(range(300, 49, -10)), (300,), True, source="thesis B.4.1 item 1"),
    # B.4.1 item 12 "Reversed noising": 10 steps at UNet timesteps 900 -> 0, each on a freshly noised
    # latent whose noise level runs in reverse (UNet t = 800 gets alpha_100); CFG scale 100.
    "reversed-noising": Process(tuple(range(900, -1, -100)), tuple(range(0, 901, 100)), False,
                                paper_guidance=100.0, source="thesis B.4.1 item 12"),
    # B.4.1 item 16 "Reversed denoising": noise once to alpha_100, then 10 DDIM steps at timesteps
    # 0 -> 900 (the reverse of the usual order).
    "reversed-denoising": Process(tuple(range(0, 901, 100)), (100,), True, source="thesis B.4.1 item 16"),
    # B.4.1 item 7 "Full denoising start 100": noise to alpha_100, denoise 900 -> 0 every 100.
    "full-denoising-100": Process(tuple(range(900, -1, -100)), (100,), True, source="thesis B.4.1 item 7"),
}


def guided(target: Target, scale: float | None) -> Target:
    """The target answering with CFG scale ``scale`` (None: the target's own setting)."""
    if scale is None:
        return target
    return target.with_guidance(scale)


class _ImageTap:
    """Delegates to a target and remembers the last images it encoded, so an attack can compare
    generations with the query pixels (``Attack.score`` only hands latents to ``score_batch``)."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self.last_images: torch.Tensor | None = None

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.last_images = images
        return self._target.encode(images)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def _query_pixels(target: Any, x0: torch.Tensor) -> torch.Tensor:
    images = target.last_images if isinstance(target, _ImageTap) else None
    if images is None or images.shape[0] != x0.shape[0]:
        return target.decode(x0)  # called outside ``score``: the VAE reconstruction stands in
    return images.to(x0.device, x0.dtype)


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(1)


@dataclass(frozen=True)
class DenoisingProcessConfig(AttackConfig):
    preset: str = "partial-denoising"
    # Overrides of the preset (None: the preset's value).
    unet_timesteps: tuple[int, ...] | None = None
    noise_timesteps: tuple[int, ...] | None = None
    iterative: bool | None = None
    n_draws: int | None = None
    guidance_scale: float | None = None  # None: the target's (1 = conditional only); papers: 7.5 / 100
    primary: str = "model_loss"  # which measure is the score: model_loss | latent_error | pixel_error
    per_step: bool = False  # also return every measure at every step (decodes at every step)


class DenoisingProcessAttack(Attack):
    """One configurable denoising process measuring model loss, latent error and pixel error."""

    name = "denoise-process"
    access = Access.WHITE_BOX  # thesis 7.6.3: the noise-exploiting methods are white-box
    config_class = DenoisingProcessConfig
    paper = "Dubinski et al., 'Towards more realistic membership inference attacks on large diffusion models' (thesis ch. 7, supp. B.4.1)"

    def __init__(self, config: DenoisingProcessConfig | None = None, **overrides: Any) -> None:
        for key in ("unet_timesteps", "noise_timesteps"):
            if isinstance(overrides.get(key), list | str):
                value = overrides[key]
                overrides[key] = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
        super().__init__(config, **overrides)
        c = self.config
        if c.preset not in PRESETS:
            raise GenleakError(f"{self.name}: unknown preset {c.preset!r}; choose from {', '.join(PRESETS)}")
        if c.primary not in _MEASURES:
            raise GenleakError(f"{self.name}: primary must be one of {', '.join(_MEASURES)}, got {c.primary!r}")
        p = self.process
        if not p.unet_timesteps or p.n_draws < 1:
            raise GenleakError(f"{self.name}: a process needs at least one UNet timestep and one draw")
        if not p.iterative and len(p.noise_timesteps) not in (1, len(p.unet_timesteps)):
            raise GenleakError(f"{self.name}: a non-iterative process needs one noise level or one per step")
        if p.iterative and len(p.noise_timesteps) != 1:
            raise GenleakError(f"{self.name}: an iterative process is noised once: give one noise level")

    @property
    def process(self) -> Process:
        c, base = self.config, PRESETS[self.config.preset]
        return Process(
            unet_timesteps=tuple(c.unet_timesteps) if c.unet_timesteps is not None else base.unet_timesteps,
            noise_timesteps=tuple(c.noise_timesteps) if c.noise_timesteps is not None else base.noise_timesteps,
            iterative=c.iterative if c.iterative is not None else base.iterative,
            n_draws=c.n_draws if c.n_draws is not None else base.n_draws,
            paper_guidance=base.paper_guidance,
            source=base.source,
        )

    @property
    def nfe(self) -> int:
        """Denoiser queries per sample (each costs two UNet evaluations under CFG)."""
        p = self.process
        return len(p.unet_timesteps) * p.n_draws

    @property
    def columns(self) -> list[str]:
        cols = [self.name] + [f"{self.name}.{m}" for m in _MEASURES]
        if self.config.per_step:
            cols += [f"{self.name}.{m}@t{t}" for t in self.process.unet_timesteps for m in _MEASURES]
        return cols

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        p = self.process
        d["process"] = {"unet_timesteps": list(p.unet_timesteps), "noise_timesteps": list(p.noise_timesteps),
                        "iterative": p.iterative, "n_draws": p.n_draws, "paper_guidance": p.paper_guidance,
                        "source": p.source}
        d["columns"] = self.columns
        return d

    def score(self, target: Target, images: torch.Tensor, ids: Any = None, **kwargs: Any) -> torch.Tensor:
        self.check(target)  # before wrapping, so a refusal names the target, not the tap
        return super().score(_ImageTap(guided(target, self.config.guidance_scale)), images, ids, **kwargs)

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        p, per_step = self.process, self.config.per_step
        b, k, steps = x0.shape[0], p.n_draws, p.unet_timesteps
        for t in (*steps, *p.noise_timesteps):
            if not 0 <= t < target.num_train_timesteps:
                raise GenleakError(f"{self.name}: timestep {t} outside the target's 0..{target.num_train_timesteps - 1}")
        pixels = _query_pixels(target, x0)
        z0 = x0.repeat_interleave(k, dim=0)
        img = pixels.repeat_interleave(k, dim=0)
        c = repeat_cond(cond, k)
        shape = (b * k, *x0.shape[1:])
        losses, latents, pixel_errs = [], [], []
        if p.iterative:
            eps0 = noise.draw(k).reshape(shape)
            x = q_sample(target, z0, p.noise_timesteps[0], eps0)
        for i, t in enumerate(steps):
            if not p.iterative:
                eps0 = noise.draw(k).reshape(shape)
                level = p.noise_timesteps[0] if len(p.noise_timesteps) == 1 else p.noise_timesteps[i]
                x = q_sample(target, z0, level, eps0)
            pred = target.eps(x, t, c)
            # the clean-latent estimate: on the trajectory's own timestep (iterative) or at the noise
            # level the latent was actually given (non-iterative)
            z_hat = predict_x0(target, x, t if p.iterative else level, pred)
            losses.append(_mse(pred, eps0))
            last = i == len(steps) - 1
            if per_step or last:
                latents.append(_mse(z_hat, z0))
                pixel_errs.append(_mse(target.decode(z_hat).clamp(-1, 1), img))
            if p.iterative and not last:
                x = ddim_step(target, x, t, steps[i + 1], c, eps=pred)

        def per_sample(v: torch.Tensor) -> torch.Tensor:
            return v.view(b, k).mean(1)

        summary = {
            "model_loss": per_sample(torch.stack(losses).mean(0)),
            "latent_error": per_sample(latents[-1]),
            "pixel_error": per_sample(pixel_errs[-1]),
        }
        cols = [-summary[self.config.primary]] + [-summary[m] for m in _MEASURES]
        if per_step:
            for i in range(len(steps)):
                cols += [-per_sample(losses[i]), -per_sample(latents[i]), -per_sample(pixel_errs[i])]
        return torch.stack(cols, dim=1)


# One named attack per preset (``dp-<preset>``): the same process with its preset fixed as the default.
@dataclass(frozen=True)
class BaselineLossConfig(DenoisingProcessConfig):
    preset: str = "baseline"


class BaselineLossAttack(DenoisingProcessAttack):
    """The ``baseline`` process (thesis 7.6.3); see ``DenoisingProcessAttack``."""

    name = "dp-baseline"
    config_class = BaselineLossConfig


@dataclass(frozen=True)
class PartialDenoisingConfig(DenoisingProcessConfig):
    preset: str = "partial-denoising"


class PartialDenoisingAttack(DenoisingProcessAttack):
    """The ``partial-denoising`` process (thesis B.4.1 item 1); see ``DenoisingProcessAttack``."""

    name = "dp-partial-denoising"
    config_class = PartialDenoisingConfig


@dataclass(frozen=True)
class ReversedNoisingConfig(DenoisingProcessConfig):
    preset: str = "reversed-noising"


class ReversedNoisingAttack(DenoisingProcessAttack):
    """The ``reversed-noising`` process (thesis B.4.1 item 12); see ``DenoisingProcessAttack``."""

    name = "dp-reversed-noising"
    config_class = ReversedNoisingConfig


@dataclass(frozen=True)
class ReversedDenoisingConfig(DenoisingProcessConfig):
    preset: str = "reversed-denoising"


class ReversedDenoisingAttack(DenoisingProcessAttack):
    """The ``reversed-denoising`` process (thesis B.4.1 item 16); see ``DenoisingProcessAttack``."""

    name = "dp-reversed-denoising"
    config_class = ReversedDenoisingConfig


@dataclass(frozen=True)
class FullDenoisingConfig(DenoisingProcessConfig):
    preset: str = "full-denoising-100"


class FullDenoisingAttack(DenoisingProcessAttack):
    """The ``full-denoising-100`` process (thesis B.4.1 item 7); see ``DenoisingProcessAttack``."""

    name = "dp-full-denoising-100"
    config_class = FullDenoisingConfig


# -- generation from prompt (grey-box latent error, black-box pixel error) ---------------------------
@dataclass(frozen=True)
class GenFromPromptConfig(AttackConfig):
    # 50 DDIM steps: "the default method of 50 timesteps" (thesis 7.6.3, generation from prompt).
    steps: int = 50
    n_gen: int = 1
    guidance_scale: float | None = None  # None: the target's own; SD's pipeline default is 7.5
    eta: float = 0.0


class GenFromPromptAttack(Attack):
    """Score = -min_k ||E(G_k(c)) - E(x)||^2 (latent error of generations from the caption alone);
    second column: -min_k ||G_k(c) - x||^2 (the black-box pixel error)."""

    name = "gen-prompt"
    access = Access.GRAY_BOX  # thesis 7.6.1: grey-box = the attacker can use the model's encoders
    config_class = GenFromPromptConfig
    paper = DenoisingProcessAttack.paper
    columns_suffix: ClassVar[tuple[str, ...]] = ("latent_error", "pixel_error")

    @property
    def nfe(self) -> int:
        return self.config.steps * self.config.n_gen

    @property
    def columns(self) -> list[str]:
        return [self.name] + [f"{self.name}.{m}" for m in self.columns_suffix]

    def score(self, target: Target, images: torch.Tensor, ids: Any = None, **kwargs: Any) -> torch.Tensor:
        self.check(target)  # before wrapping, so a refusal names the target, not the tap
        return super().score(_ImageTap(guided(target, self.config.guidance_scale)), images, ids, **kwargs)

    def score_batch(self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None) -> torch.Tensor:
        from genleak.targets.sampling import denoise, sampling_scheduler

        b, k = x0.shape[0], self.config.n_gen
        pixels = _query_pixels(target, x0)
        scheduler = sampling_scheduler(target, self.config.steps)
        x = noise.draw(k).reshape(b * k, *x0.shape[1:]) * float(getattr(scheduler, "init_noise_sigma", 1.0))
        z_gen = denoise(target, x, [int(t) for t in scheduler.timesteps], scheduler, repeat_cond(cond, k),
                        eta=self.config.eta)
        images = target.decode(z_gen).clamp(-1, 1)
        latent = _mse(target.encode(images), x0.repeat_interleave(k, dim=0)).view(b, k).min(1).values
        pixel = _mse(images, pixels.repeat_interleave(k, dim=0)).view(b, k).min(1).values
        return torch.stack([-latent, -latent, -pixel], dim=1)
