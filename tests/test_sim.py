"""genleak.sim: SDI-GAN / ExpertSim losses, the ZDC-like simulator, training and the `sim` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genleak.sim.data import (
    SimData,
    channels,
    detector,
    mean_image,
    peak_coordinates,
    shower_parameters,
    simulate,
    synthetic_2d,
    synthetic_labels,
    zdc_dataset,
)
from genleak.sim.models import Router, diversity_loss, f_div, f_div_per_group, gumbel_gates
from genleak.sim.train import Scaling, SimTrainConfig, _Trainer, generate, train


def test_f_div_matches_eq_4_3_on_hand_made_groups():
    # three conditions of 2x2 "images": identical copies, one pixel varying, all pixels varying
    x = np.array([[[1, 2], [3, 4]], [[1, 2], [3, 4]],
                  [[0, 0], [0, 0]], [[2, 0], [0, 0]], [[4, 0], [0, 0]],
                  [[0, 0], [0, 0]], [[6, 6], [6, 6]]], dtype=np.float32)
    group = np.array([5, 5, 7, 7, 7, 9, 9])
    ids, raw = f_div_per_group(x, group)
    # eq. 4.3 by hand: population std of (0, 2, 4) is sqrt(8/3); of (0, 6) is 3 in each of 4 pixels
    np.testing.assert_allclose(raw, [0.0, np.sqrt(8 / 3), 12.0], rtol=1e-6)
    np.testing.assert_array_equal(ids, [5, 7, 9])
    np.testing.assert_allclose(f_div(x, group), [0, 0, *[np.sqrt(8 / 3) / 12] * 3, 1, 1], rtol=1e-6)


def test_l_div_is_zero_when_f_div_is_zero_and_follows_eq_4_4():
    g = torch.Generator().manual_seed(0)
    e1, e2, z1, z2 = (torch.randn(4, 8, generator=g) for _ in range(4))
    assert torch.equal(diversity_loss(torch.zeros(4), e1, e2, z1, z2), torch.zeros(4))
    fd = torch.tensor([0.0, 0.25, 0.5, 1.0])
    ratio = (e1 - e2).abs().sum(1) / (z1 - z2).abs().sum(1)
    torch.testing.assert_close(diversity_loss(fd, e1, e2, z1, z2), fd / (ratio + 1e-5))


def test_gates_are_one_hot_forward_and_train_the_router():
    torch.manual_seed(0)
    router = Router(9, 3)
    gates = gumbel_gates(router(torch.randn(64, 9)))
    assert set(gates.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(gates.sum(1), torch.ones(64))
    (gates * torch.arange(3.0)).sum().backward()
    first = router.net[0].weight.grad
    assert first is not None and first.abs().sum() > 0


def _variance_ratio(data: SimData, model: str, seed: int, steps: int) -> float:
    cfg = SimTrainConfig(model=model, steps=steps, seed=seed, batch_size=128, lr_g=1e-3, lr_d=3e-3)
    tr = _Trainer(data, cfg, Scaling.fit(data.part(True)))
    for _ in range(steps):
        tr.train_step()
    cond = np.repeat(np.concatenate([np.eye(9)[np.arange(18) // 2], (np.arange(18) % 2)[:, None]], 1), 200, 0)
    y, _ = generate(tr.model.eval(), tr.scaling, cond.astype(np.float32), seed=seed)
    cls, spread = synthetic_labels(cond)
    var = [np.mean([y[(cls == k) & (spread == s)].var(0).mean() for k in range(9)]) for s in (0, 1)]
    return var[1] / var[0]


@pytest.mark.slow
def test_sdigan_raises_the_spread_variance_ratio_over_dcgan():
    # Measured at these settings on seeds 0..12: SDI-GAN's ratio beat DC-GAN's on 12/13 seeds (seed 4
    # lost, 1.19 vs 1.21: SDI-GAN inflated both spreads), so asserting every seed would falsely fail
    # ~21% of random seed triples. The mean over 3 seeds won on all 286 triples of those 13 seeds
    # (smallest margin 0.39; SDI-GAN 1.2-5.6, DC-GAN 0.9-1.2): measured false-failure rate 0/286.
    data = synthetic_2d(200, seed=0)
    dc = [_variance_ratio(data, "dcgan", seed, 500) for seed in range(3)]
    sdi = [_variance_ratio(data, "sdigan", seed, 500) for seed in range(3)]
    assert np.mean(sdi) > np.mean(dc), (sdi, dc)


def test_simulator_reproduces_its_documented_statistics():
    det = detector("zdc-neutron")
    rng = np.random.default_rng(0)
    n = 2000
    # a centred 500 GeV neutron: mean photon count lam * (light inside the grid), Poisson (Fano 1)
    neutron = np.array([[500, 0.9396, 0, 0, 0, 0, 0, 0, 500]], np.float32).repeat(n, 0)
    centre, sigma, lam = shower_parameters(neutron[:1], det.shape)
    expected = mean_image(centre, sigma, lam, det.shape)[0]
    np.testing.assert_allclose(lam, 2.0 * 500 * (1 - 0.3 * 0.9396), rtol=1e-6)
    x = simulate(neutron, det.shape, rng)
    total = x.sum((1, 2))
    # 5 standard errors: false-failure rate < 1e-6 for the mean; Fano SE ~ sqrt(2/n) = 0.032 -> +-0.15
    assert abs(total.mean() - expected.sum()) < 5 * np.sqrt(expected.sum() / n)
    assert 0.85 < total.var() / total.mean() < 1.15
    np.testing.assert_allclose(x.mean(0), expected, atol=5 * np.sqrt(expected.max() / n))
    assert tuple(peak_coordinates(expected[None])[0]) in {(21.0, 21.0), (21.0, 22.0), (22.0, 21.0), (22.0, 22.0)}
    ch = channels(x)
    np.testing.assert_allclose(ch.sum(1), total)
    assert abs(ch[:, 0].mean() / total.mean() - 0.5) < 0.02  # the alternate fibres carry half the light
    # the same particle charged: upstream showers make the intensity vary far beyond Poisson
    proton = neutron.copy()
    proton[:, 2] = 1
    t_p = simulate(proton, det.shape, rng).sum((1, 2))
    assert t_p.var() / t_p.mean() > 20
    assert zdc_dataset("zdc-proton", 10, 2).x.shape == (20, 56, 30)


def test_training_resumes_bitwise(tmp_path):
    data = zdc_dataset("zdc-neutron", 24, 2, seed=1)
    cfg = SimTrainConfig(model="expertsim", experts=2, steps=4, batch_size=8, width=8, checkpoint_every=2)
    train(data, cfg, tmp_path / "full")
    train(data, SimTrainConfig.from_dict({**cfg.to_dict(), "steps": 2}), tmp_path / "resumed")
    state = train(data, cfg, tmp_path / "resumed")
    assert state["step"] == 4
    a = (tmp_path / "full" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "resumed" / "model.safetensors").read_bytes()


def test_every_sim_command_runs_end_to_end(cli, tmp_path):
    code, out, err = cli("sim", "data", "--kind", "synthetic", "--n", "20", "--out", str(tmp_path / "s.npz"))
    assert code == 0, err
    assert "360 samples (2,), 288 train / 72 test" in out
    code, out, err = cli("sim", "train", "--data", str(tmp_path / "s.npz"), "--out", str(tmp_path / "run"),
                         "--model", "msgan", "--steps", "5")
    assert code == 0, err
    assert "step 5" in out
    code, _, err = cli("sim", "generate", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "s.npz"),
                       "--out", str(tmp_path / "g.npz"))
    assert code == 0, err
    code, out, err = cli("sim", "evaluate", "--data", str(tmp_path / "s.npz"), "--generated", str(tmp_path / "g.npz"),
                         "--out", str(tmp_path / "m.json"))
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["spread0"]["real_variance"] < 3 and 30 < m["spread1"]["real_variance"] < 300  # 4 test points per class
    code, _, err = cli("sim", "train", "--data", str(tmp_path / "s.npz"), "--out", str(tmp_path / "bad"),
                       "--model", "sdigan", "--experts", "3")
    assert code == 2 and "needs --model expertsim" in err
    bench = {"kind": "zdc-proton", "n": 20, "repeats": 2, "seeds": [0], "timing_n": 50,
             "train": {"steps": 3, "batch_size": 8, "width": 8},
             "rows": [{"label": "GAN", "model": "dcgan"}, {"label": "ExpertSim K=2", "model": "expertsim", "experts": 2}]}
    (tmp_path / "b.json").write_text(json.dumps(bench))
    code, out, err = cli("sim", "benchmark", "--config", str(tmp_path / "b.json"), "--out", str(tmp_path / "bench"))
    assert code == 0, err
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [r["label"] for r in res["rows"]] == ["GAN", "ExpertSim K=2"]
    assert sum(res["rows"][1]["summary"]["experts"]["usage"]) == pytest.approx(1.0)
    assert res["monte_carlo"]["ws"]["mean"] > 0 and res["timing"]["n"] == 50
    assert "| ExpertSim K=2 |" in out and "| Monte Carlo run vs run |" in out
    html = (tmp_path / "bench" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert (tmp_path / "bench" / "channels.png").stat().st_size > 1000
