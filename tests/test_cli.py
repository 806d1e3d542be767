"""The CLI end to end on the session's overfit model, and bad input: one-line errors, exit code 2,
and no partial output left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_attack_command_writes_scores_metrics_and_plot(overfit_ddpm, tmp_path, cli):
    out = tmp_path / "run"
    code, stdout, err = cli("attack", "--target", str(overfit_ddpm.folder), "--split",
                                str(overfit_ddpm.split_path), "--attacks", "loss,sima", "--out", str(out), "--bootstrap", "200")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["split"]["n_members"] == 64 and results["split"]["n_nonmembers"] == 64
    assert results["attacks"]["loss"]["metrics"]["auc"] >= 0.9
    lo, hi = results["attacks"]["sima"]["metrics"]["auc_ci"]
    assert lo <= results["attacks"]["sima"]["metrics"]["auc"] <= hi
    with np.load(out / "scores" / "loss.npz") as z:
        assert z["member_scores"].shape == (64,) and list(z["member_ids"]) == overfit_ddpm.split.members.ids
    assert (out / "roc.png").stat().st_size > 1000
    # a rerun reuses the cached scores (same keys) and gives the same numbers
    before = (out / "scores" / "loss.npz").stat().st_mtime_ns
    code, _, err = cli("attack", "--target", str(overfit_ddpm.folder), "--split",
                           str(overfit_ddpm.split_path), "--attacks", "loss", "--out", str(out), "--bootstrap", "0")
    assert code == 0, err
    assert (out / "scores" / "loss.npz").stat().st_mtime_ns == before


def _write_manifest(path, members, nonmembers, source, shape=(1, 8, 8)):
    path.write_text(json.dumps({
        "format": "genleak.split", "version": 1, "name": "bad", "source": source, "seed": 0,
        "image_shape": list(shape),
        "members": [{"id": i, "sha256": h} for i, h in members],
        "nonmembers": [{"id": i, "sha256": h} for i, h in nonmembers],
        "metadata": {},
    }))


def _assert_clean_failure(code, err, out_dir, *words):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for w in words:
        assert w in lines[0].lower(), lines[0]
    assert not out_dir.exists() or not any(out_dir.rglob("*")), "partial output left behind"


def test_overlapping_split_is_refused(overfit_ddpm, digits8, tmp_path, cli):
    d = digits8[:3]
    pairs = list(zip(d.ids, d.hashes))
    bad = tmp_path / "overlap.json"
    _write_manifest(bad, pairs, pairs[1:], {"kind": "digits", "size": 8})
    out = tmp_path / "o"
    code, _, err = cli("attack", "--target", str(overfit_ddpm.folder), "--split", str(bad), "--out", str(out))
    _assert_clean_failure(code, err, out, "both")


def test_empty_side_is_refused(overfit_ddpm, digits8, tmp_path, cli):
    d = digits8[:3]
    bad = tmp_path / "empty.json"
    _write_manifest(bad, list(zip(d.ids, d.hashes)), [], {"kind": "digits", "size": 8})
    out = tmp_path / "o"
    code, _, err = cli("attack", "--target", str(overfit_ddpm.folder), "--split", str(bad), "--out", str(out))
    _assert_clean_failure(code, err, out, "non-member")


def test_wrong_channel_count_is_refused(overfit_ddpm, tmp_path, cli):
    rgb = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=rgb)
    split = tmp_path / "rgb.json"
    code, _, err = cli("data", "split", "--source", f"npz:{tmp_path / 'rgb.npz'}", "--members", "10", "--out", str(split))
    assert code == 0, err
    out = tmp_path / "o"
    code, _, err = cli("attack", "--target", str(overfit_ddpm.folder), "--split", str(split), "--out", str(out))
    _assert_clean_failure(code, err, out, "shape")


def test_missing_checkpoint_is_refused(overfit_ddpm, tmp_path, cli):
    out = tmp_path / "o"
    code, _, err = cli("attack", "--target", str(tmp_path / "no-model"), "--split",
                           str(overfit_ddpm.split_path), "--out", str(out))
    _assert_clean_failure(code, err, out, "does not exist")


def test_nan_images_are_refused(tmp_path, cli):
    x = np.random.default_rng(0).uniform(-1, 1, size=(20, 1, 8, 8)).astype(np.float32)
    x[3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", images=x)
    out = tmp_path / "split.json"
    code, _, err = cli("data", "split", "--source", f"npz:{tmp_path / 'nan.npz'}", "--members", "10", "--out", str(out))
    assert code == 2 and "nan" in err.lower() and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_help_lists_the_core_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for cmd in ("data", "train", "attack", "audit", "demo", "sweep"):
        assert cmd in out


@pytest.mark.parametrize("what", ["target", "split"])
def test_inspect(overfit_ddpm, what, cli):
    path = overfit_ddpm.folder if what == "target" else overfit_ddpm.split_path
    code, out, err = cli("data", "inspect", str(path))
    assert code == 0, err
    info = json.loads(out)
    assert info["fingerprint"]


@pytest.mark.parametrize("args, words", [(("attak",), ("No such command", "attack")),
                                         (("attack", "--bogus"), ("No such option", "--bogus"))])
def test_usage_mistakes_are_one_short_error_not_a_traceback(args, words, cli):
    code, _, err = cli(*args)
    assert code == 2
    assert "Traceback" not in err and all(w in err for w in words)


def test_duplicate_command_names_fail_at_registration(monkeypatch):
    """Typer keeps only the last of two same-named commands; registration refuses them instead."""
    import sys
    import types

    import typer

    from genleak.cli import COMMAND_MODULES, _register_all

    _register_all(typer.Typer())  # the real modules register without a clash
    clash = types.ModuleType("genleak_clash")
    clash.register = lambda app: (app.command("attack")(lambda: None), app.add_typer(typer.Typer(), name="defend"))
    monkeypatch.setitem(sys.modules, "genleak_clash", clash)
    with pytest.raises(RuntimeError, match="duplicate genleak command names: attack, defend"):
        _register_all(typer.Typer(), (*COMMAND_MODULES, "genleak_clash"))
