"""What an audit section is (``SectionSpec``) and how one says it does not apply (``SectionSkipped``).

``genleak.audit`` runs the sections named by the entry points of group ``genleak.audit_sections``
(pyproject.toml), each a ``SectionSpec``; they live here, below the audit, so that a section in any
package (the defense recommendation in ``report``, a plug-in) defines one without importing the audit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genleak.errors import GenleakError

SectionFn = Callable[[Any, Any, Path], dict[str, Any]]


class SectionSkipped(GenleakError):
    """Raised by a section that does not apply to this target or split (recorded, not an error)."""


@dataclass(frozen=True)
class SectionSpec:
    """``fn(target, split, out) -> dict`` shown as ``title``; ``default=False`` runs only when named
    (``--sections``); sections run in ``order``, then by name."""

    name: str
    fn: SectionFn
    title: str
    kind: str = "other"
    default: bool = True
    order: int = 100
