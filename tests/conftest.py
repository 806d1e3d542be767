"""Shared fixtures: the tiny overfit DDPM is trained once per test session and shared.

Sizes: digits 8x8, UNet channels (32, 64), 64 members,
1250 steps (~1 min on 2 cores) reaches loss-attack AUC ~0.999. We train with EMA 0.995: the
EMA model is what public checkpoints ship, and it is what makes SecMI stable on tiny models
(README, "SecMI on tiny models").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# OpenMP threads that spin while waiting make a 2-thread torch ~40x slower when another process
# holds a core (measured: 7 s vs 0.16 s per train step); must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Results differ bitwise across thread counts: fix it for every test. One thread
# keeps the suite's speed stable when other work shares the machine.
torch.set_num_threads(1)


@dataclass
class OverfitModel:
    target: object  # genleak.targets.DiffusionTarget
    split: object  # genleak.data.MembershipSplit: the 64 members vs 64 held-out non-members
    heldout: object  # genleak.data.ImageSet: 512 further digits the model never saw
    folder: Path  # the saved diffusers folder
    split_path: Path


@pytest.fixture(scope="session")
def digits8():
    from genleak.data import load_source

    return load_source({"kind": "digits", "size": 8})


@pytest.fixture(scope="module")
def pixel():
    """A tiny pixel DDPM with seeded random weights (8x8, UNet (16, 32)): spread-out scores, no training."""
    from genleak.targets import DiffusionTarget, build_unet, default_scheduler

    torch.manual_seed(0)
    return DiffusionTarget(build_unet(8, 1, (16, 32)), default_scheduler(), device="cpu")


@pytest.fixture(scope="session")
def overfit_ddpm(tmp_path_factory, digits8) -> OverfitModel:
    from genleak.data import make_split
    from genleak.train import TrainConfig, train_ddpm

    root = tmp_path_factory.mktemp("overfit")
    big = make_split(digits8, 64, 64 + 512, seed=0, source={"kind": "digits", "size": 8})
    split = type(big)(members=big.members, nonmembers=big.nonmembers[:64], source=big.source, seed=0, name="digits8-64")
    heldout = big.nonmembers[64:]
    split_path = root / "split.json"
    split.save(split_path)
    config = TrainConfig(steps=1250, block_out_channels=(32, 64), ema_decay=0.995, seed=0, checkpoint_every=625)
    target = train_ddpm(split.members.images, config, root / "target", split_manifest=split.to_manifest(), progress=False)
    return OverfitModel(target=target, split=split, heldout=heldout, folder=root / "target", split_path=split_path)


@pytest.fixture(scope="session")
def tiny_ddpm_dir(tmp_path_factory) -> Path:
    """A tiny DDPM (digits 8x8, (16, 32), 200 steps: real, imperfect scores) in ``target/`` with its
    ``split.json``, a contradicting ``other-split.json``, and ``swapped/``: the target folder (same
    split record) with another model's weight file."""
    import shutil

    from genleak.data import load_source, make_split
    from genleak.targets.ddpm import DiffusionTarget
    from genleak.train import TrainConfig, train_ddpm

    root = tmp_path_factory.mktemp("tiny")
    digits = load_source({"kind": "digits", "size": 8})
    split = make_split(digits, 32, 32, seed=0)
    split.save(root / "split.json")
    make_split(digits, 32, 32, seed=1).save(root / "other-split.json")
    train_ddpm(split.members.images, TrainConfig(steps=200, seed=0), root / "target",
               split_manifest=split.to_manifest(), progress=False)
    other = DiffusionTarget.from_pretrained(root / "target")
    with torch.no_grad():
        next(other.unet.parameters()).mul_(1.5)
    other.save_pretrained(root / "other")
    shutil.copytree(root / "target", root / "swapped")
    weights = Path("unet") / "diffusion_pytorch_model.safetensors"
    shutil.copy(root / "other" / weights, root / "swapped" / weights)
    return root


@pytest.fixture
def broken_attack():
    """Register an attack that always raises, only for the test that needs it: other tests list
    every registered attack and must not meet it."""
    from genleak.attacks import AttackConfig, register_attack
    from genleak.attacks.base import _REGISTRY, Access, Attack

    class BrokenAttack(Attack):
        name = "test-broken"
        access = Access.GRAY_BOX
        config_class = AttackConfig

        @property
        def nfe(self) -> int:
            return 1

        def score_batch(self, target, x0, noise, cond=None):
            raise RuntimeError("boom")

    register_attack(BrokenAttack)
    yield BrokenAttack.name
    _REGISTRY.pop(BrokenAttack.name, None)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``genleak ARGS...`` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    import sys

    from genleak.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["genleak", *args])
        code = 0
        try:
            main()
        except SystemExit as ex:
            code = ex.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run
