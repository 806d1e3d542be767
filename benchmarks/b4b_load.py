"""Load benchmark of the B4B encoder API on loopback: latency p50/p99 and throughput.

Starts ``genleak b4b serve`` in a subprocess (the default victim's architecture: 4-layer CNN,
width 32, 64-d embeddings, 16x16 images; untrained unless --model is given, the cost is the same),
creates users in a fresh SQLite database and runs bounded loads (fixed duration, fixed request cap
per client) at several concurrency levels. Prints a markdown table; --out writes it atomically.

    python benchmarks/b4b_load.py --duration 10 --concurrency 1,8,32 --out /tmp/b4b_load.md

Measured tables and the commands behind them: benchmarks/results_b4b.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="encoder folder (default: untrained default architecture)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    p.add_argument("--concurrency", default="1,8,32", help="comma list of concurrent clients")
    p.add_argument("--users", type=int, default=8, help="API users the clients are spread over")
    p.add_argument("--batch", default="1,32", help="min,max images per request (uniform)")
    p.add_argument("--max-requests", type=int, default=5000, help="cap per client per level")
    p.add_argument("--sqlite-sync", default="FULL", help="FULL or NORMAL")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--out", type=Path, default=None, help="write the markdown result here (atomically)")
    args = p.parse_args(argv)

    import torch

    from genleak.b4b.encoder import Encoder, SmallConvEncoder
    from genleak.b4b.loadgen import run_load
    from genleak.b4b.process import ServerProcess
    from genleak.b4b.store import StateStore
    from genleak.io import atomic_write_text

    lo, hi = (int(v) for v in args.batch.split(","))
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            model = Path(tmp) / "encoder"
            Encoder(SmallConvEncoder(1, 32, 64, normalize=True), (1, 16, 16), name="bench").save(model)
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = StateStore(db)
        keys = [store.create_user(f"bench-{i}")[1] for i in range(args.users)]
        with ServerProcess(model, db, workers=args.workers, sqlite_synchronous=args.sqlite_sync) as server:
            run_load(server.url, keys, concurrency=2, duration_s=1.0, max_requests=20, keep_images=False)  # warm-up
            for c in levels:
                rep = run_load(server.url, keys, concurrency=c, duration_s=args.duration,
                               max_requests=args.max_requests, batch_sizes=(lo, hi), seed=c, keep_images=False)
                s = rep.summary()
                bad = {k: v for k, v in rep.status_counts().items() if k != 200}
                rows.append((c, s, bad))
                print(f"concurrency {c}: {s} non-200: {bad or 'none'}", file=sys.stderr)
    cmd = "python benchmarks/b4b_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"### B4B API load, loopback ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{__import__('os').cpu_count()} CPUs, shared machine)", "",
        f"Command: `{cmd.strip()}`", "",
        f"Server: 1 uvicorn process x {args.workers} worker(s), torch 1 thread per request, SQLite "
        f"synchronous={args.sqlite_sync} (WAL), {args.users} users, batches of {lo}-{hi} images (16x16), "
        f"{args.duration:g} s per level.", "",
        "| clients | requests | p50 ms | p99 ms | max ms | req/s | images/s | non-200 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, s, bad in rows:
        lines.append(f"| {c} | {s['acked']} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} | {s['requests_per_s']} | "
                     f"{s['images_per_s']} | {bad or 0} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
