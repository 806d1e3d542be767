"""Sampling from any target: DDIM generation and image-to-image from a partially noised query.

Black-box attacks and quality metrics only ever see a model through what it generates; this module
is the one sampler they use. It drives diffusers' ``DDIMScheduler`` on the target's own noise
schedule (``Denoiser.ddim_scheduler``) and asks the target for noise predictions step by step
through ``Denoiser.eps_at_step(x, t, step, cond)``: plain targets answer ``eps(x, t, cond)``, a
target with several denoisers (``DualTarget``, DualMD paper section 3.4) chooses which denoiser
answers by the step index. So every sampler and every black-box attack works on a DualMD target
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.targets.base import Denoiser

__all__ = ["denoise", "generate", "img2img_timesteps", "sampling_scheduler"]


def sampling_scheduler(target: Denoiser, steps: int) -> Any:
    """A fresh ``DDIMScheduler`` with ``steps`` inference steps on the target's noise schedule."""
    if steps < 1:
        raise GenleakError(f"sampling needs at least 1 step, got {steps}")
    if steps > target.num_train_timesteps:
        raise GenleakError(f"{steps} sampling steps exceed the target's {target.num_train_timesteps} timesteps")
    return target.ddim_scheduler(steps)


def img2img_timesteps(scheduler: Any, steps: int, strength: float) -> list[int]:
    """The timesteps image-to-image runs with ``strength`` s, exactly as diffusers' img2img pipelines:
    the last ``int(steps * s)`` of the ``steps``-step DDIM grid (s = 1: the full grid from pure noise)."""
    if not 0.0 < strength <= 1.0:
        raise GenleakError(f"strength must be in (0, 1], got {strength}")
    init = min(int(steps * strength), steps)
    if init < 1:
        raise GenleakError(f"strength {strength} with {steps} steps runs no denoising step; raise one of them")
    return [int(t) for t in scheduler.timesteps[steps - init :]]


def denoise(
    target: Denoiser,
    x: torch.Tensor,
    timesteps: Sequence[int],
    scheduler: Any,
    cond: Any = None,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run DDIM from ``x`` (at ``timesteps[0]``) through ``timesteps``; returns x_0 in working space.

    Step indices count from 0 at ``timesteps[0]``: a DualMD target answers the first step of every
    call with its first model (what the adaptive attack of appendix A.5 relies on). Costs
    ``len(timesteps)`` denoiser queries per sample.
    """
    for step, t in enumerate(timesteps):
        eps = target.eps_at_step(x, int(t), step, cond)
        x = scheduler.step(eps, int(t), x, eta=eta, generator=generator, return_dict=False)[0]
    return x


def generate(
    target: Denoiser,
    n: int,
    steps: int = 50,
    seed: int = 0,
    *,
    images: torch.Tensor | None = None,
    strength: float = 1.0,
    cond: Any = None,
    eta: float = 0.0,
    batch_size: int = 256,
    progress: bool = False,
    decode: bool = True,
) -> torch.Tensor:
    """Generate ``n`` images in [-1, 1] (NCHW) with ``steps``-step DDIM (Song et al. 2021).

    Without ``images``: from pure noise (``strength`` must be 1). With ``images`` (queries in [-1, 1];
    ``n`` must equal their number): image-to-image, each query noised to the timestep that
    ``strength`` selects and denoised from there (diffusers' img2img convention). Deterministic per
    ``seed`` (and per batch size, since noise is drawn batch by batch in order).
    """
    from tqdm.auto import tqdm

    if n < 1:
        raise GenleakError(f"n must be >= 1, got {n}")
    if images is not None and images.shape[0] != n:
        raise GenleakError(f"image-to-image got {images.shape[0]} query images for n={n}")
    if images is None and strength != 1.0:
        raise GenleakError("strength < 1 needs query images (image-to-image); pass images=")
    scheduler = sampling_scheduler(target, steps)
    timesteps = img2img_timesteps(scheduler, steps, strength)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    out = []
    with torch.inference_mode(), tqdm(total=n, desc="sample", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch_cond = None if cond is None else cond[start:stop]
            if images is None:
                shape = target.working_shape
                x = torch.randn((stop - start, *shape), generator=gen).to(target.device)
            else:
                x0 = target.encode(images[start:stop].to(target.device))
                noise = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
                x = scheduler.add_noise(x0, noise, torch.tensor([timesteps[0]]))
            x = denoise(target, x, timesteps, scheduler, batch_cond, eta=eta, generator=gen)
            out.append((target.decode(x) if decode else x).clamp(-1, 1).to("cpu", torch.float32))
            bar.update(stop - start)
    return torch.cat(out)
