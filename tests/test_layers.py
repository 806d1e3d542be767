"""The layers contract covers every package, and the registries are filled from entry points only.

`lint-imports` (scripts/run-tests.sh) checks the imports; these tests check what it cannot: that
no top-level module escapes the contract, that no module reaches a higher layer through a string
(an entry point, ``python -m``, a lazy export), that each registry lists exactly genleak's names,
that importing a module registers nothing, and how ``load_target`` reads a folder's ``_class_name``.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import tomllib

import genleak
from genleak.errors import TargetError

ROOT = Path(__file__).resolve().parents[1]

ATTACKS = {
    "clid", "denoise-process", "dp-baseline", "dp-full-denoising-100", "dp-partial-denoising", "dp-reversed-denoising",
    "dp-reversed-noising", "dual-adaptive", "gen-prompt", "genbox", "gradmask", "loss", "multiloss", "noiseopt",
    "pia", "pian", "secmi", "sima", "sima-mc",
    *(f"iar-{f}{cfg}" for f in ("loss", "zlib", "mink", "minkpp", "hinge", "surp", "camia") for cfg in ("", "-cfg")),
}
TARGETS = {"DDPMPipeline", "DDIMPipeline", "UNet2DModel", "StableDiffusionPipeline", "LatentDiffusionTarget",
           "TextualInversionTarget", "DualTarget", "IARTarget"}


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Strings that spell a package name without naming the module: the IAR folder format (kept for old folders).
NOT_MODULE_NAMES = {("targets/folders.py", "genleak.iar")}


def _layer_of() -> dict[str, int]:
    """Top-level module name -> its layer, 0 = the bottom (the order of the import-linter contract)."""
    layers = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    return {m.strip().removeprefix("genleak."): len(layers) - 1 - i
            for i, layer in enumerate(layers) for m in re.split(r"[|:]", layer)}


def test_every_top_level_module_is_in_a_layer():
    present = {m.name for m in pkgutil.iter_modules(genleak.__path__)}
    assert present == set(_layer_of()), (present - set(_layer_of()), set(_layer_of()) - present)


def _code_strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module except docstrings (which may point the reader anywhere)."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_module_names_a_higher_layer_in_a_string():
    """import-linter sees imports only; ``importlib``, entry points and ``python -m X`` take module names
    as strings, so a lower layer could still load a higher one at run time. None does."""
    layer = _layer_of()
    src = ROOT / "src" / "genleak"
    upward = []
    for file in sorted(src.rglob("*.py")):
        rel = file.relative_to(src).as_posix()
        own = 0 if rel == "__init__.py" else layer[rel.split("/")[0].removesuffix(".py")]  # every module imports the root
        for text in _code_strings(ast.parse(file.read_text())):
            for ref in re.findall(r"\bgenleak\.(\w+)", text):
                if ref in layer and layer[ref] > own and (rel, f"genleak.{ref}") not in NOT_MODULE_NAMES:
                    upward.append(f"{rel}: {text!r}")
    assert not upward, upward


def test_each_registry_loads_only_from_the_layer_that_reads_it():
    """An entry point is loaded by the module that reads its group, so its value may not sit higher."""
    layer = _layer_of()
    readers = {"genleak.attacks": "attacks", "genleak.targets": "targets", "genleak.audit_sections": "audit"}
    for group, entries in PYPROJECT["project"]["entry-points"].items():
        for name, value in entries.items():
            package = value.split(":")[0].split(".")[1]
            assert layer[package] <= layer[readers[group]], f"{group} entry {name} = {value} sits above {readers[group]}"


def test_each_registry_lists_genleak_s_names():
    from genleak.attacks import attack_class, available_attacks
    from genleak.audit import _REGISTERED, available_sections
    from genleak.targets.loading import target_loaders

    assert set(available_attacks()) == ATTACKS
    assert all(attack_class(n).name == n for n in ATTACKS)
    assert set(target_loaders()) == TARGETS and all(callable(ep.load()) for ep in target_loaders().values())
    # test_report.py registers stand-in sections at import; xdist workers import every test module
    from_entry_points = [n for n in available_sections() if n not in _REGISTERED]
    assert from_entry_points == ["guards", "cdi", "extraction", "defense"]  # in run order


def test_importing_a_module_registers_nothing():
    code = ("import genleak.attacks.loss, genleak.attacks.sima, genleak.attacks.denoising_family, genleak.attacks.iar, "
            "genleak.audit, genleak.report.recommend\n"
            "from genleak.attacks.base import _REGISTRY\nfrom genleak.audit import _REGISTERED\n"
            "print(len(_REGISTRY), len(_REGISTERED))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["0", "0"]


def test_an_entry_point_that_fails_to_load_is_a_failed_section(monkeypatch):
    import importlib.metadata

    from genleak.audit import resolve_sections, run_sections

    broken = EntryPoint(name="ghost", value="genleak.no_such_module:SECTION", group="genleak.audit_sections")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    specs = resolve_sections(None)
    assert [s.name for s in specs] == ["genleak.no_such_module:SECTION"]
    got = run_sections(None, None, Path("."), specs)["genleak.no_such_module:SECTION"]
    assert got["status"] == "failed" and "ModuleNotFoundError" in got["error"]


def _folder(tmp_path: Path, name: str, files: dict[str, dict]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file, content in files.items():
        (folder / file).write_text(json.dumps(content))
    return folder


def test_target_class_reads_class_names_and_legacy_markers(tmp_path):
    from genleak.targets.folders import IAR_FORMAT
    from genleak.targets.loading import target_class

    sd = {"_class_name": "StableDiffusionPipeline"}
    cases = [  # (expected, files): the _class_name a folder writes today, then the markers of older folders
        ("DDPMPipeline", {"model_index.json": {"_class_name": "DDPMPipeline"}, "config.json": {"_class_name": "x"}}),
        ("UNet2DModel", {"config.json": {"_class_name": "UNet2DModel"}}),
        ("DualTarget", {"model_index.json": {"_class_name": "DualTarget"}}),
        ("IARTarget", {"config.json": {"_class_name": "IARTarget", "format": IAR_FORMAT}}),
        ("TextualInversionTarget", {"model_index.json": sd, "genleak_latent.json": {"_class_name": "TextualInversionTarget"}}),
        ("StableDiffusionPipeline", {"model_index.json": sd, "genleak_latent.json": {"caption_template": "a {label}"}}),
        ("DualTarget", {"dualmd.json": {}}),
        ("IARTarget", {"config.json": {"format": IAR_FORMAT}}),
        ("TextualInversionTarget", {"model_index.json": sd, "genleak_latent.json": {"textual_inversion": {"placeholder": "<x>"}}}),
    ]
    for i, (expected, files) in enumerate(cases):
        assert target_class(_folder(tmp_path, f"f{i}", files)) == expected


def test_unknown_or_missing_class_is_one_line(tmp_path):
    from genleak.targets.loading import load_target

    with pytest.raises(TargetError, match="holds a LDMPipeline") as err:
        load_target(_folder(tmp_path, "ldm", {"model_index.json": {"_class_name": "LDMPipeline"}}))
    assert "\n" not in str(err.value) and "DDPMPipeline" in str(err.value)
    with pytest.raises(TargetError, match="no model_index.json or config.json"):
        load_target(_folder(tmp_path, "empty", {}))
    bad = _folder(tmp_path, "bad", {})
    (bad / "model_index.json").write_text("{not json")
    with pytest.raises(TargetError, match="not valid JSON"):
        load_target(bad)
