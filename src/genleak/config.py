"""``JsonConfig``: the one way genleak's dataclass configs go to JSON and back.

Configs are saved in run records and compared with the saved copy to refuse resuming a run under
another config; JSON has no tuples, so tuple fields are written as lists and read back as tuples,
and keys a config does not know (written by another genleak version) are ignored on reading.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C", bound="JsonConfig")


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
