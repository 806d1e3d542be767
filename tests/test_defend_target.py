"""Defenses start from the audited target's folder: its UNet config, scheduler and conditioning.

The target here is a shape genleak never builds by default: a class-conditional ``UNet2DModel`` with
block_out_channels (24, 48), GroupNorm of 6 groups, 1 layer per block, and a ``DDIMScheduler`` with a
cosine ("squaredcos_cap_v2") schedule over 500 steps, saved with diffusers' own ``save_pretrained``.
Disjoint teachers, the DistillMD student, a KD student and a DP-SGD model trained ``target=`` it must
have exactly that config, load with ``load_target`` and record the split they were trained on.
"""

from __future__ import annotations

import json

import pytest
import torch

from genleak.errors import GenleakError

SHAPE = {"block_out_channels": [24, 48], "layers_per_block": 1, "norm_num_groups": 6, "num_class_embeds": 10}
SCHEDULE = {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 500}


@pytest.fixture(scope="module")
def audited(tmp_path_factory, digits8):
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    from genleak.data import make_split

    root = tmp_path_factory.mktemp("audited")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, **SHAPE)
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler(**SCHEDULE)).save_pretrained(root / "target")
    split = make_split(digits8, 16, 16, seed=3, source={"kind": "digits", "size": 8}, name="digits8-16")
    return root, split


def _config(**kw):
    from genleak.train import TrainConfig

    return TrainConfig(**{"steps": 4, "batch_size": 8, "ema_decay": None, "checkpoint_every": 100, **kw})


def _check_copied(folder, trained_on, target_dir):
    """The folder holds the target's UNet and scheduler config, fresh weights, and its training split."""
    from genleak.targets.loading import load_target

    model = load_target(folder)
    target = load_target(target_dir)
    for key, value in SHAPE.items():
        got = model.unet.config[key]
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDIMScheduler"
    assert {k: sched[k] for k in SCHEDULE} == SCHEDULE
    assert torch.equal(model.alphas_cumprod, target.alphas_cumprod)
    assert model.fingerprint() != target.fingerprint()
    record = json.loads((folder / "genleak_train.json").read_text())
    assert record["split_fingerprint"] == trained_on.fingerprint()
    assert record["config"]["extra"]["target"]["fingerprint"] == target.fingerprint()
    return model, record


def test_disjoint_distill_kd_dpsgd_copy_the_target(audited, tmp_path):
    from genleak.data import MembershipSplit
    from genleak.defenses.disjoint import train_disjoint
    from genleak.defenses.distill import train_distillmd
    from genleak.defenses.dpsgd import DPConfig, train_dpsgd
    from genleak.defenses.kd import train_kd

    root, split = audited
    target = root / "target"
    train_disjoint(split, _config(), tmp_path / "teachers", target=target, progress=False)
    halves = MembershipSplit.load(tmp_path / "teachers" / "split.json")
    for i in (1, 2):
        _, record = _check_copied(tmp_path / "teachers" / f"model_{i}", halves, target)
        assert record["data_fingerprint"] != ""
        assert record["members"] == 8

    train_distillmd(tmp_path / "teachers", _config(), tmp_path / "student", target=target, progress=False)
    _, record = _check_copied(tmp_path / "student", halves, target)
    assert record["config"]["extra"]["defense"] == "distillmd" and record["members"] == 16

    train_kd(target, split, _config(), tmp_path / "kd", target=target, progress=False)
    _check_copied(tmp_path / "kd", split, target)

    _, report = train_dpsgd(split, _config(batch_size=4), DPConfig(noise_multiplier=1.0, delta=1e-3,
                            reproducible_noise=True), tmp_path / "dp", target=target, progress=False)
    _check_copied(tmp_path / "dp", split, target)
    assert report["steps"] == 4 and report["epsilon"] > 0


def test_target_mismatches_are_one_line_errors(audited, tmp_path, digits8):
    from genleak.data import make_split
    from genleak.defenses.disjoint import train_disjoint
    from genleak.defenses.distill import train_distillmd

    root, split = audited
    # a split of 16x16 digits does not fit the 8x8 target
    big = make_split(load16(), 16, 16, seed=3, source={"kind": "digits", "size": 16})
    with pytest.raises(GenleakError, match="takes 1x8x8 images"):
        train_disjoint(big, _config(), tmp_path / "t16", target=root / "target", progress=False)
    # teachers with genleak's default schedule cannot teach a student on the target's cosine schedule
    train_disjoint(split, _config(steps=1), tmp_path / "plain", progress=False)
    with pytest.raises(GenleakError, match="noise schedule differs"):
        train_distillmd(tmp_path / "plain", _config(), tmp_path / "s", target=root / "target", progress=False)


def test_cli_defend_disjoint_and_distill_with_target(audited, tmp_path, cli):
    root, split = audited
    split.save(tmp_path / "split.json")
    common = ("--target", str(root / "target"), "--steps", "2", "--batch-size", "8", "--ema", "0")
    code, out, err = cli("defend", "disjoint", "--split", str(tmp_path / "split.json"), "--out", str(tmp_path / "t"), *common)
    assert code == 0, err
    code, out, err = cli("defend", "distill", "--teachers", str(tmp_path / "t"), "--out", str(tmp_path / "s"), *common)
    assert code == 0, err
    from genleak.data import MembershipSplit

    _check_copied(tmp_path / "s", MembershipSplit.load(tmp_path / "t" / "split.json"), root / "target")
    code, out, err = cli("defend", "disjoint", "--split", str(tmp_path / "split.json"), "--out", str(tmp_path / "x"),
                         "--latent", str(root / "target"), *common)
    assert code == 2 and "not both" in err


def load16():
    from genleak.data import load_source

    return load_source({"kind": "digits", "size": 16})


def test_text_to_image_target_teachers_student_and_dp_copy_it(digits8, tmp_path):
    """A text-to-image latent target (own VAE, CLIP text encoder, UNet2DConditionModel (24, 48), DDIM
    with betas 1e-4..0.02 scaled_linear): teachers, DistillMD student and DP-SGD model keep all of it."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from genleak.data import MembershipSplit, make_split
    from genleak.defenses.disjoint import train_disjoint
    from genleak.defenses.distill import train_distillmd
    from genleak.defenses.dpsgd import DPConfig, train_dpsgd
    from genleak.targets.latent import (
        DEFAULT_CAPTION_TEMPLATE,
        LatentDiffusionTarget,
        build_vae,
        caption_vocabulary,
    )
    from genleak.targets.loading import load_target
    from genleak.train.latent import build_text_stack

    torch.manual_seed(0)
    te, tok = build_text_stack(caption_vocabulary())
    unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(24, 48),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                cross_attention_dim=32, attention_head_dim=4, norm_num_groups=6)
    sched = DDIMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="scaled_linear", num_train_timesteps=300)
    LatentDiffusionTarget(build_vae(8, 1, (16, 32), 4), unet, sched, te, tok, caption_template=DEFAULT_CAPTION_TEMPLATE,
                          device="cpu").save_pretrained(tmp_path / "sd")
    split = make_split(digits8, 8, 8, seed=4, source={"kind": "digits", "size": 8})
    target = tmp_path / "sd"
    train_disjoint(split, _config(steps=2, batch_size=4), tmp_path / "teachers", target=target, progress=False)
    train_distillmd(tmp_path / "teachers", _config(steps=2, batch_size=4), tmp_path / "student", target=target,
                    progress=False)
    train_dpsgd(split, _config(steps=2, batch_size=4), DPConfig(noise_multiplier=1.0, delta=1e-2, reproducible_noise=True),
                tmp_path / "dp", target=target, progress=False)
    base = load_target(target)
    halves = MembershipSplit.load(tmp_path / "teachers" / "split.json")
    for folder, trained_on in ((tmp_path / "teachers" / "model_1", halves), (tmp_path / "student", halves),
                               (tmp_path / "dp", split)):
        model = load_target(folder)
        assert type(model.unet) is UNet2DConditionModel and model.conditional
        for key in ("block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
                    "norm_num_groups", "down_block_types"):
            assert model.unet.config[key] == base.unet.config[key], key
        saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        assert (saved["_class_name"], saved["beta_end"], saved["num_train_timesteps"]) == ("DDIMScheduler", 0.02, 300)
        assert model.caption_template == DEFAULT_CAPTION_TEMPLATE
        for mine, theirs in ((model.vae, base.vae), (model.text_encoder, base.text_encoder)):
            assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
        assert not torch.equal(next(model.unet.parameters()), next(base.unet.parameters()))
        record = json.loads((folder / "genleak_train.json").read_text())
        assert record["split_fingerprint"] == trained_on.fingerprint()
