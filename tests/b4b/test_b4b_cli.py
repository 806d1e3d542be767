"""The B4B CLI commands. In-process (typer's CliRunner on an app with only the B4B commands), plus
one real ``genleak`` subprocess for the entry point's error handling (exit code 2, one line)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from genleak.b4b.store import StateStore
from genleak.cli.b4b import register
from genleak.errors import GenleakError


@pytest.fixture(scope="module")
def run():
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def test_commands_are_registered(run):
    out = run("b4b", "--help").output
    for cmd in ("serve", "train-encoder", "admin", "simulate"):
        assert cmd in out
    assert "init" in run("b4b", "admin", "--help").output


def test_admin_create_list_show_revoke(run, tmp_path):
    db = str(tmp_path / "admin.db")
    assert run("b4b", "admin", "init", "--db", db).exit_code == 0
    r = run("b4b", "admin", "create", "alice", "--db", db, "--seed", "7")
    assert r.exit_code == 0, r.output
    key = r.output.split("API key (shown once): ")[1].strip()
    assert key.startswith("glb4b_")
    assert run("b4b", "admin", "create", "trusted", "--db", db, "--policy", "none").exit_code == 0
    assert run("b4b", "admin", "create", "noisy", "--db", db, "--policy", "static", "--sigma", "0.1").exit_code == 0

    listed = json.loads(run("b4b", "admin", "list", "--db", db, "--json").output)
    users = {u["name"]: u for u in listed["users"]}
    assert set(users) == {"alice", "trusted", "noisy"}
    assert users["alice"]["coverage"] == 0.0 and users["alice"]["sigma"] == 0.0 and users["alice"]["active"]
    assert users["noisy"]["sigma"] == 0.1 and users["trusted"]["transform"] == "identity"
    assert listed["config"]["n_hyperplanes"] == 12 and not listed["config_stored"]
    assert key not in json.dumps(listed)
    table = run("b4b", "admin", "list", "--db", db).output
    assert "alice" in table and "coverage" in table

    assert run("b4b", "admin", "revoke", "alice", "--db", db).exit_code == 0
    assert "revoked" in run("b4b", "admin", "show", "alice", "--db", db).output


@pytest.mark.parametrize("args,message", [
    (("b4b", "admin", "revoke", "nobody"), "no user named 'nobody'"),
    (("b4b", "admin", "create", "x", "--policy", "static"), "needs --sigma"),
    (("b4b", "serve", "--model", "/nonexistent/model"), "not an encoder folder"),
    (("b4b", "simulate",), "give --url"),
])
def test_user_mistakes_raise_genleak_errors(run, tmp_path, args, message):
    assert run("b4b", "admin", "init", "--db", str(tmp_path / "e.db")).exit_code == 0
    r = run(*args, "--db", str(tmp_path / "e.db"))
    assert isinstance(r.exception, GenleakError), r.output
    assert message in str(r.exception)


def test_entry_point_turns_mistakes_into_one_line_errors(tmp_path):
    StateStore(str(tmp_path / "e.db"))
    r = subprocess.run([sys.executable, "-m", "genleak.cli", "b4b", "admin", "revoke", "nobody", "--db", str(tmp_path / "e.db")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: no user named 'nobody'") and "Traceback" not in r.stderr


def test_train_encoder_writes_a_loadable_folder(run, tmp_path):
    out = tmp_path / "enc"
    r = run("b4b", "train-encoder", "--out", str(out), "--n-images", "256", "--epochs", "1", "--threads", "1")
    assert r.exit_code == 0, r.output
    assert "digits linear probe" in r.output
    from genleak.b4b.encoder import Encoder

    enc = Encoder.load(out)
    assert enc.embed_dim == 64 and enc.meta["trainer"] == "infonce"
    assert 0 <= enc.meta["digits_probe_accuracy"] <= 100
