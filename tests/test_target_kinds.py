"""Target kinds (issue 13, item 2): each target declares its kind, optional capabilities have
documented defaults instead of ``getattr`` probes, and every attack declares the kinds it supports
and refuses the others with one line before it queries the model."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from genleak.attacks import attack_class, available_attacks, get_attack
from genleak.errors import TargetError
from genleak.targets import default_scheduler
from genleak.targets.base import Autoregressive, LatentDiffusion, PixelDiffusion, TargetKind


class Minimal(PixelDiffusion):
    """A user's pixel model implementing only the four required methods; counts denoiser calls."""

    def __init__(self) -> None:
        self.alphas_cumprod = default_scheduler().alphas_cumprod.double()
        self.num_train_timesteps = 1000
        self.device = torch.device("cpu")
        self.calls = 0

    def eps(self, x_t, t, cond=None):
        self.calls += 1
        return x_t * 0.5

    def encode(self, images):
        return images

    def decode(self, x):
        return x

    def fingerprint(self):
        return "minimal"


@pytest.fixture(scope="module")
def text_latent():
    from genleak.targets.latent import LatentDiffusionTarget, build_latent_unet, build_vae

    torch.manual_seed(0)
    vae = build_vae(8, 1, (32, 64), latent_channels=4)
    unet = build_latent_unet(4, 4, (32, 64), cross_attention_dim=32)
    return LatentDiffusionTarget(vae, unet, default_scheduler(), device="cpu")


def test_check_refuses_a_wrong_kind_with_one_line(pixel):
    from genleak.audit import applicable_attacks
    from genleak.targets.iar import build_target

    with pytest.raises(TargetError) as err:
        get_attack("clid").check(pixel)
    assert str(err.value) == ("attack 'clid' needs a text-conditioned latent diffusion target; "
                              "'DiffusionTarget' is a pixel diffusion target")
    iar = build_target("rar", {}, {})
    with pytest.raises(TargetError) as err:
        get_attack("loss").check(iar)
    assert str(err.value) == ("attack 'loss' needs a pixel diffusion target or a latent diffusion target; "
                              "'RARTarget' is an image-autoregressive target")
    with pytest.raises(TargetError, match="^attack 'iar-mink-cfg' needs an image-autoregressive target; "
                                          "'DiffusionTarget' is a pixel diffusion target$"):
        attack_class("iar-mink-cfg").check(pixel)
    get_attack("loss").check(pixel)  # a supported kind passes
    get_attack("iar-loss").check(iar)
    # the audit refuses an explicitly requested attack of another kind before any scoring
    with pytest.raises(TargetError, match="^attack 'clid' needs"):
        applicable_attacks(pixel, ["loss", "clid"])
    assert applicable_attacks(pixel, ["loss", "genbox"]) == ["loss", "genbox"]


@pytest.mark.parametrize("name", ["clid", "iar-loss", "dp-baseline"])
def test_score_checks_the_kind_before_querying_the_model(name):
    target = Minimal()
    images = torch.zeros(2, 1, 8, 8)
    kinds_ok = TargetKind.PIXEL in attack_class(name).kinds and not attack_class(name).needs_text
    if kinds_ok:  # dp-baseline runs on a pixel target: 1 timestep x 1 draw = 1 query per batch
        get_attack(name).score(target, images, cond=None, progress=False)
        assert target.calls == 1
    else:
        with pytest.raises(TargetError, match=f"^attack '{name}' needs .*'Minimal' is a pixel diffusion target$"):
            get_attack(name).score(target, images, cond=[0, 1], progress=False)
        assert target.calls == 0


def test_a_kinds_defaults():
    t = Minimal()
    x = torch.randn(3, 1, 8, 8)
    assert t.target_kind is TargetKind.PIXEL and not t.text_conditioned and t.num_classes is None
    assert t.conditions(object()) is None
    assert t.describe() == {"fingerprint": "minimal"}
    assert torch.equal(t.eps_at_step(x, 10, 3), x * 0.5)
    assert t.with_guidance(1.0) is t
    assert t.image_shape is None
    for call, message in ((lambda: t.with_guidance(7.5), "guidance_scale=7.5 needs a text-conditioned target"),
                          (lambda: t.null_condition(2), "'?Minimal'? is not text-conditioned"),
                          (lambda: t.ddim_scheduler(10), "Minimal has no ddim_scheduler"),
                          (lambda: t.working_shape, "Minimal declares no image_shape")):
        with pytest.raises(TargetError, match=message):
            call()

    class NoEps(PixelDiffusion):  # the required methods are abstract: a target without eps is refused
        encode = decode = fingerprint = Minimal.encode

    with pytest.raises(TypeError, match="eps"):
        NoEps()
    assert LatentDiffusion.target_kind is TargetKind.LATENT and "latent_shape" in LatentDiffusion.__abstractmethods__
    assert Autoregressive.target_kind is TargetKind.IAR and Autoregressive.discrete is True


def test_concrete_targets_declare_their_kind(pixel, text_latent):
    from genleak.targets.dual import DualTarget
    from genleak.targets.iar import build_target

    assert pixel.target_kind is TargetKind.PIXEL and pixel.working_shape == (1, 8, 8)
    assert text_latent.target_kind is TargetKind.LATENT and text_latent.text_conditioned
    assert text_latent.working_shape == (4, 4, 4) and text_latent.null_condition(2) == ["", ""]
    get_attack("clid").check(text_latent)
    for kind, discrete in (("rar", True), ("var", True), ("mar", False)):
        iar = build_target(kind, {}, {})
        assert iar.target_kind is TargetKind.IAR and iar.discrete is discrete
    # DualMD takes its sub-models' kind and capabilities
    dual = DualTarget(pixel, pixel, steps=10)
    assert dual.target_kind is TargetKind.PIXEL and not dual.text_conditioned and dual.working_shape == (1, 8, 8)
    with pytest.raises(TargetError, match="not text-conditioned"):
        dual.null_condition(1)
    text_dual = DualTarget(text_latent, text_latent, steps=10)
    assert text_dual.target_kind is TargetKind.LATENT and text_dual.text_conditioned
    assert text_dual.working_shape == (4, 4, 4) and text_dual.with_guidance(7.5).models[0].guidance_scale == 7.5
    with pytest.raises(TargetError, match="different kinds: pixel diffusion and latent diffusion"):
        DualTarget(pixel, text_latent)


def test_each_registered_attack_declares_its_kinds():
    import genleak.attacks.iar as iar_attacks

    source = inspect.getsource(iar_attacks)
    names = available_attacks()
    assert len(names) >= 33  # 19 diffusion attacks + 7 IAR families x (plain, cfg)
    for name in names:
        cls = attack_class(name)
        assert cls.kinds and cls.kinds <= set(TargetKind), name
        if name.startswith("iar-"):
            assert cls.kinds == {TargetKind.IAR}, name
            assert f'"{name}"' in source, f"{name} is not an explicit class in genleak.attacks.iar"
            assert get_attack(name).config.cfg_diff is name.endswith("-cfg")
        else:
            assert cls.kinds <= {TargetKind.PIXEL, TargetKind.LATENT}, name
        assert cls.needs_text is (name == "clid"), name


def test_no_target_is_probed_with_getattr():
    # the capabilities are declared (targets/base.py), so nothing may sniff a target for them
    src = Path(__file__).resolve().parents[1] / "src" / "genleak"
    offenders = [f"{p.relative_to(src)}:{i}" for p in src.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "getattr(target" in line or "hasattr(target" in line]
    assert offenders == []
