"""B4B's building blocks in isolation: cost function, LSH coverage, per-user transforms, config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genleak.b4b.config import B4BConfig, load_config
from genleak.b4b.defense import (
    B4BDefense,
    CostFunction,
    LSHCoverage,
    make_user_transform,
    noise_rng,
    popcount,
    union,
)
from genleak.errors import GenleakError


def test_cost_function_matches_eq_6_1_with_paper_defaults():
    cost = CostFunction()  # lam=1e-6, alpha=1, beta=0.8 (Section 6.4.2)
    assert cost(0.0) == 0.0
    # sigma(beta) = lam * (alpha/lam - 1) = alpha - lam: the curve hits the target penalty at beta.
    assert cost(0.8) == pytest.approx(1.0 - 1e-6, rel=1e-9)
    # Closed form at a few points, computed independently of the implementation.
    for c in (0.1, 0.3, 0.5, 0.9, 1.0):
        assert cost(c) == pytest.approx(1e-6 * (math.exp(math.log(1.0 / 1e-6) * c / 0.8) - 1.0), rel=1e-9)
    values = [cost(c) for c in np.linspace(0, 1, 101)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), "sigma must grow with coverage"
    # Flat near the origin (narrow users), steep past beta (stealers): Figure 6.4.2.
    assert cost(0.3) < 1e-3 < 1.0 < cost(0.9)
    assert cost(-1.0) == 0.0 and cost(2.0) == cost(1.0)  # coverage is clamped to [0, 1]


def test_cost_function_cap_and_bad_parameters():
    assert CostFunction(max_sigma=0.5)(1.0) == 0.5
    with pytest.raises(GenleakError):
        CostFunction(lam=2.0, alpha=1.0)
    with pytest.raises(GenleakError):
        CostFunction(beta=0.0)


def test_lsh_buckets_are_deterministic_and_in_range():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32))
    a, b = LSHCoverage(32, 12, seed=3), LSHCoverage(32, 12, seed=3)
    assert a.n_buckets == 4096 and len(a.empty()) == 512  # 2^12 buckets in 512 bytes (A.3.1)
    np.testing.assert_array_equal(a.buckets(x), b.buckets(x))
    assert a.buckets(x).min() >= 0 and a.buckets(x).max() < 4096
    assert not np.array_equal(a.buckets(x), LSHCoverage(32, 12, seed=4).buckets(x))
    # Locality: a tiny perturbation keeps (almost) every point in its bucket, a random point does not.
    same = (a.buckets(x) == a.buckets(x + 1e-6 * rng.standard_normal(x.shape))).mean()
    other = (a.buckets(x) == a.buckets(rng.standard_normal(x.shape))).mean()
    assert same > 0.99 and other < 0.05
    # Scale invariance (hyperplanes through the origin hash directions).
    np.testing.assert_array_equal(a.buckets(x), a.buckets(3.0 * x))


def test_coverage_counts_occupied_buckets():
    lsh = LSHCoverage(16, 8, seed=0)
    rng = np.random.default_rng(1)
    bits = lsh.empty()
    assert lsh.coverage(bits) == 0.0
    x = rng.standard_normal((2000, 16))
    bits = lsh.add(bits, x)
    assert lsh.coverage(bits) == pytest.approx(len(np.unique(lsh.buckets(x))) / 256)
    # Order and batching do not matter: the union is the union.
    halves = lsh.add(lsh.add(lsh.empty(), x[1000:]), x[:1000])
    assert halves == bits
    assert popcount(union(bits, bits)) == popcount(bits)
    # A narrow cluster occupies far fewer buckets than isotropic data of the same size.
    narrow = rng.standard_normal(16) + 0.05 * rng.standard_normal((2000, 16))
    assert lsh.coverage(lsh.add(lsh.empty(), narrow)) < 0.25 * lsh.coverage(bits)


@pytest.mark.parametrize("kinds", [("affine",), ("pad",), ("add",), ("shuffle",), ("binary",),
                                   ("affine", "pad", "shuffle"), ("add", "shuffle", "affine")])
def test_transforms_are_per_user_and_reproducible(kinds):
    cfg = B4BConfig(transforms=kinds)
    x = np.random.default_rng(0).standard_normal((50, 24)).astype(np.float32)
    t1, t1b, t2 = (make_user_transform(kinds, s, 24, cfg) for s in (11, 11, 12))
    y1, y2 = t1(x), t2(x)
    np.testing.assert_array_equal(y1, t1b(x))
    assert y1.shape == (50, t1.out_dim) and y1.dtype == np.float32
    assert not np.array_equal(y1, y2), "two users must not share a transformation"
    expected = 24 + cfg.pad_dims * kinds.count("pad") + cfg.add_dims * kinds.count("add")
    assert t1.out_dim == (cfg.binary_factor * 24 if kinds == ("binary",) else expected)


def test_affine_transform_is_invertible_and_well_conditioned():
    t = make_user_transform(("affine",), 5, 32)
    part = t.parts[0]
    s = np.linalg.svd(part.matrix, compute_uv=False)
    assert s.min() >= 0.5 - 1e-9 and s.max() <= 2.0 + 1e-9  # affine_scale = (0.5, 2.0)
    x = np.random.default_rng(0).standard_normal((10, 32))
    back = np.linalg.solve(part.matrix, (t(x) - part.bias).T).T
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_pad_add_shuffle_keep_every_value():
    x = np.random.default_rng(0).standard_normal((5, 10)).astype(np.float32)
    for kind in ("pad", "add", "shuffle"):
        y = make_user_transform((kind,), 3, 10)(x)
        for row_x, row_y in zip(x, y, strict=True):
            assert set(np.round(row_x, 6)) <= set(np.round(row_y, 6))


def test_defense_response_noise_and_transform():
    d = B4BDefense(B4BConfig(n_hyperplanes=8), dim=16)
    clean = np.random.default_rng(0).standard_normal((200, 16))
    t = d.transform_for(7)
    assert t is d.transform_for(7)  # cached per seed
    out0 = d.respond(clean, 0.0, t, noise_rng(1, 0))
    np.testing.assert_allclose(out0, t(clean), rtol=1e-6)
    out = d.respond(clean, 0.5, t, noise_rng(1, 0))
    back = np.linalg.solve(t.parts[0].matrix, (out - t.parts[0].bias).T).T
    assert np.std(back - clean) == pytest.approx(0.5, rel=0.05)
    np.testing.assert_array_equal(out, d.respond(clean, 0.5, t, noise_rng(1, 0)))  # seeded per (user, query)
    assert not np.array_equal(out, d.respond(clean, 0.5, t, noise_rng(1, 200)))


def test_config_validation_and_files(tmp_path):
    assert B4BConfig().n_buckets == 4096
    with pytest.raises(GenleakError, match="n_hyperplanes"):
        B4BConfig(n_hyperplanes=0)
    with pytest.raises(GenleakError, match="unknown transform"):
        B4BConfig(transforms=("rotate",))
    with pytest.raises(GenleakError, match="beta"):
        B4BConfig(beta=1.5)
    f = tmp_path / "c.yaml"
    f.write_text("defense:\n  n_hyperplanes: 9\n  beta: 0.5\nsimulation:\n  seed: 3\n")
    cfg = load_config(f)
    assert cfg.n_hyperplanes == 9 and cfg.beta == 0.5 and cfg.lam == 1e-6
    assert B4BConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "bad.json").write_text('{"n_hyperplane": 3}')
    with pytest.raises(GenleakError, match="unknown B4B config key"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(GenleakError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    from genleak.b4b.simulate import load_simulation_config

    files = sorted((Path(__file__).resolve().parents[2] / "configs").glob("b4b*.yaml"))
    assert len(files) >= 3
    for f in files:
        load_config(f)
        load_simulation_config(f)
    assert load_config(files[0]) == B4BConfig()  # configs/b4b.yaml spells out the paper defaults
