"""CPU cost of the CDI statistics with the refitted minimum-|P| curve (the default) vs the
fixed-scorer view alone (the old default), on N(0, I) features with a 0.3 sd shift in one column.

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 python benchmarks/cdi_refit_cost.py
"""

import time

import numpy as np

from genleak.inference.cdi import CDIConfig, cdi_test

rng = np.random.default_rng(0)
cdi_test(rng.normal(size=(20, 2)), rng.normal(size=(20, 2)), CDIConfig(permutations=9, n_resamples=10))  # warm-up
for n, m, k in ((32, 32, 4), (64, 512, 4), (256, 256, 4), (256, 256, 14)):
    xp, xu = rng.normal(size=(n, k)), rng.normal(size=(m, k))
    xp[:, 0] += 0.3
    cpu = {}
    for curve in ("fixed", "refit"):
        t = time.process_time()
        r = cdi_test(xp, xu, CDIConfig(permutations=999, curve=curve))
        cpu[curve] = time.process_time() - t
    print(f"|P| = {n}, |U| = {m}, {k} columns: fixed view only {cpu['fixed']:.2f} s CPU, refitted default "
          f"{cpu['refit']:.2f} s CPU; resamples per size {sorted({p.resamples for p in r.curve})}")
