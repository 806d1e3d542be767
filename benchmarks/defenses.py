"""Defense costs: training throughput (steps/s) of baseline, teacher, DistillMD student, KD student and
DP-SGD, and DualMD sampling speed vs single-model sampling.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/defenses.py [--size 8] [--channels 16,32] [--members 32]
        [--batch 32] [--steps 120] [--threads 1] [--sample-n 256] [--sample-steps 50]

Throughput is measured as (S - s0) / (time(S steps) - time(s0 steps)) with s0 = 10, so one-off
setup (accelerate, Opacus wrapping, first-call allocations) is not counted; each time is the best
of 2 runs (sampling: best of 3, interleaved) because other processes share the machine. Everything runs
without checkpoints. Record results in benchmarks/RESULTS.md (Defenses) with the command line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from genleak.data import load_source, make_split  # noqa: E402
from genleak.defenses.disjoint import assign_halves, halves_of  # noqa: E402
from genleak.defenses.distill import AlternatingDistillation  # noqa: E402
from genleak.defenses.dpsgd import DPConfig, DPSGDHooks  # noqa: E402
from genleak.defenses.kd import SingleTeacher  # noqa: E402
from genleak.targets.dual import DualTarget  # noqa: E402
from genleak.targets.sampling import generate  # noqa: E402
from genleak.train import TrainConfig, train_ddpm  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(run, steps: int, s0: int = 10, repeats: int = 2) -> float:
    """steps/s of ``run(n_steps)`` without its fixed setup cost; best of ``repeats`` (shared machines)."""
    setup = min(timed(lambda: run(s0)) for _ in range(repeats))
    full = min(timed(lambda: run(steps)) for _ in range(repeats))
    return (steps - s0) / (full - setup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--channels", default="16,32")
    p.add_argument("--members", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sample-n", type=int, default=256)
    p.add_argument("--sample-steps", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    channels = tuple(int(c) for c in args.channels.split(","))
    spec = {"kind": "digits", "size": args.size}
    split = assign_halves(make_split(load_source(spec), args.members, seed=0, source=spec), 0)
    h1, h2 = halves_of(split)
    x = split.members.images
    cfg = TrainConfig(steps=1, block_out_channels=channels, batch_size=args.batch, ema_decay=0.995, seed=0)

    def cfg_n(n: int) -> TrainConfig:
        return TrainConfig(**{**cfg.__dict__, "steps": n})

    with tempfile.TemporaryDirectory() as tmp:
        teacher_1 = train_ddpm(x[torch.as_tensor(h1)], cfg_n(20), Path(tmp) / "t1", progress=False)
        teacher_2 = train_ddpm(x[torch.as_tensor(h2)], cfg_n(20), Path(tmp) / "t2", progress=False)
    rows = []
    runs = {
        "baseline (all members)": lambda n: train_ddpm(x, cfg_n(n), progress=False),
        "teacher (one half)": lambda n: train_ddpm(x[torch.as_tensor(h1)], cfg_n(n), progress=False),
        "DistillMD student": lambda n: train_ddpm(
            x, cfg_n(n), progress=False, hooks=AlternatingDistillation(teacher_1, teacher_2, h1, h2, args.batch)),
        "KD student": lambda n: train_ddpm(x, cfg_n(n), progress=False, hooks=SingleTeacher(teacher_1)),
        "DP-SGD (Opacus)": lambda n: train_ddpm(
            x, cfg_n(n), progress=False,
            hooks=DPSGDHooks(len(x), min(args.batch, len(x)), 1.0, DPConfig(noise_multiplier=1.0, delta=1e-5))),
    }
    print(f"threads={torch.get_num_threads()} image={args.size}x{args.size} channels={channels} "
          f"members={args.members} batch={args.batch} steps={args.steps}")
    base = None
    for name, run in runs.items():
        rate = throughput(run, args.steps)
        base = base or rate
        rows.append((name, rate, base / rate))
        print(f"| {name} | {rate:.1f} steps/s | {base / rate:.2f}x baseline time/step |", flush=True)

    single = teacher_1
    dual = DualTarget(teacher_1, teacher_2)
    n, k = args.sample_n, args.sample_steps
    generate(single, 8, 5, 0)  # warm-up
    # interleaved, best of 3: other processes on a shared machine slow single runs at random
    t_single, t_dual = float("inf"), float("inf")
    for _ in range(3):
        t_single = min(t_single, timed(lambda: generate(single, n, k, 0, batch_size=n)))
        t_dual = min(t_dual, timed(lambda: generate(dual, n, k, 0, batch_size=n)))
    print(f"| single-model DDIM sampling | {n / t_single:.1f} images/s ({k} steps, batch {n}) | 1.00x |")
    print(f"| DualMD DDIM sampling | {n / t_dual:.1f} images/s ({k} steps, batch {n}) | {t_dual / t_single:.2f}x |")


if __name__ == "__main__":
    main()
