"""Choose B4B's bucket count and beta on a stealer world disjoint from the one the simulation evaluates.

The thesis picks the number of buckets so that a legitimate task fills a small fraction of them and
broad (stealer) querying a large one at the stealing budget (Section 6.4.1, A.6.6), and places beta,
the coverage at which sigma reaches alpha (Eq. 6.1), between the two. Measuring both on the world the
simulation then attacks would tune the defense to the very queries it is scored on, so the stealer's
coverage here comes from ``sample_world`` under a seed the simulation never uses (the config's
``calibration.world_seed``; ``config.check_disjoint`` refuses a coincidence).

Rule (deterministic in the measured coverage): the bucket count with the largest gap
``stealer - task`` (ties: more buckets), and beta = the midpoint of the two at that count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genleak.b4b import data as bdata
from genleak.b4b.config import CalibrationConfig, check_disjoint, read_mapping
from genleak.b4b.defense import LSHCoverage
from genleak.b4b.simulate import load_simulation_config
from genleak.errors import GenleakError


@dataclass(frozen=True)
class CoveragePoint:
    n_hyperplanes: int
    task: float  # fraction of buckets the legitimate task's queries occupy
    stealer: float  # fraction the first ``budget`` calibration-world queries occupy


def load_calibration(path: str | Path) -> CalibrationConfig:
    """The ``calibration:`` section of ``path``, checked against its ``simulation:`` section's worlds."""
    cal = CalibrationConfig.from_dict(dict(read_mapping(path).get("calibration") or {}))
    check_disjoint(cal, load_simulation_config(path).evaluated_world_seeds)
    return cal


def measure_coverage(embed: Callable[[np.ndarray], np.ndarray], cal: CalibrationConfig,
                     lsh_seed: int = 0) -> list[CoveragePoint]:
    """Task and calibration-stealer coverage for every candidate bucket count (same hyperplane seed
    as the deployed defense, since coverage depends on the draw by a few points)."""
    task = embed(bdata.digits_task(seed=cal.task_seed).x_all)
    world = embed(bdata.sample_world(cal.budget, seed=cal.world_seed))
    points = []
    for n in cal.hyperplanes:
        lsh = LSHCoverage(task.shape[1], n, lsh_seed)
        points.append(CoveragePoint(n, lsh.coverage(lsh.bitset(lsh.buckets(task))),
                                    lsh.coverage(lsh.bitset(lsh.buckets(world)))))
    return points


def choose(points: Sequence[CoveragePoint]) -> tuple[int, float]:
    """(n_hyperplanes, beta): the largest stealer-task gap (ties: more buckets), beta at the midpoint."""
    if not points:
        raise GenleakError("no coverage measured; give at least one candidate bucket count")
    best = max(points, key=lambda p: (round(p.stealer - p.task, 6), p.n_hyperplanes))
    if best.stealer <= best.task:
        raise GenleakError("the calibration world covers no more buckets than the task at any bucket count; "
                           "B4B cannot tell them apart here")
    return best.n_hyperplanes, round((best.task + best.stealer) / 2, 2)


def table(points: Sequence[CoveragePoint], chosen: tuple[int, float]) -> str:
    lines = ["| buckets | task | stealer | gap |", "|---|---|---|---|"]
    for p in points:
        mark = " (chosen)" if p.n_hyperplanes == chosen[0] else ""
        lines.append(f"| 2^{p.n_hyperplanes}{mark} | {p.task:.3f} | {p.stealer:.3f} | {p.stealer - p.task:.3f} |")
    return "\n".join(lines) + f"\n\nchosen: n_hyperplanes = {chosen[0]}, beta = {chosen[1]}"
