"""Evaluation as in the thesis: per-spread variance and Wasserstein distance (Table 4.4.1), the
Wasserstein distance of the 5 PMT channel sums (Tables 4.4.1 HEP, 5.4.2), expert usage and intensities
(Table 5.5.1) and generation time for 10,000 responses (Table 5.5.4)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

from genleak.errors import GenleakError
from genleak.sim.data import SimData, channels, synthetic_labels


def w1_points(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Exact 2-D Wasserstein-1 between two equal-size point sets (optimal assignment, Euclidean cost);
    the larger set is subsampled (fixed seed) when the sizes differ."""
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    a = a if len(a) == n else a[rng.choice(len(a), n, replace=False)]
    b = b if len(b) == n else b[rng.choice(len(b), n, replace=False)]
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def synthetic_metrics(gen_x: np.ndarray, gen_cond: np.ndarray, test: SimData) -> dict[str, Any]:
    """Per spread value: the mean over the 9 classes of the per-coordinate variance of the generated
    points (real: 1 and 100), and the mean over classes of the 2-D Wasserstein-1 to the test points."""
    gc, gs = synthetic_labels(gen_cond)
    tc, ts = synthetic_labels(test.cond)
    out: dict[str, Any] = {}
    for s in (0, 1):
        var, ws, real_var = [], [], []
        for k in range(9):
            g, t = gen_x[(gc == k) & (gs == s)], test.x[(tc == k) & (ts == s)]
            if len(g) < 2 or len(t) < 2:
                raise GenleakError(f"class {k + 1}, spread {s}: fewer than 2 generated or test points")
            var.append(g.var(0).mean())
            real_var.append(t.var(0).mean())
            ws.append(w1_points(g, t))
        out[f"spread{s}"] = {"variance": float(np.mean(var)), "wasserstein": float(np.mean(ws)),
                             "real_variance": float(np.mean(real_var))}
    return out


def channel_ws(gen_x: np.ndarray, real_x: np.ndarray) -> dict[str, Any]:
    """1-D Wasserstein-1 between generated and simulated distributions of each PMT channel sum
    (photon counts); the mean over the 5 channels is the headline number."""
    g, r = channels(gen_x), channels(real_x)
    per = [float(wasserstein_distance(g[:, k], r[:, k])) for k in range(5)]
    return {"per_channel": per, "mean": float(np.mean(per))}


def expert_stats(assign: np.ndarray, gen_x: np.ndarray, k: int) -> dict[str, list[float | None]]:
    """Share of responses routed to each expert and the mean / std intensity (photon sum) of its responses."""
    inten = gen_x.reshape(len(gen_x), -1).sum(1)
    usage = [float((assign == i).mean()) for i in range(k)]
    mean = [float(inten[assign == i].mean()) if (assign == i).any() else None for i in range(k)]
    std = [float(inten[assign == i].std()) if (assign == i).any() else None for i in range(k)]
    return {"usage": usage, "mean_intensity": mean, "std_intensity": std}


def evaluate(data: SimData, gen_x: np.ndarray, gen_cond: np.ndarray, assign: np.ndarray | None = None,
             experts: int = 1) -> dict[str, Any]:
    """The thesis metrics of one set of generations against the test part of ``data``."""
    test = data.part(False)
    if gen_x.shape[1:] != test.x.shape[1:]:
        raise GenleakError(f"generated shape {gen_x.shape[1:]} does not match the data's {test.x.shape[1:]}")
    if not data.is_image:
        return {"kind": data.kind, **synthetic_metrics(gen_x, gen_cond, test)}
    out: dict[str, Any] = {"kind": data.kind, "ws": channel_ws(gen_x, test.x)}
    if assign is not None:
        out["experts"] = expert_stats(assign, gen_x, experts)
    return out


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    res = fn(*args)
    return time.perf_counter() - t0, res
