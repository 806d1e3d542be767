"""Issue 14 §3: two CPU processes (gloo on loopback, started by torchrun) score exactly what one process
scores, for the core attacks and the CDI features; the cache written by rank 0 resumes a killed
multi-process run and is reused by a single-process rerun.

Run as a script, this file is the worker torchrun starts: ``worker TARGET SPLIT OUT``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ATTACKS = ("loss", "secmi", "pia", "pian", "sima")
SCORING = dict(batch_size=2, chunk_size=2, progress=False)


def _score(target, split, out: Path | None) -> dict[str, np.ndarray]:
    """Every attack's scores and the CDI gray-box features of both sides, flat, plus computed counts."""
    from genleak.attacks import get_attack
    from genleak.inference.features import extract_features, parse_features
    from genleak.scoring import score_split

    attacks = [get_attack(name) for name in ATTACKS]
    scored = score_split(target, split, attacks, cache=None if out is None else out / "score-cache", **SCORING)
    got: dict[str, np.ndarray] = {}
    computed = 0
    for a in attacks:
        got[f"{a.name}/members"], got[f"{a.name}/nonmembers"] = scored[a].members.values, scored[a].nonmembers.values
        computed += scored[a].members.computed + scored[a].nonmembers.computed
    for side in ("members", "nonmembers"):
        feats = extract_features(target, getattr(split, side), parse_features("gray"),
                                 cache_dir=None if out is None else out / "feature-cache", **SCORING)
        got[f"cdi/{side}"] = feats.values
        computed += sum(s["computed"] for s in feats.stats.values())
    got["computed"] = np.asarray(computed)
    return got


def _worker(target_dir: str, split_path: str, out: str) -> None:
    from genleak.data import MembershipSplit
    from genleak.io import atomic_save_npz
    from genleak.scoring import ScoreCache, distributed_world
    from genleak.targets.loading import load_target

    torch.set_num_threads(1)
    if os.environ.get("KILLED"):  # chunks written, never consolidated: what a run killed mid-way leaves
        ScoreCache.consolidate = lambda *args, **kwargs: None  # type: ignore[method-assign]
    got = _score(load_target(target_dir, device="cpu"), MembershipSplit.load(split_path), Path(out))
    world, rank = distributed_world()
    assert world == 2
    if rank == 0:
        atomic_save_npz(Path(out) / "scores.npz", **{k.replace("/", "__"): v for k, v in got.items()})


def _torchrun(*args: str, **env: str) -> str:
    """stdout of ``torchrun --nproc_per_node 2 ARGS`` (gloo on a free loopback port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), *args]
    run = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _launch(target_dir: Path, split_path: Path, out: Path, **env: str) -> dict[str, np.ndarray]:
    _torchrun(__file__, str(target_dir), str(split_path), str(out), **env)
    with np.load(out / "scores.npz") as z:
        return {k.replace("__", "/"): z[k] for k in z.files}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits8):
    from diffusers import DDPMScheduler, UNet2DModel

    from genleak.data import make_split
    from genleak.targets.ddpm import DiffusionTarget
    from genleak.targets.loading import load_target

    root = tmp_path_factory.mktemp("dist")
    torch.manual_seed(0)  # random weights: deterministic, spread-out scores without training
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    DiffusionTarget(unet, DDPMScheduler(num_train_timesteps=1000), device="cpu").save_pretrained(root / "target")
    # 3 chunks of non-members: in the last round one rank has nothing to score
    split = make_split(digits8, 8, 6, seed=0, source={"kind": "digits", "size": 8})
    split.save(root / "split.json")
    return root, load_target(root / "target", device="cpu"), split


def test_two_processes_score_what_one_scores_and_share_its_cache(setup):
    from genleak.inference.features import GRAY_BOX_FEATURES

    root, target, split = setup
    one = _score(target, split, None)
    n = (8 + 6) * (len(ATTACKS) + len(GRAY_BOX_FEATURES))  # each sample once per attack and per CDI feature
    assert int(one.pop("computed")) == n

    out = root / "run"
    killed = _launch(root / "target", root / "split.json", out, KILLED="1")
    assert int(killed.pop("computed")) == n
    assert killed.keys() == one.keys()
    for k in one:  # noise is seeded per sample, chunks are the same: bit for bit, not approximately
        np.testing.assert_array_equal(killed[k], one[k], err_msg=k)

    chunks = sorted(out.rglob("chunk-*.npz"))
    assert chunks and not list(out.rglob("store.npz"))
    lost = chunks[::2]  # half the chunk files never reached the disk
    n_lost = 0
    for c in lost:
        with np.load(c) as z:
            n_lost += len(z["keys"])
        c.unlink()
    resumed = _launch(root / "target", root / "split.json", out)
    assert int(resumed.pop("computed")) == n_lost  # only the lost chunks were scored again
    for k in one:
        np.testing.assert_array_equal(resumed[k], one[k], err_msg=k)
    assert not list(out.rglob("chunk-*.npz")) and list(out.rglob("store.npz"))  # rank 0 consolidated

    again = _score(target, split, out)  # one process reads what two wrote: nothing recomputed
    assert int(again.pop("computed")) == 0
    for k in one:
        np.testing.assert_array_equal(again[k], one[k], err_msg=k)


def test_the_attack_command_under_torchrun_writes_once_what_one_process_scores(setup):
    from genleak.attacks import get_attack
    from genleak.scoring import score_split

    root, target, split = setup
    out = root / "cli"
    stdout = _torchrun("-m", "genleak.cli", "attack", "--target", str(root / "target"), "--split",
                       str(root / "split.json"), "--out", str(out), "--attacks", "loss", "--bootstrap", "0",
                       "--batch-size", "2", "--threads", "1")
    assert stdout.count("wrote ") == 1  # rank 1 scored its share, then neither wrote nor printed
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "roc.png", "score-cache", "scores"]
    attack = get_attack("loss")
    one = score_split(target, split, [attack], **SCORING)[attack]
    with np.load(out / "scores" / "loss.npz") as z:
        np.testing.assert_array_equal(z["member_scores"], one.members.values)
        np.testing.assert_array_equal(z["nonmember_scores"], one.nonmembers.values)


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
