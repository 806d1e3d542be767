"""IAR targets, attacks, dataset inference, extraction and output-noise mitigation (issue 9).

Session fixtures train, once: a VQ tokenizer on *public* digits (neither members nor non-members),
RAR- and VAR-style targets on 64 members (8x8 digits, 4x4 tokens, d=64, 2 layers), a MAR-style
target, and a pixel DDPM on the same 64 members for the same number of epochs. The claims of
thesis ch. 9 are asserted at thresholds that hold on these tiny models; the figures they produce
are printed (run with -s) and recorded in benchmarks/RESULTS.md (IAR results).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from genleak.errors import GenleakError  # noqa: E402

STEPS = 300  # optimiser steps at batch 32 on 64 members = 150 epochs, for the IARs and the DDPM alike
DI_RESAMPLES = 300


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def iar_data(tmp_path_factory):
    from genleak.data import load_source, make_split
    from genleak.iar.audit import AuditData
    from genleak.iar.experiment import public_images

    spec = {"kind": "digits", "size": 8}
    digits = load_source(spec)
    split = make_split(digits, 64, 576, seed=0, source=spec, name="iar-digits8-64")
    public = public_images(digits, split.members, split.nonmembers)
    root = tmp_path_factory.mktemp("iar")
    split.save(root / "split.json")
    data = AuditData.from_split(split, public, 0.5, seed=0)
    return {"split": split, "public": public, "data": data, "root": root}


@pytest.fixture(scope="session")
def vq_tokenizer(iar_data):
    from genleak.iar.train import IARTrainConfig, train_tokenizer

    cfg = IARTrainConfig(kind="rar", tokenizer_steps=300, tokenizer={"hidden": 16})
    return train_tokenizer(iar_data["public"].images, cfg, progress=False)


def _train(iar_data, kind, tokenizer, name, **kw):
    from genleak.iar.train import IARTrainConfig, train_iar

    split = iar_data["split"]
    cfg = IARTrainConfig(kind=kind, steps=STEPS, tokenizer_steps=300, tokenizer={"hidden": 16}, **kw)
    return train_iar(split.members.images, torch.as_tensor(split.members.labels), cfg, iar_data["root"] / name,
                     tokenizer=tokenizer, split_manifest=split.to_manifest(), progress=False)


@pytest.fixture(scope="session")
def rar_target(iar_data, vq_tokenizer):
    return _train(iar_data, "rar", vq_tokenizer, "rar")


@pytest.fixture(scope="session")
def var_target(iar_data, vq_tokenizer):
    return _train(iar_data, "var", vq_tokenizer, "var")


@pytest.fixture(scope="session")
def mar_target(iar_data):
    from genleak.iar.train import IARTrainConfig, train_iar, train_tokenizer

    split = iar_data["split"]
    cfg = IARTrainConfig(kind="mar", steps=STEPS, tokenizer_steps=300, tokenizer={"hidden": 16})
    tok = train_tokenizer(iar_data["public"].images, cfg, progress=False)
    return train_iar(split.members.images, torch.as_tensor(split.members.labels), cfg, iar_data["root"] / "mar",
                     tokenizer=tok, progress=False)


@pytest.fixture(scope="session")
def features(iar_data, rar_target, var_target):
    from genleak.iar.audit import compute_features

    return {k: compute_features(t, iar_data["data"]) for k, t in (("rar", rar_target), ("var", var_target))}


@pytest.fixture(scope="session")
def reports(features):
    from genleak.iar.audit import di_report, mia_report

    return {k: {"mia": mia_report(f), "di": di_report(f, n_resamples=DI_RESAMPLES)} for k, f in features.items()}


@pytest.fixture(scope="session")
def ddpm_report(iar_data):
    from genleak.iar.experiment import ddpm_report
    from genleak.train import TrainConfig, train_ddpm

    split = iar_data["split"]
    cfg = TrainConfig(steps=STEPS, batch_size=32, block_out_channels=(32, 64), ema_decay=0.995, seed=0)
    ddpm = train_ddpm(split.members.images, cfg, progress=False)
    return ddpm_report(ddpm, iar_data["data"], seed=0, n_resamples=DI_RESAMPLES)


# ---------------------------------------------------------------------------------------------- models
def test_tokenizer_shapes_and_multiscale_reconstruction(vq_tokenizer, iar_data):
    x = iar_data["split"].members.images[:8]
    single = vq_tokenizer.tokenize(x)
    multi = vq_tokenizer.tokenize_scales(x)
    assert single.shape == (8, 16) and multi.shape == (8, 1 + 4 + 9 + 16)
    assert int(single.max()) < 64 and int(multi.min()) >= 0
    # the residual scales refine: the multi-scale latent is at least as close to f as scale 1 alone
    with torch.no_grad():
        f = vq_tokenizer.encoder(x)
        full = vq_tokenizer.scales_to_latent(multi)
        coarse = vq_tokenizer._resize(vq_tokenizer.lookup(vq_tokenizer.split_scales(multi)[0]), 4)
    assert (full - f).pow(2).mean() < (coarse - f).pow(2).mean()
    assert vq_tokenizer.decode_scales(multi).shape == x.shape


def test_var_block_causal_and_rar_causal(rar_target, var_target, iar_data):
    """Changing tokens of scale k (VAR) / position j (RAR) leaves the logits of earlier scales /
    positions unchanged: the teacher-forced pass never peeks at what it predicts."""
    x = iar_data["split"].members.images[:4]
    y = torch.as_tensor(iar_data["split"].members.labels[:4])
    t = var_target.encode(x)
    t2 = t.clone()
    t2[:, 5:14] = (t2[:, 5:14] + 1) % 64  # scale 3 (positions 5..13)
    with torch.no_grad():
        a, b = var_target.logits(t, y), var_target.logits(t2, y)
    assert torch.allclose(a[:, :14], b[:, :14], atol=1e-5)  # scales 1-3 do not see scale 3's own tokens
    assert not torch.allclose(a[:, 14:], b[:, 14:])
    r = rar_target.encode(x)
    r2 = r.clone()
    r2[:, 9] = (r2[:, 9] + 1) % 64
    with torch.no_grad():
        a, b = rar_target.logits(r, y), rar_target.logits(r2, y)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-5) and not torch.allclose(a[:, 10:], b[:, 10:])
    # permuted orders give raster-ordered logits too: same shape, and order=identity is the default
    order = torch.arange(16).expand(4, 16)
    with torch.no_grad():
        assert torch.allclose(rar_target.model(r, y, order), rar_target.model(r, y), atol=1e-6)


def test_group_scores_per_scale_and_position(rar_target, var_target, iar_data):
    from genleak.iar.experiment import group_aucs

    d = iar_data["data"]
    g_var, g_rar = group_aucs(var_target, d), group_aucs(rar_target, d)
    print(f"\nper-scale AUC (VAR) {g_var}\nper-position AUC (RAR) {g_rar}")
    assert len(g_var["plain"]) == 4 and len(g_rar["cfg"]) == 16
    assert max(g_var["plain"]) > 0.9 and max(g_rar["plain"]) > 0.9


def test_save_load_roundtrip_and_errors(rar_target, iar_data, tmp_path):
    from genleak.targets.iar import load_iar_target
    from genleak.targets.loading import target_class

    rar_target.save_pretrained(tmp_path / "t")
    assert target_class(tmp_path / "t") == "IARTarget"
    loaded = load_iar_target(tmp_path / "t")
    assert loaded.fingerprint() == rar_target.fingerprint()
    x = iar_data["split"].members.images[:4]
    y = torch.as_tensor(iar_data["split"].members.labels[:4])
    with torch.no_grad():
        assert torch.equal(loaded.logits(loaded.encode(x), y), rar_target.logits(rar_target.encode(x), y))
    with pytest.raises(GenleakError, match="not an IAR target"):
        load_iar_target(tmp_path)
    (tmp_path / "t" / "model.safetensors").unlink()
    with pytest.raises(GenleakError, match="model.safetensors"):
        load_iar_target(tmp_path / "t")
    with pytest.raises(GenleakError, match="class labels"):
        rar_target.labels([11])
    with pytest.raises(GenleakError, match="prefix"):
        rar_target.generate(torch.zeros(2, dtype=torch.long), prefix=None, prefix_len=3)


def test_train_refuses_bad_input(iar_data):
    from genleak.iar.train import IARTrainConfig, train_iar

    x = iar_data["split"].members.images[:4]
    with pytest.raises(GenleakError, match="unknown IAR kind"):
        train_iar(x, torch.zeros(4, dtype=torch.long), IARTrainConfig(kind="gpt"))
    with pytest.raises(GenleakError, match="labels"):
        train_iar(x, torch.full((4,), 12), IARTrainConfig(kind="rar", steps=1))
    with pytest.raises(GenleakError, match="unknown IAR training"):
        IARTrainConfig.from_dict({"kind": "rar", "epochs": 3})


def test_var_scales_follow_the_image_size():
    """12x12 images (a 6x6 token map) used to crash: the VAR scales defaulted to (1, 2, 3, 4) whatever the size."""
    from genleak.iar.train import IARTrainConfig, train_iar

    x = torch.rand(4, 1, 12, 12) * 2 - 1
    t = train_iar(x, torch.arange(4), IARTrainConfig(kind="var", steps=1, tokenizer_steps=1), progress=False)
    assert t.model.config.scales == (1, 2, 3, 4, 5, 6) and t.encode(x).shape == (4, 91)
    t = train_iar(x[..., :8, :8], torch.arange(4), IARTrainConfig(kind="var", steps=1, tokenizer_steps=1), progress=False)
    assert t.model.config.scales == (1, 2, 3, 4)  # the 8x8 default is unchanged
    cfg = IARTrainConfig(kind="var", steps=1, tokenizer_steps=1, tokenizer={"downsample": 4, "scales": [1, 3]})
    assert train_iar(x, torch.arange(4), cfg, progress=False).model.config.scales == (1, 3)  # overrides win


def test_experiment_split_can_be_stratified(tmp_path):
    """``stratify`` draws the split as benchmarks/weakfit.py does (configs/iar_weakfit12.json: the same members)."""
    from genleak.data import load_source, make_split
    from genleak.iar.experiment import load_config, run_experiment

    spec = {"kind": "digits", "size": 8}
    (tmp_path / "c.json").write_text(json.dumps({"source": spec, "members": 30, "nonmembers": 30, "stratify": True,
                                                 "notes": "n", "targets": [], "ddpm": None, "quality": False}))
    got = run_experiment(load_config(tmp_path / "c.json"), tmp_path / "out", progress=False)["split"]["fingerprint"]
    digits = load_source(spec)
    assert got == make_split(digits, 30, 30, seed=0, source=spec, stratify=True, name="iar").fingerprint()
    assert got != make_split(digits, 30, 30, seed=0, source=spec, name="iar").fingerprint()



def test_experiment_trains_a_tokenizer_per_distinct_setting(tmp_path):
    """Two targets with different tokenizer settings get two tokenizers, not the first one's (it was keyed by kind)."""
    from genleak.iar.experiment import load_config, run_experiment

    targets = [{"kind": "rar", "steps": 2, "label": "a"}, {"kind": "rar", "steps": 2, "label": "b",
                                                          "tokenizer": {"codebook_size": 16}}]
    (tmp_path / "c.json").write_text(json.dumps({"members": 20, "nonmembers": 20, "tokenizer_steps": 2, "targets": targets,
                                                 "ddpm": None, "quality": False, "di_resamples": 5}))
    out = run_experiment(load_config(tmp_path / "c.json"), tmp_path / "out", progress=False)
    assert set(out["tokenizer_seconds"]) == {"vq", "vq:b"}
    assert [out["targets"][k]["describe"]["tokenizer"]["codebook_size"] for k in "ab"] == [64, 16]

# ---------------------------------------------------------------------------------------------- attacks
def test_registered_attacks_match_feature_table(rar_target, var_target, iar_data):
    """``get_attack(...).score`` (the pipeline path) gives exactly the feature-table statistic, is
    batch-size invariant, and a CFG variant costs two passes."""
    import genleak.iar  # noqa: F401  (registers the iar-* attacks)
    from genleak.attacks import available_attacks, get_attack
    from genleak.attacks.iar import feature_name, iar_attack_names, iar_features

    assert set(iar_attack_names()) <= set(available_attacks())
    s = iar_data["split"].members[:20]
    for target in (rar_target, var_target):
        feats = iar_features(target, s.images, s.labels, s.ids, progress=False)
        for name, params in (("iar-loss", {}), ("iar-mink-cfg", {"k": 0.3}), ("iar-surp", {"k": 0.2, "max_entropy": 4.0}),
                             ("iar-minkpp-cfg", {"k": 0.1}), ("iar-camia", {"signal": "slope"}), ("iar-hinge-cfg", {})):
            a = get_attack(name, **params)
            got = a.score(target, s.images, s.ids, cond=s.labels, batch_size=7, progress=False).numpy()
            fam = name.removeprefix("iar-").removesuffix("-cfg")
            want = feats[feature_name(fam, params, name.endswith("-cfg"))]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert get_attack("iar-loss-cfg").nfe == 2 and get_attack("iar-loss").nfe == 1
    with pytest.raises(GenleakError, match="class labels"):
        get_attack("iar-loss").score(rar_target, s.images, s.ids, progress=False)


def test_pipeline_runs_iar_attacks(rar_target, iar_data, tmp_path):
    """``genleak.pipeline.run_attacks`` works on an IAR target unchanged (labels via conditions())."""
    import genleak.iar  # noqa: F401
    from genleak.data import MembershipSplit
    from genleak.pipeline import run_attacks

    d = iar_data["data"]
    split = MembershipSplit(d.eval_members, d.eval_nonmembers, iar_data["split"].source, 0, "eval")
    res = run_attacks(rar_target, split, ["iar-loss", "iar-mink-cfg"], tmp_path, progress=False,
                      attack_params={"iar-mink-cfg": {"k": 0.2}})
    assert all(a.ok for a in res.attacks)
    assert res.metric("iar-loss") > 0.9


# ---------------------------------------------------------------------------------------------- claims
def test_iar_leaks_more_than_pixel_ddpm(reports, ddpm_report):
    """Thesis Tables 9.5.1 / 9.5.3 / D.4.1: on the same 64 members, the same data size and the same
    training budget (150 epochs, batch 32), the IARs leak more than the pixel DDPM: higher
    TPR@1%FPR of the best attack (chosen on the calibration split) and a smaller minimum |P| for DI."""
    ddpm_tpr = ddpm_report["best"]["tpr_at_1pct_fpr"]
    ddpm_sizes = [v["min_suspect_size"] for v in ddpm_report["di"].values() if v["min_suspect_size"]]
    ddpm_min = min(ddpm_sizes) if ddpm_sizes else 10**9
    rows = {"ddpm": (ddpm_report["best"]["attack"], ddpm_tpr, ddpm_report["best"]["auc"], ddpm_min)}
    for kind, rep in reports.items():
        best = rep["mia"]["best"]
        sizes = [v["min_suspect_size"] for v in rep["di"].values() if v["min_suspect_size"]]
        rows[kind] = (best["attack"], best["tpr_at_1pct_fpr"], best["auc"], min(sizes))
    print("\nIAR vs DDPM (attack, TPR@1%FPR, AUC, min |P|):", json.dumps(rows))
    for kind in reports:
        assert rows[kind][1] > ddpm_tpr
        assert rows[kind][3] < ddpm_min


def test_cfg_difference_vs_plain(reports):
    """Table 9.5.1 "baseline -> ours": the thesis finds the CFG difference beats plain logits.

    At this scale it does NOT: 8x8 digits make the class evident from the first tokens and the tiny
    models memorise the members under the null class too, so conditional minus null logits remove
    membership signal along with difficulty (measured numbers in benchmarks/RESULTS.md, IAR §2). What
    holds and is asserted: the CFG-difference attacks are strong MIAs (AUC > 0.9 for the best one)
    and the plain ones at least as strong."""
    for kind, rep in reports.items():
        plain, cfg = rep["mia"]["best_plain"], rep["mia"]["best_cfg"]
        print(f"\n{kind}: plain {plain['attack']} TPR {plain['tpr_at_1pct_fpr']:.3f} AUC {plain['auc']:.3f} | "
              f"cfg {cfg['attack']} TPR {cfg['tpr_at_1pct_fpr']:.3f} AUC {cfg['auc']:.3f}")
        assert cfg["auc"] > 0.9
        assert plain["auc"] >= cfg["auc"] - 0.05


def test_dataset_inference_rejects_for_members_not_for_non_members(reports):
    for kind, rep in reports.items():
        for key, row in rep["di"].items():
            assert row["min_suspect_size"] is not None and row["min_suspect_size"] <= 16, (kind, key)
            assert row["null_mean_p_at_max_size"] > 0.05, (kind, key)  # no false positive (Table 8.5.2)


def test_minmax_sum_matches_definition():
    from genleak.iar.inference import minmax_sum

    fp = np.array([[1.0, 10.0], [3.0, 30.0]])
    fu = np.array([[2.0, 20.0], [2.0, 10.0]])
    sp, su = minmax_sum(fp, fu)
    np.testing.assert_allclose(sp, [0.0, 2.0])
    np.testing.assert_allclose(su, [1.0, 0.5])


def test_extraction_members_not_validation(rar_target, var_target, iar_data):
    """Ch. 9.5.3: candidates by one forward pass, prefix completion, similarity threshold, and the
    validation-image false-positive check. RAR (16 tokens) at prefix 4: many members, no validation
    image. VAR (30 tokens) memorises less in generation at this budget and its blurrier completions
    occasionally pass the threshold for a validation image, so members must clearly outnumber the
    false positives. Longer prefixes produce false positives (supp. D.12.2)."""
    from genleak.iar.extraction import IARExtractionConfig, candidate_distances, extract_iar

    split = iar_data["split"]
    counts = {}
    for target, prefix in ((rar_target, 4), (var_target, 7), (rar_target, 8)):
        if prefix != 8:
            d_m = candidate_distances(target, split.members.images, split.members.labels)
            d_n = candidate_distances(target, split.nonmembers.images, split.nonmembers.labels)
            assert d_m.mean() < d_n.mean()
        r = extract_iar(target, split.members, split.nonmembers, IARExtractionConfig(prefix_len=prefix))
        counts[(target.kind, prefix)] = (r.train.count, r.validation.count)
        print(f"\n{target.kind} prefix {prefix}: extracted {r.train.count}/{len(r.train.candidate_ids)}, "
              f"false positives {r.validation.count}, {r.seconds_per_candidate * 1e3:.1f} ms/candidate")
    assert counts[("rar", 4)][0] >= 20 and counts[("rar", 4)][1] == 0
    assert counts[("var", 7)][0] >= 3 * max(1, counts[("var", 7)][1])
    # prefix 8 leaves half the tokens to memory and completes validation images too (measured: 3 false
    # positives, 44 members): an extraction whose validation check never fires would report 0
    assert counts[("rar", 8)][1] >= 1 and counts[("rar", 8)][0] >= 20
    with pytest.raises(GenleakError, match="prefix length"):
        IARExtractionConfig(prefix_len=99).resolved_prefix(16)


def test_output_noise_mitigation(rar_target, iar_data):
    """Supp. D.11: noise on the logits lowers MIA TPR, raises the minimum |P| of DI and stops
    extraction, at a quality cost (higher FID, lower class accuracy); the target is restored."""
    from genleak.iar.audit import QualityJudge
    from genleak.iar.mitigation import noise_sweep, noise_table

    fp = rar_target.fingerprint()
    judge = QualityJudge.train(iar_data["public"], steps=200)
    rows = noise_sweep(rar_target, iar_data["data"], [0.0, 10.0], judge=judge, n_per_class=10,
                       di_resamples=DI_RESAMPLES, progress=False)
    print("\n" + noise_table(rows))
    before, after = rows
    assert after["mia_best"]["tpr_at_1pct_fpr"] < before["mia_best"]["tpr_at_1pct_fpr"]
    big = 10**9
    assert (after["di_min_size"]["cfg-sum"] or big) > before["di_min_size"]["cfg-sum"]
    assert after["extracted"] < before["extracted"]
    assert after["quality"]["fid"] > before["quality"]["fid"]
    assert rar_target.output_noise == 0.0 and rar_target.fingerprint() == fp


# ---------------------------------------------------------------------------------------------- MAR
def test_mar_losses_attacks_and_generation(mar_target, iar_data):
    """MAR: per-token diffusion losses (mask ratio 0.95, t = 500, K noise draws), the loss-family
    attacks apply and see the members, logit-only attacks are refused, generation and the
    masked-reconstruction candidate distance work, and output noise perturbs sampled tokens."""
    import genleak.iar  # noqa: F401
    from genleak.attacks import get_attack
    from genleak.metrics import auc

    s = iar_data["split"]
    m, n = s.members[:64], s.nonmembers[:128]
    opts = {"noise_draws": 8, "mask_draws": 2}
    a = get_attack("iar-loss", **opts)
    sm = a.score(mar_target, m.images, m.ids, cond=m.labels, progress=False).numpy()
    sn = a.score(mar_target, n.images, n.ids, cond=n.labels, progress=False).numpy()
    print(f"\nMAR iar-loss AUC {auc(sm, sn):.3f}")
    assert auc(sm, sn) > 0.55  # MAR leaks least of the IARs (thesis fig. 9.1.1, point 4)
    assert get_attack("iar-mink-cfg", **opts).score(mar_target, m.images[:4], m.ids[:4], cond=m.labels[:4],
                                                     progress=False).shape == (4,)
    # the Table 9.5.2 baseline (random timestep per draw) is seeded per sample: batch-size invariant
    base = get_attack("iar-loss", timestep=None, mask_ratio=0.86, noise_draws=4, mask_draws=2)
    b1 = base.score(mar_target, m.images[:6], m.ids[:6], cond=m.labels[:6], batch_size=6, progress=False)
    b2 = base.score(mar_target, m.images[:6], m.ids[:6], cond=m.labels[:6], batch_size=4, progress=False)
    torch.testing.assert_close(b1, b2)
    with pytest.raises(GenleakError, match="timestep"):
        get_attack("iar-loss", timestep=5000, noise_draws=2, mask_draws=1).score(
            mar_target, m.images[:2], m.ids[:2], cond=m.labels[:2], progress=False)
    with pytest.raises(GenleakError, match="needs logits"):
        get_attack("iar-hinge").score(mar_target, m.images[:2], m.ids[:2], cond=m.labels[:2], progress=False)
    y = torch.arange(4)
    g0 = mar_target.generate(y, generator=torch.Generator().manual_seed(0), steps=10)
    assert g0.shape == (4, 16, 4) and mar_target.decode(g0).shape == (4, 1, 8, 8)
    mar_target.set_output_noise(0.5)
    g1 = mar_target.generate(y, generator=torch.Generator().manual_seed(0), steps=10)
    mar_target.set_output_noise(0.0)
    assert not torch.allclose(g0, g1)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_commands(iar_data, rar_target, tmp_path):
    from typer.testing import CliRunner

    from genleak.cli import app

    root = iar_data["root"]
    runner = CliRunner()
    split = str(root / "split.json")
    target = str(root / "rar")
    res = runner.invoke(app, ["iar", "attack", "--target", target, "--split", split, "--attacks",
                              "iar-loss,iar-mink-cfg", "--out", str(tmp_path / "a"), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "a" / "results.json").read_text())
    assert data["attacks"]["iar-loss"]["metrics"]["auc"] > 0.9 and "calibration" in data
    res = runner.invoke(app, ["iar", "infer", "--target", target, "--split", split, "--out", str(tmp_path / "i"),
                              "--resamples", "100"])
    assert res.exit_code == 0, res.output
    assert "cfg-sum" in res.output and (tmp_path / "i" / "di.json").is_file()
    res = runner.invoke(app, ["iar", "extract", "--target", target, "--split", split, "--out", str(tmp_path / "e"),
                              "--prefix-len", "4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "extracted.png").is_file()
    res = runner.invoke(app, ["train", "iar", "--split", split, "--out", str(tmp_path / "t"), "--kind", "var",
                              "--steps", "3", "--tokenizer-from", target])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t" / "config.json").is_file()


def test_generic_loader_and_attack_command_take_an_iar_folder(rar_target, iar_data, tmp_path, cli):
    """``load_target`` recognises an IAR folder, so ``genleak attack`` / ``inspect`` run on it."""
    import json

    from genleak.targets.loading import load_target, target_class

    rar_target.save_pretrained(tmp_path / "rar")
    assert target_class(tmp_path / "rar") == "IARTarget"
    assert load_target(tmp_path / "rar").fingerprint() == rar_target.fingerprint()
    from genleak.audit import audit_attacks

    standard = audit_attacks(rar_target)  # what `genleak audit` runs on an IAR by default
    assert "iar-loss" in standard and "iar-mink-cfg" in standard and all(a.startswith("iar-") for a in standard)
    split = iar_data["split"]
    small = type(split)(members=split.members[:16], nonmembers=split.nonmembers[:16], source=split.source,
                        seed=split.seed, name="iar-small")
    small.save(tmp_path / "split.json")
    code, _, err = cli("attack", "--target", str(tmp_path / "rar"), "--split", str(tmp_path / "split.json"),
                       "--attacks", "iar-loss,iar-mink", "--out", str(tmp_path / "run"), "--bootstrap", "0")
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {a: results["attacks"][a]["status"] for a in ("iar-loss", "iar-mink")} == {"iar-loss": "ok", "iar-mink": "ok"}
    # measured 1.000 (as on the full split); chance at 16 vs 16 has sd ~0.1, so 0.9 is 4 sd above it
    assert results["attacks"]["iar-loss"]["metrics"]["auc"] >= 0.9
