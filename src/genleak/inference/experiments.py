"""Reproduce the CDI claims of thesis chapter 8 on a tiny model, from one config file.

    python -m genleak.inference.experiments configs/cdi_members.json [--out DIR]
    genleak infer --config configs/cdi_members.json [--out DIR]

A config (JSON or TOML) names the data, the model to train (or reuse: training resumes and a
finished run is loaded), the features and CDI settings, and one experiment:

* ``members``: P = training members, U = non-members. CDI should reject H0 where single-sample MIAs
  are near chance (fig. 8.5.1, table 8.3.1).
* ``false_positive``: P and U both non-members, many random draws: p < alpha must stay rare
  (table 8.5.2). Reports the exact (permutation) and the thesis' parametric Welch p-values.
* ``partial``: a fraction of P are non-members (fig. 8.5.3): mean p and reject rate per fraction and |P|.
* ``imbalance``: |U| = ratio x |P| (table C.12.1): minimum |P| per ratio.

Every trial re-runs the whole CDI statistic (k-fold scoring model + test) on a fresh random draw;
features are extracted once and cached in the work directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from genleak.config import read_config
from genleak.errors import GenleakError

EXPERIMENTS = ("members", "false_positive", "partial", "imbalance")


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or TOML experiment config and check its top-level keys."""
    file = Path(path)
    known = {"experiment", "name", "description", "workdir", "out", "data", "train", "features", "feature_params",
             "cdi", "trials", "suspect_size", "sizes", "ratios", "threads", "seed"}
    config = read_config(file, known=known)
    if config.get("experiment") not in EXPERIMENTS:
        raise GenleakError(f"config '{file}' needs \"experiment\": one of {', '.join(EXPERIMENTS)}")
    config.setdefault("name", file.stem)
    return config


def _prepare(config: dict[str, Any], progress: bool) -> tuple[Any, Any, Any, Any, Any]:
    """Split, target (trained or reused), and the feature matrices of members and the non-member pool."""
    import torch

    from genleak.data import load_source, make_split
    from genleak.inference.cdi import CDIConfig, features_for
    from genleak.train import TrainConfig, train_ddpm

    data = dict(config.get("data") or {})
    workdir = Path(config.get("workdir") or f"runs/{config['name']}")
    source = data.get("source", "digits:8")
    images = load_source(source)
    split = make_split(images, int(data.get("members", 256)), int(data.get("nonmembers", 512)), seed=int(data.get("seed", 0)))
    train = dict(config.get("train") or {})
    if "block_out_channels" in train:
        train["block_out_channels"] = tuple(train["block_out_channels"])
    train.setdefault("checkpoint_every", max(1, int(train.get("steps", 500)) // 2))
    torch.manual_seed(0)
    target = train_ddpm(split.members.images, TrainConfig(**train), workdir / "target", split_manifest=split.to_manifest(), progress=progress)
    cdi = CDIConfig.from_dict({"features": config.get("features", "gray"), "feature_params": config.get("feature_params") or {}, **(config.get("cdi") or {})})
    fm = features_for(target, split.members, cdi, cache_dir=workdir / "features", progress=progress)
    fn = features_for(target, split.nonmembers, cdi, cache_dir=workdir / "features", progress=progress)
    return split, target, cdi, fm, fn


def _trial(xp: np.ndarray, xu: np.ndarray, cdi: Any, seed: int) -> tuple[float, float]:
    """(verdict p-value, parametric Welch p-value) of one CDI run without the resampled curve."""
    import dataclasses

    from genleak.inference.cdi import cdi_test

    r = cdi_test(xp, xu, dataclasses.replace(cdi, n_resamples=0, refit_resamples=0, seed=seed))
    return r.p_value, r.p_value_welch


def run_experiment(config: dict[str, Any] | str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Run one experiment config; write ``OUT/experiment.json`` (+ plots) and return the summary."""

    from genleak.io import atomic_write_json

    if not isinstance(config, dict):
        config = load_config(config)
    threads = int(config.get("threads", 1))
    if threads:
        import torch

        torch.set_num_threads(threads)
    out_dir = Path(out or config.get("out") or f"runs/{config['name']}/out")
    started = time.perf_counter()
    split, target, cdi, fm, fn = _prepare(config, progress)
    kind = config["experiment"]
    seed = int(config.get("seed", 0))
    rng = np.random.default_rng(seed)
    trials = int(config.get("trials", 100))
    summary: dict[str, Any] = {
        "experiment": kind,
        "name": config["name"],
        "description": config.get("description", ""),
        "config": config,
        "target": target.describe(),
        "n_members": len(fm.ids),
        "n_nonmember_pool": len(fn.ids),
        "features": fm.columns,
        "alpha": cdi.alpha,
        "p_method": cdi.p_method,
    }
    if kind == "members":
        summary.update(_members(config, split, target, cdi, fm, fn, out_dir, progress))
    elif kind == "false_positive":
        n = int(config.get("suspect_size", 64))
        if 2 * n > len(fn.ids):
            raise GenleakError(f"false_positive needs 2 x suspect_size = {2 * n} non-members, the pool has {len(fn.ids)}")
        ps, pw = [], []
        for t in range(trials):
            idx = rng.permutation(len(fn.ids))
            p, w = _trial(fn.values[idx[:n]], fn.values[idx[n : 2 * n]], cdi, seed + t)
            ps.append(p)
            pw.append(w)
        summary.update(_rates("p", ps, cdi.alpha) | _rates("p_welch", pw, cdi.alpha) | {"trials": trials, "suspect_size": n})
        _plot_hist(ps, pw, cdi.alpha, out_dir / "false_positive.png")
    elif kind in ("partial", "imbalance"):
        summary.update(_grid(kind, config, cdi, fm, fn, rng, trials, seed, out_dir))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out_dir / "experiment.json", _clean(summary))
    return summary


def _members(config: dict[str, Any], split: Any, target: Any, cdi: Any, fm: Any, fn: Any, out_dir: Path, progress: bool) -> dict[str, Any]:
    from genleak.inference.cdi import format_result, run_cdi, write_cdi
    from genleak.io import atomic_write_text

    n = int(config.get("suspect_size", len(fm.ids)))
    m = min(len(fn.ids), n if cdi.reference_ratio is None else max(2, round(cdi.reference_ratio * n)))
    suspect, reference = split.members[:n], split.nonmembers[:m]
    result = run_cdi(target, suspect, reference, cdi, cache_dir=Path(config.get("workdir") or f"runs/{config['name']}") / "features", progress=progress)
    write_cdi(result, out_dir)
    text = format_result(result)
    atomic_write_text(out_dir / "cdi.txt", text + "\n")
    single = {name: result.single_features[name]["auc"] for name in result.columns}
    main = {name: single[name] for name in ("loss", "secmi", "pia", "pian") if name in single}
    return {
        "p_value": result.p_value,
        "p_value_welch": result.p_value_welch,
        "rejected": result.rejected,
        "t_statistic": result.t_statistic,
        "scorer_auc": result.scorer_auc,
        "single_mia_auc": main,
        "best_single_feature": {"column": result.best_single[0], "auc": result.best_single[1]},
        "min_suspect_size": result.min_suspect_size,
        "min_suspect_size_refit": result.min_suspect_size_refit,
        "blind_classifier": result.guards.get("blind_classifier"),
        "summary": text,
    }


def _grid(kind: str, config: dict[str, Any], cdi: Any, fm: Any, fn: Any, rng: np.random.Generator, trials: int, seed: int, out_dir: Path) -> dict[str, Any]:
    """Mean p and reject rate over ``trials`` draws per (ratio, |P|)."""
    default = [0.0, 0.25, 0.5, 0.75, 1.0] if kind == "partial" else [1.0, 0.75, 0.5, 0.25, 0.1]
    ratios = [float(r) for r in config.get("ratios", default)]
    sizes = [int(n) for n in config.get("sizes", [32, 64, 128, 256])]
    half = len(fn.ids) // 2  # non-members for P come from one half of the pool, U from the other
    rows: list[dict[str, Any]] = []
    for ratio in ratios:
        for n in sizes:
            if kind == "partial":
                n_non = int(round(ratio * n))
                n_u = n
                if n - n_non > len(fm.ids) or n_non > half or n_u > len(fn.ids) - half:
                    continue
            else:
                n_non, n_u = 0, max(2, int(round(ratio * n)))
                if n > len(fm.ids) or n_u > len(fn.ids):
                    continue
            if n_u < cdi.folds or n < cdi.folds:
                continue
            ps = []
            for t in range(trials):
                ip = rng.choice(len(fm.ids), n - n_non, replace=False)
                xp = fm.values[ip]
                if kind == "partial":
                    extra = rng.choice(half, n_non, replace=False)
                    xp = np.concatenate([xp, fn.values[extra]])
                    iu = half + rng.choice(len(fn.ids) - half, n_u, replace=False)
                else:
                    iu = rng.choice(len(fn.ids), n_u, replace=False)
                ps.append(_trial(xp, fn.values[iu], cdi, seed + t)[0])
            arr = np.asarray(ps)
            rows.append({"ratio": ratio, "n_suspect": n, "n_reference": n_u, "n_nonmembers_in_P": n_non,
                         "mean_p": float(arr.mean()), "reject_rate": float((arr < cdi.alpha).mean()), "trials": trials})
    min_size = {}
    for ratio in ratios:
        pts = [r for r in rows if r["ratio"] == ratio]
        best = None
        for r in reversed(pts):
            if r["mean_p"] < cdi.alpha:
                best = r["n_suspect"]
            else:
                break
        min_size[str(ratio)] = best
    _plot_grid(kind, rows, ratios, cdi.alpha, out_dir / f"{kind}.png")
    label = "non-member fraction in P" if kind == "partial" else "|U| / |P|"
    return {"rows": rows, "ratio_meaning": label, "min_suspect_size": min_size, "trials": trials}


def _rates(prefix: str, ps: list[float], alpha: float) -> dict[str, Any]:
    a = np.asarray(ps)
    return {
        f"{prefix}_values": [float(v) for v in a],
        f"{prefix}_mean": float(a.mean()),
        f"{prefix}_below_alpha": int((a < alpha).sum()),
        f"{prefix}_at_most_0.05": int((a <= 0.05).sum()),
        f"{prefix}_above_0.05": int((a > 0.05).sum()),
    }


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _plot_hist(ps: list[float], pw: list[float], alpha: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genleak.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    bins = np.linspace(0, 1, 21)
    ax.hist(ps, bins=bins, alpha=0.6, label="exact (permutation) p")
    ax.hist(pw, bins=bins, alpha=0.6, label="parametric Welch p (thesis)")
    ax.axvline(alpha, color="r", ls="--", lw=0.8, label=f"alpha = {alpha}")
    ax.set_xlabel("p-value (P and U both non-members)")
    ax.set_ylabel("trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_grid(kind: str, rows: list[dict[str, Any]], ratios: list[float], alpha: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genleak.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for ratio in ratios:
        pts = [r for r in rows if r["ratio"] == ratio]
        if pts:
            ax.plot([r["n_suspect"] for r in pts], [max(r["mean_p"], 1e-300) for r in pts], "o-", ms=3,
                    label=(f"non-members {ratio:.0%}" if kind == "partial" else f"|U|/|P| = {ratio:g}"))
    ax.axhline(alpha, color="r", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|P|")
    ax.set_ylabel("mean p-value over trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--out", default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    summary = run_experiment(args.config, args.out, progress=not args.quiet)
    print(json.dumps({k: v for k, v in _clean(summary).items() if k not in ("config", "target", "summary", "p_values", "p_welch_values")}, indent=1)[:6000])
    if "summary" in summary:
        print(summary["summary"])


if __name__ == "__main__":
    main()
