"""benchmarks/scale.py (issue 14 §4) on a tiny UNet: the figures its table is built from are real numbers,
and the denoiser inputs counted during scoring equal each core attack's declared NFE (no timing thresholds:
the machine is shared)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from genleak.attacks import DEFAULT_ATTACKS, get_attack
from genleak.targets import DiffusionTarget, default_scheduler


@pytest.fixture(scope="module")
def scale():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
    spec = importlib.util.spec_from_file_location("scale_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_counts_each_attacks_nfe(scale):
    torch.manual_seed(0)
    # the CIFAR-10 layout (attention at one level and in the middle) at 16x16 with channels (16, 32)
    target = DiffusionTarget(scale.ddpm_unet(16, (16, 32), attention_size=8), default_scheduler(), device="cpu")
    assert target.unet.down_blocks[1].attentions and not hasattr(target.unet.down_blocks[0], "attentions")
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    rows = scale.measure(target, images, batch_size=2, repeats=1)
    assert [r["attack"] for r in rows] == list(DEFAULT_ATTACKS)
    for r in rows:
        assert r["nfe"] == get_attack(r["attack"]).nfe
        assert r["nfe_counted"] == r["nfe"], r  # every query the attack makes reaches the UNet at batch 2
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0 and r["bare_forward_ms"] > 0
        assert r["ratio"] == pytest.approx(r["seconds"] / (r["nfe"] * r["bare_forward_ms"] / 1e3 * 4 / 2))
        assert r["samples_per_s"] == pytest.approx(4 / r["seconds"])
    assert "eps" not in vars(target)  # the query counter is removed again
    with pytest.raises(ValueError, match="multiple of batch_size"):
        scale.measure(target, images[:3], batch_size=2)


def test_noise_cost_fractions(scale):
    target = DiffusionTarget(scale.ddpm_unet(16, (16, 32), attention_size=8), default_scheduler(), device="cpu")
    cost = scale.noise_cost(target, batch_size=4, sima_batch_seconds=0.5, repeats=1)
    assert cost["build_ms"] > 0 and cost["draw1_ms"] > 0
    assert cost["build_draw1_fraction"] == pytest.approx((cost["build_ms"] + cost["draw1_ms"]) / 500)
