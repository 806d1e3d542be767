"""``genleak verify``: fresh attack / audit / infer outputs verify; every kind of tampering is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def runs(tiny_ddpm_dir, tmp_path_factory, cli_module):
    """One fresh output of ``attack`` (with a calibration hold-out), ``audit`` and ``infer`` on the
    tiny DDPM, next to its inputs."""
    root = Path(shutil.copytree(tiny_ddpm_dir, tmp_path_factory.mktemp("verify") / "runs"))
    common = ["--target", str(root / "target"), "--split", str(root / "split.json")]
    for args in (["attack", "--attacks", "loss,sima", "--bootstrap", "20", "--calibration", "0.25"],
                 ["audit", "--attacks", "loss,sima", "--sections", "", "--bootstrap", "20"],
                 ["infer", "--features", "loss,pia", "--resamples", "0", "--permutations", "99", "--quiet"]):
        code, _, err = cli_module(*args, *common, "--out", str(root / args[0]))
        assert code == 0, err
    return root


@pytest.fixture(scope="module")
def cli_module():
    """The conftest ``cli`` runner for module-scoped fixtures (no monkeypatch / capsys there)."""
    import contextlib
    import io
    import sys

    from genleak.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        out, err, argv = io.StringIO(), io.StringIO(), sys.argv
        sys.argv = ["genleak", *args]
        code = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
        except SystemExit as ex:
            code = ex.code or 0
        finally:
            sys.argv = argv
        return code, out.getvalue(), err.getvalue()

    return run


def _copy(runs: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs / name, tmp_path / name))


def _differences(out: str) -> list[str]:
    return [ln.removeprefix("DIFFERS: ") for ln in out.splitlines() if ln.startswith("DIFFERS: ")]


@pytest.mark.parametrize("kind", ["attack", "audit", "infer"])
def test_fresh_outputs_verify(cli, runs, kind):
    code, out, err = cli("verify", str(runs / kind))
    assert code == 0 and not _differences(out), out + err
    assert "verified, all" in out and "target fingerprint" in out and "split fingerprint" in out
    if kind == "infer":
        assert "cdi.p_value" in out and "32 samples' features re-extracted" in out
    else:
        # attack: the 15 evaluate() figures (9 + 6 two-sided) + asr_calibrated; audit adds its two TPR@0.1% CIs
        # (direct and sign-flipped) and the simultaneous bounds
        n = {"attack": 16, "audit": 19}[kind]
        assert "attacks.loss: 32 samples rescored" in out and f"attacks.sima: {n} metrics recomputed" in out
    if kind == "audit":
        assert "ok: verdict" in out


def test_an_edited_number_in_the_results_is_named(cli, runs, tmp_path):
    run = _copy(runs, "audit", tmp_path)
    data = json.loads((run / "results.json").read_text())
    auc = data["attacks"]["sima"]["metrics"]["auc"]
    data["attacks"]["sima"]["metrics"]["auc"] = round(auc + 0.01, 4)
    (run / "results.json").write_text(json.dumps(data))
    code, out, _ = cli("verify", str(run), "--rescore", "0")
    diffs = _differences(out)
    assert code == 1 and diffs[0].startswith(f"attacks.sima.metrics.auc: the result says {round(auc + 0.01, 4)}"), out
    assert str(auc) in diffs[0] and all(d.startswith(("attacks.sima.metrics.auc:", "verdict:")) for d in diffs), out

    cdi = _copy(runs, "infer", tmp_path)
    doc = json.loads((cdi / "cdi.json").read_text())
    doc["p_value"] = 0.5 * doc["p_value"]
    (cdi / "cdi.json").write_text(json.dumps(doc))
    code, out, _ = cli("verify", str(cdi), "--rescore", "0")
    assert code == 1 and [d.split(":")[0] for d in _differences(out)] == ["cdi.p_value"], out


def test_an_edited_score_is_named(cli, runs, tmp_path):
    run = _copy(runs, "attack", tmp_path)
    path = run / "scores" / "loss.npz"
    with np.load(path) as z:
        arrays = dict(z)
    arrays["member_scores"][5] += 1.0
    np.savez(path, **arrays)
    code, out, _ = cli("verify", str(run), "--rescore", "64")  # all 64 samples: the edited one is rescored
    diffs = _differences(out)
    assert code == 1 and any(d.startswith("attacks.loss: scores/loss.npz has sha256") for d in diffs), out
    assert any(d.startswith("attacks.loss: 1 of 64 rescored samples differ") for d in diffs), out
    assert not any(d.startswith("attacks.sima") for d in diffs), out


def test_a_swapped_weight_file_and_a_different_split_are_named(cli, runs, tmp_path):
    code, out, _ = cli("verify", str(runs / "attack"), "--target", str(runs / "swapped"), "--rescore", "8")
    diffs = _differences(out)
    assert code == 1 and any(d.startswith("target fingerprint: the result records") for d in diffs), out
    assert any(d.startswith("attacks.loss: ") and "rescored samples differ" in d for d in diffs), out
    code, out, _ = cli("verify", str(runs / "audit"), "--split", str(runs / "other-split.json"), "--rescore", "0")
    diffs = _differences(out)
    assert code == 1 and [d.split(":")[0] for d in diffs] == ["split fingerprint"], out
