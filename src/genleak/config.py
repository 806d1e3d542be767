"""``JsonConfig``: the one way genleak's dataclass configs go to JSON and back; ``read_config``:
the one way a user's config file (``--config``) is read.

Configs are saved in run records and compared with the saved copy to refuse resuming a run under
another config; JSON has no tuples, so tuple fields are written as lists and read back as tuples,
and keys a config does not know (written by another genleak version) are ignored on reading. A
user's file is different: a key genleak does not know is a typo, so ``read_config`` refuses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from genleak.errors import GenleakError

C = TypeVar("C", bound="JsonConfig")
D = TypeVar("D")


class JsonConfig:
    """Mixin for ``@dataclass`` configs: ``to_dict`` (JSON-ready) and ``from_dict`` (its inverse)."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kept = {k: v for k, v in d.items() if k in fields}
        for name, value in kept.items():
            if isinstance(fields[name].default, tuple) and isinstance(value, list):
                kept[name] = tuple(value)
        return cls(**kept)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def strict_from_dict(cls: type[D], d: dict[str, Any], what: str) -> D:
    """``cls(**d)`` for a dataclass config a user wrote: a key it does not know (a typo) or a value its
    constructor refuses is a one-line ``GenleakError`` naming ``what``."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown := sorted(set(d) - known):
        raise GenleakError(f"unknown {what} key(s) {unknown}; known keys: {sorted(known)}")
    try:
        return cls(**d)
    except TypeError as err:
        raise GenleakError(f"bad {what}: {err}") from None


def read_config(path: str | os.PathLike[str], *, known: Iterable[str] | None = None, what: str = "config") -> dict[str, Any]:
    """A user's JSON (or ``.toml``) config file as a dict. A missing file, bad syntax, anything but an
    object at the top, or a top-level key outside ``known`` is a one-line ``GenleakError``."""
    file = Path(path)
    if not file.is_file():
        raise GenleakError(f"{what} '{file}' not found")
    try:
        text = file.read_text(encoding="utf-8")
        if file.suffix.lower() == ".toml":
            import tomllib

            config = tomllib.loads(text)
        else:
            config = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise GenleakError(f"{what} '{file}' is not valid {'TOML' if file.suffix.lower() == '.toml' else 'JSON'} ({err})") from None
    if not isinstance(config, dict):
        raise GenleakError(f"{what} '{file}' must hold an object of settings, not {type(config).__name__}")
    if known is not None and (unknown := sorted(set(config) - set(known))):
        raise GenleakError(f"{what} '{file}' has unknown key(s) {unknown}; known: {sorted(known)}")
    return config
