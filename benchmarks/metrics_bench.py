"""Timing of genleak.metrics at realistic split sizes (SecMI uses 25k + 25k on CIFAR-10).

Run: python benchmarks/metrics_bench.py [n_per_side ...]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from genleak.metrics import evaluate, repeated_subsets


def main(sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    for n in sizes:
        m, nm = rng.normal(0.3, 1, n), rng.normal(0, 1, n)
        t0 = time.perf_counter()
        evaluate(m, nm)
        t1 = time.perf_counter()
        evaluate(m, nm, bootstrap=1000)
        t2 = time.perf_counter()
        repeated_subsets(m, nm, n_subsets=100, subset_size=min(500, n))
        t3 = time.perf_counter()
        print(
            f"n={n:>6} per side: evaluate {t1 - t0:.3f}s | evaluate+bootstrap(1000) {t2 - t1:.2f}s"
            f" | repeated_subsets(100x500) {t3 - t2:.2f}s"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000, 25000])
