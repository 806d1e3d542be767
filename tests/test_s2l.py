"""Shake-to-Leak: self-generated domain sets, full / LoRA fine-tuning (merged back into a plain UNet),
class domains, Gaussian weight perturbation, the before/after report and the CLI; on text-to-image
latent targets: prompt domains, full / LoRA through train_latent and textual inversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genleak.errors import GenleakError


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
    # measured: SimA AUC 1.000 -> 0.994. Noise at 20% of each tensor's rms costs a little AUC and
    # amplifies nothing (benchmarks/RESULTS.md, S2L mechanism 3): a perturbation that is not applied
    # (delta 0), one that raises the AUC, or one that wrecks the model (AUC near 0.5) fails here
    assert -0.03 < rows[0.2]["delta_auc"] < 0 and rows[0.2]["delta_auc"] == rows[0.2]["auc_after"] - rows[0.2]["auc_before"]
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


def test_s2l_and_perturb_cli(overfit_ddpm, tmp_path, cli):
    out = tmp_path / "s2l"
    code, stdout, err = cli("s2l", "shake", "--target", str(overfit_ddpm.folder), "--split", str(overfit_ddpm.split_path),
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

    code, _, err = cli("s2l", "shake", "--target", str(overfit_ddpm.folder), "--split",
                            str(overfit_ddpm.split_path), "--method", "embedding", "--out", str(tmp_path / "e"))
    assert code == 2 and "text-conditioned" in err and len(err.strip().splitlines()) == 1

    code, _, err = cli("s2l", "perturb", "--target", str(overfit_ddpm.folder), "--split",
                            str(overfit_ddpm.split_path), "--sigma", "0.01", "--draws", "1", "--attacks", "sima",
                            "--out", str(tmp_path / "p"))
    assert code == 0, err
    assert json.loads((tmp_path / "p" / "s2l.json").read_text())["kind"] == "perturb"


# -- text-to-image (latent) targets: full / LoRA via train_latent, textual inversion, the CLI ------------------------
# A random tiny SD-style target built here (the same recipe as tests/test_latent.py's ``tiny_sd``, copied so
# this file does not pull in that module's trained session fixtures). Everything below runs in seconds.
PROMPT = "a bold handwritten digit seven upright"  # in the tiny tokenizer's vocabulary: one token per word
PLACEHOLDER = "<s2l-domain>"


@pytest.fixture(scope="module")
def tiny_text_target(tmp_path_factory):
    """(target, folder): a random tiny text-to-image LatentDiffusionTarget and its saved SD-style folder."""
    from genleak.targets.latent import (
        DEFAULT_CAPTION_TEMPLATE,
        LatentDiffusionTarget,
        build_latent_unet,
        build_vae,
        caption_vocabulary,
        sd_scheduler,
    )
    from genleak.train.latent import build_text_stack

    torch.set_num_threads(1)
    torch.manual_seed(0)
    te, tok = build_text_stack(caption_vocabulary())
    target = LatentDiffusionTarget(build_vae(8, 1, (16, 32), 4), build_latent_unet(4, 4, (32, 64), 1, cross_attention_dim=32),
                                   sd_scheduler(), te, tok, caption_template=DEFAULT_CAPTION_TEMPLATE, device="cpu")
    folder = tmp_path_factory.mktemp("s2l-sd") / "tiny-sd"
    target.save_pretrained(folder)
    return target, folder


def _text_cfg(**kw):
    from genleak.s2l.shake import ShakeConfig

    return ShakeConfig(**{"n_synthetic": 8, "sample_steps": 3, "steps": 20, "batch_size": 4, **kw})


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(module, snapshot) -> bool:
    sd = module.state_dict()
    return sd.keys() == snapshot.keys() and all(torch.equal(sd[k], v) for k, v in snapshot.items())


@pytest.fixture(scope="module")
def text_domain(tiny_text_target):
    from genleak.s2l.shake import make_domain_set

    target, _ = tiny_text_target
    return make_domain_set(target, PROMPT, _text_cfg(), progress=False)


@pytest.fixture(scope="module")
def inverted(tiny_text_target, text_domain):
    """Textual inversion on the synthetic domain set, with snapshots of everything it must not touch."""
    from genleak.s2l.shake import finetune

    target, _ = tiny_text_target
    before = {"unet": _snapshot(target.unet), "vae": _snapshot(target.vae), "te": _snapshot(target.text_encoder),
              "grad_flags": [p.requires_grad for p in target.unet.parameters()], "vocab": len(target.tokenizer)}
    tuned, info = finetune(target, text_domain, "embedding", _text_cfg(), progress=False)
    return tuned, info, before


def test_text_domain_set_is_generated_from_the_prompt(tiny_text_target, text_domain):
    from genleak.s2l.shake import domain_split, make_domain_set

    target, _ = tiny_text_target
    assert text_domain.captions == [PROMPT] * 8 and text_domain.labels is None
    assert text_domain.images.shape == (8, 1, 8, 8) and text_domain.images.abs().max() <= 1
    again = make_domain_set(target, PROMPT, _text_cfg(), progress=False)
    assert torch.equal(again.images, text_domain.images)  # seeded
    other = make_domain_set(target, "a thin handwritten digit one upright", _text_cfg(), progress=False)
    assert not torch.equal(other.images, text_domain.images)  # the prompt conditions the generation
    with pytest.raises(GenleakError, match="prompt"):
        make_domain_set(target, "all", _text_cfg())
    split = object()
    assert domain_split(split, PROMPT, target) is split  # the given split is the prompt domain's split


def test_embedding_trains_only_the_new_token_row(tiny_text_target, text_domain, inverted):
    from genleak.s2l.shake import finetune
    from genleak.s2l.textual_inversion import TextualInversionTarget, textual_inversion
    from genleak.targets.latent import LatentDiffusionTarget

    target, _ = tiny_text_target
    tuned, info, before = inverted
    assert isinstance(tuned, LatentDiffusionTarget) and isinstance(tuned, TextualInversionTarget)
    new_id = info["token_id"]
    assert new_id == before["vocab"] and len(tuned.tokenizer) == before["vocab"] + 1
    assert info["trainable_parameters"] == target.text_encoder.config.hidden_size == 32
    # the original target: untouched (weights, tokenizer, UNet grad flags restored)
    assert _same(target.unet, before["unet"]) and _same(target.vae, before["vae"]) and _same(target.text_encoder, before["te"])
    assert len(target.tokenizer) == before["vocab"] and PLACEHOLDER not in target.tokenizer.get_vocab()
    assert [p.requires_grad for p in target.unet.parameters()] == before["grad_flags"]
    # the tuned target: UNet and VAE byte-identical, text encoder identical except the one new row
    assert _same(tuned.unet, before["unet"]) and _same(tuned.vae, before["vae"])
    after = tuned.text_encoder.state_dict()
    key = next(k for k in after if k.endswith("token_embedding.weight"))
    assert after.keys() == before["te"].keys()
    assert all(torch.equal(after[k], v) for k, v in before["te"].items() if k != key)
    old = before["te"][key]
    assert after[key].shape == (old.shape[0] + 1, old.shape[1]) and torch.equal(after[key][:new_id], old)
    init, _ = textual_inversion(target, text_domain.images, text_domain.captions, steps=1, lr=0.0, progress=False)
    start = init.learned_embedding()[PLACEHOLDER]
    assert torch.allclose(start, old[[i for i in target.tokenizer(PROMPT).input_ids if i not in target.tokenizer.all_special_ids]].mean(0))
    learnt = tuned.learned_embedding()[PLACEHOLDER]
    assert not torch.allclose(learnt, start)
    # the row was trained, not just moved: the textual-inversion objective on the domain set went down
    assert _ti_objective(tuned, text_domain) < _ti_objective(init, text_domain)
    # end to end: captions without the token get exactly the old predictions, with the token new ones
    z = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(tuned.eps(z, 300, [PROMPT] * 4), target.eps(z, 300, [PROMPT] * 4))
        assert not torch.allclose(tuned.eps(z, 300, [f"{PROMPT} {PLACEHOLDER}"] * 4), target.eps(z, 300, [PROMPT] * 4))
    # deterministic per seed
    same, _ = finetune(target, text_domain, "embedding", _text_cfg(), progress=False)
    assert torch.equal(same.learned_embedding()[PLACEHOLDER], learnt)
    other, _ = finetune(target, text_domain, "embedding", _text_cfg(seed=1), progress=False)
    assert not torch.equal(other.learned_embedding()[PLACEHOLDER], learnt)


def _ti_objective(tuned, data) -> float:
    """Mean denoising loss on ``data`` with the prompt + learnt token, on fixed noise and timesteps."""
    gen = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.inference_mode():
        z0 = tuned.encode(data.images)
        prompts = [tuned.prompt(c) for c in data.captions]
        for _ in range(8):
            noise = torch.randn(z0.shape, generator=gen)
            t = torch.randint(0, tuned.num_train_timesteps, (z0.shape[0],), generator=gen)
            a = tuned.alphas_cumprod[t].float().view(-1, 1, 1, 1)
            pred = tuned.eps(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, prompts)
            total += float((pred - noise).pow(2).mean())
    return total / 8


def test_placeholder_round_trips_and_reaches_the_attack_prompts(tiny_text_target, text_domain, inverted, tmp_path):
    from genleak.data import ImageSet
    from genleak.s2l.textual_inversion import textual_inversion
    from genleak.targets.loading import load_target

    target, _ = tiny_text_target
    tuned, info, _ = inverted
    tok, new_id = tuned.tokenizer, info["token_id"]
    ids = tok(f"{PROMPT} {PLACEHOLDER}").input_ids
    assert ids.count(new_id) == 1 and ids[:-2] == target.tokenizer(PROMPT).input_ids[:-1]  # old words: old ids
    assert tok.convert_ids_to_tokens(new_id) == PLACEHOLDER and tok.decode([new_id]) == PLACEHOLDER
    assert tok.convert_tokens_to_ids(PLACEHOLDER) == new_id == tuned.token_id
    # the re-attack conditions every image on its own caption plus the learnt token (template "{prompt} {token}")
    samples = ImageSet(images=text_domain.images[:2], ids=["a", "b"], captions=["a thin handwritten digit one upright", "x"])
    assert tuned.conditions(samples) == [f"a thin handwritten digit one upright {PLACEHOLDER}", f"x {PLACEHOLDER}"]
    assert tuned.fingerprint() != target.fingerprint()
    assert tuned.describe()["textual_inversion"] == {"placeholder": PLACEHOLDER, "token_id": new_id, "prompt_template": "{prompt} {token}"}
    # saved as an SD folder: the tokenizer, the new row and the prompt template survive the round trip
    tuned.save_pretrained(tmp_path / "ti")
    loaded = load_target(tmp_path / "ti", device="cpu")
    assert type(loaded) is type(tuned) and loaded.fingerprint() == tuned.fingerprint()
    assert loaded.conditions(samples) == tuned.conditions(samples)
    assert loaded.tokenizer(f"{PROMPT} {PLACEHOLDER}").input_ids == ids
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert torch.equal(loaded.eps(z, 200, [f"{PROMPT} {PLACEHOLDER}"] * 2), tuned.eps(z, 200, [f"{PROMPT} {PLACEHOLDER}"] * 2))
    # bad placeholders / templates: one-line errors before any training
    x, caps = text_domain.images[:2], text_domain.captions[:2]
    for kwargs, match in (({"placeholder": "digit"}, "already in the tokenizer"), ({"placeholder": "two words"}, "without spaces"),
                          ({"prompt_template": "{prompt}"}, "must contain"), ({"prompt_template": "{token} {name}"}, "only use")):
        with pytest.raises(GenleakError, match=match):
            textual_inversion(target, x, caps, steps=1, progress=False, **kwargs)
    with pytest.raises(GenleakError, match="2 prompts for 8 images"):
        textual_inversion(target, text_domain.images, caps, steps=1, progress=False)


def test_full_and_lora_fine_tune_latent_targets_through_train_latent(tiny_text_target, text_domain):
    from genleak.data import ImageSet
    from genleak.s2l.shake import finetune, make_domain_set
    from genleak.targets.latent import LatentDiffusionTarget, build_latent_unet, sd_scheduler

    target, _ = tiny_text_target
    unet_before, te_before = _snapshot(target.unet), _snapshot(target.text_encoder)
    cfg = _text_cfg(steps=3, lora_lr=1e-2)
    full, info = finetune(target, text_domain, "full", cfg, progress=False)
    assert isinstance(full, LatentDiffusionTarget) and full.conditional
    assert info["trainable_parameters"] == info["total_parameters"] == sum(p.numel() for p in target.unet.parameters())
    changed = {k for k, v in full.unet.state_dict().items() if not torch.equal(v, unet_before[k])}
    assert len(changed) > len(unet_before) // 2  # dense: (nearly) every tensor moves
    assert _same(full.text_encoder, te_before) and full.caption_template == target.caption_template

    lora, info = finetune(target, text_domain, "lora", cfg, rank=2, progress=False)
    sd = lora.unet.state_dict()
    assert sd.keys() == unet_before.keys()  # merged back into a plain UNet2DConditionModel
    changed = {k for k in sd if not torch.equal(sd[k], unet_before[k])}
    projections = ("to_q", "to_k", "to_v", "to_out.0")
    assert changed and all(any(f".{m}." in k for m in projections) for k in changed)
    expected = sum(2 * (m.in_features + m.out_features) for n, m in target.unet.named_modules() if n.endswith(projections))
    assert info["trainable_parameters"] == expected and info["rank"] == 2
    assert _same(target.unet, unet_before) and _same(target.text_encoder, te_before)  # the original is untouched
    with pytest.raises(GenleakError, match="captions"):
        finetune(target, ImageSet(images=text_domain.images, ids=text_domain.ids), "full", cfg, progress=False)

    # an unconditional latent target: domain "all", no captions, full fine-tuning; no textual inversion
    torch.manual_seed(1)
    uncond = LatentDiffusionTarget(target.vae, build_latent_unet(4, 4, (32, 64), 1), sd_scheduler(), device="cpu")
    data = make_domain_set(uncond, "all", cfg, progress=False)
    assert data.captions is None and data.labels is None
    tuned, _ = finetune(uncond, data, "full", cfg, progress=False)
    assert tuned.fingerprint() != uncond.fingerprint()
    with pytest.raises(GenleakError, match="only domain is 'all'"):
        make_domain_set(uncond, PROMPT, cfg)
    with pytest.raises(GenleakError, match="text-conditioned"):
        finetune(uncond, data, "embedding", cfg)


def test_s2l_cli_on_an_sd_folder_runs_full_lora_and_embedding(tiny_text_target, digits8, tmp_path, cli):
    from genleak.data import make_split

    _, folder = tiny_text_target
    split_path = tmp_path / "split.json"
    make_split(digits8, 8, 8, seed=0, source={"kind": "digits", "size": 8}).save(split_path)  # captions: the target's template
    out = tmp_path / "s2l"
    code, stdout, err = cli("s2l", "shake", "--target", str(folder), "--split", str(split_path), "--domain", PROMPT,
        "--method", "full,lora,embedding", "--rank", "2", "--attacks", "loss", "--n-synthetic", "8",
        "--sample-steps", "3", "--steps", "3", "--batch-size", "4", "--out", str(out))
    assert code == 0, err
    doc = json.loads((out / "s2l.json").read_text())
    assert [(r["variant"]["method"], r["variant"]["rank"]) for r in doc["rows"]] == [("full", None), ("lora", 2), ("embedding", None)]
    assert doc["settings"]["domain"] == PROMPT and doc["settings"]["config"]["placeholder"] == PLACEHOLDER
    assert doc["target"]["kind"] == "text-to-image-ldm"
    fingerprints = {doc["target"]["fingerprint"], *(r["target_fingerprint"] for r in doc["rows"])}
    assert len(fingerprints) == 4  # every variant is a different model
    emb = doc["rows"][2]
    assert emb["finetune"]["placeholder"] == PLACEHOLDER and emb["finetune"]["trainable_parameters"] == 32
    row = emb["attacks"]["loss"]
    assert row["delta_auc"] == pytest.approx(row["auc_after"] - row["auc_before"])
    # the re-attack of the textual-inversion model prompts with the learnt token: its scores differ
    with np.load(out / "base" / "scores" / "loss.npz") as base, np.load(out / "embedding" / "scores" / "loss.npz") as ti:
        assert base["member_scores"].shape == (8,) and not np.array_equal(base["member_scores"], ti["member_scores"])
    assert (out / "synthetic_set.npz").is_file() and (out / "s2l.md").is_file() and "embedding" in stdout

    code, _, err = cli("s2l", "shake", "--target", str(folder), "--split", str(split_path),
                            "--method", "embedding", "--out", str(tmp_path / "bad"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "prompt" in err  # the default domain 'all'


def test_embedding_on_a_pixel_target_is_a_one_line_error(digits8, tmp_path, cli):
    from genleak.data import make_split
    from genleak.s2l.shake import ShakeConfig, finetune
    from genleak.targets import DiffusionTarget, build_unet, default_scheduler

    torch.manual_seed(0)
    pixel = DiffusionTarget(build_unet(8, 1, (16, 32)), default_scheduler(), device="cpu")
    with pytest.raises(GenleakError, match="text-conditioned") as err:
        finetune(pixel, digits8[:4], "embedding", ShakeConfig())
    assert "pixel DDPM" in str(err.value) and "\n" not in str(err.value)
    pixel.save_pretrained(tmp_path / "pixel")
    split_path = tmp_path / "split.json"
    make_split(digits8, 4, 4, seed=0, source={"kind": "digits", "size": 8}).save(split_path)
    code, _, err = cli("s2l", "shake", "--target", str(tmp_path / "pixel"), "--split", str(split_path),
                            "--method", "full,embedding", "--out", str(tmp_path / "e"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "text-conditioned" in err
    assert not (tmp_path / "e" / "synthetic_set.npz").exists()  # refused before any generation
