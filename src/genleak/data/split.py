"""Membership splits: which images a target model was trained on (members) and which not.

A split is saved as a small JSON *manifest*: the source spec plus, for each side, the image ids
and their sha256. Loading rebuilds the images from the source and checks every hash, so results
can never silently be computed on different images than the split was made from.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genleak.data.images import ImageSet
from genleak.errors import DataError, GenleakError, SplitError

__all__ = [
    "MANIFEST_FORMAT", "MANIFEST_VERSION", "MembershipSplit", "make_split", "split_from_index_file", "split_from_sources",
]

MANIFEST_FORMAT = "genleak.split"
MANIFEST_VERSION = 1
_MEMORY_SOURCE = {"kind": "memory"}


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of the canonical manifest JSON (sorted keys, no whitespace): a short name for
    "exactly these images on exactly these sides", for run records and caches."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(eq=False)
class MembershipSplit:
    """Members and non-members drawn from one source.

    ``source`` is the spec that reloads the images (``ImageSet.source``); ``seed`` is the seed
    :func:`make_split` used (None for splits from index files); ``metadata`` is free-form JSON that
    later stages (e.g. defenses) may add to — it is part of the manifest and the fingerprint.
    """

    members: ImageSet
    nonmembers: ImageSet
    source: dict[str, Any]
    seed: int | None = None
    name: str = "split"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"MembershipSplit(name={self.name!r}, members={len(self.members)}, "
            f"nonmembers={len(self.nonmembers)}, shape={self.members.shape}, source={self.source.get('kind')})"
        )

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`SplitError` / :class:`DataError` if the split cannot be attacked fairly.

        Checks: both sides non-empty; same (C, H, W) on both sides; each side's images valid
        (4-D, finite, in [-1, 1]); no image (by sha256) or id on both sides — an image that is
        both member and non-member makes every membership score meaningless for it.
        """
        tag = f"split {self.name!r}"
        for side, images in (("members", self.members), ("non-members", self.nonmembers)):
            if not isinstance(images, ImageSet):
                raise SplitError(f"{tag}: {side} must be an ImageSet, got {type(images).__name__}")
            if len(images) == 0:
                raise SplitError(f"{tag} has no {side}; give it at least one image on each side")
        if self.members.shape != self.nonmembers.shape:
            raise SplitError(
                f"{tag}: members have shape {self.members.shape} but non-members {self.nonmembers.shape}; "
                "load both sides at one size (a ?size=N source option, e.g. 'folder:PATH?size=32')"
            )
        self.members.validate(f"{tag} members")
        self.nonmembers.validate(f"{tag} non-members")
        nonmember_hashes = set(self.nonmembers.hashes)
        both = [i for i, h in zip(self.members.ids, self.members.hashes, strict=True) if h in nonmember_hashes]
        if both:
            raise SplitError(
                f"{tag}: {len(both)} samples appear in both members and non-members (same sha256), "
                f"e.g. id {both[0]!r}; remove them from one side"
            )
        shared_ids = sorted(set(self.members.ids) & set(self.nonmembers.ids))
        if shared_ids:
            raise SplitError(
                f"{tag}: {len(shared_ids)} ids appear in both members and non-members, e.g. id {shared_ids[0]!r}; "
                "remove them from one side"
            )

    # ---------------------------------------------------------------- manifest
    def to_manifest(self) -> dict[str, Any]:
        """The JSON-able manifest (what :meth:`save` writes and :meth:`load` reads)."""
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "name": self.name,
            "source": copy.deepcopy(self.source),
            "seed": self.seed,
            "image_shape": list(self.members.shape),
            "members": [{"id": i, "sha256": h} for i, h in zip(self.members.ids, self.members.hashes, strict=True)],
            "nonmembers": [
                {"id": i, "sha256": h} for i, h in zip(self.nonmembers.ids, self.nonmembers.hashes, strict=True)
            ],
            "metadata": copy.deepcopy(self.metadata),
        }

    def fingerprint(self) -> str:
        """``manifest_fingerprint`` of this split's manifest."""
        return manifest_fingerprint(self.to_manifest())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Validate, then write the manifest atomically (never a half-written file)."""
        from genleak.io import atomic_write_json

        self.validate()
        if self.source.get("kind") == _MEMORY_SOURCE["kind"]:
            raise SplitError(
                f"split {self.name!r} was made from in-memory images with no source, so it could not be "
                "reloaded; save the images with ImageSet.save_npz and build the split from npz_source"
            )
        try:
            atomic_write_json(path, self.to_manifest())
        except (TypeError, ValueError) as err:
            raise SplitError(
                f"split {self.name!r}: source or metadata is not JSON-serialisable ({err}); use plain "
                "str/int/float/list/dict values"
            ) from err

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MembershipSplit:
        """Read a manifest, rebuild both sides from its source and verify every sha256.

        A relative ``path`` inside the manifest's source spec is taken relative to the manifest's
        folder (so a split shipped next to its data can be moved together with it).
        """
        file = Path(path)
        tag = f"split '{file}'"
        if not file.is_file():
            raise SplitError(f"{tag} not found; check the path or create the split first")
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SplitError(f"{tag} is not valid JSON ({err}); re-create the split") from err
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise SplitError(f"{tag} is not a genleak split (format {got!r}, expected {MANIFEST_FORMAT!r})")
        if manifest.get("version") != MANIFEST_VERSION:
            raise SplitError(
                f"{tag} has version {manifest.get('version')!r}, this genleak reads version {MANIFEST_VERSION}; "
                "re-create the split or upgrade genleak"
            )
        for key in ("source", "members", "nonmembers"):
            if key not in manifest:
                raise SplitError(f"{tag} has no {key!r} entry; re-create the split")
        source = manifest["source"]
        if not isinstance(source, dict):
            raise SplitError(f"{tag}: 'source' must be an object like {{'kind': 'digits'}}")
        try:
            sides = {side: _parse_entries(manifest[side]) for side in ("members", "nonmembers")}
        except (TypeError, KeyError) as err:
            raise SplitError(f"{tag}: members/nonmembers must be lists of {{'id', 'sha256'}} ({err})") from err

        spec = dict(source)
        if isinstance(spec.get("path"), str) and not os.path.isabs(os.path.expanduser(spec["path"])):
            spec["path"] = str((file.resolve().parent / spec["path"]).resolve())
        from genleak.data.sources import load_source

        try:
            full = load_source(spec)
        except GenleakError as err:
            raise SplitError(f"{tag}: cannot reload its source ({err})") from err
        except (TypeError, ValueError, OSError) as err:  # a hand-edited source spec with wrong value types
            raise SplitError(f"{tag}: cannot reload its source {source!r} ({type(err).__name__}: {err})") from err

        loaded: dict[str, ImageSet] = {}
        for side, (ids, hashes) in sides.items():
            try:
                images = full.select_ids(ids)
            except DataError as err:
                raise SplitError(f"{tag}: source changed since the split was made: {err}") from err
            changed = [i for i, h, h2 in zip(ids, hashes, images.hashes, strict=True) if h != h2]
            if changed:
                more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
                raise SplitError(
                    f"{tag}: source changed since the split was made: id {changed[0]!r}{more} has different "
                    "pixels (sha256 mismatch); restore the original data or re-create the split"
                )
            loaded[side] = images
        split = cls(
            members=loaded["members"],
            nonmembers=loaded["nonmembers"],
            source=source,
            seed=manifest.get("seed"),
            name=str(manifest.get("name", file.stem)),
            metadata=dict(manifest.get("metadata") or {}),
        )
        shape = manifest.get("image_shape")
        if shape is not None and list(split.members.shape) != list(shape) and len(split.members):
            raise SplitError(
                f"{tag}: source changed since the split was made: images are now {split.members.shape}, "
                f"the split recorded {tuple(shape)}"
            )
        split.validate()
        return split


def _resolve_source(source: dict[str, Any] | None, images: ImageSet) -> dict[str, Any]:
    """The spec to store: ``source`` or ``images.source``, with a relative ``path`` made absolute
    against the current directory (a relative path typed on the command line means "from here";
    stored relative it would later be read relative to the manifest's folder)."""
    if source is None:
        source = images.source if images.source is not None else _MEMORY_SOURCE
    if not isinstance(source, dict) or "kind" not in source:
        raise SplitError(f"source {source!r} must be a source spec dict with a 'kind', e.g. {{'kind': 'digits'}}")
    spec = copy.deepcopy(source)
    if isinstance(spec.get("path"), str):
        spec["path"] = str(Path(spec["path"]).expanduser().resolve())
    return spec


def _parse_entries(entries: Any) -> tuple[list[str], list[str]]:
    if not isinstance(entries, list):
        raise TypeError(f"got {type(entries).__name__}")
    return [str(e["id"]) for e in entries], [str(e["sha256"]) for e in entries]


# ----------------------------------------------------------------------------- building splits
def _dedup(images: ImageSet) -> list[int]:
    """Row indices of the first occurrence of each distinct image (by sha256)."""
    seen: set[str] = set()
    keep = []
    for i, h in enumerate(images.hashes):
        if h not in seen:
            seen.add(h)
            keep.append(i)
    return keep


def _largest_remainder(total: int, weights: list[int], caps: list[int]) -> list[int]:
    """Split ``total`` proportionally to ``weights`` into integers no larger than ``caps``
    (ties go to the earlier entry, so the result is deterministic)."""
    w_sum = sum(weights)
    if w_sum == 0 or total == 0:
        return [0] * len(weights)
    exact = [total * w / w_sum for w in weights]
    out = [min(int(np.floor(e)), c) for e, c in zip(exact, caps, strict=True)]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - np.floor(exact[i])), i))
    while sum(out) < total:
        progressed = False
        for i in order:
            if sum(out) == total:
                break
            if out[i] < caps[i]:
                out[i] += 1
                progressed = True
        if not progressed:
            break
    return out


def make_split(
    images: ImageSet,
    n_members: int,
    n_nonmembers: int | None = None,
    seed: int = 0,
    source: dict[str, Any] | None = None,
    stratify: bool = False,
    name: str = "split",
) -> MembershipSplit:
    """Draw disjoint random members / non-members from ``images`` (deterministic per ``seed``).

    Exact duplicates (same sha256) are removed *first* — keeping the first occurrence — so one
    image can never land on both sides. ``n_nonmembers`` defaults to ``n_members``. With
    ``stratify=True`` both sides get the class proportions of ``images.labels`` (largest-remainder
    rounding). ``source`` defaults to ``images.source`` (a relative path in it is made absolute);
    without either the split works in memory but cannot be saved. Each side is in source order.
    """
    for label, n in (("n_members", n_members), ("n_nonmembers", n_nonmembers)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0):
            raise SplitError(f"{label} must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise SplitError(f"seed must be an integer, got {seed!r}")
    n_members = int(n_members)
    n_nonmembers = n_members if n_nonmembers is None else int(n_nonmembers)
    source = _resolve_source(source, images)
    unique = _dedup(images)
    n_dups = len(images) - len(unique)
    need = n_members + n_nonmembers
    if need > len(unique):
        dup_note = f" ({n_dups} exact duplicates removed)" if n_dups else ""
        raise SplitError(
            f"not enough images: the source has {len(unique)} distinct images{dup_note} but "
            f"{n_members} members + {n_nonmembers} non-members = {need} are needed; lower the counts"
        )
    rng = np.random.default_rng(int(seed))
    if not stratify:
        order = rng.permutation(len(unique))
        picked = [unique[i] for i in order[:need]]
        member_rows, nonmember_rows = picked[:n_members], picked[n_members:]
    else:
        if images.labels is None:
            raise SplitError("stratify=True needs class labels, but these images have none; drop stratify")
        by_class: dict[int, list[int]] = {}
        for i in unique:
            by_class.setdefault(images.labels[i], []).append(i)
        classes = sorted(by_class)
        counts = [len(by_class[c]) for c in classes]
        take = _largest_remainder(need, counts, counts)
        m_take = _largest_remainder(n_members, take, take)
        member_rows, nonmember_rows = [], []
        for c, t, m in zip(classes, take, m_take, strict=True):
            rows = by_class[c]
            perm = rng.permutation(len(rows))
            chosen = [rows[j] for j in perm[:t]]
            member_rows += chosen[:m]
            nonmember_rows += chosen[m:]
    metadata: dict[str, Any] = {}
    if n_dups:
        metadata["exact_duplicates_removed"] = n_dups
    if stratify:
        metadata["stratified"] = True
    split = MembershipSplit(
        members=images[sorted(member_rows)],
        nonmembers=images[sorted(nonmember_rows)],
        source=source,
        seed=int(seed),
        name=name,
        metadata=metadata,
    )
    split.validate()
    return split


def split_from_index_file(
    images: ImageSet,
    index_npz: str | os.PathLike[str],
    source: dict[str, Any] | None = None,
    name: str = "split",
) -> MembershipSplit:
    """A split from a public SecMI/PIA index file.

    The ``.npz`` holds ``mia_train_idxs`` (members) and ``mia_eval_idxs`` (non-members): integer
    row indices into ``images`` in source order (for CIFAR-10: the 0..49999 train order of
    :func:`~genleak.data.sources.cifar10_source`). ``source`` defaults to ``images.source``.
    The index file's sha256 is recorded in ``metadata["index_file_sha256"]``.
    """
    file = Path(index_npz)
    tag = f"index file '{file}'"
    if not file.is_file():
        raise SplitError(f"{tag} not found; check the path")
    raw = file.read_bytes()
    try:
        with np.load(file, allow_pickle=False) as data:
            keys = list(data.files)
            missing = [k for k in ("mia_train_idxs", "mia_eval_idxs") if k not in keys]
            if missing:
                raise SplitError(
                    f"{tag} has no {', '.join(missing)} (it has {', '.join(keys)}); "
                    "expected the SecMI/PIA format with mia_train_idxs and mia_eval_idxs"
                )
            sides = {k: np.asarray(data[k]).ravel() for k in ("mia_train_idxs", "mia_eval_idxs")}
    except SplitError:
        raise
    except Exception as err:
        raise SplitError(f"{tag}: cannot read it as .npz ({err})") from err
    rows: dict[str, list[int]] = {}
    for key, idx in sides.items():
        if idx.size and idx.dtype.kind not in "iu":
            if idx.dtype.kind == "f" and np.all(idx == np.round(idx)):
                idx = idx.astype(np.int64)
            else:
                raise SplitError(f"{tag}: {key} must hold integer indices, got dtype {idx.dtype}")
        bad = idx[(idx < 0) | (idx >= len(images))]
        if bad.size:
            raise SplitError(
                f"{tag}: {bad.size} indices in {key} are outside 0..{len(images) - 1} (e.g. {int(bad[0])}); "
                "is this index file for a different (larger) source?"
            )
        if len(np.unique(idx)) != len(idx):
            raise SplitError(f"{tag}: {key} lists some indices more than once; fix the index file")
        rows[key] = [int(i) for i in idx]
    source = _resolve_source(source, images)
    split = MembershipSplit(
        members=images[rows["mia_train_idxs"]],
        nonmembers=images[rows["mia_eval_idxs"]],
        source=source,
        seed=None,
        name=name,
        metadata={"index_file_sha256": hashlib.sha256(raw).hexdigest()},
    )
    split.validate()
    return split


def split_from_sources(
    members: ImageSet | dict[str, Any] | str,
    nonmembers: ImageSet | dict[str, Any] | str,
    n_members: int | None = None,
    n_nonmembers: int | None = None,
    seed: int = 0,
    name: str = "split",
) -> MembershipSplit:
    """A split whose membership the auditor knows: every image of the ``members`` source was
    trained on, none of the ``nonmembers`` source (each a source spec or an :class:`ImageSet`).

    ``n_members`` / ``n_nonmembers`` draw that many images of a side at random (sorted back into
    source order; each side has its own stream of ``seed``, which the manifest records). ids get
    the prefix ``members/`` or ``nonmembers/``; the source is ``{"kind": "known", "members": spec,
    "nonmembers": spec}``. The usual checks apply: same shape on both sides, no image on both.
    """
    from genleak.data.sources import join_sides, load_source

    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise SplitError(f"seed must be an integer, got {seed!r}")
    sides: list[ImageSet] = []
    specs: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for k, (side, given, n) in enumerate((("members", members, n_members), ("nonmembers", nonmembers, n_nonmembers))):
        images = given if isinstance(given, ImageSet) else load_source(given)
        specs[side] = None if images.source is None else _resolve_source(None, images)
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
                raise SplitError(f"n_{side} must be a positive integer, got {n!r}")
            if n > len(images):
                raise SplitError(f"{n} {side} asked for, but the {side} source has {len(images)} images; lower it")
            rows = np.random.default_rng((int(seed), k)).choice(len(images), int(n), replace=False)
            metadata.setdefault("subsampled", {})[side] = {"from": len(images), "kept": int(n)}
            images = images[sorted(rows.tolist())]
        sides.append(images)
    full = join_sides(*sides)
    full.source = _MEMORY_SOURCE if None in specs.values() else {"kind": "known", **specs}
    split = MembershipSplit(members=full[: len(sides[0])], nonmembers=full[len(sides[0]):], source=full.source,
                            seed=int(seed) if metadata else None, name=name, metadata=metadata)
    split.validate()
    return split
