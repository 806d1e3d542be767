"""Optional dependencies: a feature used without its pip extra fails with one line naming the extra.

``pip install genleak`` installs what the core audit needs; the B4B service (``serve``), DP-SGD
(``dp``) and MLflow logging (``mlflow``) have extras (pyproject.toml). Wrap their imports::

    with needs_extra("serve"):
        from fastapi import FastAPI
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from genleak.errors import GenleakError

__all__ = ["MissingExtraError", "needs_extra"]


class MissingExtraError(GenleakError):
    """An optional dependency is not installed; the message names the extra that installs it."""


@contextmanager
def needs_extra(extra: str) -> Iterator[None]:
    """Turn an ImportError inside the block into a :class:`MissingExtraError` naming ``extra``."""
    try:
        yield
    except ImportError as err:
        # err.name is the module that failed (a dependency of the extra's package may be the one missing)
        raise MissingExtraError(
            f"{err.name or 'an optional package'} is not installed; it comes with the '{extra}' extra: "
            f"pip install 'genleak[{extra}]'"
        ) from err
