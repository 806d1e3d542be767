"""The end-to-end experiment of Section 6.4.4 (Table 6.4.1), at genleak's scale, against an API.

Accounts (all created in the state database, all querying through the same request path):

* LEGIT / NONE: a trusted account (policy ``none``) queries the downstream task: the victim's utility.
* LEGIT / B4B: a normal account queries the whole downstream task (train + test) and trains a
  linear probe on what it got back: utility under the defense.
* ATTACK / NONE and ATTACK / B4B: one account queries the broad ``world`` data up to the largest
  budget; for each budget B the attacker trains a stolen copy on the first B answers (the answers
  to a B-query attacker are exactly that prefix) and we probe it on the downstream task.
* SYBIL / B4B: k accounts share one budget; every account first sends the same ``sybil_overlap``
  images, the attacker learns a linear map from account i's space to account 1's on them
  (Section 6.4.3, A.4) and trains one copy on all remapped answers.
* LEGIT and ATTACK / NOISE sigma: the static-noise baseline of Section 6.4.5 (Table A.6.5).

Downstream accuracy is a linear probe on whitened representations: L2-regularised logistic
regression after PCA whitening, which makes the probe exactly invariant to invertible affine maps,
so the LEGIT / B4B row measures what the defense's noise costs, not the probe's sensitivity to a
change of basis. The attacker sees what the API returns and nothing else; coverage and sigma for
the report are read from the state database (the defender's view).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from genleak.b4b import data as bdata
from genleak.b4b.config import B4BConfig, CalibrationConfig, check_disjoint, read_mapping
from genleak.b4b.defense import CostFunction
from genleak.b4b.service import user_status
from genleak.b4b.store import StateStore
from genleak.config import strict_from_dict
from genleak.errors import GenleakError
from genleak.io import atomic_write_json, atomic_write_text


class Client(Protocol):
    def embed(self, images: np.ndarray) -> np.ndarray: ...

    def embed_batch(self, images: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the experiment; defaults are the digits-scale version of Table 6.4.1."""

    seed: int = 0
    world_seed: int | None = None  # the evaluated stealer world's seed; default seed + 1000 (as before)
    budgets: tuple[int, ...] = (5000, 10000)  # single-account stealing budgets (paper: 50k, 100k)
    sybil_accounts: tuple[int, ...] = (2,)  # k accounts sharing sybil_budget (paper: 2..6)
    sybil_budget: int | None = None  # total over all accounts; default: the largest budget
    sybil_overlap: int = 1000  # images every sybil account sends first, to learn the remap (paper: 10k)
    static_sigmas: tuple[float, ...] = (0.03, 0.3)  # static-noise baseline (paper: 0.1 and 10 at SimSiam scale)
    static_budget: int | None = None  # stealing budget for the static baseline; default: the smallest budget
    batch_size: int = 250  # images per API request
    steal_loss: str = "infonce"  # Table 6.4.1 steals with InfoNCE; "mse" also available
    steal_epochs: int = 10
    steal_width: int = 32
    steal_lr: float = 2e-3
    probe_c: float = 0.1

    def __post_init__(self) -> None:
        for name in ("budgets", "sybil_accounts", "static_sigmas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.budgets or min(self.budgets) < 2:
            raise GenleakError("simulation budgets must be a non-empty list of integers >= 2")
        if any(k < 2 for k in self.sybil_accounts):
            raise GenleakError("sybil_accounts are account counts and must be >= 2")
        if self.steal_loss not in ("mse", "infonce"):
            raise GenleakError(f"steal_loss must be 'mse' or 'infonce', got {self.steal_loss!r}")
        for k in self.sybil_accounts:
            if self.sybil_total // k <= self.sybil_overlap:
                raise GenleakError(f"sybil budget {self.sybil_total} over {k} accounts leaves no queries beyond the "
                                   f"overlap of {self.sybil_overlap}; raise sybil_budget or lower sybil_overlap")

    @property
    def stealer_seed(self) -> int:
        return self.seed + 1000 if self.world_seed is None else self.world_seed

    @property
    def evaluated_world_seeds(self) -> tuple[int, ...]:
        """Every ``sample_world`` seed the stealers draw from (single account, sybil overlap and own)."""
        w = self.stealer_seed
        return (w, *(w + 1000 + k for k in self.sybil_accounts),
                *(w + 2000 + 97 * k + i for k in self.sybil_accounts for i in range(k)))

    @property
    def sybil_total(self) -> int:
        return self.sybil_budget or max(self.budgets)

    @property
    def static_total(self) -> int:
        return self.static_budget or min(self.budgets)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimulationConfig:
        return strict_from_dict(cls, d, "simulation config")


def load_simulation_config(path: str | Path | None, **overrides: Any) -> SimulationConfig:
    """The ``simulation:`` section of an experiment file (defaults if absent), with overrides."""
    mapping = read_mapping(path) if path else {}
    d = dict(mapping.get("simulation", {}))
    d.update({k: v for k, v in overrides.items() if v is not None})
    cfg = SimulationConfig.from_dict(d)
    if mapping.get("calibration"):  # the buckets/beta were chosen on a world this run must not evaluate
        check_disjoint(CalibrationConfig.from_dict(dict(mapping["calibration"])), cfg.evaluated_world_seeds)
    return cfg


@dataclass
class Row:
    """One line of the Table 6.4.1-shaped result."""

    user: str
    defense: str
    queries: str
    dataset: str
    type: str
    accuracy: float
    coverage: float | None = None  # per account, the defender's view after the last query
    sigma: float | None = None  # noise scale at that coverage
    accounts: int = 1
    note: str = ""


@dataclass
class SimulationResult:
    rows: list[Row]
    coverage_curves: dict[str, list[tuple[int, float]]]
    config: dict[str, Any]
    defense: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, user: str, defense: str, queries: str | None = None) -> Row:
        for r in self.rows:
            if r.user == user and r.defense == defense and (queries is None or r.queries == queries):
                return r
        raise KeyError((user, defense, queries))

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [dataclasses.asdict(r) for r in self.rows], "coverage_curves": self.coverage_curves,
                "config": self.config, "defense": self.defense, "seconds": round(self.seconds, 1), **self.extra}

    def table(self) -> str:
        """Markdown table in the layout of Table 6.4.1 (plus coverage and sigma columns)."""
        lines = ["| USER | DEFENSE | # QUERIES | DATASET | TYPE | ACC (%) | COVERAGE | FINAL SIGMA |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            cov = "" if r.coverage is None else f"{r.coverage:.3f}"
            sig = "" if r.sigma is None else f"{r.sigma:.3g}"
            lines.append(f"| {r.user} | {r.defense} | {r.queries} | {r.dataset} | {r.type} | {r.accuracy:.2f} | {cov} | {sig} |")
        return "\n".join(lines)


def _fmt_budget(n: int) -> str:
    return f"{n / 1000:g}K" if n >= 1000 else str(n)


class _Accounts:
    """Creates this run's users (unique names, seeds derived from the run seed) and opens clients."""

    def __init__(self, store: StateStore, connect: Callable[[str], Client], seed: int) -> None:
        self.store, self.connect = store, connect
        self.run = f"sim{seed}-{secrets.token_hex(3)}"
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5111]))
        self.names: dict[str, str] = {}

    def open(self, role: str, policy: str = "b4b", sigma: float | None = None) -> Client:
        seed = int(self.rng.integers(0, 2**62))
        name = f"{self.run}-{role}"
        _, key = self.store.create_user(name, policy=policy, static_sigma=sigma, seed=seed)
        self.names[role] = name
        return self.connect(key)

    def status(self, role: str, config: B4BConfig) -> tuple[float, float]:
        st = user_status(self.store.get_user(self.names[role]), config)
        return st.coverage, st.sigma


def run_simulation(store: StateStore, connect: Callable[[str], Client], config: SimulationConfig | None = None,
                   *, progress: bool = True, out_dir: str | Path | None = None,
                   log: Callable[[str], None] | None = None) -> SimulationResult:
    """Run the Table 6.4.1 experiment against the API reachable through ``connect(api_key)``.

    ``store`` is the API's state database (users are created there; coverage is read from there).
    Writes ``results.json`` and ``table.md`` to ``out_dir`` atomically when given.
    """
    from genleak.b4b.stealing import (
        apply_remap,
        cosine_distance,
        fit_remap,
        linear_probe_accuracy,
        train_stolen_encoder,
    )

    cfg = config or SimulationConfig()
    say = log or (lambda _msg: None)
    t0 = time.time()
    defense = store.stored_config()
    if defense is None:
        raise GenleakError(f"state database {store.url} has no B4B config yet; start the server on it first")
    cost = CostFunction(defense.lam, defense.alpha, defense.beta, defense.max_sigma)
    task = bdata.digits_task(seed=cfg.seed)
    n_train = len(task.x_train)
    accounts = _Accounts(store, connect, cfg.seed)
    rows: list[Row] = []
    curves: dict[str, list[tuple[int, float]]] = {}

    def probe(features: np.ndarray) -> float:
        return linear_probe_accuracy(features[:n_train], task.y_train, features[n_train:], task.y_test, c=cfg.probe_c)

    def probe_encoder(enc: Any) -> float:
        return probe(enc.embed(task.x_all))

    def query(client: Client, images: np.ndarray, role: str | None = None) -> np.ndarray:
        """All images through the API, batch by batch; records the coverage curve for ``role``."""
        out = []
        for i in range(0, len(images), cfg.batch_size):
            out.append(client.embed_batch(images[i:i + cfg.batch_size]))
            if role is not None:
                curves.setdefault(role, []).append((i + len(out[-1]), round(accounts.status(role, defense)[0], 5)))
        return np.concatenate(out)

    def steal(images: np.ndarray, answers: np.ndarray, label: str) -> float:
        enc = train_stolen_encoder(images, answers, loss=cfg.steal_loss, epochs=cfg.steal_epochs,  # type: ignore[arg-type]
                                   width=cfg.steal_width, lr=cfg.steal_lr, seed=cfg.seed, progress=progress, label=label)
        return probe_encoder(enc)

    def legit_row(role: str, defense_name: str, policy: str, sigma: float | None = None) -> None:
        c = accounts.open(role, policy, sigma)
        try:
            acc = probe(query(c, task.x_all, role))
        finally:
            c.close()
        cov, sig = accounts.status(role, defense)
        rows.append(Row("LEGIT", defense_name, "ALL", "TASK", "QUERY", acc, cov, sig))
        say(f"LEGIT {defense_name}: {acc:.2f}% (coverage {cov:.3f}, sigma {sig:.3g})")

    # ---- legitimate users: the victim's own utility, then through B4B
    legit_row("victim", "NONE", "none")
    legit_row("legit", "B4B", "b4b")

    # ---- single-account stealing, with and without the defense
    world = bdata.sample_world(max(cfg.budgets), seed=cfg.stealer_seed)
    for defense_name, policy, role in (("NONE", "none", "stealer-none"), ("B4B", "b4b", "stealer")):
        c = accounts.open(role, policy)
        try:
            answers = query(c, world, role)
        finally:
            c.close()
        for b in sorted(cfg.budgets):
            cov = dict(curves[role]).get(b)
            if cov is None:  # budget not on a batch boundary: take the last point at or below it
                cov = max((p for p in curves[role] if p[0] <= b), default=(0, 0.0))[1]
            sig = 0.0 if policy == "none" else cost(cov)  # the sigma of the answer to query b
            acc = steal(world[:b], answers[:b], f"steal {defense_name} {_fmt_budget(b)}")
            rows.append(Row("ATTACK", defense_name, _fmt_budget(b), "WORLD", "STEAL", acc, cov, sig))
            say(f"ATTACK {defense_name} {b}: {acc:.2f}% (coverage {cov:.3f})")

    # ---- sybil attacks: k accounts, shared overlap for the remapping
    for k in cfg.sybil_accounts:
        per = cfg.sybil_total // k
        overlap = bdata.sample_world(cfg.sybil_overlap, seed=cfg.stealer_seed + 1000 + k)
        own = [bdata.sample_world(per - cfg.sybil_overlap, seed=cfg.stealer_seed + 2000 + 97 * k + i) for i in range(k)]
        answers_overlap, answers_own, covs, sigs = [], [], [], []
        for i in range(k):
            role = f"sybil{k}-{i}"
            c = accounts.open(role, "b4b")
            try:
                answers_overlap.append(query(c, overlap))
                answers_own.append(query(c, own[i]))
            finally:
                c.close()
            cov, sig = accounts.status(role, defense)
            covs.append(cov)
            sigs.append(sig)
        xs, ys = [overlap, own[0]], [answers_overlap[0], answers_own[0]]
        remap_cos = []
        for i in range(1, k):
            m = fit_remap(answers_overlap[i], answers_overlap[0])
            xs.append(own[i])
            ys.append(apply_remap(m, answers_own[i]))
            remap_cos.append(float(cosine_distance(apply_remap(m, answers_overlap[i]), answers_overlap[0]).mean()))
        acc = steal(np.concatenate(xs), np.concatenate(ys), f"steal SYBIL {k}x")
        rows.append(Row("SYBIL", "B4B", f"{k} x {_fmt_budget(per)}", "WORLD", "STEAL", acc, float(np.mean(covs)),
                        float(np.mean(sigs)), accounts=k,
                        note=f"overlap {cfg.sybil_overlap}; mean remap cosine distance {np.mean(remap_cos):.3f}"))
        say(f"SYBIL {k}x{per}: {acc:.2f}% (mean coverage {np.mean(covs):.3f})")

    # ---- static-noise baseline (Section 6.4.5)
    for s in cfg.static_sigmas:
        legit_row(f"static{s:g}-legit", f"NOISE s={s:g}", "static", s)
        role = f"static{s:g}-stealer"
        c = accounts.open(role, "static", s)
        try:
            answers = query(c, world[:cfg.static_total])
        finally:
            c.close()
        acc = steal(world[:cfg.static_total], answers, f"steal NOISE {s:g}")
        rows.append(Row("ATTACK", f"NOISE s={s:g}", _fmt_budget(cfg.static_total), "WORLD", "STEAL", acc, None, s))
        say(f"ATTACK NOISE {s:g}: {acc:.2f}%")

    # ---- reference: the stealer's architecture untrained (what "no information" is worth)
    import torch

    from genleak.b4b.encoder import Encoder, SmallConvEncoder

    torch.manual_seed(cfg.seed)
    rand = Encoder(SmallConvEncoder(1, cfg.steal_width, 64), task.x_all.shape[1:], name="random-init")
    rows.append(Row("REFERENCE", "-", "0", "-", "RANDOM INIT", probe_encoder(rand)))

    result = SimulationResult(rows, curves, dataclasses.asdict(cfg), defense.to_dict(), time.time() - t0,
                              extra={"run": accounts.run, "users": accounts.names})
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_json(out / "results.json", result.to_dict())
        atomic_write_text(out / "table.md", result.table() + "\n")
    return result
