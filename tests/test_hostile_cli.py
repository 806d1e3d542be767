"""Hostile use of attack / audit / infer: wrong splits, interrupted runs, failed runs, damaged caches
and manifests. Every failure is one line with a non-zero exit; nothing good is lost or mixed up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def tiny(tiny_ddpm_dir):
    return tiny_ddpm_dir


def _attack(cli, root: Path, out: Path, attacks: str = "loss", *extra: str):
    return cli("attack", "--target", str(root / "target"), "--split", str(root / "split.json"), "--attacks", attacks,
               "--out", str(out), "--bootstrap", "0", *extra)


def _one_line_error(code: int, err: str, want_code: int, *words: str) -> None:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]  # no progress bars
    assert code == want_code and len(lines) == 1 and "Traceback" not in err, (code, err)
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_split_contradicting_the_target_record_is_refused_or_recorded(cli, tiny, tmp_path):
    from genleak.report.html import write_report

    other = str(tiny / "other-split.json")
    for cmd in (["attack", "--out", str(tmp_path / "a")], ["audit", "--out", str(tmp_path / "b")],
                ["infer", "--out", str(tmp_path / "c")]):
        code, _, err = cli(*cmd, "--target", str(tiny / "target"), "--split", other)
        _one_line_error(code, err, 2, "does not match the split the target was trained on", "--allow-split-mismatch")
        assert "non-member(s) the target was trained on" in err or "records as non-members" in err
        assert not Path(cmd[2]).exists()  # refused before anything is written
    code, _, err = cli("attack", "--target", str(tiny / "target"), "--split", other, "--attacks", "loss",
                       "--out", str(tmp_path / "run"), "--bootstrap", "0", "--allow-split-mismatch")
    assert code == 0 and "warning: split" in err
    check = json.loads((tmp_path / "run" / "results.json").read_text())["split_check"]
    assert check["status"] == "mismatch allowed" and check["members_not_trained_on"] > 0
    page = write_report([tmp_path / "run"], tmp_path / "run" / "report.html").read_text()
    assert "SPLIT MISMATCH" in page
    # the matching split passes and says so
    assert _attack(cli, tiny, tmp_path / "ok")[0] == 0
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["split_check"]["status"] == "match"


def test_every_attack_failed_exits_nonzero_and_keeps_the_good_results(cli, tiny, tmp_path, broken_attack):
    out = tmp_path / "run"
    assert _attack(cli, tiny, out)[0] == 0
    good = (out / "results.json").read_bytes()
    code, _, err = _attack(cli, tiny, out, broken_attack)
    _one_line_error(code, err, 1, "every attack failed", "boom")
    assert (out / "results.json").read_bytes() == good
    code, _, err = cli("audit", "--target", str(tiny / "target"), "--split", str(tiny / "split.json"),
                       "--attacks", broken_attack, "--sections", "", "--out", str(out), "--bootstrap", "0")
    _one_line_error(code, err, 1, "every attack failed")
    assert (out / "results.json").read_bytes() == good


def test_corrupt_and_stale_score_caches(cli, tiny, tmp_path):
    out = tmp_path / "run"
    assert _attack(cli, tiny, out, "loss,sima")[0] == 0
    with np.load(out / "scores" / "loss.npz") as z:
        first = z["member_scores"].copy()
    raw = (out / "scores" / "loss.npz").read_bytes()
    for damaged in (raw[: len(raw) // 2], b"garbage, not a zip file"):
        (out / "scores" / "loss.npz").write_bytes(damaged)
        code, _, err = _attack(cli, tiny, out, "loss")
        assert code == 0, err
        attack = json.loads((out / "results.json").read_text())["attacks"]["loss"]
        assert attack["status"] == "ok", attack.get("error")
        with np.load(out / "scores" / "loss.npz") as z:
            np.testing.assert_array_equal(z["member_scores"], first)  # recomputed: same seeded noise
    # another target into the same folder: sima's scores of the first target must go
    code, _, err = cli("attack", "--target", str(tiny / "swapped"), "--split", str(tiny / "split.json"),
                       "--attacks", "loss", "--out", str(out), "--bootstrap", "0")
    assert code == 0, err
    assert sorted(p.name for p in (out / "scores").iterdir()) == ["loss.npz"]
    with np.load(out / "scores" / "loss.npz") as z:
        assert not np.array_equal(z["member_scores"], first)


def test_damaged_manifests_and_mixed_sizes_are_one_line_errors(cli, tiny, tmp_path):
    manifest = json.loads((tiny / "split.json").read_text())
    cases = {
        "absurd-size": {**manifest, "source": {"kind": "digits", "size": 100_000}},
        "path-type": {**manifest, "source": {"kind": "folder", "path": 5}},
    }
    for name, doc in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    (tmp_path / "garbage.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff binary")
    for name in [*cases, "garbage", "missing"]:
        code, _, err = cli("attack", "--target", str(tiny / "target"), "--split", str(tmp_path / f"{name}.json"),
                           "--out", str(tmp_path / "out"))
        _one_line_error(code, err, 2, f"{name}.json")
    assert "larger than 2048" in cli("data", "inspect", str(tmp_path / "absurd-size.json"))[2]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("L", (6, 6)).save(mixed / "a.png")
    Image.new("L", (8, 8), 255).save(mixed / "b.png")
    Image.new("L", (8, 8), 128).save(mixed / "c.png")
    code, _, err = cli("data", "split", "--source", f"folder:{mixed}", "--members", "1", "--out", str(tmp_path / "s.json"))
    _one_line_error(code, err, 2, "different sizes", "?size=")
    suggested = err[err.rindex("e.g. '") + 6:err.rindex("'")].replace("PATH", str(mixed))
    code, out, err = cli("data", "split", "--source", suggested, "--members", "1", "--out", str(tmp_path / "s.json"))
    assert code == 0 and "shape (1, 6, 6)" in out, (suggested, err)  # the suggested option exists and works


def _interrupt(tmp_path: Path, split: Path, sig: int) -> tuple[int, str]:
    """Start a long `genleak train ddpm`, wait until its training loop runs, send ``sig``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genleak.cli", "train", "ddpm", "--split", str(split), "--out", str(tmp_path / f"t{sig}"),
         "--steps", "1000000", "--channels", "16,32", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        # a test runner started in the background may ignore SIGINT; the command must see it as Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = bytearray()
    started = threading.Event()

    def read() -> None:
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen.extend(chunk)
            if b"step" in seen:  # the tqdm bar of the training loop: main() and its handlers run
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120), "train never started"
    time.sleep(0.5)
    proc.send_signal(sig)
    try:
        code = proc.wait(60)
    finally:
        proc.kill()
    reader.join(10)
    return code, seen.decode(errors="replace")


@pytest.mark.parametrize(("sig", "want", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_sigterm_exit_130_and_143(tiny, tmp_path, sig, want, word):
    code, err = _interrupt(tmp_path, tiny / "split.json", sig)
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert code == want and word in last and "Traceback" not in err, (code, err[-2000:])


@pytest.mark.parametrize("text, suffix, message", [
    ("{bad", ".json", "is not valid JSON"),
    ("[1, 2]", ".json", "must hold an object of settings"),
    ('{"lr_g": 1e-4, "lr_gg": 1e-4}', ".json", r"unknown key\(s\) \['lr_gg'\]"),
    ("lr_g = ", ".toml", "is not valid TOML"),
])
def test_a_bad_config_file_is_a_one_line_error_before_any_work(cli, tmp_path, text, suffix, message):
    """`--config` files of every command go through config.read_config: a typo is refused, not ignored."""
    code, _, _ = cli("sim", "data", "--out", str(tmp_path / "d.npz"), "--n", "5")
    assert code == 0
    config = tmp_path / f"c{suffix}"
    config.write_text(text)
    code, _, err = cli("sim", "train", "--data", str(tmp_path / "d.npz"), "--config", str(config),
                       "--out", str(tmp_path / "run"), "--steps", "1")
    assert code == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
