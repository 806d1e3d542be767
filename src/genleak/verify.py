"""``genleak verify RESULT_DIR``: re-check a result folder from its saved scores and the inputs.

For ``attack`` / ``audit`` folders (``results.json``): every metric is recomputed with
``genleak.metrics`` from ``scores/<attack>.npz`` (on the same evaluation part: the calibration
hold-out the run recorded is left out, the bootstrap uses the recorded resamples and seed), the
score files are compared with the sha256 results.json records, the target and split fingerprints
are recomputed from the files given (default: the paths the run recorded), and K random samples
per attack are scored again and compared with the saved scores. For ``infer`` folders
(``cdi.json``, also ``audit``'s ``cdi/`` section): the Welch statistic, the scorer AUC and, from the
saved feature matrices, the out-of-fold scores and the permutation p-value are recomputed, and K
samples' features are extracted again.

Rescoring agrees because every attack seeds its noise per sample (``attacks.base.NoiseSource``):
a score does not depend on the batch it was computed in. What remains is float rounding of
differently sized batches: measured <= 6e-7 of the largest |score| (CPU, batch 1 vs 64), so the
tolerance is ``RESCORE_RTOL`` = 1e-4 of the attack's largest |saved score|. Metrics are recomputed
from identical numbers and must agree to ``METRIC_TOL``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from genleak.errors import GenleakError
from genleak.results import CDI_FILE, CDIResult

RESCORE_RTOL = 1e-4  # of the largest |saved score| of the attack (float noise measured <= 6e-7)
METRIC_TOL = 1e-9  # absolute + relative: recomputed from the same scores, only summation order may differ


@dataclass
class Verification:
    """What was checked (``checked``) and every mismatch, one line each (``differences``)."""

    checked: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def check(self, ok: bool, what: str, difference: str) -> bool:
        (self.checked if ok else self.differences).append(what if ok else difference)
        return ok


def verify(result_dir: str | Path, *, target: str | Path | None = None, split: str | Path | None = None,
           rescore: int = 32, sample_seed: int = 0) -> Verification:
    """Re-check an ``attack``, ``audit`` or ``infer`` output folder; see the module docstring."""
    folder = Path(result_dir)
    if rescore < 0:
        raise GenleakError(f"--rescore must be >= 0, got {rescore}")
    v = Verification()
    if (folder / "results.json").is_file():
        _verify_mia(folder, v, target, split, rescore, sample_seed)
    elif (folder / CDI_FILE).is_file():
        _verify_cdi(folder, v, target, split, rescore, sample_seed)
    else:
        raise GenleakError(f"'{folder}' holds neither results.json nor {CDI_FILE}; give an attack, audit or infer output folder")
    return v


# ----------------------------------------------------------------------------------------------
# inputs: target and split, their fingerprints
# ----------------------------------------------------------------------------------------------


def _load_inputs(v: Verification, recorded: dict[str, Any], target: str | Path | None, split: str | Path | None,
                 target_fp: str | None, split_fp: str | None, guidance_scale: float | None = None) -> tuple[Any, Any]:
    """Load the target (at the CFG scale the run used) and split (given, else the recorded paths) and
    compare their fingerprints."""
    from genleak.data import MembershipSplit
    from genleak.targets.loading import load_target

    tpath = target if target is not None else recorded.get("target_path")
    t = _load_matching(v, "target", tpath, lambda p: load_target(p, guidance_scale=guidance_scale), target_fp)
    spath = split if split is not None else recorded.get("split_path")
    if split_fp is None and spath is None:
        return t, None
    return t, _load_matching(v, "split", spath, MembershipSplit.load, split_fp)


def _load_matching(v: Verification, what: str, path: Any, load: Any, recorded_fp: str | None) -> Any:
    """``load(path)`` and compare its fingerprint with the recorded one; None (and a difference) if
    there is no path or it does not load."""
    if path is None:
        v.differences.append(f"{what}: not checked: give --{what} (the run recorded no {what} path)")
        return None
    try:
        obj = load(path)
    except GenleakError as err:
        v.differences.append(f"{what}: cannot load '{path}': {err}")
        return None
    fp = obj.fingerprint()
    v.check(fp == recorded_fp, f"{what} fingerprint {fp[:12]} ({path})",
            f"{what} fingerprint: the result records {str(recorded_fp)[:12]}, '{path}' has {fp[:12]}")
    return obj


# ----------------------------------------------------------------------------------------------
# attack / audit results
# ----------------------------------------------------------------------------------------------


def _verify_mia(folder: Path, v: Verification, target: Any, split: Any, rescore: int, sample_seed: int) -> None:
    from genleak.report.results import read_results

    result = read_results(folder)
    data = result.to_json()  # the numbers as recorded, compared key by key with their recomputation
    recorded = {**(data.get("inputs") or {}), **(data.get("audit") or {})}
    t, s = _load_inputs(v, recorded, target, split, data["target"].get("fingerprint"), data["split"]["fingerprint"],
                        data["target"].get("guidance_scale"))
    scores = _check_metrics(folder, data, v)
    if result.verdict is not None:
        from genleak.report.verdict import compute_verdict

        got = compute_verdict(result)
        rec = result.verdict
        v.check(all(got.get(k) == rec.get(k) for k in ("level", "label")), f"verdict '{rec.get('label')}'",
                f"verdict: results.json says {rec.get('label')!r}, its metrics give {got.get('label')!r}")
    if t is not None and s is not None and rescore:
        batch = int((data.get("settings") or {}).get("batch_size") or 64)
        for name, (ms, ns, mid, nid) in scores.items():
            _rescore_attack(v, name, data["attacks"][name].get("config") or {}, t, s, ms, ns, mid, nid,
                            seed=int(data["seed"]), k=rescore, batch=batch, sample_seed=sample_seed,
                            precision=str(data["attacks"][name].get("precision") or "fp32"))
    cdi = folder / "cdi"
    section = (data.get("sections") or {}).get("cdi") or {}
    if section.get("status") == "ok" and (cdi / CDI_FILE).is_file():
        doc = _verify_cdi(cdi, v, None, None, rescore, sample_seed, inputs=(t, s), prefix="sections.cdi")
        for key in ("p_value", "n_suspect", "n_reference"):
            _compare(v, f"sections.cdi.metrics.{key}", (section.get("metrics") or {}).get(key), getattr(doc, key))


def _check_metrics(folder: Path, data: dict[str, Any], v: Verification) -> dict[str, tuple[np.ndarray, ...]]:
    """Recompute every recorded metric of every successful attack; return the saved scores."""
    from genleak.audit import _add_audit_bounds
    from genleak.pipeline import score_metrics
    from genleak.report.results import SCORES_DIR, evaluation_masks
    from genleak.results import scores_sha256

    bootstrap = data.get("bootstrap", (data.get("settings") or {}).get("bootstrap"))
    seed = int(data["seed"])
    scores: dict[str, tuple[np.ndarray, ...]] = {}
    expected: dict[str, dict[str, Any]] = {}
    for name, a in data["attacks"].items():
        if a.get("status") != "ok":
            continue
        path = folder / SCORES_DIR / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = json.loads(str(z["keys"]))
                ms, ns, mid, nid = z["member_scores"], z["nonmember_scores"], z["member_ids"], z["nonmember_ids"]
        except FileNotFoundError:
            v.differences.append(f"attacks.{name}: {SCORES_DIR}/{name}.npz is missing")
            continue
        except Exception as err:
            v.differences.append(f"attacks.{name}: {SCORES_DIR}/{name}.npz is unreadable ({type(err).__name__})")
            continue
        want = {"target": data["target"].get("fingerprint"), "split": data["split"]["fingerprint"],
                "config": json.dumps(a.get("config"), sort_keys=True), "seed": seed}
        bad = [k for k in want if keys.get(k) != want[k]]
        if not v.check(not bad, f"attacks.{name}: scores file keys",
                       f"attacks.{name}: {SCORES_DIR}/{name}.npz was computed with another {', '.join(bad)} than results.json records"):
            continue
        if "scores_sha256" in a:
            got = scores_sha256(ms, ns)
            v.check(got == a["scores_sha256"], f"attacks.{name}: scores sha256",
                    f"attacks.{name}: {SCORES_DIR}/{name}.npz has sha256 {got[:12]}, results.json records "
                    f"{a['scores_sha256'][:12]} (the scores were changed after the run)")
        scores[name] = (ms, ns, mid, nid)
        mm, nm = evaluation_masks(list(mid), list(nid), data["split"])
        report, asr = score_metrics(ms, ns, (mm, nm), (~mm, ~nm), bootstrap=int(bootstrap or 0), seed=seed)
        expected[name] = {**report.to_dict(), "asr_calibrated": asr}
    recorded_extra = any("simultaneous_lower" in (data["attacks"][n].get("metrics") or {}) for n in expected)
    if expected and recorded_extra and bootstrap:
        first = next(iter(scores.values()))
        masks = evaluation_masks(list(first[2]), list(first[3]), data["split"])
        fake = SimpleNamespace(attacks=[SimpleNamespace(name=n, ok=True, member_scores=scores[n][0],
                                                        nonmember_scores=scores[n][1]) for n in expected])
        _add_audit_bounds(expected, fake, masks, int(bootstrap), seed)
    for name, rep in expected.items():
        got = data["attacks"][name].get("metrics") or {}
        sub = Verification()
        for key in sorted(set(got) | set(rep)):
            if bootstrap is None and key.endswith("_ci"):
                v.checked.append(f"attacks.{name}.metrics.{key}: not recomputed (bootstrap count not recorded)")
            elif key not in rep:
                sub.differences.append(f"attacks.{name}.metrics.{key}: not a metric genleak computes")
            else:
                _compare(sub, f"attacks.{name}.metrics.{key}", got.get(key), rep[key])
        v.differences += sub.differences
        if sub.checked:
            v.checked.append(f"attacks.{name}: {len(sub.checked)} metrics recomputed from the saved scores match")
    return scores


def _same(a: Any, b: Any, tol: float = METRIC_TOL) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, int | float) and isinstance(b, int | float)):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * (1.0 + abs(b))


def _compare(v: Verification, what: str, recorded: Any, recomputed: Any, tol: float = METRIC_TOL) -> None:
    v.check(_same(recorded, recomputed, tol), what,
            f"{what}: the result says {_short(recorded)}, recomputed {_short(recomputed)}")


def _short(x: Any) -> str:
    text = json.dumps(x, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _rescore_attack(v: Verification, name: str, config: dict[str, Any], t: Any, s: Any, ms: np.ndarray,
                    ns: np.ndarray, mid: np.ndarray, nid: np.ndarray, *, seed: int, k: int, batch: int,
                    sample_seed: int, precision: str = "fp32") -> None:
    """Score ``k`` random saved samples again (looked up by id in the split) and compare."""
    from genleak.attacks import get_attack
    from genleak.scoring import score_images

    try:
        attack = get_attack(name, **config)
    except Exception as err:  # an unknown attack or a config this genleak does not accept
        v.differences.append(f"attacks.{name}: cannot rebuild the attack from its recorded config ({err})")
        return
    if json.dumps(attack.describe()["config"], sort_keys=True) != json.dumps(config, sort_keys=True):
        v.differences.append(f"attacks.{name}: this genleak builds another config from the recorded one")
        return
    rows = {side: {str(i): r for r, i in enumerate(images.ids)} for side, images in (("m", s.members), ("n", s.nonmembers))}
    pool = [("m", j) for j in range(len(mid))] + [("n", j) for j in range(len(nid))]
    rng = np.random.default_rng([sample_seed, *name.encode()])
    picked = [pool[i] for i in sorted(rng.choice(len(pool), min(k, len(pool)), replace=False))]
    scale = max(float(np.abs(ms).max(initial=0)), float(np.abs(ns).max(initial=0)), 1e-30)
    tol = RESCORE_RTOL * scale
    worst: tuple[float, str, Any, Any] | None = None
    n_bad = n_done = 0
    for side, saved, ids in (("m", ms, mid), ("n", ns, nid)):
        chosen = [j for sd, j in picked if sd == side]
        found = [j for j in chosen if str(ids[j]) in rows[side]]
        if len(found) < len(chosen):
            v.differences.append(f"attacks.{name}: {len(chosen) - len(found)} saved "
                                 f"{'members' if side == 'm' else 'non-members'} are not in the split given")
        if not found:
            continue
        images = (s.members if side == "m" else s.nonmembers)[[rows[side][str(ids[j])] for j in found]]
        try:
            got = score_images(t, images, [attack], batch_size=batch, seed=seed, progress=False,
                               precision=precision)[attack].values
        except Exception as err:
            v.differences.append(f"attacks.{name}: rescoring failed ({type(err).__name__}: {err})")
            return
        want = saved[found]
        diff = np.abs(got.reshape(want.shape) - want).reshape(len(found), -1).max(1)
        n_bad += int((diff > tol).sum())
        n_done += len(found)
        i = int(diff.argmax())
        if worst is None or diff[i] > worst[0]:
            worst = (float(diff[i]), str(ids[found[i]]), want[i], got.reshape(want.shape)[i])
    if n_done:
        detail = "" if worst is None else (f" (e.g. {worst[1]}: saved {_short(np.asarray(worst[2]).tolist())}, "
                                           f"now {_short(np.asarray(worst[3]).tolist())})")
        v.check(n_bad == 0, f"attacks.{name}: {n_done} samples rescored within {tol:.2g}",
                f"attacks.{name}: {n_bad} of {n_done} rescored samples differ from the saved scores by more than "
                f"{tol:.2g}{detail}")


# ----------------------------------------------------------------------------------------------
# dataset inference (CDI)
# ----------------------------------------------------------------------------------------------


def _verify_cdi(folder: Path, v: Verification, target: Any, split: Any, rescore: int, sample_seed: int, *,
                inputs: tuple[Any, Any] | None = None, prefix: str = "cdi") -> CDIResult:
    """Recompute a CDI result from ``scores.npz``; ``inputs`` = (target, split) already loaded and checked."""
    from genleak.inference.cdi import CDIConfig
    from genleak.inference.scoring import cross_val_scores, permutation_test
    from genleak.inference.stats import welch_ttest
    from genleak.metrics import auc

    try:
        doc = CDIResult.from_json(json.loads((folder / CDI_FILE).read_text()), str(folder / CDI_FILE))
    except (OSError, ValueError) as err:
        raise GenleakError(f"'{folder / CDI_FILE}' is not readable JSON ({err})") from None
    prov = doc.provenance
    cfg = CDIConfig.from_dict(prov.get("config") or {})
    try:
        with np.load(folder / "scores.npz", allow_pickle=False) as z:
            saved = {k: z[k] for k in z.files}
        sp, su = saved["scores_suspect"], saved["scores_reference"]
    except Exception as err:
        v.differences.append(f"{prefix}: scores.npz is missing or unreadable ({type(err).__name__})")
        return doc
    t_stat, df, p_welch = (float(x) for x in welch_ttest(sp, su, cfg.alternative))  # type: ignore[arg-type]
    p_welch = 1.0 if math.isnan(p_welch) else p_welch
    for key, value in (("t_statistic", t_stat), ("df", df), ("p_value_welch", p_welch),
                       ("n_suspect", len(sp)), ("n_reference", len(su))):
        _compare(v, f"{prefix}.{key}", getattr(doc, key), value)
    _compare(v, f"{prefix}.scorer.auc_out_of_fold", doc.scorer_auc, auc(sp, su))
    p = p_welch
    if "features_suspect" in saved:
        xp, xu = saved["features_suspect"], saved["features_reference"]
        oof = cross_val_scores(xp, xu, folds=cfg.folds, seed=cfg.seed)
        scale = max(float(np.abs(sp).max(initial=0)), 1e-30)
        ok = np.allclose(oof.scores_p, sp, rtol=0, atol=1e-8 * scale) and np.allclose(oof.scores_u, su, rtol=0, atol=1e-8 * scale)
        v.check(ok, f"{prefix}: out-of-fold scores refitted from the saved features",
                f"{prefix}: the saved out-of-fold scores do not follow from the saved features (refit differs)")
        if cfg.p_method == "permutation":
            p = permutation_test(xp, xu, oof.folds_p, oof.folds_u, n_permutations=cfg.permutations,
                                 alternative=cfg.alternative, seed=cfg.seed).p_value
    elif cfg.p_method == "permutation":
        v.differences.append(f"{prefix}.p_value: not recomputed: scores.npz has no feature matrices "
                             "(written by an older genleak; rerun `genleak infer`)")
        p = None
    if p is not None:
        _compare(v, f"{prefix}.p_value", doc.p_value, p)
        _compare(v, f"{prefix}.rejected", doc.rejected, bool(p < cfg.alpha))
    if inputs is None:
        rec = prov.get("inputs") or {}
        t, s = _load_inputs(v, rec, target, split, (prov.get("target") or {}).get("fingerprint"),
                            rec.get("split_fingerprint"))
    else:
        t, s = inputs
    if t is not None and rescore and "features_suspect" in saved:
        _rescore_cdi(v, prefix, cfg, t, s, prov, saved, rescore, sample_seed)
    return doc


def _rescore_cdi(v: Verification, prefix: str, cfg: Any, t: Any, s: Any, prov: dict[str, Any],
                 saved: dict[str, np.ndarray], k: int, sample_seed: int) -> None:
    """Extract the features of ``k`` random saved samples again and compare with the saved rows."""
    from genleak.data import load_source
    from genleak.inference.features import extract_features, parse_features
    from genleak.targets.base import conditions_for

    sides = []
    for side, key in (("suspect", "members"), ("reference", "nonmembers")):
        if s is not None:
            images = getattr(s, key)
        else:
            try:
                images = load_source((prov.get(side) or {}).get("source") or {})
            except GenleakError as err:
                v.differences.append(f"{prefix}: cannot reload the {side} images to rescore ({err})")
                return
        sides.append((images, saved[f"ids_{side}"], saved[f"features_{side}"]))
    pool = [(i, j) for i, (_, ids, _) in enumerate(sides) for j in range(len(ids))]
    rng = np.random.default_rng([sample_seed, 7])
    picked = [pool[i] for i in sorted(rng.choice(len(pool), min(k, len(pool)), replace=False))]
    specs = parse_features(cfg.features, cfg.feature_params)
    n_bad = n_done = 0
    for i, (images, ids, feats) in enumerate(sides):
        rows = {str(x): r for r, x in enumerate(images.ids)}
        chosen = [j for si, j in picked if si == i and str(ids[j]) in rows]
        if not chosen:
            continue
        sub = images[[rows[str(ids[j])] for j in chosen]]
        got = extract_features(t, sub, specs, cache_dir=None, seed=cfg.seed, batch_size=cfg.batch_size,
                               progress=False, cond=conditions_for(t, sub)).values
        want = feats[chosen]
        tol = RESCORE_RTOL * np.maximum(np.abs(feats).max(0), 1e-30)  # per feature column: scales differ
        n_bad += int((np.abs(got - want) > tol).any(1).sum())
        n_done += len(chosen)
    v.check(n_bad == 0, f"{prefix}: {n_done} samples' features re-extracted within {RESCORE_RTOL:g} of each column's scale",
            f"{prefix}: {n_bad} of {n_done} re-extracted samples differ from the saved features "
            f"(beyond {RESCORE_RTOL:g} of each column's scale)")

