"""Attack cost vs its denoiser queries.

For each attack: NFE per sample, samples/s, peak RSS, and the ratio of attack time to
NFE x (time of one bare UNet forward at the same batch size). The goal is overhead < 10%
(ratio <= 1.10): an attack should cost its queries and little else.

    python benchmarks/attacks.py [--size 16] [--channels 32,64] [--n 512] [--batch 64] [--threads 2]

Speed depends on the machine; record results in benchmarks/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from genleak.attacks import get_attack
from genleak.targets import DiffusionTarget, build_unet, default_scheduler


def bare_forward_seconds(target: DiffusionTarget, x: torch.Tensor, repeats: int) -> float:
    """Median time of one UNet forward on a batch (the unit an attack's cost is measured in)."""
    times = []
    t = torch.full((x.shape[0],), 100, dtype=torch.long, device=target.device)
    with torch.inference_mode():
        for _ in range(repeats):
            if target.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            target.unet(x, t, return_dict=False)
            if target.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--channels", default="32,64")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--attacks", default="loss,secmi,pia,pian,sima,sima-mc")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = tuple(int(c) for c in args.channels.split(","))
    target = DiffusionTarget(build_unet(args.size, 3, channels), default_scheduler(), device=args.device)
    images = torch.rand(args.n, 3, args.size, args.size) * 2 - 1
    ids = [f"bench/{i}" for i in range(args.n)]
    x = images[: args.batch].to(target.device)
    bare_forward_seconds(target, x, 3)  # warm-up
    print(f"device={target.device} threads={torch.get_num_threads()} image=3x{args.size}x{args.size} "
          f"channels={channels} n={args.n} batch={args.batch}")
    print(f"{'attack':<9} {'NFE':>4} {'samples/s':>10} {'peak RSS MB':>12} {'ratio':>7}")
    for name in args.attacks.split(","):
        attack = get_attack(name)
        # time per sample of NFE bare forwards at the batch size the attack really runs: every
        # denoiser call sees at most --batch inputs (k-draw attacks query their draws in chunks)
        inner = args.batch
        xb = images[: min(inner, args.n)].to(target.device)
        if xb.shape[0] < inner:
            xb = xb.repeat((inner + xb.shape[0] - 1) // xb.shape[0], 1, 1, 1)[:inner]
        per_forward = bare_forward_seconds(target, xb, 5) / inner
        attack.score(target, images[: args.batch], ids[: args.batch], batch_size=args.batch, progress=False)  # warm-up
        start = time.perf_counter()
        attack.score(target, images, ids, batch_size=args.batch, progress=False)
        if target.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        ideal = attack.nfe * per_forward * args.n
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name:<9} {attack.nfe:>4} {args.n / elapsed:>10.1f} {rss:>12.0f} {elapsed / ideal:>7.3f}")


if __name__ == "__main__":
    main()
