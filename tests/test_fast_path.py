"""The GPU fast path (issue 14 §4), checked on CPU: autocast precision and channels_last change how a
query runs, never which query runs, and leave every fingerprint and cache key as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genleak.attacks import get_attack
from genleak.errors import GenleakError, TargetError


def _random_target():
    """A tiny UNet with random weights: scores are deterministic, cheap and spread out (no training)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from genleak.targets.ddpm import DiffusionTarget

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    return DiffusionTarget(unet, DDPMScheduler(num_train_timesteps=1000), device="cpu")


@pytest.mark.parametrize("name", ["loss", "sima", "pia", "secmi"])
def test_bf16_autocast_runs_the_same_queries_in_lower_precision(digits8, name):
    target, x = _random_target(), digits8[:32]
    attack = get_attack(name)
    ref = attack.score(target, x, progress=False)
    assert torch.equal(attack.score(target, x, progress=False, precision="fp32"), ref)
    low = attack.score(target, x, progress=False, precision="bf16")
    assert low.dtype == torch.float32 and not torch.equal(low, ref)  # bf16 really ran
    # same queries, 8-bit mantissa: the ranking of the samples survives
    assert np.corrcoef(low.numpy(), ref.numpy())[0, 1] > 0.95
    with pytest.raises(GenleakError, match="precision must be one of fp32, bf16, fp16"):
        attack.score(target, x, progress=False, precision="int8")


def test_channels_last_keeps_fingerprint_and_scores(digits8):
    from genleak.targets.base import optimize

    plain, fast = _random_target(), _random_target()
    assert optimize(fast, channels_last=True) is fast
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.fingerprint() == plain.fingerprint()
    attack, x = get_attack("sima"), digits8[:16]
    torch.testing.assert_close(attack.score(fast, x, progress=False), attack.score(plain, x, progress=False),
                               rtol=1e-5, atol=1e-6)


def test_a_target_without_networks_cannot_be_optimized():
    from genleak.targets.base import Target, optimize

    class Opaque(Target):  # a remote API, say: nothing local to compile
        def encode(self, images):
            return images

        def decode(self, x):
            return x

        def fingerprint(self):
            return "opaque"

    assert optimize(Opaque()) is not None  # nothing asked, nothing to do
    with pytest.raises(TargetError, match="names no networks"):
        optimize(Opaque(), compile=True)


def test_precision_on_the_command_line_is_recorded_cached_apart_and_verified(cli, tiny_ddpm_dir, tmp_path):
    """`attack --precision bf16`: the results say so, its scores never reuse (or pass for) float32 ones,
    and `genleak verify` rescores at the recorded precision."""
    target, split, out = tiny_ddpm_dir / "target", tiny_ddpm_dir / "split.json", tmp_path / "run"
    common = ("attack", "--target", str(target), "--split", str(split), "--attacks", "sima", "--bootstrap", "0",
              "--out", str(out), "--threads", "1")
    assert cli(*common)[0] == 0
    fp32 = np.load(out / "scores" / "sima.npz")["member_scores"]
    code, _, err = cli(*common, "--precision", "bf16")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["attacks"]["sima"]["precision"] == "bf16"
    bf16 = np.load(out / "scores" / "sima.npz")["member_scores"]
    assert not np.array_equal(bf16, fp32) and np.corrcoef(bf16, fp32)[0, 1] > 0.95
    code, out_text, _ = cli("verify", str(out), "--target", str(target), "--split", str(split), "--rescore", "8")
    assert code == 0, out_text
    assert cli(*common, "--precision", "fp8")[0] == 2  # one-line refusal, nothing scored
