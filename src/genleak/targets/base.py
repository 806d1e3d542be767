"""The target protocol: the only view of a model that attacks get.

Modelled on k-diffusion's denoiser adapters: an attack asks for the predicted noise
``eps(x_t, t, cond)`` and for the forward-process schedule, and never touches the network,
the scheduler class or the latent space directly. Pixel DDPMs, latent diffusion models and
text-conditioned models all implement this protocol; attacks do not branch on target type.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Target(Protocol):
    """What every diffusion target offers to attacks.

    Inputs ``x`` live in the model's *working space*: pixels for a pixel DDPM, VAE latents for a
    latent model. ``encode`` maps images in [-1, 1] (NCHW) to that space and ``decode`` maps back;
    both are the identity for pixel models.
    """

    alphas_cumprod: torch.Tensor  # (T,) float64 on CPU: \bar{alpha}_t, t = 0..T-1
    num_train_timesteps: int
    device: torch.device

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        """Predicted noise for a batch of noisy inputs at timestep(s) ``t``."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the model's working space."""
        ...

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The model's working space -> images in [-1, 1]."""
        ...

    def fingerprint(self) -> str:
        """A content hash of weights and schedule: keys caches and provenance."""
        ...


def working_shape(target: Target) -> tuple[int, ...]:
    """(C, H, W) of the target's working space: its latent shape, else its image shape."""
    shape = getattr(target, "latent_shape", None) or getattr(target, "image_shape", None)
    if shape is None:
        from genleak.errors import TargetError

        raise TargetError(f"target {type(target).__name__} declares neither latent_shape nor image_shape")
    return tuple(shape)


def conditions_for(target: Target, samples: Any) -> Any:
    """The per-sample conditions (class labels, captions) ``target`` wants for ``samples``, or None."""
    conditions = getattr(target, "conditions", None)
    return conditions(samples) if conditions is not None else None


def abar(target: Target, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """\bar{alpha}_t as a tensor broadcastable against ``like`` (shape (N, 1, 1, 1))."""
    ac = target.alphas_cumprod
    if isinstance(t, int):
        value = ac[t].to(dtype=like.dtype, device=like.device)
        return value.expand(like.shape[0]).view(-1, *([1] * (like.ndim - 1)))
    return ac[t.cpu()].to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))


def q_sample(target: Target, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
    """Forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (Ho et al. 2020, eq. 4)."""
    a = abar(target, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def predict_x0(target: Target, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
    """f_theta(x_t, t) = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (DualMD paper, appendix A.1)."""
    a = abar(target, t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def ddim_step(
    target: Target,
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
    target: Target, x0: torch.Tensor, t_end: int, interval: int, cond: Any = None
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
