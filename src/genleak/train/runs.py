"""What every genleak training loop shares: the run record, the finished-run check, EMA.

A training folder is finished when its ``genleak_train.json`` exists (it is written last, after
the model files). Calling a trainer again on a finished folder with the same config and the same
data loads the result instead of retraining; a different config or different data is refused,
never silently mixed. The record and the checkpoint carry the data a run was trained on:
``split_fingerprint`` (``MembershipSplit.fingerprint()`` of the split manifest, None without one)
and ``data_fingerprint`` (sha256 of the training images' ``sample_hash`` values in training order,
comma-joined, plus the captions when there are any).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.targets.folders import TRAIN_RECORD

# Numbers a training config may hold, with the rule each must satisfy; checked on construction and
# again when a trainer starts, so neither the library nor the CLI writes a folder for a run that
# cannot train (a batch of 0 used to train on empty batches and publish NaN weights).
_POSITIVE_INTS = ("steps", "batch_size", "checkpoint_every", "layers_per_block", "num_train_timesteps",
                  "latent_channels", "disc_channels", "tokenizer_steps", "num_classes")
MIXED_PRECISION = ("no", "fp16", "bf16")  # accelerate's choices


def check_config(config: Any) -> None:
    """Raise a one-line ``GenleakError`` for a training number no run can use."""
    name = type(config).__name__
    for key in _POSITIVE_INTS:
        value = getattr(config, key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenleakError(f"{name}: {key} must be an integer >= 1, got {value!r}")
    for key in ("lr", "disc_lr", "tokenizer_lr"):
        value = getattr(config, key, None)
        if (value is not None or key == "lr") and not _finite(value, lambda v: v > 0):
            raise GenleakError(f"{name}: {key} must be a finite number > 0, got {value!r}")
    for key, rule, text in (("ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
                            ("cond_dropout", lambda v: 0 <= v <= 1, "in [0, 1]"),
                            ("weight_decay", lambda v: v >= 0, ">= 0"), ("kl_weight", lambda v: v >= 0, ">= 0"),
                            ("disc_weight", lambda v: v >= 0, ">= 0")):
        value = getattr(config, key, None)
        if value is not None and not _finite(value, rule):
            raise GenleakError(f"{name}: {key} must be a finite number {text}, got {value!r}")
    check_accelerate(getattr(config, "grad_accum", 1), getattr(config, "mixed_precision", "no"), name)
    channels = getattr(config, "block_out_channels", (1,))
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
        raise GenleakError(f"{name}: block_out_channels must be integers >= 1, got {channels!r}")


def check_accelerate(grad_accum: Any, mixed_precision: Any, name: str) -> None:
    """One-line errors for a config's two accelerate settings (gradient accumulation, mixed precision)."""
    if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
        raise GenleakError(f"{name}: grad_accum must be an integer >= 1, got {grad_accum!r}")
    if mixed_precision not in MIXED_PRECISION:
        raise GenleakError(f"{name}: mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                           f"got {mixed_precision!r}")


def _finite(value: Any, rule: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and rule(value)


def output_folder(out_dir: str | Path | None) -> Path | None:
    """``out_dir`` as a Path; an existing file there is refused before anything is written."""
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise GenleakError(f"--out '{out}' is an existing file, not a folder; give a folder path")
    return out


def training_data(images: torch.Tensor, split_manifest: dict[str, Any] | None,
                  captions: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """What a run trains on, as recorded in its run record and checkpoint (see the module doc)."""
    from genleak.data.images import sample_hash
    from genleak.data.split import manifest_fingerprint

    digest = hashlib.sha256(",".join(sample_hash(x) for x in images).encode())
    if captions is not None:
        digest.update(json.dumps([[str(c) for c in caps] for caps in captions]).encode())
    split = manifest_fingerprint(split_manifest) if split_manifest is not None else None
    return {"split_fingerprint": split, "data_fingerprint": digest.hexdigest(), "members": int(images.shape[0])}


def check_same_data(out: Path, recorded: dict[str, Any], data: dict[str, Any], what: str) -> None:
    """Refuse to reuse or resume ``what`` in ``out`` when it was trained on other data (one line, both
    fingerprints); a record without fingerprints (older genleak) counts as other data."""
    for key, label in (("split_fingerprint", "split"), ("data_fingerprint", "member images")):
        old, new = recorded.get(key), data[key]
        if old != new:
            raise GenleakError(f"'{out}' holds a {what} trained on {label} {old or '(not recorded)'}, but this run's "
                               f"{label} is {new or '(none given)'}; use another --out")


def finished_run(out: Path, config: dict[str, Any], what: str = "run", record: str = TRAIN_RECORD,
                 data: dict[str, Any] | None = None) -> bool:
    """True if ``out`` holds a finished run of exactly ``config`` (its ``record`` file, written
    last) on ``data`` (``training_data``); a finished run of another config or data is an error."""
    path = out / record
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GenleakError(f"run record '{path}' is corrupt ({err}); delete the folder and train again") from None
    if not isinstance(saved, dict):
        raise GenleakError(f"run record '{path}' is not a JSON object; delete the folder and train again")
    if saved.get("config") != config:
        raise GenleakError(f"'{out}' already holds a finished {what} with a different config; use another --out")
    if data is not None:
        check_same_data(out, saved, data, f"finished {what}")
    return True


def load_checkpoint(path: Path, config: dict[str, Any], data: dict[str, Any], keys: Sequence[str],
                    what: str = "run") -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (tensors, numbers, lists and
    dicts only: a crafted file cannot run code), checked to be of ``config`` on ``data``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, refused pickle opcode or class, not a torch file at all
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GenleakError(f"checkpoint '{path}' is unreadable ({first}); delete it to start over") from None
    missing = [k for k in ("config", *keys) if not isinstance(state, dict) or k not in state]
    if missing:
        raise GenleakError(f"checkpoint '{path}' is not a genleak {what} checkpoint (no {missing[0]!r}); delete it")
    if state["config"] != config:
        raise GenleakError(f"'{path.parent.parent}' holds a checkpoint of a {what} with a different config; "
                           "use another --out or delete it")
    check_same_data(path.parent.parent, state, data, f"checkpoint of a {what}")
    return state


def check_loss(loss: float, step: int) -> None:
    """Stop (before any checkpoint or model is written) when training has diverged."""
    if not math.isfinite(loss):
        raise GenleakError(f"training diverged at step {step} (loss {loss}); lower --lr")


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - decay)
