"""The diffusion training loop ``train_ddpm`` and ``train_latent`` share (issue 13: one trainer).

Each trainer builds its model, optimiser and data and hands ``run_loop`` a *loss step* for its
kind (pixel: noise the images; latent: sample VAE posteriors, draw captions); the loop owns the rest:
resuming from the atomic checkpoint, batch choice (the hooks' or epoch-wise shuffling), backward,
optimiser step, EMA, the hooks (``after_step``, ``evaluate`` with its early stop) and checkpoints.
Random draws happen in the same order as in the loops this replaces, so results are bitwise the same.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genleak.io import atomic_save_torch
from genleak.train.runs import check_loss, ema_update, load_checkpoint

CHECKPOINT = "checkpoint/state.pt"
_KEYS = ("model", "optimizer", "ema", "generator", "step", "losses", "perm", "cursor")


def next_batch(hooks: Any, step: int, n: int, batch_size: int, gen: torch.Generator, perm: torch.Tensor,
               cursor: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows for this step: the hooks' choice, else epoch-wise shuffling (every image once per epoch,
    as ../shared/CALIBRATION.md counts epochs). Returns (rows, permutation, cursor) to carry to the next step."""
    idx = hooks.batch_indices(step, n, gen)
    if idx is not None:
        return idx, perm, cursor
    if cursor + batch_size > n:
        perm, cursor = torch.randperm(n, generator=gen), 0
    return perm[cursor : cursor + min(batch_size, n)], perm, cursor + batch_size


def run_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Any,
    hooks: Any,
    loss_step: Callable[[Any, torch.Tensor, int, torch.Generator], torch.Tensor],
    as_target: Callable[[torch.nn.Module], Any],
    *,
    accelerator: Any,
    n: int,
    out: Path | None,
    data_info: dict[str, Any],
    desc: str,
    progress: bool,
) -> tuple[torch.nn.Module, list[float], float]:
    """Train until ``config.steps`` (or a hook's ``evaluate`` stops); returns the plain module to publish
    (the EMA when ``config.ema_decay``), the losses and this session's seconds.

    ``loss_step(model, rows, step, generator)`` is the kind's loss on member ``rows``; ``as_target``
    turns a copy of the weights into a target for ``hooks.evaluate``."""
    from tqdm.auto import tqdm

    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay else None
    # Each process draws its own batches: the sampler is seeded by (seed, process index).
    gen = torch.Generator().manual_seed(config.seed * 1000 + accelerator.process_index)
    step, losses = 0, []
    perm, cursor = torch.randperm(n, generator=gen), 0
    ckpt = out / CHECKPOINT if out is not None else None
    if ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt, config.to_dict(), data_info, _KEYS)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        gen.set_state(state["generator"])
        step, losses, perm, cursor = state["step"], state["losses"], state["perm"], state["cursor"]
        hooks.load_state_dict(state.get("hooks") or {})

    model, optimizer = hooks.prepare(model, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)

    def published() -> torch.nn.Module:
        return ema if ema is not None else hooks.unwrap(accelerator.unwrap_model(model))

    start_time = time.time()
    bar = tqdm(total=config.steps, initial=step, desc=desc, unit="step", disable=not progress, leave=False)
    while step < config.steps:
        idx, perm, cursor = next_batch(hooks, step, n, config.batch_size, gen, perm, cursor)
        loss = loss_step(model, idx, step, gen)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        if ema is not None:
            ema_update(ema, hooks.unwrap(accelerator.unwrap_model(model)), config.ema_decay)
        step += 1
        hooks.after_step(step)
        losses.append(loss.item())
        check_loss(losses[-1], step)
        stop = hooks.evaluate(step, lambda: as_target(copy.deepcopy(published()).eval()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if ckpt is not None and accelerator.is_main_process and (step % config.checkpoint_every == 0
                                                                 or step == config.steps or stop):
            atomic_save_torch(ckpt, {
                "config": config.to_dict(),
                "model": hooks.unwrap(accelerator.unwrap_model(model)).state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "generator": gen.get_state(),
                "perm": perm, "cursor": cursor, "step": step, "losses": losses, "hooks": hooks.state_dict(),
                **data_info,
            })
        if stop:
            break
    bar.close()
    return published(), losses, time.time() - start_time
