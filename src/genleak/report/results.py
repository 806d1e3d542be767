"""The results folder: ``results.json`` (versioned schema), per-attack scores, ``roc.png``.

Schema (``format: genleak.results``, ``version: 1``) is documented in ``docs/results-schema.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genleak.errors import GenleakError
from genleak.io import atomic_write_json
from genleak.pipeline import RESULTS_FORMAT, RESULTS_VERSION, AuditResult

RESULTS_FILE = "results.json"
ROC_FILE = "roc.png"


def write_results(result: AuditResult, out_dir: str | Path) -> Path:
    """Write ``results.json`` and ``roc.png`` into ``out_dir`` (atomically); return the json path."""
    from genleak.report.plots import plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = {
        a.name: (a.member_scores if a.member_scores.ndim == 1 else a.member_scores[:, 0],
                 a.nonmember_scores if a.nonmember_scores.ndim == 1 else a.nonmember_scores[:, 0])
        for a in result.attacks
        if a.ok and a.member_scores is not None
    }
    if curves:
        plot_roc(curves, out / ROC_FILE, title=f"{result.split['name']}: members vs non-members")
    path = out / RESULTS_FILE
    atomic_write_json(path, result.to_dict())
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results folder or file; refuse unknown formats and versions with a clear message."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise GenleakError(f"no results at '{path}' (expected {RESULTS_FILE}); run `genleak attack` first")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise GenleakError(f"'{p}' is not valid JSON ({err.msg} at line {err.lineno})") from err
    if data.get("format") != RESULTS_FORMAT:
        raise GenleakError(f"'{p}' is not a genleak results file (format={data.get('format')!r})")
    version = data.get("version")
    if version != RESULTS_VERSION:
        raise GenleakError(
            f"'{p}' has results schema version {version}; this genleak reads version {RESULTS_VERSION}"
        )
    return data
