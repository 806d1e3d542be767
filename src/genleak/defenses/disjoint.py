"""Disjoint training (DualMD paper, section 3.2, Algorithm 1): two teachers on two halves of the members.

The members are split into two disjoint halves D_1, D_2 (recorded in the split manifest under
``metadata["halves"]``, so every later stage uses the same halves) and one denoiser is trained on
each, with the same training budget (steps, batch size, lr) as the undefended baseline (appendix
A.2.2: "we train both the baseline model, the two models trained on two disjoint subsets, and the
distilled model with the same number of training steps"). The output folder is a DualMD folder
(``model_1/``, ``model_2/``, ``model_index.json`` naming ``DualTarget``) plus the updated ``split.json``; it is both a
deployable ``DualTarget`` and the ``--teachers`` input of DistillMD.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genleak.data import MembershipSplit
from genleak.errors import GenleakError, SplitError
from genleak.targets.folders import TARGET_SPLIT_FILE
from genleak.train import TrainConfig, train_ddpm

HALVES_KEY = "halves"


def assign_halves(split: MembershipSplit, seed: int = 0) -> MembershipSplit:
    """Return a copy of ``split`` whose ``metadata["halves"]`` splits the members into two disjoint
    random halves (sizes differ by at most one). A split that already has halves keeps them."""
    if HALVES_KEY in split.metadata:
        halves_of(split)  # validates
        return split
    n = len(split.members)
    if n < 2:
        raise SplitError(f"disjoint training needs at least 2 members, the split has {n}")
    order = np.random.default_rng(int(seed)).permutation(n)
    first = sorted(order[: (n + 1) // 2].tolist())
    second = sorted(order[(n + 1) // 2 :].tolist())
    ids = split.members.ids
    metadata = copy.deepcopy(split.metadata)
    metadata[HALVES_KEY] = {"seed": int(seed), "1": [ids[i] for i in first], "2": [ids[i] for i in second]}
    return dataclasses.replace(split, metadata=metadata)


def halves_of(split: MembershipSplit) -> tuple[list[int], list[int]]:
    """Member row indices of D_1 and D_2 from ``metadata["halves"]``; checks they partition the members."""
    halves = split.metadata.get(HALVES_KEY)
    if not isinstance(halves, dict) or "1" not in halves or "2" not in halves:
        raise SplitError(f"split {split.name!r} has no metadata['halves']; run `genleak defend disjoint` first")
    pos = {sid: i for i, sid in enumerate(split.members.ids)}
    rows = []
    for key in ("1", "2"):
        unknown = [sid for sid in halves[key] if sid not in pos]
        if unknown:
            raise SplitError(f"split {split.name!r}: half {key} names id {unknown[0]!r}, which is not a member")
        rows.append(sorted(pos[sid] for sid in halves[key]))
    if set(rows[0]) & set(rows[1]):
        raise SplitError(f"split {split.name!r}: the two halves overlap; they must be disjoint (Algorithm 1)")
    if len(rows[0]) + len(rows[1]) != len(split.members) or not rows[0] or not rows[1]:
        raise SplitError(f"split {split.name!r}: the halves must be non-empty and cover all members")
    return rows[0], rows[1]


def train_disjoint(
    split: MembershipSplit,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    halves_seed: int = 0,
    dual_steps: int | None = None,
    target: str | Path | None = None,
    progress: bool = True,
) -> Any:
    """Algorithm 1: train one teacher on each half with the baseline's ``config``; returns a DualTarget.

    Teacher i uses seed ``config.seed + i - 1`` (independent initialisations). Resumable: each
    teacher is an ordinary ``train_ddpm`` run in ``OUT/model_i``. With ``target`` (the audited
    model's folder) each teacher is a fresh UNet of the target's architecture, scheduler and
    conditioning (pixel or latent; ``defenses.from_target``) instead of genleak's default UNet.
    """
    spec = None
    if target is not None:
        from genleak.defenses.from_target import TargetSpec

        spec = TargetSpec.load(target)

    def train_half(i: int, rows: list[int], cfg_extra: dict[str, Any], out: Path, split: MembershipSplit) -> Any:
        cfg = dataclasses.replace(config, seed=config.seed + i - 1, extra={**config.extra, **cfg_extra})
        if spec is not None:
            return spec.train(split, cfg, out, rows=rows, progress=progress)
        images = split.members.images[torch.as_tensor(rows)]
        return train_ddpm(images, cfg, out, split_manifest=split.to_manifest(), progress=progress)

    return _train_halves(split, out_dir, train_half, config.to_dict(), halves_seed, dual_steps, progress)


def train_disjoint_latent(
    split: MembershipSplit,
    vae: Any,
    config: Any,
    out_dir: str | Path,
    *,
    captions: list[list[str]] | None = None,
    text_encoder: Any = None,
    tokenizer: Any = None,
    caption_template: str | None = None,
    halves_seed: int = 0,
    dual_steps: int | None = None,
    progress: bool = True,
) -> Any:
    """Algorithm 1 for latent (and text-to-image) models: two LDMs on one VAE, one per half.

    ``config`` is a ``LatentTrainConfig``; ``captions[i]`` lists member i's captions (several =
    prompt diversification). Both teachers share the VAE and the frozen text encoder, so a
    ``DualTarget`` over them conditions both on the same text states and DistillMD can feed the
    student's states to either teacher.
    """
    from genleak.train.latent import train_latent

    if captions is not None and len(captions) != len(split.members):
        raise GenleakError(f"{len(captions)} caption lists for {len(split.members)} members")

    def train_half(i: int, rows: list[int], cfg_extra: dict[str, Any], out: Path, split: MembershipSplit) -> Any:
        cfg = dataclasses.replace(config, seed=config.seed + i - 1, extra={**config.extra, **cfg_extra})
        images = split.members.images[torch.as_tensor(rows)]
        caps = [captions[r] for r in rows] if captions is not None else None
        return train_latent(images, vae, cfg, out, captions=caps, text_encoder=text_encoder, tokenizer=tokenizer,
                            caption_template=caption_template, split_manifest=split.to_manifest(), progress=progress)

    return _train_halves(split, out_dir, train_half, config.to_dict(), halves_seed, dual_steps, progress)


def _train_halves(split: MembershipSplit, out_dir: str | Path, train_half: Any, config_dict: dict[str, Any],
                  halves_seed: int, dual_steps: int | None, progress: bool) -> Any:
    from genleak.targets.dual import DEFAULT_STEPS, DualTarget

    out = Path(out_dir)
    split = assign_halves(split, halves_seed)
    rows = halves_of(split)
    out.mkdir(parents=True, exist_ok=True)
    split.save(out / TARGET_SPLIT_FILE)
    teachers = []
    for i, half in enumerate(rows, start=1):
        if progress:
            print(f"teacher {i}: {len(half)} members")
        extra = {"defense": "disjoint", "half": i, "halves_seed": int(split.metadata[HALVES_KEY]["seed"])}
        teachers.append(train_half(i, half, extra, out / f"model_{i}", split))
    dual = DualTarget(teachers[0], teachers[1], steps=dual_steps or DEFAULT_STEPS)
    dual.save_metadata(out, {"halves_sizes": [len(rows[0]), len(rows[1])], "train_config": config_dict,
                             "split_fingerprint": split.fingerprint()})
    return dual


def load_teachers(folder: str | Path, device: str | torch.device | None = None) -> tuple[Any, Any, MembershipSplit]:
    """The two teachers (pixel or latent targets) and the split (with halves) of a ``genleak defend
    disjoint`` folder."""
    from genleak.targets.loading import load_target

    path = Path(folder)
    if not (path / TARGET_SPLIT_FILE).is_file() or not (path / "model_1").is_dir() or not (path / "model_2").is_dir():
        raise GenleakError(f"'{folder}' is not a teachers folder (needs split.json, model_1/, model_2/); run `genleak defend disjoint`")
    split = MembershipSplit.load(path / TARGET_SPLIT_FILE)
    halves_of(split)
    return load_target(path / "model_1", device=device), load_target(path / "model_2", device=device), split
