"""The results folder: ``results.json`` (``genleak.results``' typed schema), per-attack scores, ``roc.png``.

Schema (``format: genleak.results``, ``version: 1``) is documented in ``docs/results-schema.md`` and
typed in ``genleak.results``; this module only adds the folder. ``read_results`` reads a file
through ``AuditResult.from_json`` (format, version and the structure readers rely on, so a damaged
or foreign file fails with one line naming the problem instead of a KeyError deep in a renderer);
every renderer (verdict, HTML, MLflow, the recommendation, verify) takes the typed result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genleak.errors import GenleakError
from genleak.io import atomic_write_json
from genleak.results import (  # noqa: F401  (ATTACK_STATUSES, REQUIRED_METRICS: re-exported for readers)
    ATTACK_STATUSES,
    REQUIRED_METRICS,
    RESULTS_FILE,
    AuditResult,
    RunFailed,
)

ROC_FILE = "roc.png"
SCORES_DIR = "scores"


def write_results(result: AuditResult, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``results.json`` and ``roc.png`` into ``out_dir`` (atomically); return the json path.

    ``extra`` adds optional top-level keys (``settings``, ``audit``, ...) to the dict; it may not
    replace the keys ``AuditResult`` writes. A run where every attack failed raises ``RunFailed``
    and writes nothing.
    """
    from genleak.report.plots import plot_roc

    if result.attacks and not any(a.ok for a in result.attacks):
        # a run with nothing to show must not replace a previous good results.json (or roc.png)
        why = "; ".join(f"{a.name}: {(a.error or '').splitlines()[0] if a.error else '?'}" for a in result.attacks)
        raise RunFailed(f"every attack failed ({why}); nothing written to {out_dir}")
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
    data = result.to_dict()  # (to_json's alias)
    if extra:
        clash = sorted(set(extra) & set(data))
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite the core results keys")
        data.update(extra)
    return save_results(data, out)


def save_results(data: dict[str, Any] | AuditResult, out_dir: str | Path) -> Path:
    """Write a results dict or typed result as ``out_dir/results.json`` atomically, through ``AuditResult``."""
    path = Path(out_dir) / RESULTS_FILE
    result = data if isinstance(data, AuditResult) else AuditResult.from_json(data, str(path))
    atomic_write_json(path, result.to_json())
    return path


def read_results(path: str | Path) -> AuditResult:
    """The typed result of a results folder or file; unknown formats and versions fail with one line."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise GenleakError(f"no results at '{path}' (expected {RESULTS_FILE}); run `genleak attack` or `genleak audit` first")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise GenleakError(f"'{p}' is not valid JSON ({err.msg} at line {err.lineno})") from err
    return AuditResult.from_json(data, str(p))


# ----------------------------------------------------------------------------------------------
# Per-attack scores, as the metrics saw them
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalScores:
    """One attack's member / non-member scores restricted to the evaluation part of the split."""

    member: np.ndarray
    nonmember: np.ndarray


def evaluation_masks(
    member_ids: list[str] | np.ndarray, nonmember_ids: list[str] | np.ndarray, split_info: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the samples the metrics were computed on (all but the calibration hold-out).

    The pipeline may hold out part of each side to calibrate thresholds (``split.calibration``);
    metrics, plots and extra CIs must all use the same remaining samples.
    """
    cal = split_info.get("calibration") or {}
    held_m = {str(i) for i in cal.get("member_ids") or []}
    held_n = {str(i) for i in cal.get("nonmember_ids") or []}
    mask_m = np.array([str(i) not in held_m for i in member_ids], dtype=bool)
    mask_n = np.array([str(i) not in held_n for i in nonmember_ids], dtype=bool)
    return mask_m, mask_n


def load_scores(run_dir: str | Path, result: AuditResult, attack: str) -> EvalScores | str:
    """The evaluation scores of ``attack`` from ``RUN/scores/<attack>.npz``, or why they are unusable.

    Returns a one-line reason (str) when the file is missing or belongs to another target, split
    or config than ``results.json`` says (a stale cache), so a report shows the gap instead of
    plotting numbers that do not belong to the table.
    """
    path = Path(run_dir) / SCORES_DIR / f"{attack}.npz"
    if not path.is_file():
        return f"no scores file {SCORES_DIR}/{attack}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = json.loads(str(z["keys"]))
            ms, ns = z["member_scores"], z["nonmember_scores"]
            mid, nid = z["member_ids"], z["nonmember_ids"]
    except (OSError, KeyError, ValueError) as err:
        return f"{SCORES_DIR}/{attack}.npz is unreadable ({type(err).__name__}: {err})"
    target_fp = result.target.get("fingerprint")
    if keys.get("split") != result.split.get("fingerprint") or (target_fp and keys.get("target") != target_fp):
        return f"{SCORES_DIR}/{attack}.npz belongs to another target or split than results.json"
    config = next((a.description.get("config") for a in result.attacks if a.name == attack), None)
    if config is not None and keys.get("config") != json.dumps(config, sort_keys=True):
        return f"{SCORES_DIR}/{attack}.npz was computed with another config than results.json records"
    if ms.ndim > 1:  # multi-column features: the first column is the attack's score (as in the pipeline)
        ms, ns = ms[:, 0], ns[:, 0]
    mask_m, mask_n = evaluation_masks(list(mid), list(nid), result.split)
    return EvalScores(member=np.asarray(ms[mask_m], dtype=np.float64), nonmember=np.asarray(ns[mask_n], dtype=np.float64))
