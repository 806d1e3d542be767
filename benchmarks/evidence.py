"""benchmarks/evidence.json: what genleak measured, at what scale, by which command (issue 13 item 5).

The file is ``src/genleak/report/evidence.json`` (the defense recommendation reads it at run time;
``benchmarks/evidence.json`` is a link to it, so there is one file). Entries: ``defenses`` (expected
effects), ``costs``, ``not_recommended`` and ``claims`` (``benchmarks/claims.py`` prints them).

``update_evidence(kind, key, entry)`` merges one entry and writes atomically. A benchmark command
calls ``record_run(argv, out)`` when it finishes: every entry produced by that command (same
script or ``genleak`` subcommand and the same ``--config``) gets ``last_run`` (date, output folder),
so a rerun is visible in the claims table ("rerun <date>: numbers to update") instead of leaving
hand-copied numbers silently stale. ``genleak`` commands cannot import this file: after one, run
``python benchmarks/evidence.py record genleak ...`` with the same command line. ``python
benchmarks/evidence.py`` alone checks that every entry's command parses (``command_problem``).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVIDENCE_FILE = ROOT / "src" / "genleak" / "report" / "evidence.json"
KINDS = ("defenses", "costs", "not_recommended", "claims")
VERDICTS = ("reproduced", "trend", "not reproduced", "not attempted")


def load(path: Path | None = None) -> dict[str, Any]:
    from genleak.report.recommend import load_evidence

    return load_evidence(path or EVIDENCE_FILE)


def entries(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, key, entry) for every entry; claims are keyed by their ``id``."""
    out = [(k, key, e) for k in KINDS[:3] for key, e in doc[k].items()]
    return out + [("claims", c["id"], c) for c in doc["claims"]]


def update_evidence(kind: str, key: str, entry: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """Merge ``entry`` into ``doc[kind][key]`` (claims: the row with ``id == key``) and write atomically."""
    from genleak.io import atomic_write_json

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    p = Path(path or EVIDENCE_FILE)
    doc = load(p)
    if kind == "claims":
        row = next((c for c in doc["claims"] if c["id"] == key), None)
        if row is None:
            doc["claims"].append({"id": key, **entry})
        else:
            row.update(entry)
    else:
        doc[kind][key] = {**doc[kind].get(key, {}), **entry}
    atomic_write_json(p.resolve(), doc)  # resolve: replace the file the link points to, not the link
    return doc


def _argv(command: str) -> list[str]:
    """The command's argv without leading ``VAR=value`` environment assignments."""
    argv = shlex.split(command)
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        argv = argv[1:]
    return argv


def _identity(argv: Sequence[str]) -> tuple[str, ...]:
    """What makes two runs the same measurement: the script or subcommand words and ``--config``."""
    words = [a for a in argv if not a.startswith("-")]
    head = tuple(Path(w).name if w.endswith(".py") else w for w in words[:3])
    config = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    return (*head, f"--config={config}")


def record_run(argv: Sequence[str], out: str | Path | None = None, path: Path | None = None) -> list[str]:
    """Stamp ``last_run`` on every entry the command produced: ``argv`` is a benchmark's ``sys.argv``
    (``benchmarks/X.py ...``) or a ``genleak ...`` command line."""
    full = list(argv) if argv[0] == "genleak" else ["python", *argv]
    me = _identity(full)
    p = Path(path or EVIDENCE_FILE)
    doc, hit = load(p), []
    stamp = {"date": time.strftime("%Y-%m-%d"), "command": shlex.join(full),
             **({"out": str(out)} if out is not None else {})}
    for kind, key, e in entries(doc):
        if any(_identity(_argv(c)) == me for c in e.get("commands") or []):
            e["last_run"] = stamp
            hit.append(f"{kind}.{key}")
    if hit:
        from genleak.io import atomic_write_json

        atomic_write_json(p.resolve(), doc)
        print(f"evidence: rerun recorded for {', '.join(hit)}; update their numbers in {p} "
              f"and run `python benchmarks/claims.py --write`")
    return hit


class _Parsed(Exception):
    pass


def _benchmark_problem(argv: list[str]) -> str | None:
    """Parse ``benchmarks/X.py args`` with the script's own argparse, without running it."""
    script = ROOT / argv[0]
    if not script.is_file():
        return f"no such file {argv[0]}"
    spec = importlib.util.spec_from_file_location(f"_evidence_check_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    original = argparse.ArgumentParser.parse_args

    def parse_only(self: argparse.ArgumentParser, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        original(self, argv[1:], namespace)  # exits 2 (SystemExit) on a bad command line
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse_only  # type: ignore[method-assign]
    try:
        module.main()
    except _Parsed:
        return None
    except SystemExit as err:
        return f"{argv[0]} refuses the arguments (exit {err.code})"
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return f"{argv[0]} ran without parsing its arguments"


def command_problem(command: str) -> str | None:
    """None when ``command`` (``genleak ...`` or ``python benchmarks/X.py ...``) parses, else why not."""
    argv = _argv(command)
    if argv[:1] == ["genleak"]:
        from genleak.cli.parse import command_problem as cli_problem

        return cli_problem(shlex.join(argv))
    if argv[:2] == ["python", "-m"]:
        return None if argv[2:3] == ["pytest"] else f"unknown module command {command!r}"
    if argv[:1] == ["python"] and len(argv) > 1 and argv[1].startswith("benchmarks/"):
        return _benchmark_problem(argv[1:])
    return f"not a genleak or benchmarks command: {command!r}"


if __name__ == "__main__" and sys.argv[1:2] == ["record"]:
    # after a `genleak ...` run that produced entries (the CLI does not import benchmarks/):
    # python benchmarks/evidence.py record genleak defend experiment --config configs/defense_digits8.json ...
    sys.exit(0 if record_run(sys.argv[2:]) else 1)
elif __name__ == "__main__":  # python benchmarks/evidence.py: check every command
    bad = [(k, key, c, why) for k, key, e in entries(load()) for c in e.get("commands") or []
           if (why := command_problem(c))]
    for k, key, c, why in bad:
        print(f"{k}.{key}: {c}: {why}")
    sys.exit(1 if bad else 0)
