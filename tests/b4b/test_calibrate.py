"""B4B calibration (issue 16 §2): buckets and beta come from a stealer world the simulation never
evaluates, by a rule that is a pure function of the measured coverage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from genleak.b4b import data as bdata
from genleak.b4b.calibrate import CoveragePoint, choose, load_calibration, measure_coverage
from genleak.b4b.config import CalibrationConfig
from genleak.b4b.simulate import SimulationConfig, load_simulation_config
from genleak.cli.b4b import register
from genleak.errors import GenleakError


def _hashes(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_calibration_world_shares_no_image_with_the_evaluated_worlds():
    sim = SimulationConfig(budgets=(40,), sybil_accounts=(2,), sybil_budget=60, sybil_overlap=10)
    cal = CalibrationConfig(world_seed=7, budget=60)
    calib = _hashes(bdata.sample_world(cal.budget, cal.world_seed))
    # the draws of run_simulation, seed by seed and size by size
    evaluated = [bdata.sample_world(40, sim.stealer_seed), bdata.sample_world(10, sim.stealer_seed + 1002)]
    evaluated += [bdata.sample_world(20, sim.stealer_seed + 2000 + 97 * 2 + i) for i in range(2)]
    assert set(sim.evaluated_world_seeds) == {1000, 2002, 3194, 3195}  # the seeds of earlier runs
    assert len(calib) == cal.budget  # no duplicates within the world either, so the check below has teeth
    assert not calib & set().union(*map(_hashes, evaluated))
    # control: the same seed and size give the same images, which the set check would catch
    assert calib == _hashes(bdata.sample_world(cal.budget, cal.world_seed))


def test_a_calibration_seed_the_simulation_evaluates_is_refused(tmp_path):
    p = tmp_path / "exp.json"
    p.write_text(json.dumps({"calibration": {"world_seed": 3194}, "simulation": {"sybil_accounts": [2]}}))
    with pytest.raises(GenleakError, match="calibration.world_seed 3194"):
        load_simulation_config(p)
    with pytest.raises(GenleakError, match="calibration.world_seed 3194"):
        load_calibration(p)
    p.write_text(json.dumps({"calibration": {"world_seed": 5}, "simulation": {"world_seed": 5}}))
    with pytest.raises(GenleakError, match="calibration.world_seed 5"):
        load_simulation_config(p)
    p.write_text(json.dumps({"calibration": {"world_seed": 6}, "simulation": {"world_seed": 5}}))
    assert load_calibration(p).world_seed == 6


def test_choice_is_the_largest_gap_with_beta_at_the_midpoint():
    pts = [CoveragePoint(8, 0.40, 0.90), CoveragePoint(10, 0.16, 0.66), CoveragePoint(12, 0.08, 0.37)]
    assert choose(pts) == (10, 0.41)
    assert choose(pts[::-1]) == (10, 0.41)  # order-free
    assert choose([CoveragePoint(9, 0.2, 0.6), CoveragePoint(11, 0.1, 0.5)]) == (11, 0.3)  # tie: more buckets
    with pytest.raises(GenleakError, match="cannot tell them apart"):
        choose([CoveragePoint(10, 0.5, 0.4)])


def test_measured_choice_is_deterministic_and_follows_the_coverage(tmp_path):
    planes = np.random.default_rng(0).standard_normal((256, 16))

    def embed(x: np.ndarray) -> np.ndarray:  # a fixed random projection stands in for the victim
        return x.reshape(len(x), -1) @ planes

    cal = CalibrationConfig(world_seed=7, budget=300, hyperplanes=(4, 6, 8))
    a, b = measure_coverage(embed, cal), measure_coverage(embed, cal)
    assert a == b
    assert [p.n_hyperplanes for p in a] == [4, 6, 8]
    assert all(0 < p.task < 1 and 0 < p.stealer <= 1 for p in a)
    assert choose(a) == choose(b)
    best = max(a, key=lambda p: p.stealer - p.task)
    assert choose(a) == (best.n_hyperplanes, round((best.task + best.stealer) / 2, 2))


def test_calibrate_command_refuses_what_it_cannot_calibrate(tmp_path, tiny_encoder_dir):
    # The untrained tiny CNN maps every image into one bucket (measured: task = stealer coverage at
    # every count), so the command must refuse rather than pick a bucket count; the trained victim's
    # run is in benchmarks/RESULTS.md.
    cfg = tmp_path / "exp.json"
    app = typer.Typer()
    register(app)

    def run(calibration: dict) -> object:
        cfg.write_text(json.dumps({"defense": {"n_hyperplanes": 6}, "calibration": calibration}))
        return CliRunner().invoke(app, ["b4b", "calibrate", "--model", str(tiny_encoder_dir), "--config", str(cfg)])

    r = run({"world_seed": 7, "budget": 300, "hyperplanes": [4, 6]})
    assert isinstance(r.exception, GenleakError) and "cannot tell them apart" in str(r.exception)
    r = run({"world_seed": 1000})
    assert isinstance(r.exception, GenleakError) and "calibration.world_seed 1000" in str(r.exception)
