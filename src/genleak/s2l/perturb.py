"""Gaussian parameter perturbation: S2L's third mechanism, privacy amplification without data.

Shake-to-Leak (002, "Mechanism 3") observes that adding Gaussian noise to the weights of a
*small* diffusion model can move it into a nearby local optimum that encodes private data more
strongly, raising MIA success without any knowledge of the private domain; for large models
(SD-v1-1) the same noise reduces leakage. We implement theta' = theta + N(0, s^2) and measure
the before/after MIA metrics on the original split, swept over sigma with several noise draws per
sigma (the effect is random: one draw says little).

Noise scale: with ``scale="relative"`` (default) s = sigma * rms(W) for each parameter tensor W,
so one sigma means the same relative shake for a conv kernel (rms ~ 0.05) and a norm gain
(rms ~ 1); ``scale="absolute"`` uses s = sigma for every tensor. The summary does not name the
paper's choice; relative is the scale-free one and is what our sweeps report.

Picking the best draw *by its AUC on the evaluation split* would peek at the labels; the report
therefore gives mean, min and max over draws, and the mean is the honest number.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.s2l.report import Comparison

__all__ = ["perturb_target", "perturb_module", "perturbation_sweep"]

SCALES = ("relative", "absolute")


def perturb_module(module: torch.nn.Module, sigma: float, *, seed: int = 0, scale: str = "relative") -> torch.nn.Module:
    """A deep copy of ``module`` with Gaussian noise added to every parameter (buffers untouched).

    Each tensor's noise comes from its own generator seeded by (seed, parameter name), so the
    result does not depend on parameter order or on which other tensors exist.
    """
    if scale not in SCALES:
        raise GenleakError(f"scale must be one of {SCALES}, got {scale!r}")
    if not sigma >= 0:
        raise GenleakError(f"sigma must be >= 0, got {sigma}")
    out = copy.deepcopy(module)
    if sigma == 0:
        return out
    with torch.no_grad():
        for name, p in out.named_parameters():
            digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
            gen = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            s = sigma * float(p.detach().float().pow(2).mean().sqrt()) if scale == "relative" else sigma
            p.add_(noise.to(p.device, p.dtype) * s)
    return out


def perturb_target(target: Any, sigma: float, *, seed: int = 0, scale: str = "relative") -> Any:
    """The target with perturbed UNet weights (same scheduler); the original is left untouched."""
    from genleak.targets import DiffusionTarget

    if not isinstance(target, DiffusionTarget):
        raise GenleakError(f"perturbation is implemented for pixel DDPMs; got a {type(target).__name__}")
    return DiffusionTarget(perturb_module(target.unet, sigma, seed=seed, scale=scale), target.scheduler,
                           device=target.device)


def perturbation_sweep(
    target: Any,
    split: Any,
    sigmas: Sequence[float],
    attacks: Sequence[str],
    *,
    draws: int = 3,
    seed: int = 0,
    scale: str = "relative",
    domain: str = "all",
    out_dir: str | Path | None = None,
    attack_params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    command: str = "",
) -> Comparison:
    """Run ``attacks`` on the original target and on ``draws`` perturbed copies per sigma.

    Draw d of sigma s uses noise seed (seed, d): the same draw index shakes in the same direction
    at every sigma, so the sweep shows the effect of the magnitude, not of new random directions.
    """
    from genleak.pipeline import run_attacks
    from genleak.s2l.shake import domain_split

    if draws < 1:
        raise GenleakError(f"draws must be >= 1, got {draws}")
    if not sigmas:
        raise GenleakError("no sigmas to sweep; pass e.g. --sigma 0.001,0.01,0.05")
    eval_split = domain_split(split, domain)
    out = Path(out_dir) if out_dir is not None else None
    common = dict(attack_params=attack_params, seed=seed, batch_size=batch_size, progress=progress)
    base = run_attacks(target, eval_split, list(attacks), None if out is None else out / "base", **common)
    comp = Comparison(
        kind="perturb",
        base=base,
        settings={"sigmas": list(sigmas), "draws": draws, "scale": scale, "seed": seed, "domain": domain,
                  "attacks": list(attacks)},
        command=command,
    )
    for sigma in sigmas:
        for d in range(draws):
            noisy = perturb_target(target, float(sigma), seed=seed * 100_003 + d, scale=scale)
            sub = None if out is None else out / f"sigma{sigma:g}_draw{d}"
            audit = run_attacks(noisy, eval_split, list(attacks), sub, **common)
            comp.add({"sigma": float(sigma), "draw": d}, audit)
    if draws > 1:
        comp.warnings.append("the max over draws picks a draw by its evaluation AUC (label peeking); report the mean")
    return comp
