"""Run attacks against a target on a membership split: scores -> metrics -> result folder.

This is the one place the flow split -> target -> attack -> scores -> evaluation is wired. Each
attack's per-sample scores are cached in ``OUT/scores/<attack>.npz`` together with the keys they
depend on (target fingerprint, split fingerprint, attack config, seed); a rerun after a crash
recomputes only what is missing, and a changed key recomputes instead of reusing stale scores.
Score files of another target or split are deleted when a run starts (so no report, MLflow upload
or ``genleak verify`` ever reads them), and an unreadable one is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import genleak
from genleak.attacks import get_attack
from genleak.attacks.base import check_compatible
from genleak.data import MembershipSplit
from genleak.errors import GenleakError
from genleak.io import atomic_save_npz
from genleak.metrics import MetricReport, asr_calibrated, evaluate, fpr_resolution_warning
from genleak.targets.base import Target, conditions_for

RESULTS_FORMAT = "genleak.results"
RESULTS_VERSION = 1
TARGET_SPLIT_FILE = "split.json"  # the training split manifest a target folder records (train/ddpm.py)


class RunFailed(GenleakError):
    """Every attack of a run failed: nothing is written and the command exits 1 (not a usage error)."""

    exit_code = 1


@dataclass
class AttackResult:
    """One attack's outcome on one split: scores, metrics, cost; or the error that stopped it."""

    name: str
    description: dict[str, Any]
    member_scores: np.ndarray | None = None
    nonmember_scores: np.ndarray | None = None
    metrics: MetricReport | None = None
    asr_calibrated: float | None = None
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **self.description,
            "status": "ok" if self.ok else "failed",
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }
        if self.member_scores is not None and self.nonmember_scores is not None:
            d["scores_sha256"] = scores_sha256(self.member_scores, self.nonmember_scores)
        if self.metrics is not None:
            d["metrics"] = self.metrics.to_dict()
            d["metrics"]["asr_calibrated"] = self.asr_calibrated
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class AuditResult:
    """Everything ``results.json`` holds: provenance, the split, and one entry per attack."""

    target: dict[str, Any]
    split: dict[str, Any]
    attacks: list[AttackResult]
    seed: int
    command: str = ""
    bootstrap: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "genleak_version": genleak.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
            "machine": machine_info(),
            "seed": self.seed,
            "bootstrap": self.bootstrap,
            "target": self.target,
            "split": self.split,
            "attacks": {a.name: a.to_dict() for a in self.attacks},
        }

    def metric(self, attack: str, name: str = "auc") -> float:
        for a in self.attacks:
            if a.name == attack and a.metrics is not None:
                return float(getattr(a.metrics, name))
        raise KeyError(f"no successful result for attack '{attack}'")


def scores_sha256(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> str:
    """sha256 of the saved score arrays (dtype, shape and bytes): results.json names the exact scores
    its metrics came from, so an edited ``scores/*.npz`` is caught even where no metric moves."""
    h = hashlib.sha256()
    for a in (member_scores, nonmember_scores):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def machine_info() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }


def split_summary(split: MembershipSplit) -> dict[str, Any]:
    return {
        "name": split.name,
        "fingerprint": split.fingerprint(),
        "source": split.source,
        "n_members": len(split.members),
        "n_nonmembers": len(split.nonmembers),
        "image_shape": list(split.members.shape),
        "seed": split.seed,
    }


def run_attacks(
    target: Target,
    split: MembershipSplit,
    attacks: list[str] | tuple[str, ...],
    out_dir: str | Path | None = None,
    *,
    attack_params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    bootstrap: int = 0,
    progress: bool = True,
    command: str = "",
    fail_fast: bool = False,
    calibration_fraction: float = 0.0,
) -> AuditResult:
    """Score members and non-members with each attack and evaluate with ``genleak.metrics``.

    With ``calibration_fraction`` > 0 a seeded random part of each side is held out as a
    calibration split: the ASR threshold is fixed there (``asr_calibrated``) and every metric is
    computed on the remaining evaluation part only, so nothing is tuned on the evaluation labels.

    An attack that raises is recorded as failed (with its error) and the others still run, unless
    ``fail_fast``; input errors (bad split, wrong shapes) are raised before any attack starts.
    """
    split.validate()
    check_compatible(target, split.members.images)
    if not attacks:
        raise GenleakError("no attacks given; choose from genleak.attacks.available_attacks()")
    instances = [get_attack(name, **(attack_params or {}).get(name, {})) for name in attacks]
    out = Path(out_dir) if out_dir is not None else None
    if not 0.0 <= calibration_fraction < 1.0:
        raise GenleakError(f"calibration_fraction must be in [0, 1), got {calibration_fraction}")
    split_info = split_summary(split)
    cal_m, eval_m = _calibration_indices(len(split.members), calibration_fraction, seed, "members")
    cal_n, eval_n = _calibration_indices(len(split.nonmembers), calibration_fraction, seed, "nonmembers")
    split_info["calibration"] = {
        "fraction": calibration_fraction,
        "n_members": len(cal_m),
        "n_nonmembers": len(cal_n),
        "member_ids": [split.members.ids[i] for i in cal_m],
        "nonmember_ids": [split.nonmembers.ids[i] for i in cal_n],
    }
    target_info = target.describe()
    if out is not None:
        _drop_stale_scores(out / "scores", target.fingerprint(), split_info["fingerprint"])
    results: list[AttackResult] = []
    for attack in instances:
        desc = attack.describe()
        res = AttackResult(name=attack.name, description=desc)
        keys = {
            "target": target.fingerprint(),
            "split": split_info["fingerprint"],
            "config": json.dumps(desc["config"], sort_keys=True),
            "seed": seed,
        }
        cache = out / "scores" / f"{attack.name}.npz" if out is not None else None
        start = time.perf_counter()
        try:
            cached = _load_scores(cache, keys) if cache is not None else None
            if cached is not None:
                res.member_scores, res.nonmember_scores, res.seconds = cached
            else:
                common = dict(batch_size=batch_size, seed=seed, progress=progress)
                sm = attack.score(target, split.members.images, split.members.ids, cond=conditions_for(target, split.members), desc=f"{attack.name} members", **common)
                sn = attack.score(target, split.nonmembers.images, split.nonmembers.ids, cond=conditions_for(target, split.nonmembers), desc=f"{attack.name} non-members", **common)
                res.member_scores, res.nonmember_scores = sm.numpy(), sn.numpy()
                res.seconds = time.perf_counter() - start
                if cache is not None:
                    atomic_save_npz(
                        cache,
                        member_scores=res.member_scores,
                        nonmember_scores=res.nonmember_scores,
                        member_ids=np.array(split.members.ids),
                        nonmember_ids=np.array(split.nonmembers.ids),
                        keys=np.array(json.dumps(keys)),
                        seconds=np.array(res.seconds),
                    )
            res.metrics, res.asr_calibrated = score_metrics(res.member_scores, res.nonmember_scores, (eval_m, eval_n),
                                                            (cal_m, cal_n), bootstrap=bootstrap, seed=seed)
            for alpha in (0.01, 0.001):
                warning = fpr_resolution_warning(len(res.nonmember_scores), alpha)
                if warning:
                    res.warnings.append(warning)
        except GenleakError:
            raise
        except Exception as err:  # an attack bug must not lose the other attacks' results
            if fail_fast:
                raise
            res.error = f"{type(err).__name__}: {err}"
            res.warnings.append(traceback.format_exc(limit=3))
        results.append(res)
    return AuditResult(target=target_info, split=split_info, attacks=results, seed=seed, command=command,
                       bootstrap=bootstrap)


def score_metrics(member_scores: np.ndarray, nonmember_scores: np.ndarray, evaluation: tuple[Any, Any],
                  calibration: tuple[Any, Any], *, bootstrap: int, seed: int) -> tuple[MetricReport, float | None]:
    """One attack's metrics on the evaluation part and its calibrated ASR (None without a calibration
    part); ``evaluation`` / ``calibration`` index (or mask) members and non-members. Multi-column
    scores: the first column is the attack's score. ``genleak verify`` recomputes with this too."""
    ms, ns = member_scores, nonmember_scores
    if ms.ndim > 1:
        ms, ns = ms[:, 0], ns[:, 0]
    em, en = ms[evaluation[0]], ns[evaluation[1]]
    cm, cn = ms[calibration[0]], ns[calibration[1]]
    report = evaluate(em, en, bootstrap=bootstrap, seed=seed)
    return report, (asr_calibrated(cm, cn, em, en) if len(cm) and len(cn) else None)


def _calibration_indices(n: int, fraction: float, seed: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (calibration, evaluation) index arrays; all of it is evaluation when fraction is 0."""
    k = int(round(n * fraction))
    if fraction > 0 and (k == 0 or k == n):
        raise GenleakError(f"calibration_fraction {fraction} leaves no {'calibration' if k == 0 else 'evaluation'} {side} out of {n}")
    perm = np.random.default_rng([seed, 0 if side == "members" else 1]).permutation(n)
    return np.sort(perm[:k]), np.sort(perm[k:])


def _load_scores(path: Path, keys: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Cached scores for exactly these keys, or None (missing, other keys, or unreadable: recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["keys"])) != keys:
                return None
            return z["member_scores"], z["nonmember_scores"], float(z["seconds"])
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or garbage cache file is a cache miss, not a failed attack
        return None


def _drop_stale_scores(folder: Path, target_fp: str, split_fp: str) -> None:
    """Delete score files computed on another target or split (or unreadable): a rerun into an old
    folder must never leave another model's scores where a report or ``verify`` would find them."""
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = json.loads(str(z["keys"]))
            stale = keys.get("target") != target_fp or keys.get("split") != split_fp
        except Exception:  # unreadable: recomputed if this run needs it, never read otherwise
            stale = True
        if stale:
            path.unlink(missing_ok=True)


def check_target_split(target_dir: str | Path, split: MembershipSplit, *, allow_mismatch: bool = False) -> dict[str, Any]:
    """Compare ``split`` with the training split ``target_dir/split.json`` records (by image sha256).

    Refused with one line (``SplitError``) when a member is recorded as a non-member or not among
    the training members, or a non-member was a training member: every score would be mislabelled.
    ``allow_mismatch`` runs anyway; the returned record (stored in ``results.json["split_check"]``
    and shown in the report) then says so. A target without ``split.json`` returns status
    "not recorded".
    """
    from genleak.data.split import manifest_fingerprint
    from genleak.errors import SplitError

    record = Path(target_dir) / TARGET_SPLIT_FILE
    if not record.is_file():
        return {"status": "not recorded", "record": None}
    try:
        manifest = json.loads(record.read_text(encoding="utf-8"))
        rec_m = {str(e["sha256"]) for e in manifest["members"]}
        rec_n = {str(e["sha256"]) for e in manifest["nonmembers"]}
        rec_fp = manifest_fingerprint(manifest)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
        raise SplitError(f"'{record}' (the target's training split) is not a readable split manifest "
                         f"({type(err).__name__}); restore it or retrain the target") from None
    shape = manifest.get("image_shape")
    if isinstance(shape, list) and list(split.members.shape) != shape:  # no overlap possible: say why plainly
        raise SplitError(f"split '{split.name}' has images of shape {tuple(split.members.shape)} but the target was "
                         f"trained on images of shape {tuple(shape)} ({record}); use a split of the same data and size")
    fp = split.fingerprint()
    counts = {
        "members_recorded_as_nonmembers": sum(h in rec_n for h in split.members.hashes),
        "members_not_trained_on": sum(h not in rec_m and h not in rec_n for h in split.members.hashes),
        "nonmembers_trained_on": sum(h in rec_m for h in split.nonmembers.hashes),
    }
    info: dict[str, Any] = {"record": str(record.resolve()), "recorded_fingerprint": rec_fp, "split_fingerprint": fp,
                            **counts}
    if not any(counts.values()):
        return {"status": "match", **info}
    labels = {"members_recorded_as_nonmembers": "member(s) the target records as non-members",
              "members_not_trained_on": "member(s) not in the target's training set",
              "nonmembers_trained_on": "non-member(s) the target was trained on"}
    what = ", ".join(f"{n} {labels[k]}" for k, n in counts.items() if n)
    message = (f"split '{split.name}' ({fp[:12]}) does not match the split the target was trained on "
               f"({record}, {rec_fp[:12]}): {what}")
    if not allow_mismatch:
        raise SplitError(f"{message}; use the target's split.json, or pass --allow-split-mismatch to run anyway "
                         "(recorded in the results)")
    return {"status": "mismatch allowed", "message": message + " (run anyway with --allow-split-mismatch)", **info}
