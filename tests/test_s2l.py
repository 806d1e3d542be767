"""Shake-to-Leak: self-generated domain sets, full / LoRA fine-tuning (merged back into a plain UNet),
class domains, Gaussian weight perturbation, the before/after report and the CLI."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from genleak.errors import GenleakError


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from genleak.cli import main

    monkeypatch.setattr(sys, "argv", ["genleak", *args])
    code = 0
    try:
        main()
    except SystemExit as ex:
        code = ex.code or 0
    out, err = capsys.readouterr()
    return code, out, err


# -- perturbation ----------------------------------------------------------------------------------------------
def test_perturbation_is_seeded_relative_and_leaves_the_original_alone():
    from genleak.s2l.perturb import perturb_module
    from genleak.targets import build_unet

    torch.manual_seed(0)
    unet = build_unet(8, 1, (16, 32))
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    a = perturb_module(unet, 0.1, seed=1)
    b = perturb_module(unet, 0.1, seed=1)
    c = perturb_module(unet, 0.1, seed=2)
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in before)
    assert not torch.equal(a.conv_in.weight, c.conv_in.weight)
    assert all(torch.equal(perturb_module(unet, 0.0).state_dict()[k], v) for k, v in before.items())
    # relative scale: the noise on each tensor has std ~ sigma * rms(W)
    w = unet.conv_in.weight
    noise = a.conv_in.weight - w
    ratio = float(noise.detach().std() / (0.1 * w.detach().pow(2).mean().sqrt()))
    assert 0.7 < ratio < 1.3
    absolute = perturb_module(unet, 0.01, seed=1, scale="absolute")
    assert 0.007 < float((absolute.conv_in.weight - w).detach().std()) < 0.013
    with pytest.raises(GenleakError, match="scale"):
        perturb_module(unet, 0.1, scale="percent")


def test_perturbation_sweep_reports_before_after(overfit_ddpm, tmp_path):
    from genleak.s2l.perturb import perturbation_sweep
    from genleak.s2l.report import write_report

    comp = perturbation_sweep(overfit_ddpm.target, overfit_ddpm.split, [0.0, 0.2], ["sima"], draws=1,
                              out_dir=tmp_path, progress=False)
    rows = {r["variant"]["sigma"]: r["attacks"]["sima"] for r in comp.rows}
    assert rows[0.0]["delta_auc"] == 0.0 and rows[0.0]["delta_tpr_at_1pct_fpr"] == 0.0
    assert rows[0.2]["auc_before"] == rows[0.0]["auc_before"]
    assert rows[0.2]["auc_after"] != rows[0.2]["auc_before"]
    write_report(comp, tmp_path)
    doc = json.loads((tmp_path / "s2l.json").read_text())
    assert doc["kind"] == "perturb" and len(doc["rows"]) == 2 and doc["summary"][0]["n"] == 1
    assert "sigma=0.2" in (tmp_path / "s2l.md").read_text()


# -- fine-tuning --------------------------------------------------------------------------------------------------
def test_lora_trains_only_adapters_and_merges_into_a_plain_unet(overfit_ddpm):
    from genleak.s2l.shake import ShakeConfig, finetune

    target = overfit_ddpm.target
    data = overfit_ddpm.heldout[:32]
    cfg = ShakeConfig(steps=4, batch_size=16, lora_lr=1e-2)
    counts = {}
    for rank in (1, 4):
        tuned, info = finetune(target, data, "lora", cfg, rank=rank, progress=False)
        counts[rank] = info["trainable_parameters"]
        sd, base = tuned.unet.state_dict(), target.unet.state_dict()
        assert set(sd) == set(base)  # merged: no lora_A / lora_B / base_layer keys left
        changed = {k for k in sd if not torch.equal(sd[k], base[k])}
        assert changed and all(k.rsplit(".", 2)[-2] in {"conv1", "conv2", "time_emb_proj"} for k in changed)
    assert counts[4] == 4 * counts[1] and counts[1] < info["total_parameters"] / 50
    full, info = finetune(target, data, "full", cfg, progress=False)
    assert info["trainable_parameters"] == info["total_parameters"]
    assert full.fingerprint() != target.fingerprint()
    # the original target is untouched and still a plain UNet
    assert all(torch.equal(v, overfit_ddpm.target.unet.state_dict()[k]) for k, v in target.unet.state_dict().items())


def test_embedding_method_needs_a_text_target(overfit_ddpm):
    from genleak.s2l.shake import ShakeConfig, finetune

    with pytest.raises(GenleakError, match="text-conditioned"):
        finetune(overfit_ddpm.target, overfit_ddpm.heldout[:4], "embedding", ShakeConfig())
    with pytest.raises(GenleakError, match="unknown method"):
        finetune(overfit_ddpm.target, overfit_ddpm.heldout[:4], "dreambooth", ShakeConfig())


def test_class_domain_generates_finetunes_and_evaluates_one_class(digits8, monkeypatch):
    """A class-conditional UNet: the domain set carries the class label, fine-tuning feeds labels to
    the UNet (batch by batch, matching the images), and evaluation keeps only that class."""
    from genleak.data import ImageSet, make_split
    from genleak.s2l.shake import ShakeConfig, domain_split, finetune, make_domain_set
    from genleak.targets import DiffusionTarget, build_unet, default_scheduler

    torch.manual_seed(0)
    target = DiffusionTarget(build_unet(8, 1, (16, 32), num_class_embeds=10), default_scheduler(), device="cpu")
    cfg = ShakeConfig(n_synthetic=12, sample_steps=3, steps=3, batch_size=5)
    data = make_domain_set(target, "7", cfg, progress=False)
    assert data.labels == [7] * 12 and data.images.shape == (12, 1, 8, 8)
    with pytest.raises(GenleakError, match="class index"):
        make_domain_set(target, "all", cfg)
    with pytest.raises(GenleakError, match="outside"):
        make_domain_set(target, "12", cfg)

    seen: list[torch.Tensor] = []
    mixed = data.concat(ImageSet(images=digits8.images[:12], ids=[f"x{i}" for i in range(12)], labels=digits8.labels[:12]))
    forward = type(target.unet).forward

    def spy(self, sample, timestep, class_labels=None, return_dict=True):
        seen.append(class_labels.clone())
        return forward(self, sample, timestep, class_labels=class_labels, return_dict=return_dict)

    monkeypatch.setattr(type(target.unet), "forward", spy)
    finetune(target, mixed, "full", cfg, progress=False)
    monkeypatch.undo()
    assert len(seen) == 3 and all(s is not None and s.shape == (5,) for s in seen)
    assert set(torch.cat(seen).tolist()) <= set(mixed.labels)

    split = make_split(digits8, 100, 100, seed=0)
    sub = domain_split(split, 7)
    assert set(sub.members.labels) == {7} and set(sub.nonmembers.labels) == {7}
    assert domain_split(split, "all") is split


def test_unconditional_target_has_only_the_all_domain(overfit_ddpm):
    from genleak.s2l.shake import ShakeConfig, make_domain_set

    with pytest.raises(GenleakError, match="only domain is 'all'"):
        make_domain_set(overfit_ddpm.target, "3", ShakeConfig())


def test_s2l_and_perturb_cli(overfit_ddpm, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s2l"
    code, stdout, err = _run_cli(
        monkeypatch, capsys, "s2l", "--target", str(overfit_ddpm.folder), "--split", str(overfit_ddpm.split_path),
        "--domain", "all", "--method", "full,lora", "--rank", "1,2", "--attacks", "sima", "--n-synthetic", "16",
        "--sample-steps", "5", "--steps", "3", "--out", str(out))
    assert code == 0, err
    doc = json.loads((out / "s2l.json").read_text())
    variants = [(r["variant"]["method"], r["variant"]["rank"]) for r in doc["rows"]]
    assert variants == [("full", None), ("lora", 1), ("lora", 2)]
    row = doc["rows"][1]["attacks"]["sima"]
    assert row["delta_auc"] == pytest.approx(row["auc_after"] - row["auc_before"])
    assert (out / "synthetic_set.png").is_file() and (out / "s2l.md").is_file()
    assert "lora" in stdout and "Δ" not in err

    code, _, err = _run_cli(monkeypatch, capsys, "s2l", "--target", str(overfit_ddpm.folder), "--split",
                            str(overfit_ddpm.split_path), "--method", "embedding", "--out", str(tmp_path / "e"))
    assert code == 2 and "text-conditioned" in err and len(err.strip().splitlines()) == 1

    code, _, err = _run_cli(monkeypatch, capsys, "perturb", "--target", str(overfit_ddpm.folder), "--split",
                            str(overfit_ddpm.split_path), "--sigma", "0.01", "--draws", "1", "--attacks", "sima",
                            "--out", str(tmp_path / "p"))
    assert code == 0, err
    assert json.loads((tmp_path / "p" / "s2l.json").read_text())["kind"] == "perturb"
