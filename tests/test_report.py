"""The audit report (issue 7): a real tiny audit rendered to one self-contained HTML page, checked
in headless Chromium (visible blocks, no network request, screenshot as a CI artifact), the page's
numbers against results.json, failures shown rather than dropped, the versioned results schema,
the report/compare CLI and MLflow logging."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from genleak.audit import SectionSkipped, register_section, resolve_sections, run_audit, run_sections
from genleak.errors import GenleakError
from genleak.report.html import REPORT_FILE, load_run, render_report, write_report
from genleak.report.results import read_results
from genleak.report.verdict import compute_verdict, level_of
from genleak.results import AuditResult, SectionResult

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ALPHA = 0.01


# ------------------------------------------------------------------------------------------------
# Test-only audit sections (default=False: they never run in a default audit)
# ------------------------------------------------------------------------------------------------


@register_section("test-cdi", title="Dataset inference (test stand-in)", kind="cdi", default=False)
def _fake_cdi(target, split, out):
    sizes = [2, 4, 8, 16, 32, 64]
    return {
        "summary": "the members are detected as the training set at |P| >= 8",
        "metrics": {"p_value": 1.5e-6, "suspect_size": 64, "alpha": ALPHA},
        "curve": {"x": sizes, "y": [0.4, 0.05, 0.004, 1e-4, 2e-6, 1.5e-6], "x_label": "|P| (suspect set size)",
                  "y_label": "p-value", "log_x": True, "log_y": True, "hline": ALPHA, "hline_label": "alpha = 0.01"},
        "data": {"features": np.array([1.0, 2.0])},  # numpy values are converted to JSON
    }


@register_section("test-extraction", title="Extraction (test stand-in)", kind="extraction", default=False)
def _fake_extraction(target, split, out):
    from PIL import Image

    grid = (np.random.default_rng(0).random((16, 48)) * 255).astype(np.uint8)
    (out / "extraction").mkdir(exist_ok=True)
    Image.fromarray(grid).resize((192, 64), Image.NEAREST).save(out / "extraction" / "grid.png")
    return {"summary": "0 of 16 generations extracted", "metrics": {"extracted": 0},
            "images": [{"path": "extraction/grid.png", "caption": "generated | nearest member"},
                       {"path": "../../../etc/passwd.png", "caption": "outside the run folder: refused"}]}


@register_section("test-broken", title="A broken plug-in", default=False)
def _broken_section(target, split, out):
    raise RuntimeError("section exploded <b>loudly</b>")


@register_section("test-skip", title="Not applicable", default=False)
def _skipped_section(target, split, out):
    raise SectionSkipped("needs a text-to-image target")


SECTIONS = ["test-cdi", "test-extraction", "test-broken", "test-skip"]


@pytest.fixture(scope="module")
def audit_dir(overfit_ddpm, tmp_path_factory) -> Path:
    """A real audit of the session's overfit DDPM with two cheap attacks and the test sections."""
    out = tmp_path_factory.mktemp("audit") / "run"
    run_audit(overfit_ddpm.target, overfit_ddpm.split, out, attacks=["loss", "sima"], sections=SECTIONS,
              bootstrap=200, progress=False, command="genleak audit --target T --split S --out run",
              target_path=overfit_ddpm.folder, split_path=overfit_ddpm.split_path)
    return out


@pytest.fixture(scope="module")
def failed_dir(overfit_ddpm, tmp_path_factory) -> Path:
    """A run where the sima attack crashes (with markup in its message): recorded as failed."""
    from genleak.attacks import attack_class
    from genleak.pipeline import run_attacks
    from genleak.report.results import write_results

    def boom(self, target, x0, noise, cond=None):
        raise RuntimeError("CUDA out of memory <img src=x onerror=alert(1)>")

    mp = pytest.MonkeyPatch()
    mp.setattr(attack_class("sima"), "score_batch", boom)
    try:
        out = tmp_path_factory.mktemp("failed") / "run"
        result = run_attacks(overfit_ddpm.target, overfit_ddpm.split, ["loss", "sima"], out, bootstrap=100,
                             progress=False, command="genleak attack ...")
    finally:
        mp.undo()
    write_results(result, out)
    write_report([out], out / REPORT_FILE)
    return out


# ------------------------------------------------------------------------------------------------
# Headless Chromium
# ------------------------------------------------------------------------------------------------


def unavailable(reason: str):
    """Skip on a developer's machine, but fail in CI (CI is set there): CI installs Chromium and MLflow,
    so a missing one there is a broken setup that must not pass as a skipped test."""
    (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


def test_missing_tool_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no browser"):
        unavailable("no browser")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no browser"):
        unavailable("no browser")


@pytest.fixture(scope="module")
def browser():
    """A headless Debian Chromium driven by playwright (never `playwright install`: no downloads)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        unavailable("Chromium is not installed (apt-get install chromium; .ci/run does this): cannot start a browser")
    manager = sync_playwright().start()
    try:
        context = manager.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="genleak-chromium-"), executable_path=exe, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
    except Exception as err:  # e.g. missing shared libraries in a minimal container
        manager.stop()
        unavailable(f"Chromium at {exe} cannot be started: {str(err).splitlines()[0]}")
    yield context
    context.close()
    manager.stop()


def open_page(context, path: Path):
    """Open a local file, aborting and recording every request that is not the file itself."""
    page = context.new_page()
    url = path.resolve().as_uri()
    outside: list[str] = []

    def route(r):
        if r.request.url == url or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda req: None if req.url in (url,) or req.url.startswith("data:") else outside.append(req.url))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, outside


def test_report_in_chromium(audit_dir, browser):
    data = read_results(audit_dir).to_json()
    page, outside = open_page(browser, audit_dir / REPORT_FILE)
    verdict = page.locator("section.verdict")
    assert verdict.is_visible()
    assert compute_verdict(read_results(audit_dir))["label"] in verdict.inner_text()
    assert verdict.get_attribute("data-level") == data["verdict"]["level"]
    for attack in ("loss", "sima"):
        row = page.locator(f'table.attack-table tr[data-attack="{attack}"]')
        assert row.is_visible() and row.get_attribute("data-status") == "ok"
    roc = page.locator("section.roc figure svg")
    assert roc.is_visible()
    box = roc.bounding_box()
    assert box["width"] > 300 and box["height"] > 200
    assert "false positive rate" in roc.text_content()
    assert page.locator("section.histograms svg").is_visible()
    prov = page.locator("section.provenance")
    assert prov.is_visible()
    text = prov.inner_text()
    for needle in (data["target"]["fingerprint"], data["split"]["fingerprint"], data["genleak_version"],
                   "genleak audit --target T --split S --out run", data["audit"]["split_manifest_sha256"]):
        assert needle in text
    assert page.locator('.hyper[data-attack="sima"]').is_visible()
    # plug-in sections: the CDI curve with its alpha line, the image grid (embedded, loaded), failures
    assert page.locator('section[data-section="test-cdi"] svg').is_visible()
    assert "alpha = 0.01" in page.locator('section[data-section="test-cdi"] svg').text_content()
    img = page.locator('section[data-section="test-extraction"] img')
    assert img.count() == 1 and img.evaluate("i => i.complete && i.naturalWidth > 0")
    assert "refused" in page.locator('section[data-section="test-extraction"]').inner_text()
    broken = page.locator('section[data-section="test-broken"]')
    assert broken.get_attribute("data-status") == "failed" and "section exploded <b>loudly</b>" in broken.inner_text()
    assert page.locator('section[data-section="test-skip"]').get_attribute("data-status") == "skipped"
    # no network: nothing was requested, and the page itself loaded no resource at all
    assert outside == [], f"the report made requests: {outside}"
    assert page.evaluate("performance.getEntriesByType('resource').filter(r => !r.name.startsWith('data:')).length") == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    page.close()


def test_failed_attack_is_shown_not_dropped(failed_dir, browser):
    data = read_results(failed_dir).to_json()
    assert data["attacks"]["sima"]["status"] == "failed"
    page, outside = open_page(browser, failed_dir / REPORT_FILE)
    row = page.locator('table.attack-table tr[data-attack="sima"]')
    assert row.is_visible() and row.get_attribute("data-status") == "failed"
    assert "CUDA out of memory <img src=x onerror=alert(1)>" in row.inner_text()  # shown as text, escaped
    assert page.locator("img").count() == 0  # the markup in the error did not become an element
    assert page.locator('.failures li[data-attack="sima"]').is_visible()
    assert "1 of 2 attacks failed" in page.locator("section.verdict").inner_text()
    assert page.locator('table.attack-table tr[data-attack="loss"]').get_attribute("data-status") == "ok"
    assert outside == []
    page.close()


# ------------------------------------------------------------------------------------------------
# The page's numbers are results.json's numbers
# ------------------------------------------------------------------------------------------------


class _MetricCells(HTMLParser):
    """Collect (attributes, text) of every element carrying ``data-metric`` (they hold text only)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[dict[str, str], str]] = []
        self._current: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-metric" in a:
            self._current, self._text = a, []

    def handle_endtag(self, tag):
        if self._current is not None:
            self.cells.append((self._current, "".join(self._text)))
            self._current = None

    def handle_data(self, data):
        if self._current is not None:
            self._text.append(data)


def metric_cells(path: Path) -> list[tuple[dict[str, str], str]]:
    parser = _MetricCells()
    parser.feed(path.read_text())
    return parser.cells


def test_page_numbers_equal_results_json(audit_dir):
    data = json.loads((audit_dir / "results.json").read_text())
    cells = metric_cells(audit_dir / REPORT_FILE)
    seen = set()
    for attrs, text in cells:
        if "data-section" in attrs:
            expected = data["sections"][attrs["data-section"]]["metrics"][attrs["data-metric"]]
        else:
            entry = data["attacks"][attrs["data-attack"]]
            key = attrs["data-metric"]
            expected = entry["seconds"] if key == "seconds" else entry["metrics"][key]
            seen.add((attrs["data-attack"], key))
        raw = attrs["data-value"]
        value = json.loads(raw) if raw.startswith("[") else (None if raw == "None" else float(raw))
        assert value == expected, (attrs, expected)  # exact: the page carries repr(float)
        if isinstance(expected, float) and "data-section" not in attrs:
            digits = 2 if attrs["data-metric"] == "seconds" else 3
            assert text == f"{expected:.{digits}f}", (attrs, text)
        elif isinstance(expected, list):
            assert text == f"[{expected[0]:.3f}, {expected[1]:.3f}]"
    for attack in ("loss", "sima"):
        for key in ("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci", "tpr_at_01pct_fpr",
                    "tpr_at_01pct_fpr_ci", "tpr_at_0_fpr", "asr", "seconds"):
            assert (attack, key) in seen, f"{attack}.{key} is not on the page"
    # the TPR@0.1%FPR CI the audit adds is a real interval around the point value
    m = data["attacks"]["sima"]["metrics"]
    assert m["tpr_at_01pct_fpr_ci"][0] <= m["tpr_at_01pct_fpr"] <= m["tpr_at_01pct_fpr_ci"][1]


def test_sections_are_recorded(audit_dir):
    sections = read_results(audit_dir).to_json()["sections"]
    assert list(sections) == SECTIONS
    assert sections["test-cdi"]["status"] == "ok" and sections["test-cdi"]["data"]["features"] == [1.0, 2.0]
    assert sections["test-broken"]["status"] == "failed" and "RuntimeError" in sections["test-broken"]["error"]
    assert (sections["test-skip"]["status"], sections["test-skip"]["reason"]) == ("skipped", "needs a text-to-image target")
    assert all(s["seconds"] >= 0 for s in sections.values())


def test_section_registry_errors():
    with pytest.raises(GenleakError, match="unknown audit section"):
        resolve_sections(["no-such-section"])
    assert resolve_sections([]) == []
    assert "test-cdi" not in [s.name for s in resolve_sections(None)]  # default=False stays out
    got = run_sections(None, None, Path("."), [s for s in resolve_sections(["test-broken"])])
    assert got["test-broken"]["status"] == "failed"


# ------------------------------------------------------------------------------------------------
# Verdict rule
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("auc,tpr,level", [
    (0.99, 0.5, "high"), (0.80, 0.0, "high"), (0.55, 0.10, "high"), (0.79, 0.09, "moderate"),
    (0.60, 0.0, "moderate"), (0.52, 0.03, "moderate"), (0.51, 0.02, "low"), (0.50, 0.01, "none"), (0.3, 0.0, "none"),
])
def test_verdict_levels(auc, tpr, level):
    assert level_of(auc, tpr) == level


def _typed(**data):
    """A hand-built results dict as the typed result every renderer takes (figures the test does not set: 0)."""
    for a in data["attacks"].values():
        if a["status"] == "ok":
            a["metrics"] = {"tpr_at_01pct_fpr": 0.0, "tpr_at_0_fpr": 0.0, "asr": 0.5, **a["metrics"]}
    return AuditResult.from_json({"format": "genleak.results", "version": 1, "seed": 0, "target": {}, **data})


def _results(**attacks):
    return _typed(split={"name": "s", "fingerprint": "f", "n_members": 500, "n_nonmembers": 500}, attacks=attacks)


def _ok(auc, tpr, auc_ci=None, tpr_ci=None):
    return {"status": "ok", "metrics": {"auc": auc, "tpr_at_1pct_fpr": tpr, "auc_ci": auc_ci,
                                        "tpr_at_1pct_fpr_ci": tpr_ci, "n_members": 500, "n_nonmembers": 500}}


def test_verdict_confidence():
    high = compute_verdict(_results(a=_ok(0.9, 0.2, [0.85, 0.95], [0.15, 0.25]), b=_ok(0.6, 0.02, [0.55, 0.65], [0.0, 0.04])))
    assert (high["level"], high["confidence"], high["attack"]) == ("high", "high", "a")
    unsure = compute_verdict(_results(a=_ok(0.82, 0.05, [0.7, 0.9], [0.02, 0.08])))
    assert (unsure["level"], unsure["confidence"], unsure["point_level"]) == ("moderate", "medium", "high")
    no_ci = compute_verdict(_results(a=_ok(0.7, 0.02)))
    assert (no_ci["level"], no_ci["confidence"]) == ("moderate", "low")
    dead = compute_verdict(_results(a={"status": "failed", "error": "x"}))
    assert dead["level"] == "unknown" and "1 of 1 attacks failed" in dead["details"][0]
    shifted = _results(a=_ok(0.9, 0.2, [0.85, 0.95], [0.15, 0.25]))
    shifted.sections = {"guards": SectionResult.from_json("guards", {"kind": "guards", "status": "ok",
                                                                      "warnings": ["DISTRIBUTION SHIFT: ..."]})}
    assert compute_verdict(shifted)["confidence"] == "low"


def test_verdict_ignores_tpr_bars_with_too_few_nonmembers():
    """With 32 non-members TPR@1%FPR is TPR@0%FPR: one member above all non-members (1/32 > 0.03)
    happens by chance, so the TPR bars do not count; AUC alone decides."""
    lucky = _ok(0.55, 0.0625, [0.42, 0.68], [0.03125, 0.2])
    lucky["metrics"]["n_nonmembers"] = lucky["metrics"]["n_members"] = 32
    v = compute_verdict(_results(a=lucky))
    assert v["level"] == "none" and any("judged on AUC alone" in d for d in v["details"])
    lucky["metrics"]["n_nonmembers"] = 500  # the same figures on 500 non-members do count
    assert compute_verdict(_results(a=lucky))["level"] == "moderate"


def test_verdict_uses_multiplicity_adjusted_bounds_when_present(audit_dir):
    """Choosing the most leaky of k attacks: the audit stores Bonferroni-adjusted lower bounds and
    the verdict uses them, so a level the 95% CIs would grant can be refused."""
    from genleak.report.verdict import simultaneous_confidence

    a = _ok(0.66, 0.02, [0.62, 0.70], [0.0, 0.04])
    plain = compute_verdict(_results(a=a))
    assert plain["level"] == "moderate"
    a["metrics"]["simultaneous_lower"] = {"auc": 0.58, "tpr_at_1pct_fpr": 0.0, "confidence": simultaneous_confidence(3),
                                          "family_size": 6}
    adjusted = compute_verdict(_results(a=a, b=_ok(0.5, 0.01, [0.45, 0.55], [0.0, 0.02]),
                                        c=_ok(0.5, 0.01, [0.45, 0.55], [0.0, 0.02])))
    assert adjusted["level"] == "low" and adjusted["auc_lower"] == 0.58
    assert any("Bonferroni over 6 figures" in d for d in adjusted["details"])
    # the real audit (2 attacks x 2 directions x 2 figures, 200 resamples): bounds at 1 - 0.05/8, below the 95% ones
    data = read_results(audit_dir).to_json()
    for name in ("loss", "sima"):
        m = data["attacks"][name]["metrics"]
        joint = m["simultaneous_lower"]
        assert joint["confidence"] == pytest.approx(0.99375) and joint["family_size"] == 8
        assert joint["auc"] <= m["auc_ci"][0] and joint["tpr_at_1pct_fpr"] <= m["tpr_at_1pct_fpr_ci"][0]
        assert joint["flipped_auc"] <= 1 - m["auc_ci"][1]
        assert joint["flipped_tpr_at_1pct_fpr"] <= m["flipped_tpr_at_1pct_fpr_ci"][0]
    assert data["verdict"]["auc_lower"] == max(data["attacks"][n]["metrics"]["simultaneous_lower"]["auc"]
                                               for n in ("loss", "sima"))


# ------------------------------------------------------------------------------------------------
# Results schema: versioned, documented, refused clearly when unknown
# ------------------------------------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    data = json.loads((src / "results.json").read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    (dst / "results.json").write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize("version,words", [(2, ["version 2", "reads only version 1", "newer"]),
                                           (0, ["version 0", "reads only version 1", "rerun"]),
                                           (None, ["no results schema version"])])
def test_unknown_schema_version_fails_naming_it(failed_dir, tmp_path, version, words):
    run = _rewrite(failed_dir, tmp_path / "old", version=version)
    with pytest.raises(GenleakError) as info:
        read_results(run).to_json()
    for w in words:
        assert w in str(info.value)


def test_damaged_and_foreign_files_fail_clearly(failed_dir, tmp_path):
    data = json.loads((failed_dir / "results.json").read_text())
    data["attacks"]["loss"].pop("metrics")
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(GenleakError, match="attacks.loss.status is 'ok' but it has no metrics"):
        read_results(tmp_path).to_json()
    (tmp_path / "results.json").write_text(json.dumps({"format": "something.else", "version": 1}))
    with pytest.raises(GenleakError, match="not a genleak results file"):
        read_results(tmp_path).to_json()


def test_schema_is_documented(audit_dir):
    doc = (ROOT / "docs" / "results-schema.md").read_text()
    data = read_results(audit_dir).to_json()
    assert "version" in doc and '"format": "genleak.results"' in doc
    keys = set(data) | set(data["split"]) | set(data["attacks"]["loss"]) | set(data["attacks"]["loss"]["metrics"])
    keys |= set(data["sections"]["test-cdi"]) | set(data["verdict"])
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/results-schema.md does not document {missing}"


# ------------------------------------------------------------------------------------------------
# CLI: report, compare, and errors
# ------------------------------------------------------------------------------------------------


def test_report_and_compare_commands(audit_dir, failed_dir, tmp_path, cli):
    out = tmp_path / "both.html"
    code, stdout, err = cli("report", "html", str(audit_dir), str(failed_dir), "--out", str(out),
                                "--labels", "baseline,broken")
    assert code == 0, err
    page = out.read_text()
    assert 'class="compare-table"' in page and page.count('<article class="run"') == 2
    code, stdout, err = cli("report", "compare", str(audit_dir), str(failed_dir), "--labels",
                                "baseline,DistillMD", "--out", str(tmp_path / "cmp.html"))
    assert code == 0, err
    assert "baseline" in stdout and "DistillMD" in stdout and "failed" in stdout
    base = read_results(audit_dir).to_json()["attacks"]["loss"]["metrics"]["auc"]
    assert f"{base:.3f}" in stdout
    cells = metric_cells(tmp_path / "cmp.html")
    auc0 = [a for a, _ in cells if a.get("data-run") == "0" and a.get("data-attack") == "loss" and a["data-metric"] == "auc"]
    assert len(auc0) == 1 and float(auc0[0]["data-value"]) == base
    assert 'data-status="failed"' in (tmp_path / "cmp.html").read_text()


def test_audit_command(overfit_ddpm, tmp_path, cli):
    out = tmp_path / "audit"
    code, stdout, err = cli("audit", "--target", str(overfit_ddpm.folder), "--split",
                                str(overfit_ddpm.split_path), "--out", str(out), "--attacks", "sima", "--sections", "",
                                "--param", "sima.t=10", "--bootstrap", "50")
    assert code == 0, err
    assert "verdict:" in stdout and (out / REPORT_FILE).is_file()
    data = read_results(out).to_json()
    assert data["attacks"]["sima"]["config"]["t"] == 10 and data["settings"]["attack_params"] == {"sima": {"t": 10}}
    assert data["command"].startswith("genleak audit --target") and data["sections"] == {}
    assert data["verdict"] == compute_verdict(read_results(out))
    code, _, err = cli("audit", "--target", str(overfit_ddpm.folder), "--split",
                           str(overfit_ddpm.split_path), "--out", str(tmp_path / "bad"), "--sections", "nope")
    assert code == 2 and "unknown audit section" in err and not (tmp_path / "bad").exists()


def test_report_command_refuses_unknown_version(failed_dir, tmp_path, cli):
    run = _rewrite(failed_dir, tmp_path / "future", version=7)
    code, _, err = cli("report", "html", str(run), "--out", str(tmp_path / "r.html"))
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "version 7" in lines[0], err
    assert not (tmp_path / "r.html").exists()


def test_report_renders_without_score_files(audit_dir, tmp_path):
    """results.json alone (scores deleted) still renders: the figures say why they are missing."""
    run = tmp_path / "bare"
    run.mkdir()
    shutil.copy(audit_dir / "results.json", run / "results.json")
    text = render_report([load_run(run)])
    assert "No figures" in text and "no scores file" in text
    write_report([run], run / REPORT_FILE)
    assert (run / REPORT_FILE).stat().st_size > 5000


# ------------------------------------------------------------------------------------------------
# MLflow (optional extra)
# ------------------------------------------------------------------------------------------------


def test_mlflow_missing_is_a_clear_error(audit_dir, monkeypatch):
    from genleak.report.mlflow_log import log_to_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    with pytest.raises(GenleakError, match=r"pip install 'genleak\[mlflow\]'"):
        log_to_mlflow(audit_dir)


def test_mlflow_logs_the_same_metrics(audit_dir, tmp_path, monkeypatch):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        unavailable("mlflow is an optional extra (pip install -e '.[mlflow]'; `make test` installs it)")

    from genleak.report.mlflow_log import log_to_mlflow

    monkeypatch.chdir(tmp_path)  # the default store is ./mlruns
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # restored after the test
    run_id, uri = log_to_mlflow(audit_dir)
    assert uri == (tmp_path / "mlruns").resolve().as_uri()
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    data = read_results(audit_dir).to_json()
    for attack in ("loss", "sima"):
        m = data["attacks"][attack]["metrics"]
        assert run.data.metrics[f"{attack}.auc"] == m["auc"]
        assert run.data.metrics[f"{attack}.tpr_at_1pct_fpr_ci_low"] == m["tpr_at_1pct_fpr_ci"][0]
    assert run.data.params["attack.sima.t"] == str(data["attacks"]["sima"]["config"]["t"])
    assert run.data.tags["genleak.verdict"] == data["verdict"]["level"]
    artifacts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id)}
    assert {"results.json", "report.html", "scores"} <= artifacts


# ------------------------------------------------------------------------------------------------
# The built-in sections, wired to genleak.inference (guards, CDI)
# ------------------------------------------------------------------------------------------------


def test_guard_and_cdi_sections_on_the_overfit_model(overfit_ddpm, tmp_path):
    """The default audit sections run on a real target: CDI with the members as suspect set finds the
    training set (p < alpha) and its p-value curve carries the alpha line; guards find no shift."""
    from genleak.pipeline import run_attacks
    from genleak.report.results import write_results

    specs = resolve_sections(None)
    assert [s.name for s in specs][:2] == ["guards", "cdi"]
    out = tmp_path / "run"
    write_results(run_attacks(overfit_ddpm.target, overfit_ddpm.split, ["sima"], out, progress=False), out)
    got = run_sections(overfit_ddpm.target, overfit_ddpm.split, out, specs[:2])
    assert got["guards"]["status"] == "ok", got["guards"]
    assert got["guards"]["metrics"]["exact_duplicates"] == 0
    cdi = got["cdi"]
    assert cdi["status"] == "ok", cdi
    assert cdi["metrics"]["rejected"] is True and cdi["metrics"]["p_value"] < cdi["metrics"]["alpha"]
    assert cdi["curve"]["hline"] == cdi["metrics"]["alpha"] and len(cdi["curve"]["x"]) == len(cdi["curve"]["y"]) > 3
    assert (out / "cdi" / "cdi.json").is_file()


# ------------------------------------------------------------------------------------------------
# Defense recommendation (genleak.report.recommend): the audit's last section
# ------------------------------------------------------------------------------------------------


def _attack(auc, auc_ci, tpr, tpr_ci, access):
    return {"status": "ok", "access": access, "metrics": {"auc": auc, "auc_ci": auc_ci, "tpr_at_1pct_fpr": tpr,
                                                          "tpr_at_1pct_fpr_ci": tpr_ci, "n_members": 500,
                                                          "n_nonmembers": 500}}


LEAKY_GRAY = _attack(0.99, [0.97, 1.0], 0.6, [0.4, 0.8], "gray-box")  # verdict level "high"
LEAKY_BLACK = _attack(0.90, [0.84, 0.95], 0.2, [0.12, 0.3], "black-box")
WEAK_GRAY = _attack(0.56, [0.52, 0.60], 0.02, [0.0, 0.025], "gray-box")  # "low": CI excludes 0.5, nothing more
CHANCE_GRAY = _attack(0.51, [0.45, 0.57], 0.01, [0.0, 0.025], "gray-box")
CHANCE_BLACK = _attack(0.50, [0.44, 0.56], 0.01, [0.0, 0.02], "black-box")
PIXEL_RECIPE = {"config": {"steps": 1250, "block_out_channels": [32, 64], "lr": 1e-3, "batch_size": 32,
                           "ema_decay": 0.995}}


def _facts(kind, training=None, sections=None, **attacks):
    from genleak.report.recommend import AuditFacts

    data = {"target": {"kind": kind}, "attacks": json.loads(json.dumps(attacks)),
            "split": {"name": "s", "fingerprint": "f", "n_members": 500, "n_nonmembers": 500},
            "audit": {"target_path": "/runs/base", "split_path": "/runs/split.json", "training": training or {}}}
    if sections:
        data["sections"] = sections
    return AuditFacts.from_results(_typed(**data), run_dir="/runs/audit")


def _by_id(recs):
    return {r.id: r for r in recs}


def _assert_commands_parse(recs):
    from genleak.cli.parse import command_problem, parse_command

    assert recs
    for r in recs:
        assert r.commands, r.id
        for c in r.commands + r.verify:
            assert c.startswith("genleak "), c
            assert command_problem(c) is None, (c, command_problem(c))
            parse_command(c)


def test_defense_section_on_the_overfit_audit(audit_dir, tmp_path):
    """The real audit of the overfit DDPM (gray-box loss + SimA leak, CDI stand-in rejects): the default-on
    defense section names DistillMD and DualMD with the baseline's recipe, every command parses, and the
    page shows one card per recommendation with the commands verbatim."""
    run = tmp_path / "run"
    shutil.copytree(audit_dir, run)
    specs = [s for s in resolve_sections(None) if s.order < 1000]  # (1000: modules that failed to import)
    assert specs[-1].name == "defense" and specs[-1].kind == "defense"  # default on, and last
    got = run_sections(None, None, run, resolve_sections(["defense"]))["defense"]
    assert got["status"] == "ok", got
    recs = {r["id"]: r for r in got["recommendations"]}
    assert {"distillmd", "dualmd"} <= set(recs), recs.keys()
    assert recs["distillmd"]["priority"] == "recommended"
    assert recs["dualmd"]["priority"] == "consider" and "weights stay private" in recs["dualmd"]["applies_if"]
    split = str(Path(read_results(run).to_json()["audit"]["split_path"]))
    disjoint = recs["distillmd"]["commands"][0]
    assert disjoint.startswith("genleak defend disjoint --split ") and split in disjoint
    assert "--steps 1250 --channels 32,64" in disjoint  # the overfit fixture's recipe (genleak_train.json)
    assert recs["distillmd"]["commands"][1].startswith("genleak defend distill --teachers ")
    from genleak.cli.parse import command_problem

    for r in recs.values():
        for c in r["commands"] + r["verify"]:
            assert command_problem(c) is None, c
        effect = r["expected_effect"]
        assert effect["measured"] and "benchmarks/RESULTS.md" in effect["source"] and r["cost"]
        assert effect["paper_claim_held"] in ("yes", "partly", "no", "not claimed", "not measured")
    # the reason names the measured number that triggered it
    kinds = {t["kind"] for t in recs["distillmd"]["triggers"]}
    assert {"attack", "cdi"} <= kinds
    attack = next(t for t in recs["distillmd"]["triggers"] if t["kind"] == "attack")
    assert attack["attack"] in ("loss", "sima") and f"{attack['value']:.3f}"[:4] in recs["distillmd"]["reason"]
    assert recs["dualmd"]["expected_effect"]["paper_claim_held"] == "no"  # RESULTS.md: 0.854 -> 0.871
    assert got["warnings"] == [] and got["metrics"]["recommended"] >= 1
    # the earlier sections stayed in results.json next to the new one, and the page renders it
    data = read_results(run).to_json()
    assert {"test-cdi", "defense"} <= set(data["sections"])
    write_report([run], run / REPORT_FILE)
    page = (run / REPORT_FILE).read_text()
    import html as _html

    assert 'data-section="defense" data-status="ok"' in page
    for r in recs.values():
        assert f'data-recommendation="{r["id"]}"' in page
        for c in r["commands"]:
            assert f'data-command="{_html.escape(c, quote=True)}"' in page
    assert "Considered, not recommended" in page and "genleak defend kd" in page


def test_defense_section_in_chromium(audit_dir, tmp_path, browser):
    run = tmp_path / "run"
    shutil.copytree(audit_dir, run)
    run_sections(None, None, run, resolve_sections(["defense"]))
    write_report([run], run / REPORT_FILE)
    page, outside = open_page(browser, run / REPORT_FILE)
    section = page.locator('section[data-section="defense"]')
    assert section.is_visible() and "Defense recommendation" in section.inner_text()
    card = page.locator('.recommendation[data-recommendation="distillmd"]')
    assert card.is_visible() and card.get_attribute("data-priority") == "recommended"
    first = card.locator("pre.command").first
    assert first.is_visible() and first.inner_text().startswith("genleak defend disjoint --split ")
    assert "Measured by genleak" in card.inner_text() and "paper's claim held at tiny scale" in card.inner_text()
    assert outside == []
    page.close()


def test_recommendation_follows_the_access_level():
    from genleak.report.recommend import recommend

    gray = _by_id(recommend(_facts("pixel-ddpm", PIXEL_RECIPE, sima=LEAKY_GRAY)))
    assert list(gray) == ["distillmd", "dualmd", "dpsgd"]
    assert gray["distillmd"].priority == "recommended"
    assert gray["dualmd"].priority == "consider" and "no black-box attack was run" in gray["dualmd"].reason
    assert gray["dpsgd"].priority == "consider" and "--noise-multiplier 1.0" in gray["dpsgd"].commands[0]
    black = _by_id(recommend(_facts("pixel-ddpm", PIXEL_RECIPE, sima=LEAKY_GRAY, genbox=LEAKY_BLACK)))
    assert black["dualmd"].priority == "recommended" and "genbox" in black["dualmd"].reason
    assert "--attacks genbox" in black["dualmd"].verify[0]
    # a black-box attack ran and found nothing: DualMD (a black-box defense) is not suggested
    clean_bb = _by_id(recommend(_facts("pixel-ddpm", PIXEL_RECIPE, sima=LEAKY_GRAY, genbox=CHANCE_BLACK)))
    assert "dualmd" not in clean_bb and "distillmd" in clean_bb
    # only black-box leakage: no DP-SGD (its trigger is a gray/white-box leak)
    only_bb = _by_id(recommend(_facts("pixel-ddpm", PIXEL_RECIPE, sima=CHANCE_GRAY, genbox=LEAKY_BLACK)))
    assert set(only_bb) == {"distillmd", "dualmd"}
    # a weak ("low") leak: everything is "consider", and no DP-SGD (its utility cost needs >= moderate)
    weak = recommend(_facts("pixel-ddpm", PIXEL_RECIPE, sima=WEAK_GRAY))
    assert {r.priority for r in weak} == {"consider"} and "dpsgd" not in _by_id(weak)
    for recs in (gray.values(), black.values(), weak):
        _assert_commands_parse(list(recs))


def test_recommendation_nothing_without_leakage():
    from genleak.audit import SectionSkipped as Skipped
    from genleak.report.recommend import recommend, section_from_facts

    quiet = {"cdi": {"kind": "cdi", "status": "ok", "metrics": {"p_value": 0.4, "alpha": 0.01, "rejected": False}},
             "extraction": {"kind": "extraction", "status": "ok",
                            "metrics": {"n_generated": 256, "n_extracted_train_images": 0}}}
    facts = _facts("pixel-ddpm", PIXEL_RECIPE, quiet, sima=CHANCE_GRAY, genbox=CHANCE_BLACK)
    assert facts.level == "none" and recommend(facts) == []
    sec = section_from_facts(facts)
    assert sec["recommendations"] == [] and sec["metrics"]["recommended"] == 0
    assert sec["summary"].startswith("No defense needed at this confidence")
    assert "CDI does not reject" in sec["summary"] and "0.570" in sec["summary"]  # the largest AUC the CIs allow
    # the same attacks, but dataset inference proves training use: a (weaker) recommendation, CDI as trigger
    proven = dict(quiet, cdi={"kind": "cdi", "status": "ok", "metrics": {"p_value": 1e-4, "alpha": 0.01,
                                                                        "rejected": True, "min_suspect_size": 90}})
    recs = recommend(_facts("pixel-ddpm", PIXEL_RECIPE, proven, sima=CHANCE_GRAY))
    assert recs and {r.priority for r in recs} == {"consider"}
    assert any(t["kind"] == "cdi" for t in recs[0].triggers) and "CDI p = 0.0001" in recs[0].reason
    # an extracted training image is a breach by itself: recommended even at chance-level MIAs
    leaked = dict(quiet, extraction={"kind": "extraction", "status": "ok",
                                     "metrics": {"n_generated": 256, "n_extracted_train_images": 3}})
    recs = _by_id(recommend(_facts("pixel-ddpm", PIXEL_RECIPE, leaked, sima=CHANCE_GRAY)))
    assert recs["distillmd"].priority == "recommended" and "regenerated 3 training images" in recs["distillmd"].reason
    with pytest.raises(Skipped, match="no attack produced a result"):
        section_from_facts(_facts("pixel-ddpm", sima={"status": "failed", "error": "x"}))


def test_recommendation_for_latent_and_text_targets():
    from genleak.report.recommend import KL_WEIGHT_HARDENED, PROMPT_VARIANTS, AuditFacts, recommend

    ldm_recipe = {"config": {"steps": 1250, "block_out_channels": [32, 64], "lr": 1e-3, "batch_size": 32,
                             "ema_decay": 0.995, "beta_schedule": "scaled_linear", "text": False, "extra": {}}}
    latent = recommend(_facts("latent-diffusion", ldm_recipe, sima=LEAKY_GRAY))
    ids = [r.id for r in latent]
    assert ids[0] == "vae-kl" and "prompt-diversification" not in ids
    # DP-SGD trains the audited latent UNet too (defend dpsgd --target)
    assert "--target /runs/base" in _by_id(latent)["dpsgd"].commands[0]
    kl = latent[0]
    assert kl.priority == "recommended" and f"--kl-weight {KL_WEIGHT_HARDENED:g}" in kl.commands[0]
    assert kl.commands[0].startswith("genleak train vae ") and kl.commands[1].startswith("genleak train ldm ")
    assert "--text" not in kl.commands[1]
    assert "0.661" in kl.expected_effect.measured and "did NOT hold" in kl.expected_effect.caveat
    assert "results_latent.md" in kl.expected_effect.source
    for r in latent:
        if r.id in ("distillmd", "dualmd"):  # teachers of the audited folder's architecture
            assert "--target /runs/base" in r.commands[0] and r.priority == "consider"

    text_recipe = {"config": {**ldm_recipe["config"], "text": True, "extra": {"prompt_variants": 0, "vae": "/runs/vae"}}}
    text = _by_id(recommend(_facts("text-to-image-ldm", text_recipe, sima=LEAKY_GRAY, **{"gen-prompt": LEAKY_BLACK})))
    assert {"vae-kl", "prompt-diversification"} <= set(text)
    pd = text["prompt-diversification"]
    assert pd.priority == "recommended" and "gen-prompt" in pd.reason  # a text-guided black-box attack leaked
    assert f"--prompt-variants {PROMPT_VARIANTS}" in pd.commands[0] and "--text" in pd.commands[0]
    assert "--vae /runs/vae" in pd.commands[0] and "0.960 -> 0.712" in pd.expected_effect.measured
    assert "--text" in text["vae-kl"].commands[1]
    # DistillMD was measured on a text-to-image LDM (results_latent.md §2b); DualMD barely helped there
    assert text["distillmd"].priority == "recommended" and "0.373" in text["distillmd"].expected_effect.measured
    assert text["dualmd"].priority == "consider" and "--target /runs/base" in text["dualmd"].commands[0]
    gray_only = _by_id(recommend(_facts("text-to-image-ldm", text_recipe, sima=LEAKY_GRAY)))
    assert gray_only["prompt-diversification"].priority == "consider"  # it does not lower gray-box attacks
    # already hardened: KL 0.1 and 5 rephrasings -> neither is recommended again
    hardened = {"config": {**text_recipe["config"], "extra": {"prompt_variants": PROMPT_VARIANTS}}}
    facts = _facts("text-to-image-ldm", hardened, sima=LEAKY_GRAY)
    facts = AuditFacts(**{**facts.__dict__, "vae_kl_weight": KL_WEIGHT_HARDENED})
    assert not {"vae-kl", "prompt-diversification"} & {r.id for r in recommend(facts)}
    _assert_commands_parse(latent + list(text.values()) + list(gray_only.values()))


def test_recommendation_for_dualmd_and_iar_targets():
    from genleak.report.recommend import recommend

    dual = recommend(_facts("dualmd", PIXEL_RECIPE, sima=LEAKY_GRAY))
    assert [r.id for r in dual] == ["distillmd"]
    assert dual[0].commands[0].startswith("genleak defend distill --teachers /runs/base --out ")
    assert "black-box defense" in dual[0].reason
    iar = recommend(_facts("iar-rar", {}, **{"iar-loss": LEAKY_GRAY}))
    assert [r.id for r in iar] == ["iar-output-noise"] and "--sigma 0,3,10,30" in iar[0].commands[0]
    assert "did NOT reproduce" in iar[0].expected_effect.caveat
    _assert_commands_parse(dual + iar)


def test_a_command_that_does_not_parse_is_reported():
    from genleak.cli.parse import command_problem

    for bad, words in (("genleak defend distill --teacher x --out y", "--teacher"),
                       ("genleak defend distill --out y", "--teachers"),
                       ("genleak defend distill --teachers x --out y --steps many", "--steps"),
                       ("genleak defend", "needs a subcommand"), ("genleak no-such-cmd", "no-such-cmd")):
        problem = command_problem(bad)
        assert problem is not None and words in problem, (bad, problem)


def test_recommendation_schema_is_documented():
    from genleak.report.recommend import section_from_facts

    doc = (ROOT / "docs" / "results-schema.md").read_text()
    sec = section_from_facts(_facts("pixel-ddpm", PIXEL_RECIPE, sima=LEAKY_GRAY, genbox=LEAKY_BLACK))
    keys = set(sec) | set(sec["metrics"]) | set(sec["data"])
    for r in sec["recommendations"]:
        keys |= set(r) | set(r["expected_effect"]) | {r["id"]}
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/results-schema.md does not document {missing}"
    json.dumps(sec, allow_nan=False)  # storable as is
