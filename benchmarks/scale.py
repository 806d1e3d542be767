"""Scale benchmarks (issue 14). ``gpu``: cost per core attack on a UNet of the DDPM-CIFAR10 architecture;
``stream``: SimA over a synthetic folder of 10,000 256x256 images, streamed, with its peak memory.

    python benchmarks/scale.py stream [--n 10000] [--size 256] [--batch-size 16] [--workers 2] [--score-n N] \
        [--dir DIR] [--out stream.json]

``stream`` writes the folder itself (a temporary folder unless ``--dir``), loads it as a lazy folder
source (one streaming decode pass for the sha256), makes a half/half split, validates and fingerprints
it, times decoding alone (the DataLoader, no model) and SimA on both sides (or their first
``--score-n``: a CPU scores ~1 image/s at 256x256) through ``Attack.score`` with the ``ImageSet``, as
the attack pipeline does, with a tiny UNet, and reports the peak memory beyond the model (issue 14
§2: under 2 GB).

    python benchmarks/scale.py gpu [--device cuda] [--n 2560] [--batch-size 256] \\
        [--precision fp32,bf16] [--compile] [--channels-last] [--sima-full] [--out scale.json]

The UNet is diffusers' port of Ho et al.'s CIFAR-10 model (google/ddpm-cifar10-32: channels 128,
256, 256, 256, attention at 16x16 and in the middle block, 2 res blocks per level, 35.7M
parameters) with random weights, wrapped as a genleak ``DiffusionTarget``. For every configuration
(each ``--precision`` under ``torch.autocast``, eager and, with ``--compile``, ``torch.compile``d)
and every core attack, n random images are scored through ``Attack.score`` (the call
``genleak.pipeline.run_attacks`` makes for `genleak attack`), and the table gives:

- samples/s, the attack's declared NFE and the NFE counted (inputs the denoiser saw / n);
- the bare forward: median time of the UNet alone on one batch of the same size, after a warm-up,
  synchronised on a GPU;
- ratio = attack time / (NFE x bare forward x n / batch) (goal <= 1.10: an attack costs its queries);
- the speed-up over the fp32 eager configuration.

    python benchmarks/scale.py plan [--n 16] [--batch-size 8] [--threads 1] [--repeats 1] [--out plan.json]

``plan`` (issue 14 §4, the query plan): the core attacks scored together through
``genleak.scoring.score_images`` against each alone, on the same UNet: wall times, the attacks' NFE
summed against the distinct denoiser queries actually run (UNet inputs counted by a forward hook),
and a check that every score is bit for bit the same.

It also times the per-sample noise source (a CPU ``torch.Generator`` per sample, then ``.to(device)``)
against one SimA batch, and ``--sima-full`` scores 25,000 + 25,000 32x32 images with SimA (issue 14:
under 5 s on one H100-class GPU). The Markdown table is printed; ``--out`` gets the figures as JSON
and the table next to it (.md). Record results in benchmarks/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import platform
import resource
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import UNet2DModel

from genleak.attacks import DEFAULT_ATTACKS, NoiseSource, get_attack
from genleak.data import ImageSet
from genleak.io import atomic_write_json, atomic_write_text
from genleak.targets import DiffusionTarget, default_scheduler

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CIFAR10_CHANNELS = (128, 256, 256, 256)


def ddpm_unet(
    image_size: int = 32, block_out_channels: Sequence[int] = CIFAR10_CHANNELS, attention_size: int = 16
) -> UNet2DModel:
    """google/ddpm-cifar10-32's UNet (its config.json) with other channels allowed for tests: attention in
    the level whose feature map is ``attention_size`` wide and, as diffusers always adds, in the middle block."""
    n = len(block_out_channels)
    level = [image_size >> i for i in range(n)].index(attention_size)
    down = tuple("AttnDownBlock2D" if i == level else "DownBlock2D" for i in range(n))
    # up blocks run from the coarsest level back to the finest
    up = tuple("AttnUpBlock2D" if n - 1 - i == level else "UpBlock2D" for i in range(n))
    return UNet2DModel(
        sample_size=image_size, in_channels=3, out_channels=3, block_out_channels=tuple(block_out_channels),
        down_block_types=down, up_block_types=up, layers_per_block=2, norm_num_groups=min(32, min(block_out_channels) // 2),
        norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, attention_head_dim=None,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    dtype = DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def bare_forward_seconds(target: DiffusionTarget, x: torch.Tensor, precision: str, repeats: int) -> float:
    """Median time of one UNet forward on the batch ``x`` after one warm-up call (the unit of an attack's cost)."""
    t = torch.full((x.shape[0],), 100, dtype=torch.long, device=target.device)
    times = []
    with torch.inference_mode(), precision_context(target.device, precision):
        for i in range(repeats + 1):
            _sync(target.device)
            start = time.perf_counter()
            target.unet(x, t, return_dict=False)
            _sync(target.device)
            if i:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@contextlib.contextmanager
def counting_queries(target: DiffusionTarget) -> Iterator[list[int]]:
    """Count the inputs every ``target.eps`` call gets (an instance attribute shadows the method meanwhile)."""
    seen = [0]
    eps = target.eps

    def counted(x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        seen[0] += x_t.shape[0]
        return eps(x_t, t, cond)

    target.eps = counted  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del target.eps


def measure(
    target: DiffusionTarget,
    images: torch.Tensor,
    batch_size: int,
    precision: str = "fp32",
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    repeats: int = 3,
    warm_up: bool = False,
) -> list[dict[str, Any]]:
    """One row per attack: seconds to score ``images`` through ``Attack.score``, samples/s, declared and
    counted NFE, the bare forward at ``batch_size`` and ratio = seconds / (NFE x bare x n / batch_size).

    ``warm_up`` scores one batch first (compiled graphs, CUDA kernels and allocator); on an eager CPU
    model the bare forward's own warm-up call is enough."""
    n = images.shape[0]
    if n % batch_size:
        raise ValueError(f"n = {n} must be a multiple of batch_size = {batch_size}: every denoiser call then sees one full batch")
    ids = [f"bench/{i}" for i in range(n)]
    rows = []
    for name in attacks:
        attack = get_attack(name)
        bare = bare_forward_seconds(target, images[:batch_size].to(target.device), precision, repeats)
        with precision_context(target.device, precision):
            if warm_up:
                attack.score(target, images[:batch_size], ids[:batch_size], batch_size=batch_size, progress=False)
            with counting_queries(target) as seen:
                _sync(target.device)
                start = time.perf_counter()
                attack.score(target, images, ids, batch_size=batch_size, progress=False)
                _sync(target.device)
                seconds = time.perf_counter() - start
        rows.append({
            "attack": name, "precision": precision, "n": n, "batch_size": batch_size, "seconds": seconds,
            "samples_per_s": n / seconds, "nfe": attack.nfe, "nfe_counted": seen[0] / n,
            "bare_forward_ms": bare * 1e3, "ratio": seconds / (attack.nfe * bare * n / batch_size),
        })
    return rows


def noise_cost(target: DiffusionTarget, batch_size: int, sima_batch_seconds: float, repeats: int = 5) -> dict[str, Any]:
    """Time of the per-sample noise of one batch as ``Attack.score`` makes it (a seeded CPU generator per
    sample: ``NoiseSource``) and of one draw moved to the device, as fractions of one SimA batch."""
    ids = [f"bench/{i}" for i in range(batch_size)]
    shape = target.image_shape
    build, draw = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        noise = NoiseSource(ids, 0, "sima", shape, target.device, torch.float32)
        build.append(time.perf_counter() - start)
        _sync(target.device)
        start = time.perf_counter()
        noise.draw(1)
        _sync(target.device)
        draw.append(time.perf_counter() - start)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    b, d = med(build), med(draw)
    return {"batch_size": batch_size, "build_ms": b * 1e3, "draw1_ms": d * 1e3, "sima_batch_ms": sima_batch_seconds * 1e3,
            "build_fraction": b / sima_batch_seconds, "build_draw1_fraction": (b + d) / sima_batch_seconds}


def sima_full(target: DiffusionTarget, n_side: int, batch_size: int, precision: str) -> float:
    """Wall time of SimA over n_side members + n_side non-members (random 32x32 images, made beforehand)."""
    sides = [torch.rand(n_side, *target.image_shape) * 2 - 1 for _ in range(2)]
    attack = get_attack("sima")
    with precision_context(target.device, precision):
        _sync(target.device)
        start = time.perf_counter()
        for side, images in zip(("m", "n"), sides, strict=True):
            attack.score(target, images, [f"{side}/{i}" for i in range(n_side)], batch_size=batch_size, progress=False)
        _sync(target.device)
        return time.perf_counter() - start


def compiled(target: DiffusionTarget) -> DiffusionTarget:
    """A shallow copy of ``target`` whose UNet is ``torch.compile``d (graphs are built on the first call)."""
    other = copy.copy(target)
    other.unet = torch.compile(target.unet)
    return other


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| attack | precision | compile | NFE (counted) | samples/s | bare forward ms | ratio | speed-up vs fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    base = {r["attack"]: r["samples_per_s"] for r in rows if r["precision"] == "fp32" and not r["compile"]}
    for r in rows:
        up = f"{r['samples_per_s'] / base[r['attack']]:.2f}x" if r["attack"] in base else "-"
        lines.append(f"| {r['attack']} | {r['precision']} | {'yes' if r['compile'] else 'no'} | {r['nfe']} "
                     f"({r['nfe_counted']:g}) | {r['samples_per_s']:.2f} | {r['bare_forward_ms']:.1f} | "
                     f"{r['ratio']:.3f} | {up} |")
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU ({platform.processor() or 'unknown'})"


def finish(report: dict[str, Any], started: float, out: str | None) -> None:
    """Add the Markdown summary and wall time to ``report`` and write it to ``out`` (after every
    configuration, so a run stopped by a time limit keeps what it measured)."""
    lines = [markdown(report["rows"]), ""]
    for c in report["noise"]:
        lines.append(f"Noise per batch of {c['batch_size']} ({c['precision']}{', compiled' if c['compile'] else ''}): "
                     f"NoiseSource {c['build_ms']:.2f} ms + draw(1) to the device {c['draw1_ms']:.2f} ms = "
                     f"{100 * c['build_draw1_fraction']:.1f}% of a SimA batch ({c['sima_batch_ms']:.1f} ms; "
                     f"SimA itself builds the source but draws nothing: {100 * c['build_fraction']:.1f}%)")
    for s in report["sima_full"]:
        lines.append(f"SimA over {s['n_side']:,} + {s['n_side']:,} 32x32 images ({s['precision']}"
                     f"{', compiled' if s['compile'] else ''}): {s['seconds']:.2f} s")
    lines += report["skipped"]
    report["wall_seconds"] = time.perf_counter() - started
    lines.append(f"\n`{report['command']}`: {report['device']}, torch {report['torch']}, {report['threads']} thread(s), "
                 f"wall time {report['wall_seconds']:.0f} s")
    report["markdown"] = "\n".join(lines)
    write_report(report, out)


def write_report(report: dict[str, Any], out: str | Path | None) -> None:
    """OUT (the JSON) and OUT with a .md suffix (the table), when an output path was given."""
    if out:
        atomic_write_json(out, report)
        atomic_write_text(Path(out).with_suffix(".md"), report["markdown"] + "\n")


def run_gpu(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch = args.batch_size or (256 if device.type == "cuda" else 8)
    n = args.n or (10 * batch if device.type == "cuda" else 2 * batch)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = ddpm_unet()
    params = sum(p.numel() for p in unet.parameters())
    # Ho et al. (2020) report 35.7M for this model; google/ddpm-cifar10-32 has 35,746,307
    assert abs(params - 35.7e6) < 0.05e6, f"{params} parameters: not the DDPM-CIFAR10 architecture"
    target = DiffusionTarget(unet, default_scheduler(), device=device)
    if args.channels_last:
        target.unet.to(memory_format=torch.channels_last)
    images = torch.rand(n, 3, 32, 32) * 2 - 1
    attacks = [a for a in args.attacks.split(",") if a]
    log(f"device={device_name(device)} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"parameters={params:,} n={n} batch={batch}")
    report: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "device": device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "parameters": params, "n": n,
        "batch_size": batch, "channels_last": args.channels_last, "rows": [], "noise": [], "sima_full": [], "skipped": [],
    }
    warm = device.type == "cuda"
    for use_compile in (False, True) if args.compile else (False,):
        for precision in args.precision.split(","):
            label = f"{precision}{' compiled' if use_compile else ''}"
            try:
                tgt = compiled(target) if use_compile else target
                rows = measure(tgt, images, batch, precision, attacks, args.repeats, warm_up=warm or use_compile)
            except Exception as err:  # fp16 autocast on some CPUs, torch.compile without a compiler: say so, go on
                msg = f"{label}: skipped, {type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
                log(msg)
                report["skipped"].append(msg)
                continue
            for r in rows:
                r["compile"] = use_compile
                log(f"  {label:<14} {r['attack']:<6} {r['samples_per_s']:9.2f} samples/s ratio {r['ratio']:.3f}")
            report["rows"] += rows
            sima = next((r for r in rows if r["attack"] == "sima"), None)
            if sima is not None:
                cost = noise_cost(tgt, batch, sima["seconds"] * batch / n)
                report["noise"].append({"precision": precision, "compile": use_compile, **cost})
            if args.sima_full:
                seconds = sima_full(tgt, args.sima_full_n, batch, precision)
                report["sima_full"].append({"precision": precision, "compile": use_compile, "n_side": args.sima_full_n,
                                            "seconds": seconds})
                log(f"  {label}: SimA over {args.sima_full_n:,} + {args.sima_full_n:,} images: {seconds:.2f} s")
            finish(report, started, args.out)
    finish(report, started, args.out)
    log(report["markdown"])
    return report


def run_plan(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The core attacks scored together (the query plan) and each alone, through ``score_images``."""
    from genleak.scoring import query_counts, score_images

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    target = DiffusionTarget(ddpm_unet(), default_scheduler(), device=device)
    images = ImageSet(torch.rand(args.n, 3, 32, 32) * 2 - 1, ids=[f"bench/{i}" for i in range(args.n)])
    forwards = [0]
    target.unet.register_forward_pre_hook(lambda module, a: forwards.__setitem__(0, forwards[0] + a[0].shape[0]))
    names = [a for a in args.attacks.split(",") if a]

    def timed(attacks: list[Any]) -> dict[str, Any]:
        forwards[0] = 0
        _sync(device)
        start, cpu = time.perf_counter(), time.process_time()  # CPU time: steadier on a shared machine
        got = score_images(target, images, attacks, batch_size=args.batch_size, progress=False)
        _sync(device)
        return {"scored": got, "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                "forwards": forwards[0]}

    attacks = [get_attack(n) for n in names]
    timed(attacks[-1:])  # warm-up (allocator, kernels)
    runs = [([timed([a]) for a in attacks], timed(attacks)) for _ in range(args.repeats)]  # alternating
    alone = [min((r[0][j] for r in runs), key=lambda x: x["seconds"]) for j in range(len(attacks))]  # fastest
    both = min((r[1] for r in runs), key=lambda x: x["seconds"])
    same = all(np.array_equal(both["scored"][a].values, x["scored"][a].values) for a, x in zip(attacks, alone, strict=True))
    q = query_counts(both["scored"])
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "device": device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "n": args.n, "batch_size": args.batch_size,
        "repeats": args.repeats, "attacks": names, "alone_seconds": {a.name: x["seconds"] for a, x in zip(attacks, alone, strict=True)},
        "alone_total_seconds": sum(x["seconds"] for x in alone), "together_seconds": both["seconds"],
        "alone_total_cpu_seconds": sum(x["cpu"] for x in alone), "together_cpu_seconds": both["cpu"],
        "attacks_nfe": q["attacks_nfe"], "run": q["run"], "forwards_counted_per_sample": both["forwards"] / args.n,
        "alone_forwards_per_sample": sum(x["forwards"] for x in alone) / args.n, "bitwise_identical": same,
    }
    r = report
    report["markdown"] = (
        f"{'+'.join(names)} on {args.n} images (DDPM-CIFAR10 UNet, batch {args.batch_size}, {r['device']}, "
        f"{r['threads']} thread(s)): denoiser queries per sample {r['alone_forwards_per_sample']:g} alone "
        f"(the attacks' NFE summed: {q['attacks_nfe']:g}) vs {r['forwards_counted_per_sample']:g} together "
        f"(query plan: {q['run']:g}); wall time {r['alone_total_seconds']:.1f} s alone vs {r['together_seconds']:.1f} s "
        f"together ({r['alone_total_seconds'] / r['together_seconds']:.2f}x), CPU time "
        f"{r['alone_total_cpu_seconds']:.1f} s vs {r['together_cpu_seconds']:.1f} s "
        f"({r['alone_total_cpu_seconds'] / r['together_cpu_seconds']:.2f}x); scores bit for bit identical: {same}"
        f"\n\n`{r['command']}`")
    write_report(report, args.out)
    log(report["markdown"])
    return report


def write_synthetic_folder(root: Path, n: int, size: int, seed: int = 0, ext: str = "jpg") -> None:
    """n distinct smooth RGB images (a random 8x8 colour field upsampled, plus noise), like photos in
    how they compress and decode; JPEG quality 90 by default (LAION-style), PNG with ``ext="png"``."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        field = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        pixels = np.asarray(field, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3), dtype=np.int16)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"{i:06d}.{ext}", quality=90)


class MemoryWatch:
    """Peak memory per phase, sampled every ``interval`` s in a thread: this process's RSS plus the unique
    memory (USS) of its children, the DataLoader workers (their RSS would count the pages they share
    with this process twice).

    "The model" is ``ru_maxrss`` when the watch starts, after one forward of a full batch: the weights
    and the activations of scoring one batch, which any scorer needs whatever the data size. Figures
    are peaks beyond that, and beyond the resting RSS (what the phase itself added)."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.rest = self.proc.memory_info().rss
        self.model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        self.peaks: dict[str, int] = {}
        self.current = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def phase(self, name: str) -> None:
        self._sample()
        self.current = name

    def _sample(self) -> None:
        import psutil

        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_full_info().uss
        self.peaks[self.current] = max(self.peaks.get(self.current, 0), total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def figures(self) -> dict[str, Any]:
        gib = 2.0**30
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = max([maxrss, *self.peaks.values()])
        return {"rss_rest_gib": self.rest / gib, "model_peak_gib": self.model / gib,
                "peak_beyond_model_gib": max(0, peak - self.model) / gib,
                "phase_peak_beyond_rest_gib": {k: (v - self.rest) / gib for k, v in self.peaks.items() if k != "start"}}


def run_stream(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Issue 14 §2: SimA over a synthetic folder of ``--n`` images, streamed (lazy folder source, DataLoader
    workers, uint8 until the device); peak memory beyond the model and images/s against decoding alone."""
    import tempfile

    from genleak.data import folder_source, make_split

    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="genleak-stream-")
    root = Path(args.dir or tmp.name) / f"synthetic-{args.n}-{args.size}"  # type: ignore[union-attr]
    try:
        if not root.is_dir() or len(list(root.iterdir())) != args.n:
            t0 = time.perf_counter()
            write_synthetic_folder(root, args.n, args.size)
            log(f"wrote {args.n} {args.size}x{args.size} images to {root} in {time.perf_counter() - t0:.0f} s")
        torch.manual_seed(0)
        channels = tuple(int(c) for c in args.channels.split(","))
        unet = UNet2DModel(sample_size=args.size, in_channels=3, out_channels=3, block_out_channels=channels,
                           layers_per_block=1, down_block_types=("DownBlock2D",) * len(channels),
                           up_block_types=("UpBlock2D",) * len(channels), norm_num_groups=min(8, channels[0]))
        target = DiffusionTarget(unet, default_scheduler(), device=device)
        attack = get_attack("sima")
        with torch.inference_mode():  # one forward first: the model's own buffers count as "the model"
            target.eps(torch.zeros(args.batch_size, 3, args.size, args.size, device=device), 100)
        gc.collect()
        report: dict[str, Any] = {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]), "device": device_name(device),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "n": args.n, "size": args.size,
            "batch_size": args.batch_size, "workers": args.workers, "unet_channels": list(channels),
            "float32_in_ram_gib": args.n * 3 * args.size**2 * 4 / 2**30,
        }
        with MemoryWatch() as watch:
            watch.phase("load + sha256")
            t0 = time.perf_counter()
            images = folder_source(root)  # headers, then one streaming decode pass for the sha256
            report["load_hash_seconds"] = time.perf_counter() - t0
            watch.phase("split, validate, fingerprint")
            split = make_split(images, args.n // 2, args.n - args.n // 2, seed=0, name="stream")
            split.validate()
            report["split_fingerprint"] = split.fingerprint()
            sides = (("members", split.members), ("nonmembers", split.nonmembers))
            watch.phase("decode alone")
            t0 = time.perf_counter()
            decoded = 0
            for _, side in sides:  # decoding alone: the same DataLoader, batches moved and converted, no model
                for _, x in side.batches(args.batch_size, num_workers=args.workers, device=device):
                    decoded += len(x)
            _sync(device)
            report["decode_seconds"] = time.perf_counter() - t0
            watch.phase("score")
            scored = [(name, side if args.score_n is None else side[: args.score_n]) for name, side in sides]
            t0 = time.perf_counter()
            scores = {name: attack.score(target, side, batch_size=args.batch_size, num_workers=args.workers,
                                         progress=False) for name, side in scored}
            _sync(device)
            report["score_seconds"] = time.perf_counter() - t0
        report["scored"] = sum(len(v) for v in scores.values())
        assert decoded == args.n and report["scored"] == sum(len(side) for _, side in scored)
        assert split.members.is_lazy and split.nonmembers.is_lazy, "the streaming path materialised a side"
        report.update(watch.figures())
        report["decode_images_per_s"] = args.n / report["decode_seconds"]
        report["score_images_per_s"] = report["scored"] / report["score_seconds"]
        report["hash_images_per_s"] = args.n / report["load_hash_seconds"]
        report["within_2gib"] = report["peak_beyond_model_gib"] < 2.0
        report["wall_seconds"] = time.perf_counter() - started
    finally:
        if tmp is not None:
            tmp.cleanup()
    phases = ", ".join(f"{k} {v:.2f}" for k, v in report["phase_peak_beyond_rest_gib"].items())
    report["markdown"] = (
        f"| n | scored | size | batch | workers | load + sha256 img/s | decode alone img/s | SimA img/s | peak beyond "
        f"the model | float32 in RAM would be |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.n:,} | {report['scored']:,} | {args.size} | {args.batch_size} | {args.workers} | "
        f"{report['hash_images_per_s']:.1f} | {report['decode_images_per_s']:.1f} | {report['score_images_per_s']:.2f} | "
        f"{report['peak_beyond_model_gib']:.2f} GiB | {report['float32_in_ram_gib']:.1f} GiB |\n\n"
        f"Model (ru_maxrss after one forward of a batch) {report['model_peak_gib']:.2f} GiB, resting RSS "
        f"{report['rss_rest_gib']:.2f} GiB; peak per phase beyond the resting RSS (GiB, with the workers' USS): {phases}.\n\n"
        f"`{report['command']}`: {report['device']}, torch {report['torch']}, {report['threads']} thread(s), "
        f"wall time {report['wall_seconds']:.0f} s, under 2 GiB beyond the model: {'yes' if report['within_2gib'] else 'NO'}")
    write_report(report, args.out)
    log(report["markdown"])
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gpu = sub.add_parser("gpu", help="cost per core attack on the DDPM-CIFAR10 UNet (CPU or GPU)")
    gpu.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    gpu.add_argument("--n", type=int, default=None, help="images per attack (default: 10 batches on a GPU, 2 on CPU)")
    gpu.add_argument("--batch-size", type=int, default=None, help="default 256 on a GPU, 8 on CPU")
    gpu.add_argument("--precision", default="fp32", help="comma-separated of fp32, bf16, fp16 (torch.autocast)")
    gpu.add_argument("--compile", action="store_true", help="also run every precision with torch.compile on the UNet")
    gpu.add_argument("--channels-last", action="store_true", help="UNet weights in channels_last memory format")
    gpu.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS))
    gpu.add_argument("--repeats", type=int, default=3, help="timed bare forwards per attack (median)")
    gpu.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    gpu.add_argument("--sima-full", action="store_true", help="SimA over 25,000 + 25,000 images per configuration")
    gpu.add_argument("--sima-full-n", type=int, default=25_000, help=argparse.SUPPRESS)
    gpu.add_argument("--out", default=None, help="JSON file for the figures (the table goes next to it as .md)")
    stream = sub.add_parser("stream", help="SimA over a synthetic image folder, streamed: peak memory and images/s")
    stream.add_argument("--n", type=int, default=10_000, help="images in the synthetic folder")
    stream.add_argument("--size", type=int, default=256, help="pixels per side")
    stream.add_argument("--batch-size", type=int, default=16)
    stream.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    stream.add_argument("--channels", default="16,32", help="the tiny UNet's block_out_channels")
    stream.add_argument("--score-n", type=int, default=None,
                        help="score only the first N images of each side (default: all; a CPU scores ~1 image/s at 256x256)")
    stream.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    stream.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    stream.add_argument("--dir", default=None, help="keep the synthetic folder here (default: a temporary folder)")
    stream.add_argument("--out", default=None, help="JSON file for the figures (the table goes next to it as .md)")
    plan = sub.add_parser("plan", help="the core attacks scored together (query plan) vs each alone")
    plan.add_argument("--n", type=int, default=16, help="random 32x32 images")
    plan.add_argument("--batch-size", type=int, default=8)
    plan.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS))
    plan.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    plan.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    plan.add_argument("--repeats", type=int, default=1, help="alone/together rounds, alternating; the fastest counts")
    plan.add_argument("--out", default=None, help="JSON file for the figures (the line goes next to it as .md)")
    args = parser.parse_args(argv)
    if args.command == "plan":
        run_plan(args)
        return
    if args.command == "stream":
        run_stream(args)
        return
    bad = set(args.precision.split(",")) - set(DTYPES)
    if bad:
        parser.error(f"--precision takes {', '.join(DTYPES)}; got {', '.join(sorted(bad))}")
    if args.n and args.batch_size and args.n % args.batch_size:
        parser.error(f"--n {args.n} must be a multiple of --batch-size {args.batch_size} (every denoiser call sees one full batch)")
    run_gpu(args)


if __name__ == "__main__":
    main()
