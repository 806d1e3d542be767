"""The ``genleak`` command line: parses arguments, calls library functions, prints results.

No logic of its own lives here. Each feature area contributes its commands through a
``register(app)`` function in its own ``cli`` module (listed in ``COMMAND_MODULES``); those
modules import torch/diffusers inside the command bodies so ``genleak --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

# Spinning OpenMP waits make multi-threaded torch collapse when another process shares the cores
# (CALIBRATION pitfall, measured 40x); passive waiting costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from genleak.errors import GenleakError

app = typer.Typer(
    name="genleak",
    help="Measure and reduce how much a generative image model leaks its training data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to ``app``; each defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "genleak.core_cli",
    "genleak.inference.cli",
    "genleak.latent_cli",
    "genleak.b4b.cli",
    "genleak.defenses.cli",
    "genleak.report.cli",
    "genleak.extraction.cli",
    "genleak.s2l.cli",
    "genleak.iar.cli",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    """Entry point: run the app, turning user mistakes into one-line errors (exit code 2)."""
    try:
        app(standalone_mode=False)
    except GenleakError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.secho("aborted", err=True)
        sys.exit(130)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        # match by class name: typer >= 0.29 raises its bundled click's exceptions (typer._click),
        # which are not subclasses of the installed click's ClickException
        if any(cls.__name__ == "ClickException" for cls in type(err).__mro__):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
