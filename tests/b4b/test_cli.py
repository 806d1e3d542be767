"""The B4B CLI commands, run as a user would (subprocess: real exit codes and messages)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def genleak(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genleak.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_b4b_commands():
    out = genleak("--help").stdout
    for cmd in ("serve-encoder", "b4b-train-encoder", "b4b-admin", "b4b-simulate"):
        assert cmd in out


def test_admin_create_list_show_revoke(tmp_path):
    db = str(tmp_path / "admin.db")
    r = genleak("b4b-admin", "create", "alice", "--db", db, "--seed", "7")
    assert r.returncode == 0, r.stderr
    key = r.stdout.split("API key (shown once): ")[1].strip()
    assert key.startswith("glb4b_")
    assert genleak("b4b-admin", "create", "trusted", "--db", db, "--policy", "none").returncode == 0
    assert genleak("b4b-admin", "create", "noisy", "--db", db, "--policy", "static", "--sigma", "0.1").returncode == 0

    listed = json.loads(genleak("b4b-admin", "list", "--db", db, "--json").stdout)
    users = {u["name"]: u for u in listed["users"]}
    assert set(users) == {"alice", "trusted", "noisy"}
    assert users["alice"]["coverage"] == 0.0 and users["alice"]["sigma"] == 0.0 and users["alice"]["active"]
    assert users["noisy"]["sigma"] == 0.1 and users["trusted"]["transform"] == "identity"
    assert listed["config"]["n_hyperplanes"] == 12 and not listed["config_stored"]
    assert key not in json.dumps(listed)
    table = genleak("b4b-admin", "list", "--db", db).stdout
    assert "alice" in table and "coverage" in table

    assert genleak("b4b-admin", "revoke", "alice", "--db", db).returncode == 0
    assert "revoked" in genleak("b4b-admin", "show", "alice", "--db", db).stdout


@pytest.mark.parametrize("args,message", [
    (("b4b-admin", "revoke", "nobody"), "no user named 'nobody'"),
    (("b4b-admin", "create", "x", "--policy", "static"), "needs --sigma"),
    (("serve-encoder", "--model", "/nonexistent/model"), "not an encoder folder"),
    (("b4b-simulate",), "give --url"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, args, message):
    extra = ("--db", str(tmp_path / "e.db"))
    r = genleak(*args, *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.stderr


def test_train_encoder_writes_a_loadable_folder(tmp_path):
    out = tmp_path / "enc"
    r = genleak("b4b-train-encoder", "--out", str(out), "--n-images", "256", "--epochs", "1", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "digits linear probe" in r.stdout
    from genleak.b4b.encoder import Encoder

    enc = Encoder.load(out)
    assert enc.embed_dim == 64 and enc.meta["trainer"] == "infonce"
    assert 0 <= enc.meta["digits_probe_accuracy"] <= 100
