"""``genleak sim benchmark``: every table and figure of one benchmark from one JSON config.

Config keys: ``kind`` (synthetic | zdc-neutron | zdc-proton), ``n`` (points per cell / particles),
``repeats`` (ZDC outcomes per particle), ``data_seed``, ``seeds`` (one training run per row and seed),
``train`` (SimTrainConfig fields shared by all rows), ``rows`` (``label`` + SimTrainConfig overrides),
``timing_n`` (responses timed for the speed table, ZDC only). Runs are resumable: a finished run in
``OUT/runs`` is reused, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from genleak.config import read_config
from genleak.errors import GenleakError
from genleak.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from genleak.sim.data import (
    DETECTORS,
    SimData,
    channels,
    detector,
    make_data,
    sample_conditions,
    simulate,
    synthetic_labels,
)
from genleak.sim.metrics import evaluate, mean_std, timed
from genleak.sim.train import SimTrainConfig, generate, load_run, train

# Thesis numbers for the side-by-side tables (digest §5 Table 4.4.1, §6 Tables 5.4.2, 5.5.2, 5.5.4).
THESIS_441 = {"DC-GAN": (0.2, 2.3, 0.7, 7.4), "MS-GAN": (115.5, 280.7, 9.0, 6.7), "SDI-GAN": (3.3, 127.4, 1.2, 2.1)}
THESIS_542 = {"GAN": (2.47, 2.42), "SDI-GAN": (2.35, 2.31), "SDI-GAN + IR": (2.29, 2.04),
              "SDI-GAN + IR + AR": (2.07, 1.89), "ExpertSim K=2": (2.71, 1.76), "ExpertSim K=3": (1.59, 1.34),
              "ExpertSim K=4": (3.26, 1.63), "Monte Carlo run vs run": (0.47, 0.34)}


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _run_dir(out: Path, label: str, seed: int) -> Path:
    return out / "runs" / f"{_slug(label)}-s{seed}"


def load_config(path: str | Path) -> dict[str, Any]:
    cfg = read_config(path, what="benchmark config")
    if not cfg.get("rows") or cfg.get("kind") not in ("synthetic", *DETECTORS):
        raise GenleakError(f"{path}: needs 'kind' (synthetic, zdc-neutron, zdc-proton) and a non-empty 'rows' list")
    return cfg


def run_benchmark(cfg: dict[str, Any], out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    out = Path(out)
    t_start = time.perf_counter()
    kind = cfg["kind"]
    data = make_data(kind, int(cfg.get("n", 1000)), int(cfg.get("data_seed", 0)), int(cfg.get("repeats", 5)))
    data.save(out / "data.npz")
    test = data.part(False)
    seeds = [int(s) for s in cfg.get("seeds", [0, 1, 2])]
    rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    for row in cfg["rows"]:
        label = row["label"]
        fields = {**cfg.get("train", {}), **{k: v for k, v in row.items() if k != "label"}}
        per_seed = []
        for seed in seeds:
            tcfg = SimTrainConfig.from_dict({**fields, "seed": seed})
            run_dir = _run_dir(out, label, seed)
            state = train(data, tcfg, run_dir)
            model, scaling, _ = load_run(run_dir)
            gen_x, assign = generate(model, scaling, test.cond, seed=1000 + seed)
            m = evaluate(data, gen_x, test.cond, assign, tcfg.experts)
            m["train_seconds"] = state.get("seconds", 0.0)
            per_seed.append(m)
            if seed == seeds[0]:
                samples[label] = gen_x
            log(f"{label} seed {seed}: {_headline(m)} ({m['train_seconds']:.0f} s training)")
        rows.append({"label": label, "config": fields, "runs": per_seed, "summary": _summary(per_seed)})
    result: dict[str, Any] = {"format": "genleak-sim-benchmark", "version": 1, "config": cfg, "rows": rows}
    if not data.is_image:  # the floor: a fresh draw of the test set against the test set
        fresh = make_data(kind, int(cfg.get("n", 1000)), int(cfg.get("data_seed", 0)) + 1000).part(False)
        result["real_vs_real"] = evaluate(data, fresh.x, fresh.cond)
    if data.is_image:
        result["monte_carlo"] = _monte_carlo(data, seeds)
        result["timing"] = _timing(cfg, out, rows, seeds[0], kind)
    result["seconds"] = time.perf_counter() - t_start
    tables = render_tables(result)
    figures = _figures(data, samples, out)
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "tables.md", tables)
    atomic_write_text(out / "report.html", _html(result, tables, figures))
    return result


def _headline(m: dict[str, Any]) -> str:
    if "ws" in m:
        return f"channel WS {m['ws']['mean']:.2f}"
    return (f"variance {m['spread0']['variance']:.2f} / {m['spread1']['variance']:.1f}, "
            f"WS {m['spread0']['wasserstein']:.2f} / {m['spread1']['wasserstein']:.2f}")


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    if "ws" in per_seed[0]:
        s = {"ws": mean_std([m["ws"]["mean"] for m in per_seed]),
             "ws_channels": [mean_std([m["ws"]["per_channel"][k] for m in per_seed])["mean"] for k in range(5)]}
        if "experts" in per_seed[0]:
            s["experts"] = per_seed[0]["experts"]
        return s
    return {f"{q}{s}": mean_std([m[f"spread{s}"][q] for m in per_seed]) for q in ("variance", "wasserstein")
            for s in (0, 1)}


def _monte_carlo(data: SimData, seeds: list[int]) -> dict[str, Any]:
    """The thesis' 'Monte-Carlo' row: the simulator run again on the test conditions vs the test set."""
    test = data.part(False)
    det = detector(data.kind)
    ws = []
    for seed in seeds:
        again = simulate(test.cond, det.shape, np.random.default_rng(10_000 + seed))
        ws.append(evaluate(data, again, test.cond)["ws"]["mean"])
    return {"ws": mean_std(ws)}


def _timing(cfg: dict[str, Any], out: Path, rows: list[dict[str, Any]], seed: int, kind: str) -> dict[str, Any]:
    """Seconds for 10,000 responses on this CPU: the simulator vs each trained model (thesis Table 5.5.4)."""
    import torch

    n = int(cfg.get("timing_n", 10_000))
    det = detector(kind)
    cond = sample_conditions(n, det, np.random.default_rng(1))
    sim_s, _ = timed(simulate, cond, det.shape, np.random.default_rng(2))
    res: dict[str, Any] = {"n": n, "threads": torch.get_num_threads(), "simulator_seconds": sim_s, "models": {}}
    for row in rows:
        model, scaling, _ = load_run(_run_dir(out, row["label"], seed))
        secs, _ = timed(generate, model, scaling, cond)
        res["models"][row["label"]] = {"seconds": secs, "speedup": sim_s / secs}
    return res


def _pm(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def render_tables(result: dict[str, Any]) -> str:
    """Markdown tables in the thesis' layout, our numbers beside the thesis'."""
    rows, cfg = result["rows"], result["config"]
    n_seeds = len(rows[0]["runs"])
    lines: list[str] = []
    if "monte_carlo" not in result:
        lines += [f"Synthetic 2-D benchmark (Table 4.4.1 form), mean ± std over {n_seeds} seeds; thesis in brackets.", "",
                  "| model | variance spread 0 | variance spread 1 | WS spread 0 | WS spread 1 |",
                  "|---|---|---|---|---|", "| real (by construction) | 1 | 100 | - | - |"]
        for r in rows:
            s, th = r["summary"], THESIS_441.get(r["label"])
            cells = [_pm(s["variance0"]), _pm(s["variance1"], 1), _pm(s["wasserstein0"]), _pm(s["wasserstein1"])]
            if th:
                cells = [f"{c} [{t}]" for c, t in zip(cells, th, strict=True)]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
        rr = result["real_vs_real"]
        lines.append(f"| fresh real draw vs test | {rr['spread0']['variance']:.2f} | {rr['spread1']['variance']:.1f} | "
                     f"{rr['spread0']['wasserstein']:.2f} | {rr['spread1']['wasserstein']:.2f} |")
        return "\n".join(lines) + "\n"
    col = 0 if result["config"]["kind"] == "zdc-proton" else 1
    lines += [f"{cfg['kind']}: mean Wasserstein distance of the 5 PMT channel sums (photon counts), "
              f"mean ± std over {n_seeds} seed(s); thesis Table 5.4.2/5.5.2 (its own units) in the last column.", "",
              "| model | WS mean ± std | per channel (PMTc, PMT1-4) | thesis WS |", "|---|---|---|---|"]
    for r in rows:
        th = THESIS_542.get(r["label"])
        per = ", ".join(f"{v:.1f}" for v in r["summary"]["ws_channels"])
        lines.append(f"| {r['label']} | {_pm(r['summary']['ws'])} | {per} | {th[col] if th else '-'} |")
    lines.append(f"| Monte Carlo run vs run | {_pm(result['monte_carlo']['ws'])} | | {THESIS_542['Monte Carlo run vs run'][col]} |")
    experts = [r for r in rows if r["summary"].get("experts") and len(r["summary"]["experts"]["usage"]) > 1]
    if experts:
        lines += ["", "Router usage and mean ± std intensity (photons) of each expert's test responses (first seed; "
                  "thesis Table 5.5.1 neutron: 108 ± 100, 82 ± 85, 125 ± 113).", "",
                  "| model | expert | usage | mean intensity |", "|---|---|---|---|"]
        for r in experts:
            st = r["summary"]["experts"]
            for i, (u, m, s) in enumerate(zip(st["usage"], st["mean_intensity"], st["std_intensity"], strict=True)):
                lines.append(f"| {r['label']} | {i + 1} | {u:.2f} | " + (f"{m:.0f} ± {s:.0f} |" if m is not None else "- |"))
    t = result["timing"]
    lines += ["", f"Time for {t['n']} responses on this CPU ({t['threads']} torch threads); thesis Table 5.5.4: "
              "GEANT4 11172 s, ExpertSim 314 s (CPU) / 3.27 s (GPU).", "",
              "| generator | seconds | speed-up vs our simulator |", "|---|---|---|",
              f"| our simulator | {t['simulator_seconds']:.2f} | 1 |"]
    for label, v in t["models"].items():
        lines.append(f"| {label} | {v['seconds']:.2f} | {v['speedup']:.2f} |")
    return "\n".join(lines) + "\n"


def _png(fig: Any, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(path, buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def _figures(data: SimData, samples: dict[str, np.ndarray], out: Path) -> dict[str, str]:
    """PNG files in OUT plus their base64 for the page: 2-D clusters, or example responses and channel
    histograms."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    test = data.part(False)
    figs: dict[str, str] = {}
    if not data.is_image:
        panels = {"test data": test.x, **samples}
        fig = Figure(figsize=(3.2 * len(panels), 3.3), layout="constrained")
        _, spread = synthetic_labels(test.cond)
        for ax, (name, pts) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
            for s, colour in ((1, "#1f77b4"), (0, "#d62728")):
                ax.scatter(*pts[spread == s].T, s=2, c=colour, alpha=0.5, label=f"spread {s}")
            ax.set_title(name)
            ax.set_xlim(-90, 90)
            ax.set_ylim(-90, 90)
        fig.axes[0].legend(loc="upper left", fontsize=7)
        figs["clusters"] = _png(fig, out / "clusters.png")
        return figs
    # example responses: the most and the least diverse test particles, 4 outcomes each
    inten = test.x.reshape(len(test.x), -1).sum(1)
    spread_by = {g: inten[test.group == g].std() / (inten[test.group == g].mean() + 1) for g in np.unique(test.group)}
    picks = [min(spread_by, key=spread_by.get), max(spread_by, key=spread_by.get)]
    panels = {"simulator": test.x, **samples}
    fig = Figure(figsize=(8, 1.4 * len(panels) * 2), layout="constrained")
    axes = fig.subplots(2 * len(panels), 4, squeeze=False)
    for p, (name, imgs) in enumerate(panels.items()):
        for q, g in enumerate(picks):
            idx = np.flatnonzero(test.group == g)[:4]
            for j in range(4):
                ax = axes[2 * p + q, j]
                ax.set_axis_off()
                if j < len(idx):
                    ax.imshow(np.log1p(imgs[idx[j]]), cmap="magma")
            axes[2 * p + q, 0].set_title(f"{name}: {'consistent' if q == 0 else 'diverse'} particle", fontsize=8,
                                         loc="left")
    figs["responses"] = _png(fig, out / "responses.png")
    fig = Figure(figsize=(15, 3), layout="constrained")
    real = channels(test.x)
    for k, ax in enumerate(fig.subplots(1, 5)):
        bins = np.logspace(0, np.log10(max(real[:, k].max(), 10)), 40)
        ax.hist(real[:, k] + 1, bins=bins, histtype="stepfilled", alpha=0.3, color="k", label="simulator")
        for name, imgs in samples.items():
            ax.hist(channels(imgs)[:, k] + 1, bins=bins, histtype="step", label=name)
        ax.set_xscale("log")
        ax.set_title(["PMTc", "PMT1", "PMT2", "PMT3", "PMT4"][k] + " (photons + 1)")
    fig.axes[0].legend(fontsize=6)
    figs["channels"] = _png(fig, out / "channels.png")
    return figs


def _html(result: dict[str, Any], tables: str, figures: dict[str, str]) -> str:
    """One self-contained page in the audit report's style (``genleak.style``, shared with genleak.report.html)."""
    from genleak.style import CSS, e

    body = "".join(f'<h2>{e(name)}</h2><img alt="{e(name)}" style="max-width:100%" '
                   f'src="data:image/png;base64,{b64}">' for name, b64 in figures.items())
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>genleak sim benchmark</title>"
            f"<style>{CSS}</style></head><body><header><h1>Simulation benchmark: {e(result['config']['kind'])}</h1>"
            f"<p class=meta>{result['seconds']:.0f} s in all</p></header><h2>Tables</h2><pre>{e(tables)}</pre>{body}"
            f"<h2>Config</h2><pre>{e(json.dumps(result['config'], indent=2))}</pre></body></html>\n")
