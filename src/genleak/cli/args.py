"""Argument helpers shared by the command modules (``cli.core``, ``cli.defenses``, ...).

Kept free of torch and diffusers at import time: ``genleak --help`` imports every command module.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

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
    import typer

    from genleak.data import MembershipSplit
    from genleak.pipeline import check_target_split

    s = MembershipSplit.load(split)
    check = check_target_split(target, s, allow_mismatch=allow_mismatch)
    if check.get("message"):
        typer.secho(f"warning: {check['message']}", err=True, fg=typer.colors.YELLOW)
    return s, check
