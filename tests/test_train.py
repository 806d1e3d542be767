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


def _linear_run(batch_size, grad_accum, steps=6, mixed_precision="no"):
    """A linear regression on the one trainer: deterministic losses, so only the updates can differ."""
    import torch.nn.functional as F

    from genleak.train.loop import LoopConfig, make_accelerator, run_loop

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, generator=gen), torch.randn(16, 1, generator=gen)
    loop = LoopConfig(steps, batch_size, 0, grad_accum=grad_accum, mixed_precision=mixed_precision)
    accelerator = make_accelerator(loop)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    model, losses, _ = run_loop(model, torch.optim.SGD(model.parameters(), lr=0.1), loop,
                                lambda m, idx, step, g: F.mse_loss(m(x[idx]), y[idx]), accelerator=accelerator, n=16,
                                progress=False)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), losses


def test_gradient_accumulation_equals_one_large_batch_and_mixed_precision_does_not_leak():
    big, big_losses = _linear_run(8, 1)
    # 2 micro-batches of 4 per step see the same rows (16 = 2 epochs of 8 = 4 of 4) and average to the same gradient
    small, small_losses = _linear_run(4, 2)
    torch.testing.assert_close(small, big, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(small_losses), torch.tensor(big_losses), rtol=0, atol=1e-6)
    stepped, _ = _linear_run(4, 1, steps=12)  # the same micro-batches, but a step after each
    assert (stepped - big).abs().max() > 1e-3
    bf16, _ = _linear_run(8, 1, mixed_precision="bf16")
    assert not torch.equal(bf16, big)  # bf16 autocast reached the forward pass
    torch.testing.assert_close(bf16, big, rtol=0, atol=0.05)
    again, _ = _linear_run(8, 1)  # accelerate's process-wide state was reset: fp32 again, bitwise
    assert torch.equal(again, big)
    if not torch.cuda.is_available():
        with pytest.raises(GenleakError, match="fp16 needs a GPU"):
            _linear_run(8, 1, mixed_precision="fp16")


def test_accelerate_settings_are_checked(digits8):
    from genleak.defenses.dpsgd import DPConfig, DPSGDHooks

    with pytest.raises(GenleakError, match="mixed_precision must be one of no, fp16, bf16"):
        TrainConfig(mixed_precision="fp32")
    with pytest.raises(GenleakError, match="grad_accum must be an integer >= 1"):
        TrainConfig(grad_accum=0)
    dp = DPSGDHooks(8, 4, 1.0, DPConfig(noise_multiplier=1.0))
    with pytest.raises(GenleakError, match="grad_accum 1"):
        train_ddpm(digits8[:8].images, TrainConfig(steps=1, grad_accum=2), hooks=dp, progress=False)


@pytest.mark.parametrize("command", ["ddpm", "vae", "ldm", "iar"])
def test_every_train_command_declares_the_shared_train_options(command, cli, digits8, tmp_path):
    import click
    import typer.main

    from genleak.cli import app

    root = typer.main.get_command(app)
    train = root.get_command(click.Context(root), "train")
    cmd = train.get_command(click.Context(train), command)
    helps = {opt: p.help for p in cmd.params for opt in p.opts}
    shared = ["--steps", "--batch-size", "--lr", "--grad-accum", "--mixed-precision", "--seed", "--threads"]
    shared += ["--ema"] if command in ("ddpm", "ldm") else []
    for opt in shared:
        assert helps.get(opt) is not None and "--" + opt.lstrip("-") in helps, (command, opt)
    assert helps["--grad-accum"].startswith("Micro-batches per optimiser step") and helps["--steps"] == "Optimiser steps."
    code, out, _ = cli("train", command, "--help")
    assert code == 0 and all(opt in out for opt in shared)
    if command == "ddpm":
        from genleak.data import make_split

        make_split(digits8, 8, 8, seed=0, source={"kind": "digits", "size": 8}).save(tmp_path / "s.json")
        code, _, err = cli("train", "ddpm", "--split", str(tmp_path / "s.json"), "--out", str(tmp_path / "o"),
                           "--mixed-precision", "fp32")
        assert code == 2 and "mixed_precision must be one of no, fp16, bf16" in err and len(err.strip().splitlines()) == 1
