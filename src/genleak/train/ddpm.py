"""Train a pixel DDPM target on a split's members, on HF ``accelerate`` (CPU, one or many GPUs).

Resumable: a checkpoint (model, optimiser, EMA, step, sampler RNG) is written atomically every
``checkpoint_every`` steps; rerunning the same command continues from it. The result is a standard
diffusers ``DDPMPipeline`` folder plus ``genleak_train.json`` (config, split fingerprint, losses),
which is written last and marks the folder as complete.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genleak.config import JsonConfig
from genleak.errors import GenleakError
from genleak.io import atomic_write_json, publish_folder
from genleak.targets.ddpm import DiffusionTarget, build_unet, default_scheduler
from genleak.targets.folders import TARGET_SPLIT_FILE, TRAIN_RECORD
from genleak.train.loop import (  # noqa: F401  (TrainHooks, CHECKPOINT, next_batch: this module's public names)
    CHECKPOINT,
    LoopConfig,
    TrainHooks,
    make_accelerator,
    next_batch,
    run_loop,
)
from genleak.train.runs import check_config, finished_run, output_folder, training_data


@dataclass
class TrainConfig(JsonConfig):
    """Training hyperparameters. Defaults: the tiny overfit setup of the test fixtures (tests/conftest.py)."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    block_out_channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    attention: bool = False
    num_train_timesteps: int = 1000
    ema_decay: float | None = None  # e.g. 0.999; None trains without EMA
    seed: int = 0
    checkpoint_every: int = 250
    weight_decay: float = 0.01  # AdamW default
    grad_accum: int = 1  # micro-batches of batch_size per optimiser step (accelerate)
    mixed_precision: str = "no"  # accelerate's "no", "fp16" (GPU) or "bf16"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_config(self)


def train_ddpm(
    images: torch.Tensor,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    split_manifest: dict[str, Any] | None = None,
    progress: bool = True,
    unet: torch.nn.Module | None = None,
    hooks: TrainHooks | None = None,
    scheduler: Any = None,
    labels: torch.Tensor | None = None,
) -> DiffusionTarget:
    """Train (or continue training) a DDPM on ``images`` in [-1, 1] (N, C, H, W).

    With ``out_dir`` the run checkpoints there and resumes from an existing checkpoint; a folder
    already holding a finished run with the same config is loaded instead of retrained. ``unet``
    starts from given weights (fine-tuning) instead of a fresh ``build_unet``. ``hooks`` replaces
    parts of the loop (batch choice, regression target, gradient privatisation; see ``TrainHooks``).
    ``scheduler`` (any diffusers scheduler with ``alphas_cumprod``, e.g. the audited model's) replaces
    ``default_scheduler``; ``labels`` (N,) are class labels for a class-conditional ``unet``.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise GenleakError(f"training needs a non-empty (N, C, H, W) image tensor, got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise GenleakError(f"training needs square images, got {tuple(images.shape[-2:])}")
    check_config(config)
    out = output_folder(out_dir)
    data_info = training_data(images, split_manifest) if out is not None else {}
    if out is not None and finished_run(out, config.to_dict(), data=data_info):
        return DiffusionTarget.from_pretrained(out)

    loop = LoopConfig(config.steps, config.batch_size, config.seed * 1000, config.ema_decay, config.checkpoint_every,
                      config.grad_accum, config.mixed_precision)
    accelerator = make_accelerator(loop)
    torch.manual_seed(config.seed)
    model = unet if unet is not None else build_unet(
        images.shape[-1], images.shape[1], tuple(config.block_out_channels), config.layers_per_block, config.attention
    )
    model.train()
    scheduler = scheduler if scheduler is not None else default_scheduler(config.num_train_timesteps)
    if labels is not None and len(labels) != images.shape[0]:
        raise GenleakError(f"{len(labels)} class labels for {images.shape[0]} images")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    hooks = hooks if hooks is not None else TrainHooks()
    data = images.to(accelerator.device)
    classes = torch.as_tensor(labels, dtype=torch.long).to(accelerator.device) if labels is not None else None
    acp = scheduler.alphas_cumprod.to(accelerator.device, torch.float32)
    T = int(scheduler.config.num_train_timesteps)

    def loss_step(model: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        """Ho et al. 2020's loss: ||eps_theta(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t[, y]) - target||^2."""
        x0 = data[idx.to(data.device)]
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        t = torch.randint(0, T, (x0.shape[0],), generator=gen).to(x0.device)
        a = acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = classes[idx.to(data.device)] if classes is not None else None
        pred = model(x_t, t, return_dict=False, **({"class_labels": cond} if cond is not None else {}))[0]
        return torch.nn.functional.mse_loss(pred, hooks.regression_target(x_t, t, noise, idx, step, cond=cond))

    final, losses, seconds = run_loop(
        model, optimizer, loop, loss_step, accelerator=accelerator, n=images.shape[0], hooks=hooks,
        as_target=lambda m: DiffusionTarget(m, scheduler, device=accelerator.device), out=out,
        config=config.to_dict(), data_info=data_info, desc="train", progress=progress)
    target = DiffusionTarget(copy.deepcopy(final).eval(), scheduler)
    if out is not None and accelerator.is_main_process:
        _save_run(target, out, config, losses, seconds, split_manifest, {**data_info, **hooks.record()})
    return target


def _save_run(
    target: DiffusionTarget,
    out: Path,
    config: TrainConfig,
    losses: list[float],
    seconds: float,
    split_manifest: dict[str, Any] | None,
    data_info: dict[str, Any],
) -> None:
    """Write the pipeline folder via a staging directory, then the run record last (``data_info``:
    the training data's fingerprints and the hooks' ``record()``)."""
    publish_folder(out, target.save_pretrained)
    if split_manifest is not None:
        atomic_write_json(out / TARGET_SPLIT_FILE, split_manifest)
    atomic_write_json(
        out / TRAIN_RECORD,
        {
            "format": "genleak.train",
            "version": 1,
            "config": config.to_dict(),
            "steps": len(losses),
            "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
            "train_seconds_this_session": round(seconds, 2),
            "fingerprint": target.fingerprint(),
            **data_info,
        },
    )
