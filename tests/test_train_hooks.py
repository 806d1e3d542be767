"""Defenses as training hooks: the leakage monitor, and DistillMD / KD / DP-SGD in a user's own loop.

Runs are bitwise reproducible at a fixed seed and thread count (conftest
fixes one thread), so the measured margins below fail only if the code changes, not by chance.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from genleak.errors import GenleakError


def test_leakage_monitor_writes_a_rising_curve_and_stops_at_the_threshold(digits8, tmp_path):
    from genleak.data import make_split
    from genleak.defenses import make_monitor
    from genleak.train import TrainConfig, train_ddpm

    # 16 members at batch 16: one epoch per step, so memorisation starts within ~100 steps
    split = make_split(digits8, 16, 64, seed=5, source={"kind": "digits", "size": 8})
    monitor = make_monitor(split, 20, stop_auc=0.95)
    train_ddpm(split.members.images, TrainConfig(steps=300, batch_size=16, seed=0), tmp_path / "run",
               split_manifest=split.to_manifest(), hooks=monitor, progress=False)
    record = json.loads((tmp_path / "run" / "genleak_train.json").read_text())
    mon = record["leakage_monitor"]
    curve = mon["curve"]
    assert [row["step"] for row in curve] == list(range(20, mon["stopped_at"] + 1, 20))
    # measured: SimA 0.73 -> 0.96, loss 0.65 -> 0.89 between step 20 and the stop at step 100
    assert mon["stopped_at"] < 300 and record["steps"] == mon["stopped_at"]
    assert curve[-1]["sima"]["auc"] >= 0.95 > max(row["sima"]["auc"] for row in curve[:-1])
    for attack in ("sima", "loss"):
        assert curve[-1][attack]["auc"] - curve[0][attack]["auc"] > 0.15, attack
    assert curve[-1]["sima"]["tpr_at_1pct_fpr"] > curve[0]["sima"]["tpr_at_1pct_fpr"]
    assert mon["split_fingerprint"] == split.fingerprint() and mon["n_members"] == 16
    with pytest.raises(GenleakError, match="every >= 1"):
        make_monitor(split, 0)


def test_train_monitor_flags_reach_the_record_and_the_audit_report(digits8, tmp_path, cli):
    """`train ddpm --monitor-every`: the same curve from the command line, shown by the audit report."""
    from genleak.data import make_split

    split = make_split(digits8, 16, 64, seed=5, source={"kind": "digits", "size": 8})
    split.save(tmp_path / "split.json")
    code, _, err = cli("train", "ddpm", "--split", str(tmp_path / "split.json"), "--out", str(tmp_path / "t"),
                       "--channels", "16,32", "--steps", "60", "--batch-size", "16", "--monitor-every", "20",
                       "--monitor-members", "8", "--threads", "1")
    assert code == 0, err
    mon = json.loads((tmp_path / "t" / "genleak_train.json").read_text())["leakage_monitor"]
    assert [row["step"] for row in mon["curve"]] == [20, 40, 60] and mon["n_members"] == 8
    assert all(row[a]["leakage_auc"] == max(row[a]["auc"], 1 - row[a]["auc"]) for row in mon["curve"] for a in ("sima", "loss"))
    code, _, err = cli("audit", "--target", str(tmp_path / "t"), "--split", str(tmp_path / "split.json"), "--attacks",
                       "sima", "--sections", "", "--bootstrap", "0", "--out", str(tmp_path / "audit"), "--threads", "1")
    assert code == 0, err
    html = (tmp_path / "audit" / "report.html").read_text()
    assert "Leakage during training" in html and html.count('<tr data-step="') == 3
    assert f"<td>{mon['curve'][-1]['sima']['auc']:.3f}</td>" in html


def test_kd_with_dp_sgd_and_distillmd_targets_in_a_users_own_loop(digits8):
    """The README's own-loop example: KD targets and DP-SGD (make_private, Poisson batches), then
    DistillMD's batches and targets from two bare teacher UNets."""
    import torch.nn.functional as F

    from genleak.defenses import make_distillmd, make_kd, make_private
    from genleak.defenses.dpsgd import DPConfig, spent_epsilon
    from genleak.targets.ddpm import build_unet, default_scheduler

    x = digits8[:16].images
    torch.manual_seed(0)
    teacher_1, teacher_2, unet = (build_unet(8, 1, (16, 32)) for _ in range(3))
    scheduler = default_scheduler()
    kd, steps = make_kd(teacher_1), 6
    model, opt, dp = make_private(unet, torch.optim.AdamW(unet.parameters(), lr=1e-3), n=16, batch_size=8, steps=steps,
                                  noise_multiplier=1.0, delta=1e-2, reproducible_noise=True)
    before = [p.detach().clone() for p in unet.parameters()]
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = dp.batch_indices(step, len(x), gen)  # Poisson sampling, as the accountant assumes
        noise = torch.randn(x[idx].shape, generator=gen)
        t = torch.randint(0, 1000, (len(idx),), generator=gen)
        x_t = scheduler.add_noise(x[idx], noise, t)
        loss = F.mse_loss(model(x_t, t).sample, kd.regression_target(x_t, t, noise, idx, step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        dp.after_step(step + 1)
    assert dp.unwrap(model) is unet
    assert all(not torch.equal(a, b) for a, b in zip(before, unet.parameters(), strict=True))
    # the accountant's epsilon for these 6 steps at q = 0.5, sigma = 1 equals a fresh computation
    eps = dp.epsilon()
    assert math.isfinite(eps) and eps == pytest.approx(spent_epsilon(1.0, 0.5, steps, DPConfig(noise_multiplier=1.0,
                                                                                               delta=1e-2)))
    with pytest.raises(GenleakError, match="exactly one"):
        make_private(unet, opt, n=16, batch_size=8, steps=1)

    distill = make_distillmd(teacher_1, teacher_2, half_1=range(8), half_2=range(8, 16), batch_size=8)
    for step in range(4):
        idx = distill.batch_indices(step, len(x), gen)  # Algorithm 2: D_1 on even steps, D_2 on odd ones
        assert sorted(idx.tolist()) == list(range(8) if step % 2 == 0 else range(8, 16))
        t = torch.randint(0, 1000, (len(idx),), generator=gen)
        x_t = scheduler.add_noise(x[idx], torch.randn(x[idx].shape, generator=gen), t)
        with torch.no_grad():  # the other half's teacher answers
            other = teacher_2 if step % 2 == 0 else teacher_1
            assert torch.equal(distill.regression_target(x_t, t, None, idx, step), other(x_t, t).sample)
