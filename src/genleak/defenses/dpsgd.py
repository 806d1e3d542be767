"""DP-SGD training of the target with Opacus (Abadi et al. 2016): the formal-guarantee baseline.

Each step samples members by Poisson sampling with rate q = batch_size / N, clips every member's
gradient to ``max_grad_norm``, adds Gaussian noise of std ``noise_multiplier * max_grad_norm`` and
averages over the expected batch size; an Opacus accountant (RDP by default) tracks the (epsilon,
delta) spent. Give either ``noise_multiplier`` or ``target_epsilon`` (then the noise multiplier is
solved for the planned steps). The EMA of the weights is post-processing of the private iterates
and costs no extra privacy. The guarantee is per member image (one (t, noise) draw per image and
step; no augmentation multiplicity).

Opacus and diffusers' UNet2DModel: ``ModuleValidator.validate`` reports nothing for genleak's
UNets, with or without attention blocks (GroupNorm, Conv2d, Linear and the sinusoidal timestep
projection are all supported by per-sample-gradient hooks; checked in tests/test_defenses.py).
``ModuleValidator.fix`` is needed only for models with BatchNorm (it swaps in GroupNorm); genleak
calls it when validation fails and records what it changed in ``dp.json``.

The loop is ``genleak.train.train_ddpm`` (or ``train_latent`` for a latent ``target=`` folder) with
``DPSGDHooks`` (GradSampleModule + DPOptimizer in ``prepare``, Poisson batches, the accountant in
``after_step`` and in the checkpoint), so a DP run checkpoints and resumes like any other, accountant
included; ``genleak.defenses.make_private`` gives the same hooks to a user's own loop.

The privacy noise must not be replayable: anyone who can regenerate it can subtract it from the
released weights' updates. By default it comes from a generator seeded with OS entropy that is never
written anywhere (not in the record, not in the checkpoint; a resumed run draws fresh entropy) and
Opacus' ``secure_mode`` sampling (the sum of four Gaussians, robust to the floating-point attacks of
arXiv:2107.10138). Opacus' own ``PrivacyEngine(secure_mode=True)`` would need ``torchcsprng``, which
has no build for current torch. ``reproducible_noise=True`` (tests, debugging) seeds the noise from the
run seed and checkpoints it, so a resumed run equals an uninterrupted one; the run record says which.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genleak._extras import needs_extra
from genleak.data import MembershipSplit
from genleak.errors import GenleakError
from genleak.io import atomic_write_json
from genleak.train import TrainConfig, TrainHooks, train_ddpm

with needs_extra("dp"):  # here, so a missing extra stops `defend dpsgd` before anything is trained
    import opacus  # noqa: F401

DP_FILE = "dp.json"


@dataclass
class DPConfig:
    """DP-SGD settings. Exactly one of ``noise_multiplier`` and ``target_epsilon``."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"  # rdp | prv | gdp (Opacus accountants)
    reproducible_noise: bool = False  # seed the noise from the run seed (replayable: tests only)

    @property
    def noise_source(self) -> str:
        return "seed" if self.reproducible_noise else "os_entropy"

    def check(self, n: int) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise GenleakError("DP-SGD needs exactly one of --noise-multiplier and --target-epsilon")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise GenleakError(f"noise multiplier must be >= 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            raise GenleakError(f"target epsilon must be > 0, got {self.target_epsilon}")
        if not 0 < self.delta < 1:
            raise GenleakError(f"delta must be in (0, 1), got {self.delta}")
        if self.delta >= 1 / n:
            raise GenleakError(f"delta={self.delta} is not below 1/N = {1 / n:.3g}; such a guarantee is void, lower --delta")
        if self.max_grad_norm <= 0:
            raise GenleakError(f"max grad norm must be > 0, got {self.max_grad_norm}")
        if self.accountant not in ("rdp", "prv", "gdp"):
            raise GenleakError(f"accountant must be rdp, prv or gdp, got {self.accountant!r}")


class DPSGDHooks(TrainHooks):
    """Opacus per-sample clipping + noise inside ``train_ddpm`` (Poisson sampling, accountant)."""

    accumulates = False  # one Poisson batch per optimiser step is what the accountant counts

    def __init__(self, n: int, batch_size: int, noise_multiplier: float, dp: DPConfig, seed: int = 0) -> None:
        from opacus.accountants import create_accountant

        self.n = n
        self.sample_rate = min(batch_size / n, 1.0)
        self.expected_batch_size = max(1, round(self.sample_rate * n))
        self.noise_multiplier = float(noise_multiplier)
        self.dp = dp
        self.seed = seed
        self.accountant = create_accountant(dp.accountant)
        self.resampled_empty = 0
        self.noise_generator: torch.Generator | None = None  # made in prepare, on the model's device
        self._noise_state: torch.Tensor | None = None  # a reproducible run's checkpointed generator

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise GenleakError(f"model not DP-SGD compatible ({errors[0]}); fix it with opacus' ModuleValidator.fix first")
        gsm = GradSampleModule(model, loss_reduction="mean")
        gen = torch.Generator(device=next(model.parameters()).device)
        if self.dp.reproducible_noise:
            gen.manual_seed(self.seed + 7919)
            if self._noise_state is not None:
                gen.set_state(self._noise_state)
        else:
            gen.manual_seed(secrets.randbits(63))  # OS entropy, kept in memory only
        self.noise_generator = gen
        dp_opt = DPOptimizer(optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=self.dp.max_grad_norm,
                             expected_batch_size=self.expected_batch_size, loss_reduction="mean",
                             generator=gen, secure_mode=not self.dp.reproducible_noise)
        return gsm, dp_opt

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return getattr(model, "_module", model)

    def batch_indices(self, step: int, n: int, generator: torch.Generator) -> torch.Tensor:
        # Poisson sampling (the subsampling the RDP/PRV analyses assume). An empty draw, probability
        # (1 - q)^N (< 1e-9 for q*N >= 21), is redrawn instead of taking a noise-only step.
        while True:
            idx = (torch.rand(n, generator=generator) < self.sample_rate).nonzero().flatten()
            if idx.numel():
                return idx
            self.resampled_empty += 1

    def after_step(self, step: int) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def epsilon(self) -> float:
        if not self.accountant.history:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        return float(self.accountant.get_epsilon(delta=self.dp.delta))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"history": [list(h) for h in self.accountant.history],
                                 "resampled_empty": self.resampled_empty}
        if self.dp.reproducible_noise and self.noise_generator is not None:
            state["noise_generator"] = self.noise_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [tuple(h) for h in state.get("history", [])]
        self.resampled_empty = int(state.get("resampled_empty", 0))
        if self.dp.reproducible_noise:
            self._noise_state = state.get("noise_generator")


def solve_noise_multiplier(dp: DPConfig, sample_rate: float, steps: int) -> float:
    """The noise multiplier that spends ``dp.target_epsilon`` in ``steps`` steps (or the given one)."""
    if dp.noise_multiplier is not None:
        return float(dp.noise_multiplier)
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=dp.target_epsilon, target_delta=dp.delta,
                                      sample_rate=sample_rate, steps=steps, accountant=dp.accountant))


def prepare_unet(unet: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """Run opacus' ``ModuleValidator``; fix what it flags (BatchNorm -> GroupNorm) and say what changed."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(unet, strict=False)
    if not errors:
        return unet, []
    return ModuleValidator.fix(unet), [str(e) for e in errors]


def train_dpsgd(
    split: MembershipSplit,
    config: TrainConfig,
    dp: DPConfig,
    out_dir: str | Path | None,
    *,
    unet: torch.nn.Module | None = None,
    target: str | Path | None = None,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Train the target on ``split``'s members with DP-SGD; returns (target, privacy report).

    With ``target`` (the audited model's folder) the private model is a fresh UNet of its
    architecture, scheduler and conditioning (pixel or latent; ``defenses.from_target``).

    The report (also ``OUT/dp.json``) holds the spent epsilon at ``delta``, the noise multiplier,
    the sample rate, the steps, the accountant and the noise source (also in the training record).
    """
    from genleak.targets import build_unet

    images = split.members.images
    n = images.shape[0]
    dp.check(n)
    if config.batch_size > n:
        raise GenleakError(f"DP-SGD batch size {config.batch_size} exceeds the {n} members; lower --batch-size")
    sample_rate = config.batch_size / n
    sigma = solve_noise_multiplier(dp, sample_rate, config.steps)
    spec = None
    if target is not None:
        from genleak.defenses.from_target import TargetSpec

        spec = TargetSpec.load(target)
        unet = spec.fresh_unet(config.seed) if unet is None else unet
    if unet is None:
        torch.manual_seed(config.seed)
        unet = build_unet(images.shape[-1], images.shape[1], tuple(config.block_out_channels),
                          config.layers_per_block, config.attention)
    unet, fixed = prepare_unet(unet)
    config = dataclasses.replace(config, extra={**config.extra, "defense": "dpsgd", "noise_multiplier": sigma,
                                                "max_grad_norm": dp.max_grad_norm, "delta": dp.delta,
                                                "accountant": dp.accountant, "noise_source": dp.noise_source})
    hooks = DPSGDHooks(n, config.batch_size, sigma, dp, seed=config.seed)
    if spec is not None:
        model = spec.train(split, config, out_dir, unet=unet, hooks=hooks, progress=progress)
    else:
        model = train_ddpm(images, config, out_dir, split_manifest=split.to_manifest(), progress=progress,
                           unet=unet, hooks=hooks)
    # train_ddpm returns only after all config.steps steps (or loads a finished run), so the spent
    # budget is the planned one; computing it from (sigma, q, steps) also covers a loaded run.
    report = {
        "format": "genleak.dp",
        "version": 1,
        "epsilon": spent_epsilon(sigma, sample_rate, config.steps, dp),
        "delta": dp.delta,
        "noise_multiplier": sigma,
        "target_epsilon": dp.target_epsilon,
        "max_grad_norm": dp.max_grad_norm,
        "sample_rate": sample_rate,
        "expected_batch_size": hooks.expected_batch_size,
        "steps": config.steps,
        "accountant": dp.accountant,
        "noise_source": dp.noise_source,
        "secure_mode": not dp.reproducible_noise,
        "members": n,
        "module_fixes": fixed,
        "empty_batches_redrawn": hooks.resampled_empty,
    }
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / DP_FILE, {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                                     for k, v in report.items()})
    return model, report


def spent_epsilon(noise_multiplier: float, sample_rate: float, steps: int, dp: DPConfig) -> float:
    """epsilon at ``dp.delta`` after ``steps`` Poisson-subsampled Gaussian steps (inf without noise)."""
    from opacus.accountants import create_accountant

    if noise_multiplier == 0:
        return math.inf
    accountant = create_accountant(dp.accountant)
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=dp.delta))
