"""The typed results of a run: attacks, sections (CDI's among them) and the audit, as ``results.json`` holds them,
and a CDI result (``CDIResult``, with its minimum-|P| curve of ``CurvePoint``) as ``cdi.json`` holds it.

Everything that writes or reads ``results.json`` goes through ``AuditResult.to_json`` / ``from_json``
(``genleak.report.results`` adds the file, the plot and the folder). The on-disk schema is
``format: genleak.results``, ``version: 1`` (docs/results-schema.md): typing the results changed no
key, so every version-1 file loads, also one from before an optional key existed (the two-sided
metrics, ``bootstrap``, ...): such a key is None ("not recorded") and stays out of ``to_json``,
never a guessed value. Any other version, a foreign format or a damaged structure is refused with
one line. ``from_json(d).to_json() == d`` for a valid ``d``: keys this module does not know (an
optional key a newer writer added) are kept, never dropped. ``cdi.json`` is ``format: genleak.cdi``,
``version: 1``, checked the same way (``CDIResult.from_json(d).to_json() == d``).
"""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from genleak._version import __version__
from genleak.errors import GenleakError
from genleak.io import jsonable
from genleak.metrics import MetricReport

RESULTS_FORMAT = "genleak.results"
RESULTS_VERSION = 1
RESULTS_FILE = "results.json"
CDI_FORMAT = "genleak.cdi"
CDI_VERSION = 1
CDI_FILE = "cdi.json"
ATTACK_STATUSES = ("ok", "failed")
SECTION_STATUSES = ("ok", "failed", "skipped")
# Keys renderers read from every ok attack's metrics; older version-1 files hold at least these.
REQUIRED_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "tpr_at_0_fpr", "asr", "n_members", "n_nonmembers")
_METRIC_FIELDS = tuple(f.name for f in fields(MetricReport))


class RunFailed(GenleakError):
    """Every attack of a run failed: nothing is written and the command exits 1 (not a usage error)."""

    exit_code = 1


def scores_sha256(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> str:
    """sha256 of the saved score arrays (dtype, shape and bytes): results.json names the exact scores
    its metrics came from, so an edited ``scores/*.npz`` is caught even where no metric moves."""
    h = hashlib.sha256()
    for a in (member_scores, nonmember_scores):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def machine_info() -> dict[str, Any]:
    import torch  # only a run that just scored (torch loaded) builds a fresh result

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }


def _damaged(where: str, msg: str) -> GenleakError:
    return GenleakError(f"'{where}' is damaged: {msg}")


def _check_format(data: Any, where: str, fmt: str, version: int, kind: str, rewrite: str) -> None:
    """One GenleakError line unless ``data`` is a ``fmt`` document of ``version`` (``kind``: results, CDI)."""
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else None
        raise GenleakError(f"'{where}' is not a genleak {kind} file (format={found!r})")
    got = data.get("version")
    if got is None:
        raise GenleakError(f"'{where}' has no {kind} schema version; this genleak reads version {version}")
    if got != version:
        hint = ("it was written by a newer genleak: upgrade genleak" if isinstance(got, int) and got > version
                else rewrite)
        raise GenleakError(f"'{where}' has {kind} schema version {got}; genleak {__version__} reads only "
                           f"version {version} ({hint})")


def metric_report_from_json(d: dict[str, Any]) -> MetricReport:
    """``MetricReport.to_dict``'s inverse (CIs back to tuples). A field the file does not record (the
    two-sided ones, added within version 1) is None: "not recorded", never a guessed number."""
    return MetricReport(**{k: tuple(d[k]) if k.endswith("_ci") and d.get(k) is not None else d.get(k)
                           for k in _METRIC_FIELDS})


@dataclass
class AttackResult:
    """One attack's outcome on one split: scores, metrics, cost; or the error that stopped it.

    A result read back from ``results.json`` has no score arrays, only their ``scores_sha256``;
    ``metrics_extra`` holds the metrics keys beyond ``MetricReport`` (the audit's extra CIs and
    simultaneous bounds); ``metrics_absent`` the optional ones an older file does not record, which
    ``to_json`` leaves out again."""

    name: str
    description: dict[str, Any]
    member_scores: np.ndarray | None = None
    nonmember_scores: np.ndarray | None = None
    metrics: MetricReport | None = None
    asr_calibrated: float | None = None
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    scores_sha256: str | None = None
    metrics_extra: dict[str, Any] = field(default_factory=dict)
    metrics_absent: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **self.description,
            "status": "ok" if self.ok else "failed",
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }
        if self.member_scores is not None and self.nonmember_scores is not None:
            d["scores_sha256"] = scores_sha256(self.member_scores, self.nonmember_scores)
        elif self.scores_sha256 is not None:
            d["scores_sha256"] = self.scores_sha256
        if self.metrics is not None:
            m = {**self.metrics.to_dict(), "asr_calibrated": self.asr_calibrated, **self.metrics_extra}
            d["metrics"] = {k: v for k, v in m.items() if k not in self.metrics_absent}
        if self.error is not None:
            d["error"] = self.error
        return d

    to_dict = to_json  # the name callers used before results were typed

    @classmethod
    def from_json(cls, name: str, d: Any, where: str = RESULTS_FILE) -> AttackResult:
        if not isinstance(d, dict):
            raise _damaged(where, f"attacks.{name} is not an object")
        status = d.get("status")
        if status not in ATTACK_STATUSES:
            raise _damaged(where, f"attacks.{name}.status is {status!r}, expected one of {list(ATTACK_STATUSES)}")
        if status == "failed" and not isinstance(d.get("error"), str):
            raise _damaged(where, f"attacks.{name} failed but records no error")
        metrics, extra, asr_cal, absent = None, {}, None, ()
        if status == "ok":
            m = d.get("metrics")
            if not isinstance(m, dict):
                raise _damaged(where, f"attacks.{name}.status is 'ok' but it has no metrics")
            missing = [k for k in REQUIRED_METRICS if not isinstance(m.get(k), int | float)]
            if missing:
                raise _damaged(where, f"attacks.{name}.metrics lacks {missing}")
            metrics, asr_cal = metric_report_from_json(m), m.get("asr_calibrated")
            absent = tuple(k for k in (*_METRIC_FIELDS, "asr_calibrated") if k not in m)
            extra = {k: v for k, v in m.items() if k not in _METRIC_FIELDS and k != "asr_calibrated"}
        own = {"status", "seconds", "warnings", "scores_sha256", "metrics", "error"}
        return cls(name=name, description={k: v for k, v in d.items() if k not in own}, metrics=metrics,
                   asr_calibrated=asr_cal, seconds=float(d.get("seconds") or 0.0),
                   error=d.get("error") if status == "failed" else None, warnings=list(d.get("warnings") or []),
                   scores_sha256=d.get("scores_sha256"), metrics_extra=extra, metrics_absent=absent)


@dataclass
class SectionResult:
    """One audit section as ``results.json["sections"][name]`` holds it (docs/results-schema.md):
    ``ok`` with summary / warnings / metrics / data, ``skipped`` with a reason, ``failed`` with an
    error. ``extra`` keeps the optional renderable keys (``curve``, ``images``, ``recommendations``)."""

    status: str
    title: str | None = ""
    kind: str | None = "other"
    summary: str | None = None
    warnings: list[str] | None = None
    metrics: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    reason: str | None = None
    error: str | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("status", "title", "kind", "summary", "warnings", "metrics", "data", "reason", "error", "seconds")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: v for k, v in (("title", self.title), ("kind", self.kind)) if v is not None}
        d.update({**self.extra, "status": self.status})
        for k in ("summary", "warnings", "metrics", "data", "reason", "error", "seconds"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_json(cls, name: str, d: Any, where: str = RESULTS_FILE) -> SectionResult:
        if not isinstance(d, dict) or d.get("status") not in SECTION_STATUSES:
            raise _damaged(where, f"sections.{name} needs a status of 'ok', 'failed' or 'skipped'")
        for k, kind in (("warnings", list), ("metrics", dict), ("data", dict)):
            if d.get(k) is not None and not isinstance(d[k], kind):
                raise _damaged(where, f"sections.{name}.{k} is not a {kind.__name__}")
        return cls(status=d["status"], title=d.get("title"), kind=d.get("kind"),
                   summary=d.get("summary"), warnings=d.get("warnings"), metrics=d.get("metrics"),
                   data=d.get("data"), reason=d.get("reason"), error=d.get("error"), seconds=d.get("seconds"),
                   extra={k: v for k, v in d.items() if k not in cls._KEYS})


@dataclass(frozen=True)
class CDIOutcome:
    """The CDI section's ``metrics`` (thesis ch. 8): the decision the defense recommendation reads."""

    p_value: float
    alpha: float
    rejected: bool
    min_suspect_size: int | None = None
    n_suspect: int | None = None
    n_reference: int | None = None
    scorer_auc: float | None = None
    power_at_alpha: float | None = None
    access: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, m: dict[str, Any]) -> CDIOutcome | None:
        """None when ``m`` records no p-value and alpha; ``rejected`` defaults to p < alpha.
        ``suspect_size`` is the name sections written before this class used for ``n_suspect``."""
        p, alpha = m.get("p_value"), m.get("alpha")
        if not isinstance(p, int | float) or not isinstance(alpha, int | float):
            return None
        rejected = m.get("rejected")
        return cls(p_value=float(p), alpha=float(alpha), rejected=bool(p < alpha if rejected is None else rejected),
                   min_suspect_size=m.get("min_suspect_size"), n_suspect=m.get("n_suspect") or m.get("suspect_size"),
                   n_reference=m.get("n_reference"), scorer_auc=m.get("scorer_auc"),
                   power_at_alpha=m.get("power_at_alpha"), access=m.get("access"))


@dataclass
class AuditResult:
    """Everything ``results.json`` holds: provenance, the split, one entry per attack and, for an
    audit, its settings, inputs, sections and verdict (``verdict`` is ``report.verdict``'s dict).
    ``extra`` keeps the other optional top-level keys (``inputs``, ``calibration``, a newer writer's)."""

    target: dict[str, Any]
    split: dict[str, Any]
    attacks: list[AttackResult]
    seed: int
    command: str | None = ""
    bootstrap: int | None = 0
    settings: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    split_check: dict[str, Any] | None = None
    sections: dict[str, SectionResult] | None = None
    verdict: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # provenance: None = not recorded (a file from before the key existed), left out by to_json
    genleak_version: str | None = __version__
    created: str | None = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    machine: dict[str, Any] | None = field(default_factory=machine_info)

    _OPTIONAL = ("settings", "audit", "split_check", "sections", "verdict")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "genleak_version": self.genleak_version,
            "created": self.created, "command": self.command, "machine": self.machine, "seed": self.seed,
            "bootstrap": self.bootstrap, "target": self.target, "split": self.split,
            "attacks": {a.name: a.to_json() for a in self.attacks},
        }
        d = {k: v for k, v in d.items() if v is not None}
        for k, v in self.extra.items():
            d.setdefault(k, v)
        for k in self._OPTIONAL:
            v = getattr(self, k)
            if v is not None:
                d[k] = {n: s.to_json() for n, s in v.items()} if k == "sections" else v
        return d

    to_dict = to_json  # the name callers used before results were typed

    @classmethod
    def from_json(cls, data: Any, where: str = RESULTS_FILE) -> AuditResult:
        """Check the format, the version and the structure readers rely on; one GenleakError line if not."""
        _check_format(data, where, RESULTS_FORMAT, RESULTS_VERSION, "results",
                      "rerun `genleak attack` or `genleak audit` to rewrite it")
        for key, kind in (("target", dict), ("split", dict), ("attacks", dict), ("seed", int)):
            if not isinstance(data.get(key), kind):
                raise _damaged(where, f"'{key}' is missing or not a {kind.__name__}")
        for key in ("name", "fingerprint", "n_members", "n_nonmembers"):
            if key not in data["split"]:
                raise _damaged(where, f"split.{key} is missing")
        sections = data.get("sections")
        if sections is not None and not isinstance(sections, dict):
            raise _damaged(where, "'sections' is not an object")
        core = {"format", "version", "genleak_version", "created", "command", "machine", "seed", "bootstrap",
                "target", "split", "attacks", *cls._OPTIONAL}
        return cls(
            target=data["target"], split=data["split"], seed=data["seed"],
            attacks=[AttackResult.from_json(n, a, where) for n, a in data["attacks"].items()],
            command=data.get("command"), bootstrap=data.get("bootstrap"),
            settings=data.get("settings"), audit=data.get("audit"), split_check=data.get("split_check"),
            sections=None if sections is None else {n: SectionResult.from_json(n, s, where) for n, s in sections.items()},
            verdict=data.get("verdict"), extra={k: v for k, v in data.items() if k not in core},
            genleak_version=data.get("genleak_version"), created=data.get("created"), machine=data.get("machine"),
        )

    def attack(self, name: str) -> AttackResult:
        for a in self.attacks:
            if a.name == name:
                return a
        raise KeyError(f"no attack '{name}' in this result")

    def metric(self, attack: str, name: str = "auc") -> float:
        a = self.attack(attack)
        if a.metrics is None:
            raise KeyError(f"no successful result for attack '{attack}'")
        return float(getattr(a.metrics, name))

    def cdi(self) -> CDIOutcome | None:
        """The first ok CDI section's outcome, if the audit ran one."""
        for sec in (self.sections or {}).values():
            if sec.kind == "cdi" and sec.status == "ok":
                return CDIOutcome.from_json(sec.metrics or {})
        return None


@dataclass(frozen=True)
class CurvePoint:
    """Aggregates over the resamples at one suspect-set size."""

    n_suspect: int
    n_reference: int
    mean_p: float  # arithmetic mean of the p-values (supplement C.5): the reported figure
    median_p: float
    p_ci: tuple[float, float]  # 2.5% / 97.5% quantiles of the per-resample p-values
    reject_rate: float  # fraction of resamples with p < alpha: the test's empirical power
    power: float  # analytic power at alpha from Cohen's d of the full score sets (supplement C.17)
    set_mia_tpr: float  # set-level MIA baseline (max score per set) TPR@1%FPR (ch. 8.5.2)
    resamples: int | None = None  # resamples used at this size (the refitted curve: stats_refit.resamples_at)
    mean_p_one_sided: float | None = None  # refitted curve: both sidednesses (mean_p is the configured one)
    mean_p_two_sided: float | None = None

    @classmethod
    def from_pvalues(cls, n: int, m: int, pv: np.ndarray, alpha: float, power: float, max_p: np.ndarray,
                     max_u: np.ndarray, **extra: float | int) -> CurvePoint:
        """The point for the per-resample p-values ``pv`` and set maxima ``max_p`` / ``max_u`` at size n."""
        from genleak.metrics import tpr_at_fpr

        lo, hi = np.quantile(pv, [0.025, 0.975])
        return cls(n_suspect=n, n_reference=m, mean_p=float(pv.mean()), median_p=float(np.median(pv)),
                   p_ci=(float(lo), float(hi)), reject_rate=float((pv < alpha).mean()), power=power,
                   set_mia_tpr=tpr_at_fpr(max_p, max_u, 0.01), **extra)

    def to_json(self) -> dict[str, float | int | list[float]]:
        extra = {k: getattr(self, k) for k in ("resamples", "mean_p_one_sided", "mean_p_two_sided")
                 if getattr(self, k) is not None}
        return {
            "n_suspect": self.n_suspect,
            "n_reference": self.n_reference,
            "mean_p": self.mean_p,
            "median_p": self.median_p,
            "p_ci": [self.p_ci[0], self.p_ci[1]],
            "reject_rate": self.reject_rate,
            "power": self.power,
            "set_mia_tpr_at_1pct_fpr": self.set_mia_tpr,
        } | extra

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CurvePoint:
        return cls(n_suspect=d["n_suspect"], n_reference=d["n_reference"], mean_p=d["mean_p"], median_p=d["median_p"],
                   p_ci=(d["p_ci"][0], d["p_ci"][1]), reject_rate=d["reject_rate"], power=d["power"],
                   set_mia_tpr=d["set_mia_tpr_at_1pct_fpr"], resamples=d.get("resamples"),
                   mean_p_one_sided=d.get("mean_p_one_sided"), mean_p_two_sided=d.get("mean_p_two_sided"))


@dataclass
class CDIResult:
    """A CDI verdict with the numbers behind it: what ``cdi.json`` holds (``to_json`` / ``from_json``;
    one read back has no score or feature arrays: they live in ``scores.npz``)."""

    rejected: bool
    verdict: str
    alpha: float
    alternative: str
    p_value: float  # the verdict's p-value (p_method)
    p_method: str
    p_value_welch: float  # parametric Welch p on the pooled out-of-fold scores (the thesis' figure)
    permutation: dict[str, float] | None
    t_statistic: float
    df: float
    n_suspect: int
    n_reference: int
    features: list[str]
    columns: list[str]
    access: str
    scorer_auc: float
    single_features: dict[str, dict[str, float]]
    best_single: tuple[str, float]
    coefficients: dict[str, tuple[float, float]]
    cohens_d: float
    power: float
    curve: list[CurvePoint]  # the headline curve: refitted scorer unless curve_method == "fixed"
    min_suspect_size: int | None
    curve_method: str = "refit"
    fixed_curve: list[CurvePoint] = field(default_factory=list)  # fixed-scorer view (overstates power at small n)
    min_suspect_size_fixed: int | None = None
    p_values: dict[str, dict[str, float] | None] = field(default_factory=dict)  # {"welch"|"permutation": {one/two-sided}}
    shift_detected: bool = False
    guards: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    scores_p: np.ndarray | None = None
    scores_u: np.ndarray | None = None
    features_p: np.ndarray | None = None  # the scorer's inputs, saved so `genleak verify` can refit and re-test
    features_u: np.ndarray | None = None
    genleak_version: str | None = __version__

    @property
    def min_suspect_size_refit(self) -> int | None:
        return self.min_suspect_size if self.curve_method == "refit" else None

    @property
    def t_sign(self) -> str:
        return "+" if self.t_statistic > 0 else ("-" if self.t_statistic < 0 else "0")

    def to_json(self) -> dict[str, Any]:
        one_sided = self.alternative == "greater"
        return jsonable(  # an infinite t statistic stays ordered: +-1e308
            {
                "format": CDI_FORMAT,
                "version": CDI_VERSION,
                "genleak_version": self.genleak_version,
                "verdict": self.verdict,
                "rejected": self.rejected,
                "alpha": self.alpha,
                "test": "Welch's t-test, "
                + ("one-sided (H0: mean score(P) <= mean score(U))" if one_sided else "two-sided (H0: mean score(P) == mean score(U))"),
                "alternative": self.alternative,
                "p_value": self.p_value,
                "p_method": self.p_method,
                "p_value_welch": self.p_value_welch,
                "p_values": {
                    **self.p_values,
                    "verdict_uses": f"{self.p_method}, {'one' if one_sided else 'two'}-sided",
                    "note": "thesis ch. 8.4.3: one-sided Welch (H1: mean score(P) > mean score(U)); the authors' code "
                    "(CDI and IAR evaluate.py get_p_value: scipy ttest_ind, equal_var=False) computes two-sided",
                },
                "permutation": self.permutation,
                "t_statistic": self.t_statistic,
                "t_sign": self.t_sign,
                "df": self.df,
                "n_suspect": self.n_suspect,
                "n_reference": self.n_reference,
                "features": self.features,
                "columns": self.columns,
                "access": self.access,
                "scorer": {
                    "model": "StandardScaler + LogisticRegression (logit), k-fold out-of-fold",
                    "auc_out_of_fold": self.scorer_auc,
                    "coefficients": {c: {"mean": m, "std": s} for c, (m, s) in self.coefficients.items()},
                },
                "single_features": self.single_features,
                "best_single_feature": {"column": self.best_single[0], "auc": self.best_single[1]},
                "power": {
                    "cohens_d": self.cohens_d,
                    "power_at_alpha": self.power,
                    "note": "power of the t-test at alpha = the dataset test's TPR@FPR=alpha (supplement C.17)",
                },
                "min_p_curve": _curve_dict(self.curve, self.min_suspect_size, self.curve_method),
                "fixed_scorer_curve": None
                if self.curve_method == "fixed"
                else _curve_dict(self.fixed_curve, self.min_suspect_size_fixed, "fixed"),
                "shift_detected": self.shift_detected,
                "guards": self.guards,
                "warnings": self.warnings,
                "provenance": self.provenance,
            },
            inf=1e308,
        )

    @classmethod
    def from_json(cls, d: Any, where: str = CDI_FILE) -> CDIResult:
        """Check the format and version of a ``cdi.json`` document and read it back; one GenleakError line if not."""
        _check_format(d, where, CDI_FORMAT, CDI_VERSION, "CDI", "rerun `genleak infer` to rewrite it")
        try:
            curve, fixed, scorer, power = d["min_p_curve"], d["fixed_scorer_curve"], d["scorer"], d["power"]
            return cls(
                rejected=bool(d["rejected"]), verdict=d["verdict"], alpha=d["alpha"], alternative=d["alternative"],
                p_value=d["p_value"], p_method=d["p_method"], p_value_welch=d["p_value_welch"],
                permutation=d["permutation"], t_statistic=d["t_statistic"], df=d["df"], n_suspect=d["n_suspect"],
                n_reference=d["n_reference"], features=d["features"], columns=d["columns"], access=d["access"],
                scorer_auc=scorer["auc_out_of_fold"], single_features=d["single_features"],
                best_single=(d["best_single_feature"]["column"], d["best_single_feature"]["auc"]),
                coefficients={c: (v["mean"], v["std"]) for c, v in scorer["coefficients"].items()},
                cohens_d=power["cohens_d"], power=power["power_at_alpha"],
                curve=[CurvePoint.from_json(p) for p in curve["points"]], min_suspect_size=curve["min_suspect_size"],
                curve_method="fixed" if curve["scorer"] == "fixed" else "refit",
                fixed_curve=[] if fixed is None else [CurvePoint.from_json(p) for p in fixed["points"]],
                min_suspect_size_fixed=None if fixed is None else fixed["min_suspect_size"],
                p_values={k: v for k, v in d["p_values"].items() if k in ("welch", "permutation")},
                shift_detected=bool(d["shift_detected"]), guards=d["guards"], warnings=list(d["warnings"]),
                provenance=d["provenance"], genleak_version=d.get("genleak_version"),
            )
        except (KeyError, TypeError, IndexError, AttributeError) as err:
            raise _damaged(where, f"{type(err).__name__}: {err}") from None


_CURVE_METHOD = {
    "refit": "REFITTED SCORER (supplement C.5, authors' cdi_perf.py): for every size and resample the k-fold "
    "StandardScaler + LogisticRegression is refitted on that subset alone; independent subsets per size; mean "
    "p-value over resamples",
    "fixed": "FIXED-SCORER VIEW: out-of-fold scores of one k-fold scorer fitted on all of P and U, subsampled "
    "(nested across sizes); the scorer saw more data than an owner holding n samples, so this view "
    "overstates power (and understates the minimum |P|) at small n",
}


def _curve_dict(points: Sequence[CurvePoint], min_size: int | None, method: str) -> dict[str, Any]:
    counts = sorted({p.resamples for p in points if p.resamples is not None})
    return {
        "scorer": "refitted" if method == "refit" else "fixed",
        "method": _CURVE_METHOD[method],
        "resamples": counts[-1] if counts else None,
        "resamples_min": counts[0] if counts else None,
        "resamples_note": None if len(counts) < 2 else f"{counts[0]}-{counts[-1]} resamples per size: a size stops "
        "after a multiple of 200 once its mean p is > 4 standard errors from alpha (its side of alpha settled), and "
        "each size is capped at refit_budget rows of (|P| + |U|) per resample (stats_refit)",
        "points": [p.to_json() for p in points],
        "min_suspect_size": min_size,
    }
