"""Parse a ``genleak ...`` command line against the command tree without running it.

The defense recommendation (``genleak.report.recommend``) prints commands; it sits below the CLI,
so the tests check with ``parse_command`` that every command it can print parses.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any


def _cli_tree() -> Any:
    """The root command of the ``genleak`` CLI as typer builds it (typer may vendor its own click)."""
    import typer.main

    from genleak.cli import app

    return typer.main.get_command(app)


def _is_group(cmd: Any) -> bool:
    return callable(getattr(cmd, "get_command", None)) and callable(getattr(cmd, "list_commands", None))


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception types the CLI raises for a bad command line (typer's, and click's when separate)."""
    import importlib

    found: list[type[BaseException]] = [ValueError]
    for module, name in (("typer", "TyperException"), ("click", "ClickException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def parse_command(command: str | Sequence[str]) -> Any:
    """Parse a ``genleak ...`` command line against the CLI's command tree without running it.

    Returns the leaf command's context (its ``params`` hold the converted option values). Raises
    ``ValueError`` (not a genleak command, unknown subcommand) or the CLI's usage error (unknown
    option, missing required option, bad value). Types and required options are checked; paths are
    not opened (the outputs a recommendation names do not exist yet).
    """
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv or argv[0] != "genleak":
        raise ValueError(f"not a genleak command: {command!r}")
    cmd = _cli_tree()
    name, rest, parent = "genleak", argv[1:], None
    while _is_group(cmd):
        ctx = cmd.context_class(cmd, info_name=name, parent=parent)
        if not rest or rest[0].startswith("-"):
            raise ValueError(f"'{' '.join(argv[: len(argv) - len(rest)])}' needs a subcommand")
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            raise ValueError(f"no such command '{rest[0]}' in '{' '.join(argv[: len(argv) - len(rest)])}'")
        name, rest, parent, cmd = rest[0], rest[1:], ctx, sub
    return cmd.make_context(name, list(rest), parent=parent)


def command_problem(command: str) -> str | None:
    """None when ``command`` parses (``parse_command``), else the one-line reason."""
    try:
        parse_command(command)
    except _usage_errors() as err:
        fmt = getattr(err, "format_message", None)
        return fmt() if callable(fmt) else str(err)
    return None
