"""The one trainer (issue 13): every genleak training loop is ``run_loop`` plus a *loss step* for its kind.

Kinds: pixel DDPM and latent UNets (``train.ddpm``, ``train.latent``), the VAE (``train.vae``; its
discriminator is a hook), IAR models and tokenizers (``iar.train``), B4B encoders (``b4b.encoder``,
``b4b.stealing``) and textual inversion (``s2l.textual_inversion``). The loop owns the rest:
resuming from the checkpoint, batch choice (the hooks' or epoch-wise shuffling), backward, optimiser
and learning-rate steps, EMA, the hooks (``after_step``, ``evaluate`` with its early stop) and
checkpoints. Defenses are hooks (DP-SGD, KD, DistillMD, the leakage monitor), so they work on every kind.

It runs on HF accelerate: ``make_accelerator`` passes ``mixed_precision`` and ``grad_accum``
(``gradient_accumulation_steps``) through; one step is ``grad_accum`` micro-batches of ``batch_size``
under ``accelerator.accumulate`` (``accelerator.backward`` divides each loss by ``grad_accum``).
Checkpoints stay genleak's own single file rather than accelerate's ``save_state`` folder: it is
written with one atomic rename, loads with ``weights_only=True`` (no pickled code runs) and is
checked against the config and the training data; resuming is then one ``torch.load``. EMA stays
``runs.ema_update`` (a fixed decay): diffusers' ``EMAModel`` warms its decay up, which would change
every trained model. Random draws happen in the same order as in the loops this replaces, and on
CPU without mixed precision accelerate changes no number, so results are bitwise the same.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.io import atomic_save_torch
from genleak.train.runs import check_accelerate, check_loss, ema_update, load_checkpoint

CHECKPOINT = "checkpoint/state.pt"
_KEYS = ("model", "optimizer", "ema", "generator", "step", "losses", "perm", "cursor")


class TrainHooks:
    """Pluggable pieces of the training loop; the defaults are plain training (Ho et al. 2020 for DDPMs).

    Defenses change *what* is learnt (a teacher's output instead of the true noise: DistillMD, KD)
    or *how* gradients are formed (DP-SGD via Opacus) without copying the loop, so checkpoints,
    resuming, EMA and the output folder stay the same for every model a comparison trains. A hook
    object that holds state (a privacy accountant) saves it through ``state_dict`` into the
    checkpoint. Settings that change the result belong in ``TrainConfig.extra`` so a finished or
    resumed run with other settings is refused.
    """

    # False: the hook's batches or gradients are per optimiser step (DP-SGD's Poisson batches and
    # per-sample clipping, which its accountant counts), so gradient accumulation is refused.
    accumulates: bool = True

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        """Wrap model and optimiser before ``accelerator.prepare`` (e.g. Opacus' GradSampleModule)."""
        return model, optimizer

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The plain model inside what ``prepare`` returned (for EMA, checkpoints, output)."""
        return model

    def batch_indices(self, step: int, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """Rows of the training data for this step, or None for the default epoch-wise shuffling."""
        return None

    def regression_target(
        self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, idx: torch.Tensor, step: int,
        cond: Any = None,
    ) -> torch.Tensor:
        """What eps_theta(x_t, t[, cond]) is regressed on: the true noise (eq. 3 of the DualMD paper).

        ``cond`` is the batch's conditioning as the UNet receives it (text-encoder states for
        text-to-image training, None for unconditional models).
        """
        return noise

    def after_step(self, step: int) -> None:
        """Called after each optimiser step (``step`` counts completed steps)."""

    def evaluate(self, step: int, make_target: Callable[[], Any]) -> bool:
        """Called after ``after_step``; ``make_target()`` builds a target of the weights the run would
        publish now (the EMA when there is one). True stops training here (the run is then published
        as finished at this step: a leakage threshold, ``genleak.defenses.monitor``)."""
        return False

    def record(self) -> dict[str, Any]:
        """Extra JSON entries for the run record (e.g. a leakage curve)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class LoopConfig:
    """The loop's settings, taken from each kind's config."""

    steps: int
    batch_size: int  # rows per micro-batch; a step trains on grad_accum * batch_size rows
    seed: int  # of the generator that draws batches and the loss step's noise (plus the process index)
    ema_decay: float | None = None
    checkpoint_every: int | None = None  # None: no checkpoints (runs of seconds)
    grad_accum: int = 1
    mixed_precision: str = "no"
    drop_last: bool = True  # False: each epoch's last, smaller batch is trained on too


def make_accelerator(loop: LoopConfig, cpu: bool = False) -> Any:
    """An ``accelerate.Accelerator`` with the loop's mixed precision and accumulation, on the CPU when
    ``cpu`` (a kind whose data stays on the CPU) or without CUDA."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    check_accelerate(loop.grad_accum, loop.mixed_precision, "training")
    # accelerate keeps one process-wide state: without a reset, one run's mixed precision would
    # silently carry over into every later run of the process (or refuse a different setting)
    AcceleratorState._reset_state()
    GradientState._reset_state()
    try:
        accelerator = Accelerator(cpu=cpu or not torch.cuda.is_available(), mixed_precision=loop.mixed_precision,
                                  gradient_accumulation_steps=loop.grad_accum)
    except (ValueError, RuntimeError) as err:
        raise GenleakError(f"mixed_precision={loop.mixed_precision!r} is not available here: "
                           f"{str(err).strip().splitlines()[0]}") from None
    if loop.mixed_precision != "no" and not accelerator.native_amp:  # accelerate would train in fp32 silently
        raise GenleakError(f"mixed_precision={loop.mixed_precision!r} is not available on {accelerator.device} "
                           "(fp16 needs a GPU); use bf16 or no")
    return accelerator


def next_batch(hooks: Any, step: int, n: int, batch_size: int, gen: torch.Generator, perm: torch.Tensor,
               cursor: int, drop_last: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows for this step: the hooks' choice, else epoch-wise shuffling (every image once per epoch,
    as benchmarks/RESULTS.md counts epochs). Returns (rows, permutation, cursor) to carry to the next step."""
    idx = hooks.batch_indices(step, n, gen)
    if idx is not None:
        return idx, perm, cursor
    if cursor + (batch_size if drop_last else 1) > n:
        perm, cursor = torch.randperm(n, generator=gen), 0
    return perm[cursor : cursor + min(batch_size, n)], perm, cursor + batch_size


def run_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loop: LoopConfig,
    loss_step: Callable[[Any, torch.Tensor, int, torch.Generator], torch.Tensor],
    *,
    accelerator: Any,
    n: int,
    hooks: TrainHooks | None = None,
    as_target: Callable[[torch.nn.Module], Any] | None = None,
    lr_scheduler: Any = None,
    out: Path | None = None,
    config: dict[str, Any] | None = None,
    data_info: dict[str, Any] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> tuple[torch.nn.Module, list[float], float]:
    """Train until ``loop.steps`` (or a hook's ``evaluate`` stops); returns the plain module to publish
    (the EMA when ``loop.ema_decay``), the losses (one per step, the mean over its micro-batches) and
    this session's seconds.

    ``loss_step(model, rows, step, generator)`` is the kind's loss on training rows ``rows`` (of ``n``);
    ``as_target`` turns a copy of the weights into a target for ``hooks.evaluate``; ``lr_scheduler``
    steps after every optimiser step. With ``out`` and ``loop.checkpoint_every`` the run checkpoints to
    ``out/checkpoint/state.pt`` and resumes from it when ``config`` (the kind's config dict) and
    ``data_info`` (``runs.training_data``) match."""
    from tqdm.auto import tqdm

    hooks = hooks if hooks is not None else TrainHooks()
    if loop.grad_accum > 1 and not hooks.accumulates:
        raise GenleakError(f"{type(hooks).__name__} forms its gradients per optimiser step (DP-SGD); "
                           "train it with grad_accum 1")
    ema = copy.deepcopy(model).requires_grad_(False) if loop.ema_decay else None
    # Each process draws its own batches: the sampler is seeded by (seed, process index).
    gen = torch.Generator().manual_seed(loop.seed + accelerator.process_index)
    step, losses = 0, []
    perm, cursor = torch.randperm(n, generator=gen), 0
    ckpt = out / CHECKPOINT if out is not None and loop.checkpoint_every else None
    if ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt, config or {}, data_info or {}, _KEYS)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if lr_scheduler is not None:
            lr_scheduler.load_state_dict(state["lr_scheduler"])
        gen.set_state(state["generator"])
        step, losses, perm, cursor = state["step"], state["losses"], state["perm"], state["cursor"]
        hooks.load_state_dict(state.get("hooks") or {})

    model, optimizer = hooks.prepare(model, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)

    def _as_target(module: torch.nn.Module) -> Any:
        if as_target is None:
            raise GenleakError(f"{type(hooks).__name__} evaluates targets, which {desc} does not make")
        return as_target(module)

    def plain() -> torch.nn.Module:
        return hooks.unwrap(accelerator.unwrap_model(model))

    def published() -> torch.nn.Module:
        return ema if ema is not None else plain()

    start_time = time.time()
    bar = tqdm(total=loop.steps, initial=step, desc=desc, unit="step", disable=not progress, leave=False)
    while step < loop.steps:
        total = 0.0
        for _ in range(loop.grad_accum):  # the optimiser steps (and zeroes) on the last micro-batch only
            idx, perm, cursor = next_batch(hooks, step, n, loop.batch_size, gen, perm, cursor, loop.drop_last)
            with accelerator.accumulate(model):
                with accelerator.autocast():  # mixed precision also in the loss step's own forward calls
                    loss = loss_step(model, idx, step, gen)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            total += loss.item()
        if lr_scheduler is not None:
            lr_scheduler.step()
        if ema is not None:
            ema_update(ema, plain(), loop.ema_decay)
        step += 1
        hooks.after_step(step)
        losses.append(total / loop.grad_accum)
        check_loss(losses[-1], step)
        stop = hooks.evaluate(step, lambda: _as_target(copy.deepcopy(published()).eval()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if ckpt is not None and accelerator.is_main_process and (step % loop.checkpoint_every == 0
                                                                 or step == loop.steps or stop):
            atomic_save_torch(ckpt, {
                "config": config or {},
                "model": plain().state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                "generator": gen.get_state(),
                "perm": perm, "cursor": cursor, "step": step, "losses": losses, "hooks": hooks.state_dict(),
                **(data_info or {}),
            })
        if stop:
            break
    bar.close()
    return published(), losses, time.time() - start_time
