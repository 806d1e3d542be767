"""Targets: the diffusers round trip, DDIM helpers against diffusers' own schedulers, and SecMI on
an exact memorising denoiser (where the t-error must separate members perfectly)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from genleak.attacks import get_attack
from genleak.errors import TargetError
from genleak.metrics import auc
from genleak.targets import DiffusionTarget, build_unet, ddim_step, default_scheduler
from genleak.targets.base import PixelDiffusion


def test_save_load_round_trip_gives_identical_eps(tmp_path):
    torch.manual_seed(0)
    target = DiffusionTarget(build_unet(8, 1, (16, 32)), default_scheduler(), device="cpu")
    target.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model_index.json").is_file()
    loaded = DiffusionTarget.from_pretrained(tmp_path / "m", device="cpu")
    x = torch.randn(4, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(target.eps(x, 100), loaded.eps(x, 100))
    assert target.fingerprint() == loaded.fingerprint()


def test_flat_diffusers_layout_loads(tmp_path):
    # google/ddpm-cifar10-32 style: config.json + weights + scheduler_config.json at the root.
    unet = build_unet(8, 1, (16, 32))
    unet.save_pretrained(tmp_path / "flat")
    default_scheduler().save_pretrained(tmp_path / "flat")
    t = DiffusionTarget.from_pretrained(tmp_path / "flat", device="cpu")
    assert t.image_shape == (1, 8, 8)


def test_missing_or_broken_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(TargetError, match="does not exist"):
        DiffusionTarget.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TargetError, match="not a diffusers model folder"):
        DiffusionTarget.from_pretrained(tmp_path / "empty")


def test_ddim_step_matches_diffusers_schedulers():
    torch.manual_seed(0)
    target = DiffusionTarget(build_unet(8, 1, (16, 32)), default_scheduler(), device="cpu")
    x = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        # denoising 110 -> 100 == DDIMScheduler with 100 inference steps (step 10), eta 0
        ref = DDIMScheduler.from_config(target.scheduler.config, clip_sample=False, set_alpha_to_one=False)
        ref.set_timesteps(100)
        eps = target.eps(x, 110)
        expected = ref.step(eps, 110, x, eta=0.0).prev_sample
        torch.testing.assert_close(ddim_step(target, x, 110, 100), expected, rtol=1e-4, atol=1e-5)
        # inversion 100 -> 110 == DDIMInverseScheduler (its `timestep` argument is the step's end)
        inv = DDIMInverseScheduler.from_config(target.scheduler.config, clip_sample=False)
        inv.set_timesteps(100)
        eps = target.eps(x, 100)
        expected = inv.step(eps, 110, x).prev_sample
        torch.testing.assert_close(ddim_step(target, x, 100, 110), expected, rtol=1e-4, atol=1e-5)


class MemorisingTarget(PixelDiffusion):
    """The exact optimal denoiser of an empirical distribution (a model that memorised its
    training points perfectly): E[eps | x_t] under a uniform mixture of Diracs at the members.
    It implements the target protocol without diffusers, as any user model may."""

    def __init__(self, train: torch.Tensor):
        sched = default_scheduler()
        self.train = train.double()
        self.alphas_cumprod = sched.alphas_cumprod.double()
        self.num_train_timesteps = 1000
        self.device = torch.device("cpu")

    def eps(self, x_t, t, cond=None):
        a = float(self.alphas_cumprod[t])
        x = x_t.double().flatten(1)
        centres = (a**0.5) * self.train.flatten(1)
        d2 = torch.cdist(x, centres).pow(2)
        w = torch.softmax(-d2 / (2 * (1 - a)), dim=1)
        mean = w @ centres
        return ((x - mean) / (1 - a) ** 0.5).view_as(x_t).to(x_t.dtype)

    def encode(self, x):
        return x

    def decode(self, x):
        return x

    def fingerprint(self):
        return "memorising"


@pytest.mark.parametrize("name,params", [("secmi", {"t_sec": 30}), ("secmi", {"t_sec": 110}), ("pian", {})])
def test_secmi_separates_members_of_an_exact_memoriser(digits8, name, params):
    # With a perfect denoiser the DDIM trajectory of a member stays on sqrt(abar_t) x0 and the
    # t-error is ~0; that SecMI then reaches AUC ~1 shows the implementation is right and that
    # its swings on tiny non-EMA models come from the models (README "SecMI on tiny models").
    # PIAN likewise (measured 1.000): on the overfit fixture it is near chance (tests/test_attacks.py).
    members, nonmembers = digits8[:48], digits8[48:96]
    target = MemorisingTarget(members.images)
    a = get_attack(name, **params)
    sm = a.score(target, members.images, members.ids, progress=False)
    sn = a.score(target, nonmembers.images, nonmembers.ids, progress=False)
    assert auc(sm.numpy(), sn.numpy()) >= 0.99
