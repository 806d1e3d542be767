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
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from genleak.attacks.base import Attack, check_compatible
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
            "precision": precision,  # bf16 / fp16 autocast scores differ from fp32 ones
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
) -> dict[Attack, Scored]:
    """Each attack's scores of ``images`` (keyed by the attack objects given), reusing and extending ``cache``.

    ``cond`` defaults to the target's conditions for the set (captions, class labels; None for an
    unconditional target). Scores are computed ``chunk_size`` samples at a time (default: the batches
    of 256 images) and each chunk is written to the cache as soon as it is done; duplicate samples
    (same key) are computed once. A lazy set is decoded per batch (``num_workers`` DataLoader workers);
    ``precision`` is ``Attack.score``'s (autocast; part of the cache key).
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
    out: dict[Attack, Scored] = {}
    for attack in attacks:
        attack.check(target)
        start_time = time.perf_counter()
        meta = ScoreCache.metadata(fingerprint, attack, seed, precision)
        # rank 0 alone reads and writes the cache; the other ranks of a multi-process run get what it
        # found, so every rank shards the same missing keys (chunk i on rank i % world, in rounds)
        found, chunks, ndim = store.load(meta) if store is not None and rank == 0 else ({}, [], None)
        if world > 1:
            found, ndim = _broadcast((found, ndim))
        missing = [k for k in unique if k not in found]
        pieces = [missing[start : start + chunk] for start in range(0, len(missing), chunk)]
        with tqdm(total=len(missing), desc=desc or attack.name, unit="img", leave=False,
                  disable=not progress or not missing or rank != 0) as bar:
            for first in range(0, len(pieces), world):
                mine = pieces[first + rank] if first + rank < len(pieces) else []
                rows = [unique[k] for k in mine]

                def compute(rows: list[int] = rows, attack: Attack = attack) -> np.ndarray | None:
                    return attack.score(target, images[rows], [seeds[r] for r in rows],
                                        cond=None if cond is None else _rows(cond, rows), batch_size=batch_size,
                                        seed=seed, progress=False, num_workers=num_workers,
                                        precision=precision).numpy() if rows else None

                for chunk_keys, values in _round(mine, compute, world):  # chunk order, whatever the world size
                    if values is None:
                        continue
                    ndim = values.ndim
                    values = values.reshape(len(chunk_keys), -1)
                    found.update(zip(chunk_keys, values))
                    if store is not None and rank == 0:
                        path = store.write_chunk(meta, chunk_keys, values, ndim)
                        if path is not None:
                            chunks.append(path)
                    bar.update(len(chunk_keys))
        if store is not None and ndim is not None and rank == 0:
            store.consolidate(meta, found, chunks, ndim)
        values = np.stack([np.asarray(found[k], np.float32).reshape(-1) for k in keys])
        out[attack] = Scored(values[:, 0] if ndim == 1 else values, keys, len(missing), len(unique) - len(missing),
                             time.perf_counter() - start_time)
    return out


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
    store = as_cache(cache)
    common: dict[str, Any] = dict(cache=store, seed=seed, batch_size=batch_size, chunk_size=chunk_size,
                                  progress=progress, num_workers=num_workers, precision=precision)
    out: dict[Attack, SplitScores] = {}
    for attack in attacks:  # one attack at a time: both sides of an attack finish before the next starts
        try:
            m = score_images(target, split.members, [attack], desc=f"{attack.name} members", **common)[attack]
            n = score_images(target, split.nonmembers, [attack], desc=f"{attack.name} non-members", **common)[attack]
        except GenleakError:
            raise
        except Exception as err:  # an attack bug must not lose the other attacks' scores
            if on_error is None:
                raise
            on_error(attack, err)
            continue
        out[attack] = SplitScores(m, n)
    return out


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
    return (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _round(keys: list[str], compute: Callable[[], np.ndarray | None], world: int) -> list[tuple[list[str], Any]]:
    """Every rank's (keys, scores) of one round, in rank order, on every rank. A rank that fails makes
    every rank raise (a user mistake stays a ``GenleakError``), so no rank waits for it forever."""
    if world == 1:
        return [(keys, compute())]
    import torch.distributed as dist

    try:
        mine: tuple[list[str], Any, BaseException | None] = (keys, compute(), None)
    except Exception as err:
        mine = (keys, None, err)
    rounds: list[Any] = [None] * world
    dist.all_gather_object(rounds, (mine[0], mine[1], None if mine[2] is None else (type(mine[2]), str(mine[2]))))
    if mine[2] is not None:
        raise mine[2]
    for r, (_, _, failed) in enumerate(rounds):
        if failed is not None:
            kind, message = failed
            raise (GenleakError if issubclass(kind, GenleakError) else RuntimeError)(f"rank {r}: {message}")
    return [(k, v) for k, v, _ in rounds]


def _rows(cond: Any, rows: list[int]) -> Any:
    if isinstance(cond, torch.Tensor):
        return cond[rows]
    return [cond[i] for i in rows]
