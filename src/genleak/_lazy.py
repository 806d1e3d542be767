"""Lazy package exports, so that `genleak --help` (which imports every command module, and so
every package ``__init__``) does not import torch and diffusers.

A package calls ``lazy_exports(__name__, {"name": "genleak.pkg.module", ...})``; ``pkg.name``
imports its module on first use (PEP 562). Several exports share their name with the submodule
that defines them (``genleak.extraction.extract``): importing such a submodule would rebind the
package attribute to the module object, so the package refuses that rebinding and keeps the
export, which is what the eager ``from .extract import extract`` it replaces gave.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _LazyPackage(types.ModuleType):
    _lazy_exports: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__.get("_lazy_exports", {}).get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        types.ModuleType.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_lazy_exports", {}):
            return  # a submodule named like an export: keep the export (see the module docstring)
        types.ModuleType.__setattr__(self, name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.__dict__.get("_lazy_exports", {})})


def lazy_exports(package: str, exports: dict[str, str]) -> None:
    """Make ``exports`` (name -> defining module) attributes of ``package`` resolved on first use."""
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    types.ModuleType.__setattr__(module, "_lazy_exports", dict(exports))
