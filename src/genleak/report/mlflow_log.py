"""Log a result folder to MLflow: the same metrics as ``results.json`` and the report as artifacts.

mlflow is heavy and optional (``pip install 'genleak[mlflow]'``): it is imported only here, inside
the function, and a missing install is a one-line error. The default store is a local file store
(``./mlruns``); MLflow >= 3.7 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE=true``, which we
set for file URIs only because a file store is what was asked for (``--mlflow-uri sqlite:///...``
or a server URL work too).

Everything comes from ``results.json`` as written, so MLflow, the page and the JSON never differ.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from genleak.errors import GenleakError
from genleak.report.results import RESULTS_FILE, ROC_FILE, SCORES_DIR, read_results
from genleak.report.verdict import compute_verdict
from genleak.results import AuditResult

DEFAULT_EXPERIMENT = "genleak"
# the two-sided view too (metrics module docstring): an AUC of 0.35 is a flipped signal, not privacy
_METRIC_KEYS = ("auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "tpr_at_0_fpr", "asr", "asr_calibrated",
                "leakage_auc", "flipped_tpr_at_1pct_fpr", "flipped_tpr_at_01pct_fpr")
_CI_KEYS = ("auc_ci", "tpr_at_1pct_fpr_ci", "tpr_at_01pct_fpr_ci", "leakage_auc_ci", "flipped_tpr_at_1pct_fpr_ci")
_PARAM_MAX = 500  # MLflow caps param values (6000 chars in 3.x, 500 in older servers)


def default_tracking_uri() -> str:
    return Path("mlruns").resolve().as_uri()


def _normalise_uri(uri: str | None) -> str:
    if not uri:
        return default_tracking_uri()
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        return Path(uri).resolve().as_uri()  # a plain folder: a local file store
    return uri


def _key(text: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / space``; anything else becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def _flatten(prefix: str, obj: Any, out: dict[str, str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[_key(prefix)] = str(obj)[:_PARAM_MAX]


def mlflow_payload(result: AuditResult) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """(params, metrics, tags) for one result; pure, so it is testable without mlflow."""
    params: dict[str, str] = {}
    _flatten("", {"seed": result.seed, "split": {k: v for k, v in result.split.items() if k != "calibration"},
                  "target": result.target, "settings": result.settings or {}}, params)
    metrics: dict[str, float] = {}
    for a in result.attacks:
        name = a.name
        _flatten(f"attack.{name}", a.description.get("config") or {}, params)
        if a.metrics is None:
            metrics[_key(f"{name}.failed")] = 1.0
            continue
        m = {**a.metrics.to_dict(), "asr_calibrated": a.asr_calibrated}
        for k in _METRIC_KEYS:
            if isinstance(m.get(k), int | float):
                metrics[_key(f"{name}.{k}")] = float(m[k])
        for k in _CI_KEYS:
            if m.get(k):
                metrics[_key(f"{name}.{k}_low")] = float(m[k][0])
                metrics[_key(f"{name}.{k}_high")] = float(m[k][1])
        metrics[_key(f"{name}.seconds")] = float(a.seconds)
    for sname, sec in (result.sections or {}).items():
        for k, v in (sec.metrics or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                metrics[_key(f"section.{sname}.{k}")] = float(v)
    verdict = compute_verdict(result)
    tags = {
        "genleak.version": str(result.genleak_version),
        "genleak.command": str(result.command or "")[:5000],
        "genleak.target_fingerprint": str(result.target.get("fingerprint")),
        "genleak.split_fingerprint": str(result.split["fingerprint"]),
        "genleak.verdict": verdict["level"],
        "genleak.verdict_confidence": verdict["confidence"],
    }
    return params, metrics, tags


def log_to_mlflow(
    run_dir: str | Path, *, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> tuple[str, str]:
    """Log ``run_dir``'s results (params, metrics, tags, artifacts) as one MLflow run.

    Returns ``(run_id, tracking_uri)``. Artifacts: results.json, report.html and roc.png when
    present, and the per-attack score files under ``scores/``.
    """
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise GenleakError("--mlflow needs the mlflow package: pip install 'genleak[mlflow]'") from None
    folder = Path(run_dir)
    result = read_results(folder)
    uri = _normalise_uri(tracking_uri)
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    params, metrics, tags = mlflow_payload(result)
    run = client.create_run(exp_id, run_name=run_name or folder.resolve().name, tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        plist = [Param(k, v) for k, v in params.items()]
        mlist = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for i in range(0, len(plist), 100):  # MLflow batch limits: 100 params, 1000 metrics
            client.log_batch(run_id, params=plist[i:i + 100])
        for i in range(0, len(mlist), 1000):
            client.log_batch(run_id, metrics=mlist[i:i + 1000], tags=[RunTag("genleak.results", RESULTS_FILE)])
        for name in (RESULTS_FILE, "report.html", ROC_FILE):
            if (folder / name).is_file():
                client.log_artifact(run_id, str(folder / name))
        if (folder / SCORES_DIR).is_dir():
            client.log_artifacts(run_id, str(folder / SCORES_DIR), artifact_path=SCORES_DIR)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id, uri
