"""The layers contract covers every package, and the registries are filled from entry points only.

`lint-imports` (scripts/run-tests.sh) checks the imports; these tests check what it cannot: that
no top-level module escapes the contract, that each registry lists exactly genleak's names, that
importing a module registers nothing, and how ``load_target`` reads a folder's ``_class_name``.
"""

from __future__ import annotations

import json
import pkgutil
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


def test_every_top_level_module_is_in_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    present = {f"genleak.{m.name}" for m in pkgutil.iter_modules(genleak.__path__)}
    assert present == named, (present - named, named - present)


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


def test_target_class_reads_class_names_and_genleak_markers(tmp_path):
    from genleak.iar.target import IAR_FORMAT
    from genleak.targets.loading import IAR_FORMAT as MARKER
    from genleak.targets.loading import target_class

    assert MARKER == IAR_FORMAT  # the marker copy below the iar layer
    cases = {
        "DDPMPipeline": {"model_index.json": {"_class_name": "DDPMPipeline"}, "config.json": {"_class_name": "x"}},
        "UNet2DModel": {"config.json": {"_class_name": "UNet2DModel"}},
        "DualTarget": {"dualmd.json": {}, "model_index.json": {"_class_name": "DDPMPipeline"}},
        "IARTarget": {"config.json": {"format": IAR_FORMAT}},
        "TextualInversionTarget": {"model_index.json": {"_class_name": "StableDiffusionPipeline"},
                                   "genleak_latent.json": {"textual_inversion": {"placeholder": "<x>"}}},
        "StableDiffusionPipeline": {"model_index.json": {"_class_name": "StableDiffusionPipeline"},
                                    "genleak_latent.json": {"caption_template": "a {label}"}},
    }
    for i, (expected, files) in enumerate(cases.items()):
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
