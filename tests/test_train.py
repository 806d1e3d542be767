"""Training: resumable from an atomic checkpoint, and the resumed run equals an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from genleak.errors import GenleakError
from genleak.train import TrainConfig, train_ddpm


def test_resume_equals_uninterrupted_run(digits8, tmp_path):
    x = digits8[:16].images
    full = train_ddpm(x, TrainConfig(steps=40, block_out_channels=(16, 32), checkpoint_every=20), progress=False)
    # "crash" after 20 steps: a run with steps=20 leaves the checkpoint; then continue to 40
    part_dir = tmp_path / "run"
    train_ddpm(x, TrainConfig(steps=20, block_out_channels=(16, 32), checkpoint_every=20), part_dir, progress=False)
    state = torch.load(part_dir / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 20
    # pretend the run was configured for 40 steps from the start and was killed at step 20
    state["config"]["steps"] = 40
    torch.save(state, part_dir / "checkpoint" / "state.pt")
    (part_dir / "genleak_train.json").unlink()
    resumed = train_ddpm(x, TrainConfig(steps=40, block_out_channels=(16, 32), checkpoint_every=20), part_dir, progress=False)
    probe = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(resumed.eps(probe, 50), full.eps(probe, 50), rtol=1e-4, atol=1e-5)
    record = json.loads((part_dir / "genleak_train.json").read_text())
    assert record["steps"] == 40 and record["fingerprint"] == resumed.fingerprint()
    assert not [p for p in part_dir.rglob(".*") if p.is_file()], "temporary files left behind"


def test_finished_run_is_reused_and_config_mismatch_refused(digits8, tmp_path):
    x = digits8[:8].images
    cfg = TrainConfig(steps=5, block_out_channels=(16, 32))
    a = train_ddpm(x, cfg, tmp_path / "r", progress=False)
    b = train_ddpm(x, cfg, tmp_path / "r", progress=False)
    assert a.fingerprint() == b.fingerprint()
    with pytest.raises(GenleakError, match="different config"):
        train_ddpm(x, TrainConfig(steps=6, block_out_channels=(16, 32)), tmp_path / "r", progress=False)


def test_bad_training_input():
    with pytest.raises(GenleakError, match="non-empty"):
        train_ddpm(torch.zeros(0, 1, 8, 8), TrainConfig(steps=1), progress=False)
