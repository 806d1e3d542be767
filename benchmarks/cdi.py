"""CDI benchmarks: feature extraction cost and the statistics at scale.

    python benchmarks/cdi.py features [--size 8] [--channels 32,64] [--n 256] [--batch 64] [--threads 1]
    python benchmarks/cdi.py stats [--n 10000] [--resamples 1000] [--features 14] [--permutations 999] [--threads 1]
    python benchmarks/cdi.py false-positive [--config configs/cdi_false_positive.json] [--trials N] [--out DIR]

``features``: for every CDI feature, samples/s, declared NFE, *measured* denoiser evaluations and
backward passes per sample (counted by a wrapper around the target; Noise Optimization's line
search makes its count data-dependent), on a randomly initialised UNet (speed does not depend on
training). ``stats``: the minimum-|P| curve (the full size grid x 1000 resamples) on |P| = |U| =
10,000 precomputed scores, the 5-fold scoring model, and the exact permutation p-value on
precomputed feature matrices. The issue's bar: the resampling must take under a minute on 2 cores.
``false-positive``: the false-positive control of thesis table 8.5.2 (P and U both non-members of the
weak model, many random draws): how often the exact and the parametric Welch p-values fall below 0.01
and 0.05, with exact binomial 95% intervals; a calibrated test stays at the level. The tests only run
100 small draws (tests/test_inference.py); this is the run with the power to see a miscalibration.

Speed depends on the machine and on what else runs on it; record results with the command in
benchmarks/RESULTS.md (CDI).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


class CountingTarget:
    """Counts denoiser input rows (forward evaluations) and rows that carry a gradient (each one is
    differentiated by the gradient features, i.e. one backward pass per row)."""

    def __init__(self, target) -> None:
        self._target = target
        self.rows = 0
        self.grad_rows = 0

    def eps(self, x_t, t, cond=None):
        self.rows += x_t.shape[0]
        if x_t.requires_grad:
            self.grad_rows += x_t.shape[0]
        return self._target.eps(x_t, t, cond)

    def __getattr__(self, name):
        return getattr(self._target, name)


def bench_features(args: argparse.Namespace) -> None:
    from genleak.attacks import get_attack
    from genleak.inference.features import WHITE_BOX_FEATURES
    from genleak.targets import DiffusionTarget, build_unet, default_scheduler

    torch.manual_seed(0)
    channels = tuple(int(c) for c in args.channels.split(","))
    target = DiffusionTarget(build_unet(args.size, 1, channels), default_scheduler(), device=args.device)
    images = torch.rand(args.n, 1, args.size, args.size) * 2 - 1
    ids = [f"bench/{i}" for i in range(args.n)]
    print(f"device={target.device} threads={torch.get_num_threads()} image=1x{args.size}x{args.size} "
          f"unet={channels} n={args.n} batch={args.batch}")
    print(f"{'feature':10s} {'cols':>4s} {'NFE':>4s} {'meas. NFE':>9s} {'backward':>8s} {'samples/s':>10s}")
    for name in WHITE_BOX_FEATURES:
        attack = get_attack(name)
        counting = CountingTarget(target)
        attack.score(counting, images[: args.batch], ids[: args.batch], batch_size=args.batch, progress=False)  # warm-up
        counting.rows = counting.grad_rows = 0
        start = time.perf_counter()
        attack.score(counting, images, ids, batch_size=args.batch, progress=False)
        seconds = time.perf_counter() - start
        print(f"{name:10s} {len(attack.columns):4d} {attack.nfe:4d} {counting.rows / args.n:9.2f} "
              f"{counting.grad_rows / args.n:8.2f} {args.n / seconds:10.1f}", flush=True)


def bench_stats(args: argparse.Namespace) -> None:
    from genleak.inference.scoring import cross_val_scores, permutation_test
    from genleak.inference.stats import min_suspect_size, resampled_curve, size_grid

    rng = np.random.default_rng(0)
    n = args.n
    # scores with a small effect (Cohen's d = 0.05): the curve crosses alpha inside the grid
    sp, su = rng.normal(0.05, 1, n), rng.normal(0, 1, n)
    grid = size_grid(n)
    start = time.perf_counter()
    curve = resampled_curve(sp, su, grid, n_resamples=args.resamples)
    seconds = time.perf_counter() - start
    print(f"min-|P| curve: {len(grid)} sizes (5..{grid[-1]}) x {args.resamples} resamples on {n} + {n} scores: "
          f"{seconds:.2f} s (min |P| {min_suspect_size(curve)})", flush=True)
    xp = rng.normal(0.02, 1, (n, args.features))
    xu = rng.normal(0, 1, (n, args.features))
    start = time.perf_counter()
    oof = cross_val_scores(xp, xu)
    print(f"5-fold scoring model (scikit-learn) on {n} + {n} x {args.features} features: {time.perf_counter() - start:.2f} s", flush=True)
    start = time.perf_counter()
    test = permutation_test(xp, xu, oof.folds_p, oof.folds_u, n_permutations=args.permutations)
    print(f"exact p-value, {args.permutations} within-fold permutations (batched Newton refits) on {n} + {n} x "
          f"{args.features}: {time.perf_counter() - start:.1f} s (p = {test.p_value:.3g}, null t sd {test.t_null_std:.2f})")


def bench_false_positive(args: argparse.Namespace) -> None:
    from scipy.stats import binomtest

    from genleak.inference.experiments import load_config, run_experiment

    config = load_config(args.config)
    if args.trials:
        config["trials"] = args.trials
    s = run_experiment(config, args.out, progress=False)
    n = s["trials"]
    print(f"{n} draws of {s['suspect_size']} vs {s['suspect_size']} non-members ({s['seconds']:.0f} s):")
    for prefix, label in (("p", "exact (permutation) p"), ("p_welch", "parametric Welch p")):
        for level, key in ((0.01, f"{prefix}_below_alpha"), (0.05, f"{prefix}_at_most_0.05")):
            k = s[key]
            ci = binomtest(k, n).proportion_ci(method="exact")
            print(f"  {label} {'<' if level == 0.01 else '<='} {level}: {k}/{n} = {k / n:.3f} "
                  f"[{ci.low:.3f}, {ci.high:.3f}]")
        print(f"  {label} mean: {s[f'{prefix}_mean']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("features")
    f.add_argument("--size", type=int, default=8)
    f.add_argument("--channels", default="32,64")
    f.add_argument("--n", type=int, default=256)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--device", default=None)
    s = sub.add_parser("stats")
    s.add_argument("--n", type=int, default=10000)
    s.add_argument("--resamples", type=int, default=1000)
    s.add_argument("--features", type=int, default=14)
    s.add_argument("--permutations", type=int, default=999)
    fp = sub.add_parser("false-positive")
    fp.add_argument("--config", default="configs/cdi_false_positive.json")
    fp.add_argument("--trials", type=int, default=None, help="default: the config's")
    fp.add_argument("--out", default=None)
    for q in (f, s, fp):
        q.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    {"features": bench_features, "stats": bench_stats, "false-positive": bench_false_positive}[args.what](args)
    if args.what == "false-positive":
        import sys

        from evidence import record_run  # benchmarks/evidence.py: mark the evidence entries this run produced

        record_run(sys.argv, args.out)


if __name__ == "__main__":
    main()
