"""Argument helpers shared by the command modules (``cli.core``, ``cli.defenses``, ...).

Kept free of torch and diffusers at import time: ``genleak --help`` imports every command module.
"""

from __future__ import annotations

import atexit
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from genleak.errors import GenleakError


def split_csv(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` or ``""`` -> ``[]``."""
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def parse_ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers, with a one-line error for anything else."""
    try:
        return tuple(int(v) for v in split_csv(text))
    except ValueError:
        raise GenleakError(f"expected comma-separated integers, got '{text}'") from None


def parse_floats(text: str) -> list[float]:
    """Comma-separated numbers, with a one-line error for anything else."""
    try:
        return [float(v) for v in split_csv(text)]
    except ValueError:
        raise GenleakError(f"expected comma-separated numbers, got '{text}'") from None


def command_line() -> str:
    """The command as the user typed it (for provenance in results files)."""
    return "genleak " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def set_threads(n: int) -> None:
    """``--threads N``: torch CPU threads; 0 keeps torch's default (documented in each --threads help)."""
    if n < 0:
        raise GenleakError(f"--threads must be >= 1 (or 0 for torch's default), got {n}")
    if n:
        import torch

        torch.set_num_threads(n)


def load_checked_split(target: Any, split: Any, allow_mismatch: bool) -> tuple[Any, dict[str, Any]]:
    """Load the split manifest ``split`` and check it against the target folder's recorded training
    split (``pipeline.check_target_split``), warning on stderr when a mismatch is allowed; the one
    split check of ``attack``, ``audit`` and ``infer --split``. Returns (split, check record)."""
    from genleak.data import MembershipSplit
    from genleak.pipeline import check_target_split

    s = MembershipSplit.load(split)
    check = check_target_split(target, s, allow_mismatch=allow_mismatch)
    if check.get("message"):
        typer.secho(f"warning: {check['message']}", err=True, fg=typer.colors.YELLOW)
    return s, check


# The sub-command groups of ``genleak`` and their help; several command modules add to one group
# (``train`` gets ddpm from ``core``, vae/ldm from ``latent``, iar from ``iar``, encoder from ``defenses``).
GROUPS: dict[str, str] = {
    "data": "Build and look at data: membership splits, captions, target and split summaries.",
    "train": "Train target models: pixel DDPM, VAE, latent diffusion, image autoregressive, feature encoder.",
    "report": "Render result folders: an HTML report, a side-by-side comparison.",
    "defend": "Train defended models (disjoint teachers / DualMD, DistillMD, KD, DP-SGD), evaluate and sample them.",
    "extract": "Training-data extraction: generate-and-filter, memorization ranking.",
    "s2l": "Shake-to-Leak: fine-tuning or perturbing the target, then attacking again.",
    "iar": "Image autoregressive models (VAR/RAR/MAR): attacks, dataset inference, extraction, mitigation.",
    "b4b": "The B4B encoder API: serve an encoder with the defense, manage users, simulate stealing.",
}


def group(app: typer.Typer, name: str) -> typer.Typer:
    """The sub-command group ``name`` of ``app`` (one of ``GROUPS``), created on first use."""
    for g in app.registered_groups:
        if g.name == name:
            return g.typer_instance
    sub = typer.Typer(help=GROUPS[name], no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param`` values ``["secmi.t_sec=30", "multiloss.timesteps=[0,100]"]`` ->
    ``{"secmi": {"t_sec": 30}, "multiloss": {...}}``; values are read as JSON when they parse
    (numbers, lists, true/false), else kept as strings."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not eq or not dot or not name or not param:
            raise GenleakError(f"--param {item!r} must look like ATTACK.NAME=VALUE, e.g. secmi.t_sec=30")
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(name.strip(), {})[param.strip()] = parsed
    return out


def default_out(command: str) -> Path:
    """The one rule for default output folders: ``genleak-out/<group>-<command>`` (``genleak-out/<command>``
    for top-level commands), so runs of different commands never overwrite each other."""
    return Path("genleak-out") / command.replace(" ", "-")


def out_option(command: str, what: str) -> Any:
    """``--out`` of a command that writes a folder; ``what`` lists what goes in it."""
    return typer.Option(default_out(command), "--out", help=f"Output folder ({what}).")


def main_process() -> bool:
    """False on the ranks > 0 of a multi-process run (``torchrun`` / ``accelerate launch``; joined here)."""
    from genleak.scoring import distributed_world

    return distributed_world()[1] == 0


def rank_out(out: Path) -> Path:
    """``out`` on the main process; on the other ranks a scratch folder removed at exit: they score their
    share of every chunk and take the same steps (audit sections score too), but each output has one writer."""
    if main_process():
        return out
    scratch = Path(tempfile.mkdtemp(prefix="genleak-rank-"))
    atexit.register(shutil.rmtree, scratch, True)
    return scratch



# The options every scoring command (attack, sweep, audit, infer, iar attack, defend evaluate) shares.
PARAM = typer.Option([], "--param", help="Attack hyperparameter ATTACK.NAME=VALUE (repeatable), e.g. secmi.t_sec=30; "
                     "values are read as JSON when they parse.")
DEVICE = typer.Option(None, "--device", help="torch device (default: cuda if available).")
THREADS = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default).")
BATCH = typer.Option(64, "--batch-size", help="Samples scored per forward pass (a score does not depend on it).")
SEED = typer.Option(0, "--seed", help="Seed of every random choice (noise, resamples, held-out parts).")
PRECISION = typer.Option("fp32", "--precision", help="Dtype of the denoiser queries: fp32, or bf16 / fp16 under "
                         "autocast (faster on GPUs; scores differ slightly and are cached apart).")
COMPILE = typer.Option(False, "--compile", help="torch.compile the target's networks (minutes of compiling; pays "
                       "off on a GPU at thousands of samples).")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="channels_last memory format for the target's "
                             "networks (faster convolutions on recent GPUs).")
CALIBRATION = typer.Option(0.0, "--calibration", help="Fraction of each side of the split held out to calibrate "
                           "the ASR threshold and hyperparameters (metrics use the rest; 0: none).")


class TRAIN:
    """The options every ``genleak train ...`` command shares: the one trainer's settings
    (``genleak.train.loop``), with one name, help text and check each; commands differ only in defaults."""

    @staticmethod
    def steps(default: int) -> Any:
        return typer.Option(default, "--steps", help="Optimiser steps.")

    @staticmethod
    def batch_size(default: int) -> Any:
        return typer.Option(default, "--batch-size", help="Training images per micro-batch.")

    LR = typer.Option(1e-3, "--lr", help="Learning rate (AdamW).")
    EMA = typer.Option(0.995, "--ema", help="EMA decay; 0 disables EMA.")
    GRAD_ACCUM = typer.Option(1, "--grad-accum", help="Micro-batches per optimiser step (accelerate's gradient "
                              "accumulation: a step trains on grad-accum x batch-size images).")
    MIXED_PRECISION = typer.Option("no", "--mixed-precision", help="accelerate's mixed precision: no, fp16 (GPU) "
                                   "or bf16.")
    SEED = SEED
    THREADS = THREADS
