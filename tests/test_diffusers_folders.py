"""Folders exactly as diffusers saves them (issue 14 §5): ``DDPMPipeline``, ``DDIMPipeline`` and a
``StableDiffusionPipeline`` with fp16 ``variant`` weights, a CLIP text encoder and tokenizer, each built
from a tiny config and written by diffusers' own ``save_pretrained``; membership comes from image
folders (captions from HF-imagefolder ``metadata.jsonl``) through ``genleak data split``, then
``attack``, ``infer`` and ``audit`` run on them through the CLI. Weights are random (nothing is
trained): what is checked is that every command opens the folder as saved and that the numbers it
writes are the ones its saved scores give (``genleak verify``). Nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

N = 16  # images per side


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """PNG member / non-member folders with metadata.jsonl captions, and the pipelines saved by diffusers."""
    from diffusers import (
        AutoencoderKL,
        DDIMPipeline,
        DDIMScheduler,
        DDPMPipeline,
        DDPMScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
        UNet2DModel,
    )
    from PIL import Image

    from genleak.data import load_source
    from genleak.train.latent import build_text_stack

    root = tmp_path_factory.mktemp("diffusers-folders")
    digits = load_source({"kind": "digits", "size": 8})
    captions = []
    for side, rows in (("members", range(N)), ("nonmembers", range(N, 2 * N))):
        (root / side).mkdir()
        lines = []
        for i in rows:
            pixels = ((digits.images[i, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels, mode="L").save(root / side / f"{i}.png")
            captions.append(f"a handwritten digit {digits.labels[i]}")
            lines.append(json.dumps({"file_name": f"{i}.png", "text": captions[-1]}))
        (root / side / "metadata.jsonl").write_text("\n".join(lines) + "\n")

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(root / "ddpm")
    DDIMPipeline(unet=copy.deepcopy(unet), scheduler=DDIMScheduler(beta_schedule="squaredcos_cap_v2")).save_pretrained(root / "ddim")
    DDPMPipeline(unet=unet.half(), scheduler=DDPMScheduler()).save_pretrained(root / "ddpm-fp16", variant="fp16")

    # SD v1's layout and scheduler at toy size: RGB KL-VAE (8x8 -> 4x4x4), cross-attention UNet, CLIP text stack
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=8)
    sd_unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                   layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                   attention_head_dim=8, norm_num_groups=16)
    text_encoder, tokenizer = build_text_stack(captions)  # a tiny CLIPTextModel and a CLIP BPE tokenizer, offline
    sd = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=sd_unet,
                                 scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                         skip_prk_steps=True, steps_offset=1),
                                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    sd.save_pretrained(root / "sd")
    sd.to(torch.float16).save_pretrained(root / "sd-fp16", variant="fp16")  # what the Hub's fp16 branches hold
    return root


def _split(cli, root: Path, channels: int) -> Path:
    out = root / f"split-{channels}.json"
    if not out.is_file():
        opt = "?channels=3" if channels == 3 else ""
        code, text, err = cli("data", "split", "--member-source", f"folder:{root / 'members'}{opt}",
                              "--nonmember-source", f"folder:{root / 'nonmembers'}{opt}", "--out", str(out))
        assert code == 0, err
        assert f"{N} members, {N} non-members" in text
    return out


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_fp16_variant_folders_load_in_fp32_and_match_the_fp32_save(root):
    """``save_pretrained(variant="fp16")`` writes only ``*.fp16.safetensors``; the loader finds them, upcasts
    to fp32, and predicts what the fp32 save predicts with its weights rounded to fp16 (bitwise), i.e. the
    fp32 prediction up to fp16 weight rounding."""
    from genleak.targets.loading import load_target

    for name, sub, weights in (("ddpm-fp16", "unet", "diffusion_pytorch_model"),
                               ("sd-fp16", "unet", "diffusion_pytorch_model"), ("sd-fp16", "text_encoder", "model")):
        assert (root / name / sub / f"{weights}.fp16.safetensors").is_file()
        assert not (root / name / sub / f"{weights}.safetensors").exists()
    gen = torch.Generator().manual_seed(0)
    captions = ["a handwritten digit 3", "a handwritten digit 7", ""]
    for full, half, shape, cond in (("ddpm", "ddpm-fp16", (3, 1, 8, 8), None), ("sd", "sd-fp16", (3, 4, 4, 4), captions)):
        t32, t16 = load_target(root / full, device="cpu"), load_target(root / half, device="cpu")
        modules = [t16.unet] + ([t16.text_encoder, t16.vae] if cond else [])
        assert all(p.dtype == torch.float32 for m in modules for p in m.parameters())
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            eps32 = t32.eps(x, 400, cond)
            for m in [t32.unet] + ([t32.text_encoder] if cond else []):
                for p in m.parameters():
                    p.copy_(p.half().float())
            getattr(t32, "_embed_cache", {}).clear()  # caption embeddings of the unrounded text encoder
            rounded, eps16 = t32.eps(x, 400, cond), t16.eps(x, 400, cond)
        assert torch.equal(rounded, eps16), full
        # fp16 keeps 11 significant bits: each weight moves by <= 2^-11 relative; the bound leaves 40x that
        assert 0 < (eps16 - eps32).abs().max() < 2e-2 * eps32.abs().max(), full


def test_ddpm_and_ddim_pipelines_attack_infer_and_audit(root, cli):
    split = _split(cli, root, 1)
    for name, scheduler in (("ddpm", "DDPMScheduler"), ("ddim", "DDIMScheduler")):
        out = root / f"attack-{name}"
        code, text, err = cli("attack", "--target", str(root / name), "--split", str(split), "--attacks", "loss,sima",
                              "--bootstrap", "50", "--device", "cpu", "--out", str(out))
        assert code == 0, err
        data = _results(out)
        assert data["target"]["scheduler"] == scheduler
        assert data["split_check"]["status"] == "not recorded"
        for attack in ("loss", "sima"):
            m = data["attacks"][attack]["metrics"]
            assert data["attacks"][attack]["status"] == "ok" and (m["n_members"], m["n_nonmembers"]) == (N, N)
        code, text, err = cli("verify", str(out), "--rescore", "8")  # metrics from the saved scores, rescored samples
        assert code == 0, text + err
    from diffusers import DDIMScheduler

    from genleak.targets.loading import load_target

    assert torch.equal(load_target(root / "ddim", device="cpu").alphas_cumprod,
                       DDIMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod.double())

    code, text, err = cli("infer", "--target", str(root / "ddim"), "--split", str(split), "--features", "loss",
                          "--resamples", "50", "--permutations", "99", "--device", "cpu", "--quiet",
                          "--out", str(root / "infer-ddim"))
    assert code == 0, err
    cdi = json.loads((root / "infer-ddim" / "cdi.json").read_text())
    assert (cdi["n_suspect"], cdi["n_reference"], cdi["features"]) == (N, N, ["loss"])
    assert 0.01 <= cdi["p_value"] <= 1  # 99 permutations: p = (1 + #{perm >= observed}) / 100
    assert "not recorded" in json.dumps(cdi)

    out = root / "audit-ddpm"
    code, text, err = cli("audit", "--target", str(root / "ddpm"), "--split", str(split), "--attacks", "loss,sima",
                          "--sections", "guards,defense", "--bootstrap", "50", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert f"report: {out / 'report.html'}" in text
    data = _results(out)
    assert set(data["attacks"]) == {"loss", "sima"} and data["split_check"]["status"] == "not recorded"
    html = (out / "report.html").read_text()
    assert 'data-status="not recorded"' in html and "training split not recorded" in html


def test_stable_diffusion_fp16_folder_with_imagefolder_captions(root, cli):
    """The text-to-image target conditions on the captions of metadata.jsonl (a diffusers-saved folder has no
    caption template, so without them every attack would fail), and results verify against the fp16 folder."""
    from genleak.data import MembershipSplit

    split = _split(cli, root, 3)
    s = MembershipSplit.load(split)
    assert s.members.shape == (3, 8, 8) and s.members.captions[0] == "a handwritten digit 0"
    target = root / "sd-fp16"
    out = root / "attack-sd"
    code, text, err = cli("attack", "--target", str(target), "--split", str(split), "--attacks", "loss,sima",
                          "--bootstrap", "50", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    data = _results(out)
    assert data["target"]["scheduler"] == "PNDMScheduler" and data["split_check"]["status"] == "not recorded"
    assert all(data["attacks"][a]["status"] == "ok" for a in ("loss", "sima"))
    code, text, err = cli("verify", str(out), "--rescore", "8")
    assert code == 0, text + err

    code, text, err = cli("infer", "--target", str(target), "--split", str(split), "--features", "loss",
                          "--resamples", "50", "--permutations", "99", "--device", "cpu", "--quiet",
                          "--out", str(root / "infer-sd"))
    assert code == 0, err
    assert json.loads((root / "infer-sd" / "cdi.json").read_text())["n_suspect"] == N

    out = root / "audit-sd"
    code, text, err = cli("audit", "--target", str(target), "--split", str(split), "--attacks", "loss,sima,clid",
                          "--sections", "guards", "--bootstrap", "50", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    data = _results(out)
    assert all(a["status"] == "ok" for a in data["attacks"].values()) and len(data["attacks"]) == 3
    assert "training split not recorded" in (out / "report.html").read_text()


def test_folder_code_never_runs_and_foreign_classes_are_refused(root, cli, tmp_path):
    """A custom pipeline or scheduler class is refused in one line; a pipeline.py in the folder is never imported."""
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(root / "ddpm", folder)
    (folder / "pipeline.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    index = json.loads((folder / "model_index.json").read_text())
    split = _split(cli, root, 1)
    args = ("attack", "--target", str(folder), "--split", str(split), "--attacks", "loss", "--bootstrap", "0",
            "--device", "cpu", "--out", str(tmp_path / "out"))
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": ["pipeline", "MyPipeline"]}))
    code, text, err = cli(*args)
    assert code == 2 and "which genleak cannot open" in err
    (folder / "model_index.json").write_text(json.dumps(index))
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "MyScheduler"}))
    code, text, err = cli(*args)
    assert code == 2 and "names scheduler 'MyScheduler'" in err
    assert not (tmp_path / "ran").exists()
