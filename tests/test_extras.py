"""Optional extras (issue 14 §6): a feature used without its extra fails with one line naming it.

A missing package is simulated with ``sys.modules[name] = None`` (import then raises ImportError),
and the module that needs it is re-imported.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from genleak._extras import MissingExtraError

ROOT = Path(__file__).resolve().parents[1]


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _reimport(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.delitem(sys.modules, module, raising=False)  # restored after the test
    importlib.import_module(module)


@pytest.mark.parametrize(("missing", "module", "extra"), [
    ("sqlalchemy", "genleak.b4b.store", "serve"),
    ("fastapi", "genleak.b4b.server", "serve"),
    ("opacus", "genleak.defenses.dpsgd", "dp"),
])
def test_import_without_extra_names_it(monkeypatch, missing, module, extra):
    _block(monkeypatch, missing)
    with pytest.raises(MissingExtraError) as info:
        _reimport(monkeypatch, module)
    assert str(info.value) == f"{missing} is not installed; it comes with the '{extra}' extra: pip install 'genleak[{extra}]'"


def test_lazy_imports_name_the_extra(monkeypatch, tmp_path):
    from genleak.b4b.client import B4BClient
    from genleak.b4b.config import read_mapping

    _block(monkeypatch, "httpx", "yaml")
    with pytest.raises(MissingExtraError, match=r"^httpx is not installed.*pip install 'genleak\[serve\]'$"):
        B4BClient("http://127.0.0.1:1", "key")
    (tmp_path / "c.yaml").write_text("a: 1\n")
    with pytest.raises(Exception, match=r"yaml is not installed.*pip install 'genleak\[serve\]'$"):
        read_mapping(tmp_path / "c.yaml")


def test_cli_without_extras_runs_help_and_fails_in_one_line(tmp_path):
    """A fresh interpreter with every extra's packages hidden: `--help` works, a B4B command exits 2
    with one stderr line naming the extra."""
    hide = "fastapi uvicorn sqlalchemy httpx opacus mlflow starlette".split()  # not yaml: huggingface_hub needs it
    code = (f"import sys; sys.modules.update(dict.fromkeys({hide!r})); sys.argv = ['genleak'] + sys.argv[1:]; "
            "from genleak.cli import main; main()")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)

    assert run("--help").returncode == 0
    for args, extra in ((["b4b", "admin", "init", "--db", str(tmp_path / "s.db")], "serve"),
                        (["defend", "dpsgd", "--split", str(tmp_path / "no.json"), "--out", str(tmp_path / "o")], "dp")):
        res = run(*args)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().count("\n") == 0 and f"pip install 'genleak[{extra}]'" in res.stderr, res.stderr


def test_pyproject_declares_every_extra_the_code_asks_for():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("torch==") for d in project["dependencies"])  # a user's CUDA torch must stay
    extras = project["optional-dependencies"]
    used = {m for f in (ROOT / "src").rglob("*.py") for m in re.findall(r'needs_extra\("(\w+)"\)', f.read_text())}
    assert used == {"serve", "dp", "data"}, used
    assert used <= set(extras)
    (all_req,) = extras["all"]
    assert set(re.fullmatch(r"genleak\[(.*)\]", all_req).group(1).split(",")) == set(extras) - {"dev", "all"}
