"""The results folder: ``results.json`` (versioned schema), per-attack scores, ``roc.png``.

Schema (``format: genleak.results``, ``version: 1``) is documented in ``docs/results-schema.md``.
Version 1 has optional top-level keys added over time (``settings``, ``audit``, ``sections``,
``verdict``); readers must treat a missing optional key as "not recorded", never as an error.
``load_results`` checks the format, the version and the structure readers rely on, so a damaged
or foreign file fails with one line naming the problem instead of a KeyError deep in a renderer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genleak.errors import GenleakError
from genleak.io import atomic_write_json
from genleak.pipeline import RESULTS_FORMAT, RESULTS_VERSION, AuditResult, RunFailed

RESULTS_FILE = "results.json"
ROC_FILE = "roc.png"
SCORES_DIR = "scores"

# Keys every attack's ``metrics`` holds (written by ``MetricReport.to_dict``); renderers rely on them.
REQUIRED_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "tpr_at_0_fpr", "asr", "n_members", "n_nonmembers")
ATTACK_STATUSES = ("ok", "failed")


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
    data = result.to_dict()
    if extra:
        clash = sorted(set(extra) & set(data))
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite the core results keys")
        data.update(extra)
    return save_results(data, out)


def save_results(data: dict[str, Any], out_dir: str | Path) -> Path:
    """Validate a results dict and write it as ``out_dir/results.json`` atomically."""
    path = Path(out_dir) / RESULTS_FILE
    validate_results(data, str(path))
    atomic_write_json(path, data)
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results folder or file; refuse unknown formats and versions with a clear message."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise GenleakError(f"no results at '{path}' (expected {RESULTS_FILE}); run `genleak attack` or `genleak audit` first")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise GenleakError(f"'{p}' is not valid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else None
        raise GenleakError(f"'{p}' is not a genleak results file (format={fmt!r})")
    version = data.get("version")
    if version is None:
        raise GenleakError(f"'{p}' has no results schema version; this genleak reads version {RESULTS_VERSION}")
    if version != RESULTS_VERSION:
        import genleak

        hint = ("it was written by a newer genleak: upgrade genleak" if isinstance(version, int) and version > RESULTS_VERSION
                else "rerun `genleak attack` or `genleak audit` to rewrite it")
        raise GenleakError(
            f"'{p}' has results schema version {version}; genleak {genleak.__version__} reads only version "
            f"{RESULTS_VERSION} ({hint})"
        )
    validate_results(data, str(p))
    return data


def validate_results(data: dict[str, Any], where: str = RESULTS_FILE) -> None:
    """Check the structure renderers rely on (docs/results-schema.md); raise one clear GenleakError."""

    def bad(msg: str) -> GenleakError:
        return GenleakError(f"'{where}' is damaged: {msg}")

    for key, kind in (("target", dict), ("split", dict), ("attacks", dict), ("seed", int)):
        if not isinstance(data.get(key), kind):
            raise bad(f"'{key}' is missing or not a {kind.__name__}")
    for key in ("name", "fingerprint", "n_members", "n_nonmembers"):
        if key not in data["split"]:
            raise bad(f"split.{key} is missing")
    for name, a in data["attacks"].items():
        if not isinstance(a, dict):
            raise bad(f"attacks.{name} is not an object")
        status = a.get("status")
        if status not in ATTACK_STATUSES:
            raise bad(f"attacks.{name}.status is {status!r}, expected one of {list(ATTACK_STATUSES)}")
        if status == "failed" and not isinstance(a.get("error"), str):
            raise bad(f"attacks.{name} failed but records no error")
        if status == "ok":
            metrics = a.get("metrics")
            if not isinstance(metrics, dict):
                raise bad(f"attacks.{name}.status is 'ok' but it has no metrics")
            missing = [k for k in REQUIRED_METRICS if not isinstance(metrics.get(k), int | float)]
            if missing:
                raise bad(f"attacks.{name}.metrics lacks {missing}")
    sections = data.get("sections")
    if sections is not None:
        if not isinstance(sections, dict):
            raise bad("'sections' is not an object")
        for name, sec in sections.items():
            if not isinstance(sec, dict) or sec.get("status") not in ("ok", "failed", "skipped"):
                raise bad(f"sections.{name} needs a status of 'ok', 'failed' or 'skipped'")


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


def load_scores(run_dir: str | Path, data: dict[str, Any], attack: str) -> EvalScores | str:
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
    target_fp = (data.get("target") or {}).get("fingerprint")
    if keys.get("split") != data["split"].get("fingerprint") or (target_fp and keys.get("target") != target_fp):
        return f"{SCORES_DIR}/{attack}.npz belongs to another target or split than results.json"
    config = (data["attacks"].get(attack) or {}).get("config")
    if config is not None and keys.get("config") != json.dumps(config, sort_keys=True):
        return f"{SCORES_DIR}/{attack}.npz was computed with another config than results.json records"
    if ms.ndim > 1:  # multi-column features: the first column is the attack's score (as in the pipeline)
        ms, ns = ms[:, 0], ns[:, 0]
    mask_m, mask_n = evaluation_masks(list(mid), list(nid), data["split"])
    return EvalScores(member=np.asarray(ms[mask_m], dtype=np.float64), nonmember=np.asarray(ns[mask_n], dtype=np.float64))
