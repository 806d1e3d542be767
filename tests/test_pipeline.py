"""The pipeline: calibration hold-out, failed attacks recorded, score cache keyed by config."""

from __future__ import annotations

import numpy as np
import torch

from genleak.pipeline import run_attacks


def test_calibration_holdout_and_failed_attack_recorded(overfit_ddpm, tmp_path, broken_attack):
    result = run_attacks(overfit_ddpm.target, overfit_ddpm.split, ["sima", broken_attack], tmp_path,
                         calibration_fraction=0.25, progress=False)
    d = result.to_dict()
    sima = d["attacks"]["sima"]
    assert sima["status"] == "ok"
    assert sima["metrics"]["n_members"] == 48 and sima["metrics"]["n_nonmembers"] == 48
    assert 0.9 <= sima["metrics"]["asr_calibrated"] <= sima["metrics"]["asr"] + 1e-12
    cal = d["split"]["calibration"]
    assert len(cal["member_ids"]) == 16 and len(set(cal["member_ids"])) == 16
    broken = d["attacks"]["test-broken"]
    assert broken["status"] == "failed" and "boom" in broken["error"]


def test_score_cache_is_keyed_by_config(overfit_ddpm, tmp_path):
    run_attacks(overfit_ddpm.target, overfit_ddpm.split, ["sima"], tmp_path, progress=False)
    with np.load(tmp_path / "scores" / "sima.npz") as z:
        first = z["member_scores"].copy()
    # a different t must not reuse the cached t=20 scores
    r = run_attacks(overfit_ddpm.target, overfit_ddpm.split, ["sima"], tmp_path, progress=False,
                    attack_params={"sima": {"t": 50}})
    assert not np.array_equal(r.attacks[0].member_scores, first)
    assert torch.isfinite(torch.from_numpy(r.attacks[0].member_scores)).all()
