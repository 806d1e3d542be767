"""SecMI on tiny models: why the test fixture and the demo train with EMA (README "Findings").

    OMP_WAIT_POLICY=PASSIVE python benchmarks/secmi_tiny.py [--threads 1] [--out DIR]

Trains each model of ``MODELS`` on the members of a digits 8x8 split (64 non-members, seed 0) and
prints SecMI's AUC per t_sec (interval 10, the public code's convention, issue 16 §3) next to the
loss attack's, as a markdown table for benchmarks/RESULTS.md. The table there before this script
existed came from ad-hoc scripts; this regenerates it.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from genleak.data import load_source, make_split  # noqa: E402
from genleak.pipeline import run_attacks, sweep_parameter  # noqa: E402
from genleak.train import TrainConfig, train_ddpm  # noqa: E402

T_SEC_GRID = (20, 30, 60, 110, 210)
# (label, UNet channels, members, steps, EMA decay or None, seed): the rows of RESULTS.md "SecMI on tiny models"
MODELS = (
    ("(16,32) 32 members 500 steps, seed 0, no EMA", (16, 32), 32, 500, None, 0),
    ("same, seed 1", (16, 32), 32, 500, None, 1),
    ("(16,32) 32 members 1000 steps, seed 0, no EMA", (16, 32), 32, 1000, None, 0),
    ("(16,32) 64 members 1000 steps, EMA 0.995", (16, 32), 64, 1000, 0.995, 0),
    ("(32,64) 64 members 1250 steps, no EMA", (32, 64), 64, 1250, None, 0),
    ("(32,64) 64 members 1250 steps, EMA 0.995", (32, 64), 64, 1250, 0.995, 0),
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="folder for the trained models (default: in memory)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    digits = load_source({"kind": "digits", "size": 8})
    start = time.perf_counter()
    head = " | ".join(f"{t}/10" for t in T_SEC_GRID)
    lines = [f"| model | {head} | loss AUC |", "|---|" + "---|" * (len(T_SEC_GRID) + 1)]
    for label, channels, members, steps, ema, seed in MODELS:
        split = make_split(digits, members, 64, seed=seed, source={"kind": "digits", "size": 8})
        config = TrainConfig(steps=steps, block_out_channels=channels, ema_decay=ema, seed=seed, checkpoint_every=10**6)
        folder = None if args.out is None else os.path.join(args.out, f"model-{len(lines) - 2}")
        target = train_ddpm(split.members.images, config, folder, progress=False)
        secmi = sweep_parameter(target, split, "secmi", "t_sec", list(T_SEC_GRID), params={"interval": 10})
        loss = run_attacks(target, split, ["loss"], progress=False).metric("loss")
        cells = " | ".join(f"{secmi[t]['auc']:.3f}" for t in T_SEC_GRID)
        lines.append(f"| {label} | {cells} | {loss:.3f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
