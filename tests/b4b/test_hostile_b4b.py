"""B4B as a hostile user or a careless admin would try it (issue 12): received encoder folders never
run code, and every bad input to the API or the CLI is a 4xx or a one-line error, never a traceback."""

from __future__ import annotations

import io
import json
import stat
import zipfile

import pytest
import torch
from fastapi.testclient import TestClient

from genleak.b4b.config import B4BConfig
from genleak.b4b.encoder import Encoder
from genleak.b4b.server import ServerSettings, build_service, create_app
from genleak.b4b.service import B4BService
from genleak.b4b.store import StateStore
from genleak.b4b.wire import encode_array
from genleak.errors import GenleakError


class _Payload:
    """Unpickling this opens (creates) a file: the stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _crafted_pt2(path, marker) -> None:
    """A real torch.export archive plus a legacy weights entry: torch.export.load (2.13) tries
    weights_only=True on it, then falls back to a full unpickle, which runs the payload."""
    buf = io.BytesIO()
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(2, 4),)), buf)
    payload = io.BytesIO()
    torch.save(_Payload(str(marker)), payload)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        dst.writestr("archive/data/weights/model.pt", payload.getvalue())
    path.write_bytes(out.getvalue())


def _torch_export_folder(folder, marker) -> None:
    folder.mkdir()
    (folder / "encoder.json").write_text(json.dumps({"format": "torch-export", "input_shape": [1, 2, 2]}))
    _crafted_pt2(folder / "model.pt2", marker)


def _pickle_as_safetensors(folder, marker) -> None:
    folder.mkdir()
    meta = {"format": "genleak-small-cnn", "input_shape": [1, 16, 16], "config": {"in_channels": 1, "width": 8}}
    (folder / "encoder.json").write_text(json.dumps(meta))
    torch.save(_Payload(str(marker)), folder / "weights.safetensors")


@pytest.mark.parametrize("make,message", [(_torch_export_folder, "model.pt2"),
                                          (_pickle_as_safetensors, "corrupt")], ids=["model.pt2", "pickled-weights"])
def test_crafted_encoder_folder_never_runs_code(tmp_path, make, message):
    marker = tmp_path / "MARKER"
    make(tmp_path / "enc", marker)
    with pytest.raises(GenleakError, match=message):
        Encoder.load(tmp_path / "enc")
    StateStore(str(tmp_path / "s.db"))
    with pytest.raises(GenleakError, match=message):  # what `b4b serve` runs at start-up
        build_service(ServerSettings(model=str(tmp_path / "enc"), db=str(tmp_path / "s.db")))
    assert not marker.exists(), "loading the folder ran code from it"


@pytest.fixture
def app_parts(tmp_path, tiny_encoder_dir):
    store = StateStore(f"sqlite:///{tmp_path / 'api.db'}")
    service = B4BService(Encoder.load(tiny_encoder_dir), store, B4BConfig(n_hyperplanes=10))
    _, key = store.create_user("alice", seed=1)
    yield service, {"Authorization": f"Bearer {key}"}
    store.close()


def test_deeply_nested_json_is_400_and_the_server_keeps_serving(app_parts):
    service, auth = app_parts
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        for body in ("[" * 100_000, '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}"):
            r = client.post("/v1/embed", content=body.encode(), headers={**auth, "Content-Type": "application/json"})
            assert r.status_code == 400 and "nested too deeply" in r.json()["detail"], r.text
        ok = client.post("/v1/embed", json={"images": encode_array(torch.rand(2, 1, 16, 16).numpy())}, headers=auth)
        assert ok.status_code == 200, ok.text


def test_api_docs_are_off_unless_asked_for(app_parts, cli, tiny_encoder_dir):
    service, _ = app_parts
    with TestClient(create_app(service)) as client:
        assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404, 404, 404]
    with TestClient(create_app(service, api_docs=True)) as client:
        assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [200, 200, 200]
    assert "--api-docs" in cli("b4b", "serve", "--help")[1]


def _one_line_error(result: tuple[int, str, str], message: str) -> None:
    code, _, err = result
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and message in err, err


def test_db_must_exist_unless_created_with_init(cli, tmp_path, tiny_encoder_dir):
    missing = tmp_path / "typo.db"
    _one_line_error(cli("b4b", "admin", "list", "--db", str(missing)), "b4b admin init")
    _one_line_error(cli("b4b", "admin", "create", "alice", "--db", str(missing)), "does not exist")
    with pytest.raises(GenleakError, match="does not exist"):  # b4b serve's start-up
        build_service(ServerSettings(model=str(tiny_encoder_dir), db=str(missing)))
    assert not missing.exists()
    code, out, err = cli("b4b", "admin", "init", "--db", str(missing))
    assert code == 0 and "created" in out, err
    assert cli("b4b", "admin", "create", "alice", "--db", str(missing))[0] == 0
    _one_line_error(cli("b4b", "admin", "init", "--db", str(missing)), "already")


def test_database_file_is_created_owner_only(cli, tmp_path):
    db = tmp_path / "state.db"
    assert cli("b4b", "admin", "init", "--db", str(db))[0] == 0
    assert cli("b4b", "admin", "create", "alice", "--db", str(db))[0] == 0
    StateStore(str(tmp_path / "py.db")).create_user("bob")  # the Python API's implicit creation too
    files = [p for p in tmp_path.iterdir() if ".db" in p.name]
    assert {p.name for p in files} >= {"state.db", "py.db"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


def test_static_sigma_must_be_finite(cli, tmp_path):
    StateStore(str(tmp_path / "s.db"))
    for sigma in ("inf", "nan"):
        _one_line_error(cli("b4b", "admin", "create", f"u{sigma}", "--db", str(tmp_path / "s.db"), "--policy", "static",
                            "--sigma", sigma), "finite")


@pytest.mark.parametrize("name", ["evil\x1b[2Jroot", "ali\u202ecod.exe", "tab\tname", "zero\u200bwidth"])
def test_control_characters_are_refused_in_user_names(tmp_path, name):
    store = StateStore(str(tmp_path / "s.db"))
    with pytest.raises(GenleakError, match="control or format characters"):
        store.create_user(name)
    assert store.list_users() == []


def test_revoked_name_message_says_what_is_true(tmp_path):
    store = StateStore(str(tmp_path / "s.db"))
    store.create_user("alice")
    store.create_user("bob")
    store.revoke_user("alice")
    # Revoking keeps the row (state is kept for audit), so "revoke it first" would be false advice.
    with pytest.raises(GenleakError) as revoked:
        store.create_user("alice")
    assert "was revoked" in str(revoked.value) and "never reused" in str(revoked.value)
    assert "revoke it first" not in str(revoked.value)
    with pytest.raises(GenleakError, match="is active"):
        store.create_user("bob")


def test_non_sqlite_db_and_bad_port_are_one_line_errors(cli, tmp_path, tiny_encoder_dir):
    notdb = tmp_path / "notes.txt"
    notdb.write_text("not a database\n" * 100)
    _one_line_error(cli("b4b", "admin", "list", "--db", str(notdb)), "file is not a database")
    StateStore(str(tmp_path / "s.db"))
    for port in ("-1", "70000"):
        _one_line_error(cli("b4b", "serve", "--model", str(tiny_encoder_dir), "--db", str(tmp_path / "s.db"),
                            "--port", port), "--port")
