"""IAR attack and extraction cost on CPU (or GPU): tokens/s and samples/s of scoring, plain
(one forward pass per image) vs CFG difference (two passes, batched as one 2B pass), MAR's
per-token diffusion loss (64 noise draws x 4 masks, supp. D.8), and extraction cost per candidate
(one candidate-selection pass + prefix completion: N - prefix forward passes for RAR, K scales
for VAR, ``iterations`` x DDIM steps for MAR).

Weights are random (speed does not depend on training), shapes are those of the tests/configs:
8x8 digits, 4x4 tokens (VAR scales 1..4 = 30 tokens), codebook 64, transformer d=64, depth 2.

    python benchmarks/iar.py [--n 512] [--batch 64] [--threads 1] [--candidates 50]

Record results in benchmarks/RESULTS.md (IAR results) with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from genleak.attacks import get_attack  # noqa: E402
from genleak.iar.extraction import IARExtractionConfig, candidate_distances, complete  # noqa: E402
from genleak.models.vq import VQConfig  # noqa: E402
from genleak.targets.iar import build_target  # noqa: E402


def make_targets() -> dict[str, object]:
    vq = VQConfig().to_dict()
    torch.manual_seed(0)
    return {
        "rar": build_target("rar", vq, {"vocab_size": 64, "seq_len": 16}),
        "var": build_target("var", vq, {"vocab_size": 64, "latent_dim": 16, "scales": [1, 2, 3, 4]}),
        "mar": build_target("mar", {"image_size": 8, "channels": 1}, {"token_dim": 4, "seq_len": 16}),
    }


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.n, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.randint(0, 10, (args.n,), generator=g)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"device {device}, n={args.n}, batch={args.batch}")
    print("| target | attack | passes/img | tokens/img | samples/s | tokens/s |")
    print("|---|---|---|---|---|---|")
    targets = make_targets()
    for kind, t in targets.items():
        t.device = torch.device(device)
        t.tokenizer.to(device)
        t.model.to(device)
        n_tok = t.sequence_length
        attacks = ["iar-loss", "iar-loss-cfg"]
        for name in attacks:
            a = get_attack(name, noise_draws=64, mask_draws=4) if kind == "mar" else get_attack(name)
            secs = timed(lambda a=a, t=t: a.score(t, images, cond=labels, batch_size=args.batch, progress=False),
                         repeats=1 if kind == "mar" else 3)
            passes = (2 if a.config.cfg_diff else 1) * (4 if kind == "mar" else 1)
            print(f"| {kind} | {name} | {passes} | {n_tok} | {args.n / secs:.0f} | {args.n * n_tok / secs:.0f} |")
    print()
    print("| target | prefix | candidate selection ms/img | completion ms/candidate | total ms/candidate |")
    print("|---|---|---|---|---|")
    for kind, t in targets.items():
        prefix = IARExtractionConfig().resolved_prefix(t.sequence_length)
        x, y = images[: args.candidates], labels[: args.candidates]
        sel = timed(lambda t=t: candidate_distances(t, images, labels, args.batch), repeats=1) / args.n
        comp = timed(lambda t=t, x=x, y=y, p=prefix: complete(t, x, y, p, args.batch), repeats=1) / args.candidates
        print(f"| {kind} | {prefix}/{t.sequence_length} | {sel * 1e3:.3f} | {comp * 1e3:.2f} | {(sel + comp) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
