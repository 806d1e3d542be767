"""The one scoring path: every command that scores images with an attack comes through here.

``score_split`` (members and non-members of a ``MembershipSplit``) and ``score_images`` (one
``ImageSet``) supply the conditions the target wants (class labels, captions) from the data, hand
each attack its per-sample seeds and keep one content-keyed cache (``ScoreCache``), so ``attack``,
``audit``, ``sweep``, ``infer`` (CDI features), ``evaluate-defense``, the IAR commands and
``verify`` score the same way, and sharding or streaming has one place to live.

Noise is seeded per sample by its id (``noise="ids"``, the attacks' convention) or by its content
key (``noise="content"``: CDI features, where a value must depend only on what the cache names).
A cache entry is keyed by (target fingerprint, attack name + config + columns, seed) and, per
sample, by the image's sha256 and its condition (plus the id under ``noise="ids"``), so entries are
shared across splits that hold the same samples, a run killed mid-way recomputes only the missing
chunks, and a changed key is another entry: recomputed, never misread.

In a multi-process run (``torchrun`` / ``accelerate launch``; ``distributed_world``) the missing
chunks are dealt out to the ranks (chunk i to rank i mod world) and gathered by key on every rank,
so the scores are bit-for-bit those of one process; rank 0 alone reads and writes the cache.

Several attacks are scored chunk-major (the query plan, ``attacks.base.score_together``): each batch
is decoded and encoded once, and a denoiser query on the clean input that another attack already
asked for the batch runs once (pia, pian and SecMI all start with eps(x0, 0)); each attack's scores
are bit-for-bit those it gets alone. ``query_counts`` reports a run's queries against the sum of the
attacks' NFE.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from genleak.attacks.base import Attack, check_compatible, score_together, shares_queries
from genleak.data import ImageSet, MembershipSplit
from genleak.errors import GenleakError
from genleak.io import atomic_save_npz, atomic_write_json
from genleak.targets.base import Target, conditions_for

SCORES_FORMAT = "genleak.scores"
# Bump when the computation behind a score changes: it is part of every cache key.
SCORES_VERSION = 1
FROM_DATA: Any = object()  # ``cond`` default: the target's conditions for the images (``conditions_for``)


@dataclass
class Scored:
    """One attack's scores on one image set, in the set's order: (N,) or (N, len(columns)) float32."""

    values: np.ndarray
    keys: list[str]  # the per-sample cache keys
    computed: int  # distinct samples scored now
    reused: int  # distinct samples read from the cache
    seconds: float
    shared: int = 0  # denoiser queries (summed over samples) answered by another attack's identical query


@dataclass
class SplitScores:
    members: Scored
    nonmembers: Scored


def sample_keys(images: ImageSet, cond: Any = None) -> list[str]:
    """Content keys: the image's sha256, combined with its condition (class label, caption) when the
    target is conditional, since the same pixels under another prompt are another query."""
    if cond is None:
        return list(images.hashes)
    values = cond.tolist() if isinstance(cond, torch.Tensor) else list(cond)
    return [
        hashlib.sha256(f"{h}\x00{json.dumps(c, sort_keys=True, default=str)}".encode()).hexdigest()
        for h, c in zip(images.hashes, values, strict=True)
    ]


class ScoreCache:
    """Per-sample scores, one entry per (target, attack config, seed); on disk under ``root``, or in
    memory when ``root`` is None (shared by the callers handed the same object).

    Disk layout: ``ROOT/<target fingerprint[:16]>/<attack>-<key[:16]>/`` holding ``meta.json``, an
    optional consolidated ``store.npz`` and ``chunk-*.npz`` files written while scoring. Every npz
    carries the full key metadata and is checked on load: a file whose metadata differs from what is
    asked for is never used (it is reported and skipped). All files are written atomically.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = None if root is None else Path(root)
        self._memory: dict[str, dict[str, np.ndarray]] = {}

    @staticmethod
    def metadata(target_fingerprint: str, attack: Attack, seed: int, precision: str = "fp32") -> dict[str, Any]:
        return {
            "format": SCORES_FORMAT,
            "version": SCORES_VERSION,
            "target": target_fingerprint,
            "attack": attack.name,
            "config": json.loads(json.dumps(attack.config.to_dict(), default=list)),
            "columns": list(attack.columns),
            "seed": int(seed),
            # bf16 / fp16 autocast scores differ from fp32 ones; fp32 adds no key, as in scores/*.npz and
            # results.json (pipeline.run_attacks), so one convention keys precision everywhere
            **({"precision": precision} if precision != "fp32" else {}),
        }

    def folder(self, meta: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
        return Path(self.root or ".") / meta["target"][:16] / f"{meta['attack']}-{digest[:16]}"

    def load(self, meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[Path], int | None]:
        """key -> (k,) values for every cached sample of this entry, the chunk files read, and the
        number of dimensions the attack's scores have (1: (N,), 2: (N, k); None when nothing is cached)."""
        if self.root is None:
            found, ndim = self._memory.get(json.dumps(meta, sort_keys=True), ({}, None))
            return dict(found), [], ndim
        folder = self.folder(meta)
        found: dict[str, np.ndarray] = {}
        chunks: list[Path] = []
        ndim = None
        if not folder.is_dir():
            return found, chunks, ndim
        expected = json.dumps(meta, sort_keys=True)
        files = ([folder / "store.npz"] if (folder / "store.npz").is_file() else []) + sorted(folder.glob("chunk-*.npz"))
        for f in files:
            try:
                with np.load(f, allow_pickle=False) as z:
                    stored = json.dumps(json.loads(str(z["meta"])), sort_keys=True)
                    data = (z["keys"], z["values"], int(z["ndim"])) if stored == expected else None
            except Exception as err:  # a corrupt or foreign file: never trusted, never fatal
                warnings.warn(f"score cache: ignoring unreadable {f} ({err})", stacklevel=2)
                continue
            if data is None:
                warnings.warn(f"score cache: ignoring {f}: its metadata does not match this attack config", stacklevel=2)
                continue
            keys, values, file_ndim = data
            if values.ndim != 2 or values.shape[1] != len(meta["columns"]) or len(keys) != len(values):
                warnings.warn(f"score cache: ignoring {f}: wrong shape {values.shape}", stacklevel=2)
                continue
            found.update(zip(keys.tolist(), values))
            ndim = file_ndim
            if f.name.startswith("chunk-"):
                chunks.append(f)
        return found, chunks, ndim

    def write_chunk(self, meta: dict[str, Any], keys: Sequence[str], values: np.ndarray, ndim: int) -> Path | None:
        """Store (n, k) ``values`` of ``keys``; ``ndim`` is that of the attack's own scores."""
        values = np.asarray(values, np.float32)
        if self.root is None:
            entry = self._memory.setdefault(json.dumps(meta, sort_keys=True), ({}, ndim))[0]
            entry.update(zip(keys, values))
            return None
        folder = self.folder(meta)
        if not (folder / "meta.json").is_file():
            atomic_write_json(folder / "meta.json", meta)
        name = hashlib.sha256("\x00".join(keys).encode()).hexdigest()[:16]
        path = folder / f"chunk-{name}.npz"
        atomic_save_npz(path, keys=np.asarray(list(keys)), values=values, meta=np.asarray(json.dumps(meta)),
                        ndim=np.asarray(ndim))
        return path

    def consolidate(self, meta: dict[str, Any], found: dict[str, np.ndarray], chunks: Sequence[Path], ndim: int) -> None:
        """Merge everything known into ``store.npz`` (atomically), then drop the merged chunks."""
        if self.root is None or not chunks:
            return
        keys = sorted(found)
        values = np.stack([found[k] for k in keys]) if keys else np.zeros((0, len(meta["columns"])), np.float32)
        atomic_save_npz(self.folder(meta) / "store.npz", keys=np.asarray(keys), values=values.astype(np.float32),
                        meta=np.asarray(json.dumps(meta)), ndim=np.asarray(ndim))
        for c in chunks:
            c.unlink(missing_ok=True)


def as_cache(cache: ScoreCache | str | os.PathLike[str] | None) -> ScoreCache | None:
    return cache if cache is None or isinstance(cache, ScoreCache) else ScoreCache(cache)


def score_images(
    target: Target,
    images: ImageSet,
    attacks: Sequence[Attack],
    *,
    cond: Any = FROM_DATA,
    noise: Literal["ids", "content"] = "ids",
    cache: ScoreCache | str | os.PathLike[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    chunk_size: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    num_workers: int = 0,
    precision: str = "fp32",
    on_error: Callable[[Attack, Exception], None] | None = None,
) -> dict[Attack, Scored]:
    """Each attack's scores of ``images`` (keyed by the attack objects given), reusing and extending ``cache``.

    ``cond`` defaults to the target's conditions for the set (captions, class labels; None for an
    unconditional target). Scores are computed ``chunk_size`` samples at a time (default: the batches
    of 256 images) and each chunk is written to the cache as soon as it is done; duplicate samples
    (same key) are computed once. A lazy set is decoded per batch (``num_workers`` DataLoader workers);
    ``precision`` is ``Attack.score``'s (autocast; part of the cache key). Attacks that
    ``shares_queries`` and miss the same samples are scored together, chunk-major (``score_together``).

    With ``on_error``, an attack that raises (other than a ``GenleakError``, a user mistake) is handed
    to it, from inside the ``except`` block, and left out of the result; the other attacks still run.
    """
    from tqdm.auto import tqdm

    if noise not in ("ids", "content"):
        raise GenleakError(f"noise must be 'ids' or 'content', got {noise!r}")
    if batch_size < 1:
        raise GenleakError(f"batch_size must be >= 1, got {batch_size}")
    chunk = chunk_size if chunk_size is not None else batch_size * max(1, 256 // batch_size)
    if chunk < 1:
        raise GenleakError(f"chunk_size must be >= 1, got {chunk}")
    if cond is FROM_DATA:
        cond = conditions_for(target, images)
    content = sample_keys(images, cond)
    if noise == "content":
        keys, seeds = content, content
    else:
        keys = [hashlib.sha256(f"id\x00{i}\x00{c}".encode()).hexdigest() for i, c in zip(images.ids, content, strict=True)]
        seeds = list(images.ids)
    unique: dict[str, int] = {}
    for i, k in enumerate(keys):
        unique.setdefault(k, i)
    store = as_cache(cache)
    fingerprint = target.fingerprint() if store is not None else ""
    world, rank = distributed_world()
    entries: list[_Entry] = []
    for attack in attacks:
        attack.check(target)
        began = time.perf_counter()
        meta = ScoreCache.metadata(fingerprint, attack, seed, precision)
        # rank 0 alone reads and writes the cache; the other ranks of a multi-process run get what it
        # found, so every rank shards the same missing keys (chunk i on rank i % world, in rounds)
        found, chunks, ndim = store.load(meta) if store is not None and rank == 0 else ({}, [], None)
        if world > 1:
            found, ndim = _broadcast((found, ndim))
        entries.append(_Entry(meta, found, chunks, ndim, [k for k in unique if k not in found],
                              time.perf_counter() - began))
    # attacks that miss the same samples are scored together, in the chunks each would have alone
    groups: dict[Any, list[int]] = {}
    for i, attack in enumerate(attacks):
        groups.setdefault(tuple(entries[i].missing) if shares_queries(attack, target) else i, []).append(i)
    failed: set[int] = set()
    for group in groups.values():
        missing = entries[group[0]].missing
        pieces = [missing[start : start + chunk] for start in range(0, len(missing), chunk)]
        with tqdm(total=len(missing), desc=desc or "+".join(attacks[i].name for i in group), unit="img",
                  leave=False, disable=not progress or not missing or rank != 0) as bar:
            for first in range(0, len(pieces), world):
                live = [i for i in group if i not in failed]
                if not live:
                    break
                mine = pieces[first + rank] if first + rank < len(pieces) else []
                rows = [unique[k] for k in mine]

                def compute(rows: list[int] = rows, live: list[int] = live) -> list[Any] | None:
                    if not rows:
                        return None
                    args = (target, images[rows], [seeds[r] for r in rows])
                    kwargs: dict[str, Any] = dict(cond=None if cond is None else _rows(cond, rows), seed=seed,
                                                  batch_size=batch_size, progress=False, num_workers=num_workers,
                                                  precision=precision)
                    if len(live) == 1:  # the attack's own ``score``: some wrap the target there
                        began = time.perf_counter()
                        values = attacks[live[0]].score(*args, **kwargs).numpy()
                        return [(values, None, 0, time.perf_counter() - began)]
                    got = score_together([attacks[i] for i in live], *args, **kwargs)
                    return [(None if v is None else v.numpy(), *rest)
                            for v, *rest in zip(got.scores, got.errors, got.shared, got.seconds, strict=True)]

                try:
                    done = _round(mine, compute, world)  # chunk order, whatever the world size
                except GenleakError:
                    raise
                except Exception as err:  # not one attack's: every attack of the round fails with it
                    for i in live:
                        _failed(attacks[i], err, on_error)
                    failed.update(live)
                    continue
                for j, i in enumerate(live):  # an attack that fails on any rank fails on every rank
                    err = next((res[j][1] for _, res in done if res is not None and res[j][1] is not None), None)
                    if err is not None:
                        _failed(attacks[i], err, on_error)
                        failed.add(i)
                for r, (chunk_keys, res) in enumerate(done):
                    if res is None:
                        continue
                    for i, (values, _, shared, seconds) in zip(live, res, strict=True):
                        if i in failed:
                            continue
                        e = entries[i]
                        e.ndim = values.ndim
                        values = values.reshape(len(chunk_keys), -1)
                        e.found.update(zip(chunk_keys, values))
                        e.shared += shared
                        e.seconds += seconds if r == rank else 0.0
                        if store is not None and rank == 0:
                            path = store.write_chunk(e.meta, chunk_keys, values, e.ndim)
                            if path is not None:
                                e.chunks.append(path)
                    bar.update(len(chunk_keys))
    out: dict[Attack, Scored] = {}
    for i, (attack, e) in enumerate(zip(attacks, entries, strict=True)):
        if i in failed:
            continue
        if store is not None and e.ndim is not None and rank == 0:
            store.consolidate(e.meta, e.found, e.chunks, e.ndim)
        values = np.stack([np.asarray(e.found[k], np.float32).reshape(-1) for k in keys])
        out[attack] = Scored(values[:, 0] if e.ndim == 1 else values, keys, len(e.missing),
                             len(unique) - len(e.missing), e.seconds, e.shared)
    return out


@dataclass
class _Entry:
    """One attack's cache entry while ``score_images`` runs."""

    meta: dict[str, Any]
    found: dict[str, np.ndarray]
    chunks: list[Path]
    ndim: int | None
    missing: list[str]
    seconds: float
    shared: int = 0


def _failed(attack: Attack, err: Exception, on_error: Callable[[Attack, Exception], None] | None) -> None:
    """Raise ``err`` (a user mistake, or no ``on_error``), or hand it to ``on_error`` from inside an ``except``."""
    if on_error is None or isinstance(err, GenleakError):
        raise err
    try:
        raise err
    except Exception:
        on_error(attack, err)


def query_counts(scored: Mapping[Attack, Scored | SplitScores]) -> dict[str, Any]:
    """A run's denoiser queries per sample scored now: ``attacks_nfe``, the sum of the attacks' NFE
    (what scoring each attack alone runs), and ``run``, the distinct queries the query plan ran;
    ``samples`` is how many were scored now (per image set, the most any attack computed)."""
    sides = [[s] if isinstance(s, Scored) else [s.members, s.nonmembers] for s in scored.values()]
    samples = sum(max((side[k].computed for side in sides), default=0) for k in range(max(map(len, sides), default=0)))
    asked = sum(a.nfe * x.computed for a, side in zip(scored, sides, strict=True) for x in side)
    run = asked - sum(x.shared for side in sides for x in side)
    return {"samples": samples, "attacks_nfe": round(asked / samples, 3) if samples else 0.0,
            "run": round(run / samples, 3) if samples else 0.0}


def score_split(
    target: Target,
    split: MembershipSplit,
    attacks: Sequence[Attack],
    *,
    cache: ScoreCache | str | os.PathLike[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    chunk_size: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
    precision: str = "fp32",
    on_error: Callable[[Attack, Exception], None] | None = None,
) -> dict[Attack, SplitScores]:
    """Members' and non-members' scores of each attack (keyed by the attack objects given); the split
    is validated once, before any attack starts, and the conditions come from its data.

    With ``on_error``, an attack that raises (other than a ``GenleakError``, a user mistake) is handed
    to it, from inside the ``except`` block, and left out of the result; the other attacks still run.
    """
    split.validate()
    check_compatible(target, split.members)
    for attack in attacks:  # a target of the wrong kind is refused before any attack starts (or writes)
        attack.check(target)
    lost: set[Attack] = set()

    def failed(attack: Attack, err: Exception) -> None:
        lost.add(attack)
        on_error(attack, err)  # type: ignore[misc]

    common: dict[str, Any] = dict(cache=as_cache(cache), seed=seed, batch_size=batch_size, chunk_size=chunk_size,
                                  progress=progress, num_workers=num_workers, precision=precision,
                                  on_error=None if on_error is None else failed)
    names = "+".join(a.name for a in attacks)
    m = score_images(target, split.members, attacks, desc=f"{names} members", **common)
    n = score_images(target, split.nonmembers, [a for a in attacks if a not in lost], desc=f"{names} non-members",
                     **common)
    return {a: SplitScores(m[a], n[a]) for a in attacks if a not in lost}


def distributed_world() -> tuple[int, int]:
    """(world size, rank) of this process; (1, 0) outside a multi-process run. A process started by
    ``torchrun`` or ``accelerate launch`` (WORLD_SIZE > 1 in its environment) joins the process group
    here, through accelerate (gloo on CPU, nccl on GPU), unless the caller already initialised one."""
    import torch.distributed as dist

    if not dist.is_available():
        return 1, 0
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
        atexit.register(_leave_group)
    return (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)


def _leave_group() -> None:
    """Destroy the process group ``distributed_world`` joined while the interpreter is still whole: a gloo
    group left to interpreter shutdown can abort a rank that finished its work ("terminate called without
    an active exception", SIGABRT; pytorch/pytorch#190489), so torchrun reports the run as failed."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _round(keys: list[str], compute: Callable[[], list[Any] | None], world: int) -> list[tuple[list[str], Any]]:
    """Every rank's (keys, per-attack results) of one round, in rank order, on every rank; an attack's
    error from another rank arrives as a ``RuntimeError`` (a ``GenleakError`` stays one) naming it. A
    rank whose ``compute`` fails makes every rank raise, so no rank waits for it forever."""
    if world == 1:
        return [(keys, compute())]
    import torch.distributed as dist

    try:
        mine, failed = compute(), None
    except Exception as err:
        mine, failed = None, err

    def portable(err: Exception | None) -> tuple[bool, str] | None:  # exception classes may not unpickle
        return None if err is None else (isinstance(err, GenleakError), str(err))

    def remote(r: int, err: tuple[bool, str] | None) -> Exception | None:
        return None if err is None else (GenleakError if err[0] else RuntimeError)(f"rank {r}: {err[1]}")

    sent = None if mine is None else [(v, portable(e), *rest) for v, e, *rest in mine]
    rounds: list[Any] = [None] * world
    dist.all_gather_object(rounds, (keys, sent, portable(failed)))
    if failed is not None:
        raise failed
    for r, (_, _, other) in enumerate(rounds):
        if other is not None:
            raise remote(r, other)  # type: ignore[misc]
    rank = dist.get_rank()
    return [(k, mine if r == rank else None if res is None else [(v, remote(r, e), *rest) for v, e, *rest in res])
            for r, (k, res, _) in enumerate(rounds)]


def _rows(cond: Any, rows: list[int]) -> Any:
    if isinstance(cond, torch.Tensor):
        return cond[rows]
    return [cond[i] for i in rows]
