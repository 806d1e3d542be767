"""Target kinds: the only view of a model that attacks get.

Modelled on k-diffusion's denoiser adapters: an attack asks for the predicted noise
``eps(x_t, t, cond)`` and for the forward-process schedule, and never touches the network,
the scheduler class or the latent space directly. Each kind of model has a base class here:
``PixelDiffusion``, ``LatentDiffusion`` (both ``Denoiser``s, unconditional, class- or
text-conditioned) and ``Autoregressive`` (``genleak.iar``). A new target subclasses its kind's
base, implements the few abstract methods, and inherits a documented default for every optional
capability, so callers never probe a target with ``getattr``. Attacks declare the kinds they
support (``Attack.kinds``) and refuse the others with one line (``Attack.check``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, ClassVar

import torch

from genleak.errors import TargetError


class TargetKind(str, Enum):
    """The kinds of model genleak attacks (the value reads in messages: "a pixel diffusion target")."""

    PIXEL = "pixel diffusion"
    LATENT = "latent diffusion"
    IAR = "image-autoregressive"


class Target(ABC):
    """What every target offers, whatever its kind.

    ``encode`` maps images in [-1, 1] (NCHW) to the model's *working space* (pixels, VAE latents,
    tokens) and ``decode`` maps back. ``target_kind`` is a class attribute of each kind's base
    (``DualTarget`` takes its sub-models' kind).
    """

    target_kind: TargetKind
    device: torch.device
    # (C, H, W) of the images the model was trained on; None: undeclared, so no shape check is made.
    image_shape: tuple[int, int, int] | None = None
    # Answers captions and has an unconditional (empty) caption: CLiD and CFG need this.
    text_conditioned: bool = False
    # Number of classes of a class-conditional model; None for unconditional and text models.
    num_classes: int | None = None

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the model's working space."""

    @abstractmethod
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The model's working space -> images in [-1, 1]."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A content hash of weights and schedule: keys caches and provenance."""

    def conditions(self, samples: Any) -> Any:
        """Per-sample conditions (class labels, captions) for an ``ImageSet``; None: unconditional."""
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for `genleak data inspect` and result provenance."""
        return {"fingerprint": self.fingerprint()}

    def networks(self) -> list[torch.nn.Module]:
        """The networks a query runs through (what ``optimize`` converts and compiles); default none."""
        return []


class Denoiser(Target):
    """A diffusion target (pixel or latent): noise predictions on a forward-process schedule."""

    alphas_cumprod: torch.Tensor  # (T,) float64 on CPU: \bar{alpha}_t, t = 0..T-1
    num_train_timesteps: int

    @abstractmethod
    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        """Predicted noise for a batch of noisy inputs at timestep(s) ``t``."""

    def eps_at_step(self, x: torch.Tensor, t: int, step: int, cond: Any = None) -> torch.Tensor:
        """The noise prediction a sampler uses at its ``step``-th denoising step (0 = the noisiest).
        Default: ``eps(x, t, cond)``; multi-denoiser targets route by step (DualMD)."""
        return self.eps(x, t, cond)

    def ddim_scheduler(self, num_inference_steps: int) -> Any:
        """A fresh DDIM sampler on this target's schedule. Default: the target cannot be sampled."""
        raise TargetError(f"target {type(self).__name__} has no ddim_scheduler(); it cannot be sampled")

    def null_condition(self, n: int) -> Any:
        """The unconditional input for n samples (CFG, CLiD). Default: none, the target is not text-conditioned."""
        raise TargetError(f"target {type(self).__name__} is not text-conditioned: it has no null condition")

    def with_guidance(self, scale: float) -> Denoiser:
        """The same model answering with classifier-free guidance ``scale``. Default: no CFG, so only 1."""
        if scale == 1.0:
            return self
        raise TargetError(f"guidance_scale={scale} needs a text-conditioned target (this one has no CFG)")

    @property
    def working_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the working space, where samplers draw noise. Default: the image shape."""
        if self.image_shape is None:
            raise TargetError(f"target {type(self).__name__} declares no image_shape")
        return tuple(self.image_shape)


class PixelDiffusion(Denoiser):
    """A diffusion model on pixels: ``encode``/``decode`` are the identity."""

    target_kind: ClassVar[TargetKind] = TargetKind.PIXEL


class LatentDiffusion(Denoiser):
    """A diffusion model on the latents of an autoencoder, optionally class- or text-conditioned."""

    target_kind: ClassVar[TargetKind] = TargetKind.LATENT

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the latents."""

    @property
    def working_shape(self) -> tuple[int, ...]:
        return tuple(self.latent_shape)


class Autoregressive(Target):
    """An image autoregressive model (``genleak.iar``): ``encode`` gives tokens; discrete models
    (VAR, RAR) offer per-token ``logits``, continuous ones (MAR) per-token ``token_losses``."""

    target_kind: ClassVar[TargetKind] = TargetKind.IAR
    discrete: ClassVar[bool] = True
    null_class: int  # the class label that means "no class" (classifier-free guidance)


def optimize(target: Target, *, compile: bool = False, channels_last: bool = False) -> Target:
    """The GPU fast path (``--compile``, channels_last), in place: ``nn.Module.compile`` keeps the
    parameter names, so the fingerprint, and with it every cache key, is unchanged."""
    nets = target.networks()
    if (compile or channels_last) and not nets:
        raise TargetError(f"{type(target).__name__} names no networks to compile or convert")
    for net in nets:
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if compile:
            net.compile()
    return target


def kind_phrase(kind: TargetKind, text: bool = False) -> str:
    """ "a pixel diffusion target", "a text-conditioned latent diffusion target", "an image-autoregressive target"."""
    words = f"text-conditioned {kind.value}" if text else kind.value
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words} target"


def conditions_for(target: Target, samples: Any) -> Any:
    """The per-sample conditions (class labels, captions) ``target`` wants for ``samples``, or None."""
    return target.conditions(samples)


def abar(target: Denoiser, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """\bar{alpha}_t as a tensor broadcastable against ``like`` (shape (N, 1, 1, 1))."""
    ac = target.alphas_cumprod
    if isinstance(t, int):
        value = ac[t].to(dtype=like.dtype, device=like.device)
        return value.expand(like.shape[0]).view(-1, *([1] * (like.ndim - 1)))
    return ac[t.cpu()].to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))


def q_sample(target: Denoiser, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
    """Forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (Ho et al. 2020, eq. 4)."""
    a = abar(target, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def predict_x0(target: Denoiser, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
    """f_theta(x_t, t) = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (DualMD paper, appendix A.1)."""
    a = abar(target, t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def ddim_step(
    target: Denoiser,
    x: torch.Tensor,
    t_from: int,
    t_to: int,
    cond: Any = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from ``t_from`` to ``t_to``, in either direction.

    With ``t_to > t_from`` this is the inversion step phi_theta, with ``t_to < t_from`` the
    denoising step psi_theta of SecMI (Duan et al. 2023; DualMD paper appendix A.1):
    x_{to} = sqrt(abar_to) f_theta(x, t_from) + sqrt(1 - abar_to) eps_theta(x, t_from).
    Costs one denoiser query unless ``eps`` is given.
    """
    if eps is None:
        eps = target.eps(x, t_from, cond)
    x0_hat = predict_x0(target, x, t_from, eps)
    a_to = abar(target, t_to, x)
    return a_to.sqrt() * x0_hat + (1 - a_to).sqrt() * eps


def ddim_invert(
    target: Denoiser, x0: torch.Tensor, t_end: int, interval: int, cond: Any = None
) -> torch.Tensor:
    """Deterministic reverse Phi_theta(x_0, t_end): DDIM inversion 0 -> t_end in steps of ``interval``.

    Queries the denoiser at t = 0, interval, ..., t_end - interval (t_end / interval queries).
    """
    if t_end % interval:
        raise ValueError(f"t_end={t_end} must be a multiple of interval={interval}")
    x = x0
    for t in range(0, t_end, interval):
        x = ddim_step(target, x, t, t + interval, cond)
    return x
