"""Run attacks against a target on a membership split: scores -> metrics -> result folder.

This is the one place the flow split -> target -> attack -> scores -> evaluation is wired. Each
attack's per-sample scores are cached in ``OUT/scores/<attack>.npz`` together with the keys they
depend on (target fingerprint, split fingerprint, attack config, seed); a rerun after a crash
recomputes only what is missing, and a changed key recomputes instead of reusing stale scores.
Scoring itself goes through ``genleak.scoring.score_split``, whose per-sample cache
(``OUT/score-cache``) lets an attack killed mid-way resume where it stopped.
Score files of another target or split are deleted when a run starts (so no report, MLflow upload
or ``genleak verify`` ever reads them), and an unreadable one is recomputed.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from genleak.attacks import get_attack
from genleak.attacks.base import Attack
from genleak.data import MembershipSplit
from genleak.errors import GenleakError
from genleak.io import atomic_save_npz
from genleak.metrics import MetricReport, asr_calibrated, evaluate, fpr_resolution_warning
from genleak.results import AttackResult, AuditResult
from genleak.scoring import distributed_world, query_counts, score_split
from genleak.targets.base import Target
from genleak.targets.folders import TARGET_SPLIT_FILE

SCORE_CACHE_DIR = "score-cache"  # OUT/score-cache: genleak.scoring.ScoreCache of run_attacks


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
    precision: str = "fp32",
) -> AuditResult:
    """Score members and non-members with each attack and evaluate with ``genleak.metrics``.

    ``precision`` (``bf16`` / ``fp16``: the queries under autocast) is recorded with each attack and
    keys its cached scores, so a low-precision run never reuses or passes for a float32 one.

    With ``calibration_fraction`` > 0 a seeded random part of each side is held out as a
    calibration split: the ASR threshold is fixed there (``asr_calibrated``) and every metric is
    computed on the remaining evaluation part only, so nothing is tuned on the evaluation labels.

    An attack that raises is recorded as failed (with its error) and the others still run, unless
    ``fail_fast``; input errors (bad split, wrong shapes) are raised before any attack starts.
    """
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
    low = {"precision": precision} if precision != "fp32" else {}  # fp32 runs keep the keys they always had
    results = {a: AttackResult(name=a.name, description={**a.describe(), **low}) for a in instances}
    files: dict[Attack, tuple[Path, dict[str, Any]]] = {}
    for attack, res in results.items():  # a finished attack's scores file is reused as it is
        keys = {"target": target.fingerprint(), "split": split_info["fingerprint"],
                "config": json.dumps(res.description["config"], sort_keys=True), "seed": seed, **low}
        if out is not None:
            files[attack] = (out / "scores" / f"{attack.name}.npz", keys)
            # every rank of a multi-process run must score the same attacks: there rank 0's per-sample
            # cache answers instead of a scores file another rank may not see
            cached = _load_scores(files[attack][0], keys) if distributed_world()[0] == 1 else None
            if cached is not None:
                res.member_scores, res.nonmember_scores, res.seconds = cached

    def failed(attack: Attack, err: Exception) -> None:  # an attack bug must not lose the other attacks' results
        results[attack].error = f"{type(err).__name__}: {err}"
        results[attack].warnings.append(traceback.format_exc(limit=3))

    todo = [a for a, res in results.items() if res.member_scores is None]
    # validates the split before any attack starts; per-sample scores are kept in OUT/score-cache so
    # a run killed mid-attack resumes there
    scored = score_split(target, split, todo, cache=out / SCORE_CACHE_DIR if out is not None else None, seed=seed,
                         batch_size=batch_size, progress=progress, precision=precision,
                         on_error=None if fail_fast else failed)
    for attack, res in results.items():
        try:
            if attack in scored:
                s = scored[attack]
                res.member_scores, res.nonmember_scores = s.members.values, s.nonmembers.values
                res.seconds = s.members.seconds + s.nonmembers.seconds
                if attack in files:
                    path, keys = files[attack]
                    atomic_save_npz(
                        path,
                        member_scores=res.member_scores,
                        nonmember_scores=res.nonmember_scores,
                        member_ids=np.array(split.members.ids),
                        nonmember_ids=np.array(split.nonmembers.ids),
                        keys=np.array(json.dumps(keys)),
                        seconds=np.array(res.seconds),
                    )
            if res.error is not None:
                continue
            res.metrics, res.asr_calibrated = score_metrics(res.member_scores, res.nonmember_scores, (eval_m, eval_n),
                                                            (cal_m, cal_n), bootstrap=bootstrap, seed=seed)
            for alpha in (0.01, 0.001):
                warning = fpr_resolution_warning(len(res.nonmember_scores), alpha)
                if warning:
                    res.warnings.append(warning)
        except GenleakError:
            raise
        except Exception as err:
            if fail_fast:
                raise
            failed(attack, err)
    queries = query_counts(scored)  # the query plan's saving: distinct queries run vs the attacks' NFE
    return AuditResult(target=target_info, split=split_info, attacks=list(results.values()), seed=seed, command=command,
                       bootstrap=bootstrap, extra={"queries": queries} if queries["samples"] else {})


def sweep_parameter(
    target: Target,
    calibration: MembershipSplit,
    attack: str,
    param: str,
    grid: list[Any],
    *,
    seed: int = 0,
    batch_size: int = 64,
    params: dict[str, Any] | None = None,
) -> dict[Any, dict[str, Any]]:
    """AUC and TPR@1%FPR of ``attack`` for each value of ``param`` on a calibration split (e.g. a shadow
    model's), with the two-sided view (``leakage_auc``, ``leak_direction``, the sign-flipped TPR).

    The caller then fixes the best value (``best_value``) in the attack config and evaluates once on held-out data.
    ``params`` fixes the attack's other hyperparameters (``genleak sweep --param``). Scored through
    ``score_split`` like ``run_attacks``: the same conditions (captions, labels), seeds and numbers.
    """
    instances = {value: get_attack(attack, **{**(params or {}), param: value}) for value in grid}
    scored = score_split(target, calibration, list(instances.values()), seed=seed, batch_size=batch_size,
                         progress=False)
    result: dict[Any, dict[str, float]] = {}
    for value, a in instances.items():
        sm, sn = scored[a].members.values, scored[a].nonmembers.values
        m = evaluate(sm if sm.ndim == 1 else sm[:, 0], sn if sn.ndim == 1 else sn[:, 0])
        result[value] = {k: getattr(m, k) for k in ("auc", "tpr_at_1pct_fpr", "leakage_auc", "leak_direction",
                                                    "flipped_tpr_at_1pct_fpr")}
    return result


def best_value(rows: dict[Any, dict[str, Any]]) -> Any:
    """The value of a ``sweep_parameter`` grid that leaks most, judged two-sided: the largest
    max(AUC, 1 - AUC), then the TPR@1%FPR of the side that leaks (an attacker flips a reversed score)."""
    def leak(v: Any) -> tuple[float, float]:
        r = rows[v]
        tpr = r["flipped_tpr_at_1pct_fpr"] if r["leak_direction"] == "flipped" else r["tpr_at_1pct_fpr"]
        return r["leakage_auc"], tpr

    return max(rows, key=leak)


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
