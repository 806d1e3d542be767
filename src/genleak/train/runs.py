"""What every genleak training loop shares: the run record, the finished-run check, EMA.

A training folder is finished when its ``genleak_train.json`` exists (it is written last, after
the model files). Calling a trainer again on a finished folder with the same config loads the
result instead of retraining; a different config is refused, never silently mixed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genleak.errors import GenleakError

TRAIN_RECORD = "genleak_train.json"


def finished_run(out: Path, config: dict[str, Any], what: str = "run", record: str = TRAIN_RECORD) -> bool:
    """True if ``out`` holds a finished run of exactly ``config`` (its ``record`` file, written
    last); a finished run of another config is an error."""
    path = out / record
    if not path.is_file():
        return False
    if json.loads(path.read_text()).get("config") != config:
        raise GenleakError(f"'{out}' already holds a finished {what} with a different config; use another --out")
    return True


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - decay)
