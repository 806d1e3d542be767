"""Extraction, memorisation and Shake-to-Leak: speed benchmarks and the claim experiments.

    python benchmarks/extraction.py speed [--size 8] [--channels 32,64] [--n 512] [--steps 10,50]
                                          [--nn 1000x1000,10000x10000] [--threads 2]
    python benchmarks/extraction.py claims --config configs/extraction_digits.json --out runs/extraction

``speed``: DDIM generation throughput (images/s; NFE per image = DDIM steps) on an untrained UNet
of the given size (speed does not depend on the weights), and the nearest-neighbour search time
for N generations against M training images (``genleak.extraction.nn.nearest``: chunked
``torch.cdist`` GEMMs + exact re-ranking) at the image's dimension and at CIFAR's 3x32x32.

``claims``: runs the experiment a config describes (``kind`` = extraction | memorization | s2l |
perturb), training its targets into ``OUT/`` first (train_ddpm resumes / reuses finished runs),
and prints a markdown table. Every extraction number in benchmarks/RESULTS.md comes from one of
these commands. Configs: ``configs/extraction_*.json``, ``configs/s2l_*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


# -- speed -------------------------------------------------------------------------------------------------
def speed(args: argparse.Namespace) -> None:
    from genleak.extraction.nn import nearest
    from genleak.targets import DiffusionTarget, build_unet, default_scheduler
    from genleak.targets.sampling import generate

    torch.manual_seed(0)
    channels = tuple(int(c) for c in args.channels.split(","))
    target = DiffusionTarget(build_unet(args.size, 1, channels), default_scheduler(), device=args.device)
    print(f"device={target.device} threads={torch.get_num_threads()} image=1x{args.size}x{args.size} "
          f"channels={channels}")
    # Wall time and this process's CPU time: on a shared machine the wall time measures the
    # contention, CPU time / threads what the work costs on free cores.
    print("\n| DDIM steps (= NFE / image) | images | batch | wall s | CPU s | images/s (wall) | images/CPU-s |")
    print("|---|---|---|---|---|---|---|")
    generate(target, min(args.batch, args.n), steps=2, batch_size=args.batch)  # warm-up
    for steps in (int(s) for s in args.steps.split(",")):
        start, cpu = time.perf_counter(), time.process_time()
        generate(target, args.n, steps=steps, batch_size=args.batch)
        sec, csec = time.perf_counter() - start, time.process_time() - cpu
        print(f"| {steps} | {args.n} | {args.batch} | {sec:.2f} | {csec:.2f} | {args.n / sec:.1f} | {args.n / csec:.1f} |")

    print("\n| N generations x M training | image | wall s | CPU s | pairs/s (wall) |")
    print("|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for spec in args.nn.split(","):
        n, m = (int(v) for v in spec.lower().split("x"))
        for shape in ((1, args.size, args.size), (3, 32, 32)):
            q = torch.rand(n, *shape, generator=g) * 2 - 1
            r = torch.rand(m, *shape, generator=g) * 2 - 1
            start, cpu = time.perf_counter(), time.process_time()
            nearest(q, r, device=args.device)
            sec, csec = time.perf_counter() - start, time.process_time() - cpu
            print(f"| {n} x {m} | {'x'.join(map(str, shape))} | {sec:.2f} | {csec:.2f} | {n * m / sec:.3g} |")


# -- claims ------------------------------------------------------------------------------------------------
def _train(images: torch.Tensor, train: dict[str, Any], folder: Path, labels: torch.Tensor | None = None,
           num_classes: int | None = None) -> Any:
    from genleak.s2l.shake import ClassLabelHooks
    from genleak.targets import build_unet
    from genleak.train import TrainConfig, train_ddpm

    cfg = TrainConfig.from_dict(train)
    unet = hooks = None
    if num_classes:
        unet = build_unet(images.shape[-1], images.shape[1], tuple(cfg.block_out_channels), cfg.layers_per_block,
                          cfg.attention, num_class_embeds=num_classes)
        hooks = ClassLabelHooks(labels, cfg.batch_size)
    start = time.perf_counter()
    target = train_ddpm(images, cfg, folder, unet=unet, hooks=hooks, progress=False)
    print(f"target {folder}: ready in {time.perf_counter() - start:.0f} s", flush=True)
    return target


def _split(setup: dict[str, Any]) -> Any:
    from genleak.data import load_source, make_split, parse_source_spec

    spec = parse_source_spec(setup.get("source", "digits:8"))
    return make_split(load_source(spec), setup["members"], setup.get("nonmembers"), seed=setup.get("split_seed", 0),
                      source=spec, stratify=setup.get("stratify", False))


def _target_for(setup: dict[str, Any], out: Path, name: str) -> tuple[Any, Any]:
    split = _split(setup)
    classes = setup.get("num_class_embeds")
    labels = torch.as_tensor(split.members.labels) if classes else None
    return _train(split.members.images, setup["train"], out / name, labels, classes), split


def claim_extraction(cfg: dict[str, Any], out: Path) -> None:
    from genleak.extraction import ExtractionConfig, extract, write_extraction

    ext = ExtractionConfig(**cfg.get("extraction", {}))
    print("\n| model | members | train steps | epochs | generations | extracted generations | distinct training images | held-out false positives | min d_train | gen s | NN s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, setup in cfg["models"].items():
        target, split = _target_for(setup, out, name)
        held = split.nonmembers
        r = extract(target, split.members, held, ext, progress=False)
        write_extraction(r, out / f"{name}-extraction", split.members, held)
        d = r.to_dict()
        tr = setup["train"]
        epochs = tr["steps"] * min(tr.get("batch_size", 32), len(split.members)) / len(split.members)
        print(f"| {name} | {len(split.members)} | {tr['steps']} | {epochs:.0f} | {d['n_generated']} | "
              f"{d['n_extracted_generations']} | {d['n_extracted_train_images']} | {d['heldout_false_positives']} | "
              f"{d['train_distance_quantiles']['q0']:.3f} | {d['seconds']['generate']:.1f} | "
              f"{d['seconds']['nearest_neighbour']:.2f} |", flush=True)


def claim_memorization(cfg: dict[str, Any], out: Path) -> None:
    """Planted duplicates: K images x R copies + U unique images; t-error of duplicates vs unique."""
    from genleak.attacks import get_attack
    from genleak.data import load_source, parse_source_spec
    from genleak.extraction.memorization import rank_images
    from genleak.metrics import auc

    src = load_source(parse_source_spec(cfg.get("source", "digits:8")))
    k, r, u = cfg["duplicated"], cfg["copies"], cfg["unique"]
    grid = [tuple(p) for p in cfg.get("t_sec_interval", [[110, 10]])]
    refs = cfg.get("reference_attacks", ["loss", "sima"])
    print(f"\n{k} images x {r} copies + {u} unique; AUC of -t-error, duplicated (memorised) vs unique training images")
    print("\n| seed | train s | " + " | ".join(f"t-error t={t},k={i}" for t, i in grid) + " | "
          + " | ".join(f"{a} (ref.)" for a in refs) + " |")
    print("|---|---|" + "---|" * (len(grid) + len(refs)))
    for seed in cfg.get("seeds", [0]):
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(src), generator=g).tolist()
        dup, uniq = src[perm[:k]], src[perm[k : k + u]]
        images = torch.cat([dup.images.repeat(r, 1, 1, 1), uniq.images])
        train = dict(cfg["train"], seed=seed)
        start = time.perf_counter()
        target = _train(images, train, out / f"dup-seed{seed}")
        sec = time.perf_counter() - start
        pool = dup.concat(uniq)
        cells = []
        for t, i in grid:
            res = rank_images(target, pool, dup.ids, t_sec=t, interval=i, seed=seed, progress=False)
            cells.append(f"{res.separation()['auc']:.3f}")
        for a in refs:
            att = get_attack(a)
            cells.append(f"{auc(att.score(target, dup.images, dup.ids, progress=False), att.score(target, uniq.images, uniq.ids, progress=False)):.3f}")
        print(f"| {seed} | {sec:.0f} | " + " | ".join(cells) + " |", flush=True)


def claim_s2l(cfg: dict[str, Any], out: Path) -> None:
    from genleak.s2l.report import write_report
    from genleak.s2l.shake import ShakeConfig, parse_variants, run_s2l

    target, split = _target_for(cfg["setup"], out, "target")
    variants = parse_variants(cfg["methods"], cfg.get("ranks", [4]))
    for seed in cfg.get("seeds", [0]):
        shake = ShakeConfig(**dict(cfg.get("shake", {}), seed=seed))
        comp = run_s2l(target, split, cfg.get("domain", "all"), variants, cfg["attacks"], shake,
                       attack_params=cfg.get("attack_params"), out_dir=out / f"s2l-seed{seed}", seed=seed, progress=False)
        write_report(comp, out / f"s2l-seed{seed}")
        print(f"\nseed {seed}\n" + comp.markdown(), flush=True)


def claim_perturb(cfg: dict[str, Any], out: Path) -> None:
    from genleak.s2l.perturb import perturbation_sweep
    from genleak.s2l.report import write_report

    target, split = _target_for(cfg["setup"], out, "target")
    comp = perturbation_sweep(target, split, cfg["sigmas"], cfg["attacks"], draws=cfg.get("draws", 3),
                              scale=cfg.get("scale", "relative"), domain=cfg.get("domain", "all"),
                              out_dir=out / "perturb", progress=False)
    write_report(comp, out / "perturb")
    print("\n" + comp.markdown(), flush=True)


def claims(args: argparse.Namespace) -> None:
    cfg = json.loads(Path(args.config).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"config {args.config}: kind={cfg['kind']} threads={torch.get_num_threads()}")
    {"extraction": claim_extraction, "memorization": claim_memorization, "s2l": claim_s2l,
     "perturb": claim_perturb}[cfg["kind"]](cfg, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--size", type=int, default=8)
    s.add_argument("--channels", default="32,64")
    s.add_argument("--n", type=int, default=512)
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--steps", default="10,50")
    s.add_argument("--nn", default="1000x1000,10000x10000")
    s.add_argument("--device", default=None)
    s.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("claims")
    c.add_argument("--config", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.cmd == "speed":
        return speed(args)
    claims(args)
    import sys

    from evidence import record_run  # benchmarks/evidence.py: mark the evidence entries this run produced

    record_run(sys.argv, args.out)


if __name__ == "__main__":
    main()
