"""The ``genleak`` command line: parses arguments, calls library functions, prints results.

No logic of its own lives here. Each feature area contributes its commands through a
``register(app)`` function in its own module of this package (listed in ``COMMAND_MODULES``), into
the groups of ``args.GROUPS``; those modules import torch/diffusers inside the command bodies so
``genleak --help`` stays fast. Nothing outside this package imports it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

# Spinning OpenMP waits make multi-threaded torch collapse when another process shares the cores
# (measured 40x slower on the 2-core development machine); passive waiting costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from typer.main import get_command_name

from genleak.errors import GenleakError

app = typer.Typer(
    name="genleak",
    help="Measure and reduce how much a generative image model leaks its training data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands to ``app``; each defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: tuple[str, ...] = tuple(
    f"genleak.cli.{m}" for m in ("core", "inference", "latent", "b4b", "defenses", "report", "extraction", "s2l",
                                 "iar", "sim", "verify")
)


def _register_all(target: typer.Typer = app, modules: tuple[str, ...] = COMMAND_MODULES) -> None:
    """Add every module's commands to ``target``; two commands or groups with one name, at the top or
    inside a group, raise (typer would silently keep only the last one)."""
    for name in modules:
        importlib.import_module(name).register(target)
    duplicates = _duplicates(target)
    if duplicates:
        raise RuntimeError(f"duplicate genleak command names: {', '.join(duplicates)}")


def _duplicates(t: typer.Typer, prefix: str = "") -> list[str]:
    names = [c.name or get_command_name(c.callback.__name__) for c in t.registered_commands]
    names += [g.name or g.typer_instance.info.name for g in t.registered_groups]
    found = sorted({prefix + n for n in names if names.count(n) > 1})
    for g in t.registered_groups:
        found += _duplicates(g.typer_instance, f"{prefix}{g.name} ")
    return found


_register_all()


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (a BaseException, so no
    ``except Exception`` in an attack loop records it as a failed attack and carries on)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    """Entry point: run the app, turning user mistakes into one-line errors (exit code 2), Ctrl-C
    into exit 130 and SIGTERM into exit 143 (128 + signal number, as a shell reports them)."""
    in_main = threading.current_thread() is threading.main_thread()  # signal() works only there
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        # non-standalone typer returns the exit code of typer.Exit, and turns Ctrl-C into Exit(130)
        code = app(standalone_mode=False)
    except GenleakError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(getattr(err, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Terminated:
        typer.secho("terminated (SIGTERM): stopped before finishing; finished files are kept", err=True)
        sys.exit(143)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        # match by class name: typer >= 0.29 raises its bundled click's exceptions (typer._click),
        # which are not subclasses of the installed click's ClickException
        if any(cls.__name__ == "ClickException" for cls in type(err).__mro__):
            err.show()
            sys.exit(err.exit_code)
        raise
    finally:
        if in_main:  # in-process callers (tests) get their own handler back
            signal.signal(signal.SIGTERM, previous)
    if code == 130:
        typer.secho("interrupted (Ctrl-C): stopped before finishing; finished files are kept", err=True)
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


if __name__ == "__main__":
    main()
