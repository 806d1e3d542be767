"""B4B defense parameters: every knob of the three building blocks, defaults from the thesis.

The defaults are the end-to-end setting of Section 6.4.4 / Table 6.4.1 (2^12 buckets, lambda = 1e-6,
alpha = 1, beta = 0.8, a random affine map per user). Section 6.4.1 and supplement A.6.6 show that the
bucket count has to be calibrated to the encoder and the query scale; ``configs/b4b_digits.yaml``
holds the calibration for genleak's tiny built-in world (see docs/b4b.md).

A config is a flat mapping, read from YAML, JSON or TOML. The state database stores the config it was
created with, because every user's bucket bitset only means something under the same hyperplanes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genleak._extras import needs_extra
from genleak.config import strict_from_dict
from genleak.errors import GenleakError

TRANSFORM_KINDS: tuple[str, ...] = ("affine", "pad", "add", "shuffle", "binary")
POLICIES: tuple[str, ...] = ("b4b", "none", "static")


@dataclass(frozen=True)
class B4BConfig:
    """Parameters of B4B's coverage estimate, cost function and per-user transformations."""

    # Building block 1, coverage (Section 6.3.2): LSH by random projections, one bit per hyperplane,
    # so 2**n_hyperplanes buckets. 2^12 is the paper's calibrated choice (Section 6.4.1, A.6.6).
    n_hyperplanes: int = 12
    lsh_seed: int = 0
    # Building block 2, cost (Eq. 6.1, Section 6.3.3): sigma = lam * (exp(ln(alpha/lam) * c / beta) - 1).
    # lam = 1e-6, alpha = 1, beta = 0.8 are the values of Section 6.4.2 used in Table 6.4.1.
    lam: float = 1e-6
    alpha: float = 1.0
    beta: float = 0.8
    # Optional ceiling on sigma (not in the paper; None keeps Eq. 6.1 unbounded).
    max_sigma: float | None = None
    # Building block 3 (Section 6.3.4): transformations applied in this order, drawn per user.
    # The end-to-end evaluation (Section 6.4.4) uses a random affine map per account.
    transforms: tuple[str, ...] = ("affine",)
    affine_scale: tuple[float, float] = (0.5, 2.0)  # singular values of the affine map, log-uniform
    pad_dims: int = 8  # "Pad": constants appended
    add_dims: int = 8  # "Add": constants inserted at random positions
    binary_factor: int = 4  # "Binary": output bits = binary_factor * input dims (Section 6.3.4)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "affine_scale", tuple(float(s) for s in self.affine_scale))
        self.validate()

    @property
    def n_buckets(self) -> int:
        return 2 ** self.n_hyperplanes

    def validate(self) -> None:
        """Raise GenleakError naming the first bad field."""
        if not 1 <= self.n_hyperplanes <= 24:
            raise GenleakError(f"n_hyperplanes must be in 1..24 (2^n buckets), got {self.n_hyperplanes}")
        if not (0 < self.lam < self.alpha) or not math.isfinite(self.alpha):
            raise GenleakError(f"cost function needs 0 < lam < alpha (finite), got lam={self.lam}, alpha={self.alpha}")
        if not 0 < self.beta <= 1:
            raise GenleakError(f"beta is a bucket fraction in (0, 1], got {self.beta}")
        if self.max_sigma is not None and not 0 <= self.max_sigma < math.inf:
            raise GenleakError(f"max_sigma must be a finite number >= 0 or null, got {self.max_sigma}")
        bad = [t for t in self.transforms if t not in TRANSFORM_KINDS]
        if bad:
            raise GenleakError(f"unknown transform(s) {bad}; choose from {TRANSFORM_KINDS}")
        lo, hi = self.affine_scale
        if not 0 < lo <= hi:
            raise GenleakError(f"affine_scale must be (low, high) with 0 < low <= high, got {self.affine_scale}")
        if self.pad_dims < 0 or self.add_dims < 0 or self.binary_factor < 1:
            raise GenleakError("pad_dims and add_dims must be >= 0 and binary_factor >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["transforms"] = list(self.transforms)
        d["affine_scale"] = list(self.affine_scale)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> B4BConfig:
        return strict_from_dict(cls, d, "B4B config")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML / JSON / TOML file into a dict, with a one-line error for a missing or bad file."""
    p = Path(path)
    if not p.is_file():
        raise GenleakError(f"config file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            with needs_extra("serve"):
                import yaml

            data = yaml.safe_load(text)
        elif p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as err:  # parsers raise their own error types; the message is what matters
        raise GenleakError(f"cannot parse config {p}: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GenleakError(f"config {p} must hold a mapping at top level")
    return data


def load_config(path: str | Path | None) -> B4BConfig:
    """The B4B config in ``path`` (its ``defense:`` section if there is one), or the paper defaults."""
    if path is None:
        return B4BConfig()
    data = read_mapping(path)
    return B4BConfig.from_dict(data.get("defense", data))


def config_diff(a: B4BConfig, b: B4BConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two configs (for the 'database was created with' error)."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da[k], db[k]) for k in da if da[k] != db[k]}


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``calibration:`` section of an experiment file."""

    world_seed: int = 7  # seed of the calibration world: never one the simulation draws its stealers from
    budget: int = 5000  # stealer queries per account at which coverage is measured
    hyperplanes: tuple[int, ...] = (8, 9, 10, 11, 12, 13, 14)  # candidate bucket counts 2^n
    task_seed: int = 0  # jitter seed of the legitimate task (digits_task)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyperplanes", tuple(int(n) for n in self.hyperplanes))
        if self.budget < 1 or not self.hyperplanes or not all(1 <= n <= 24 for n in self.hyperplanes):
            raise GenleakError("calibration needs budget >= 1 and hyperplanes in 1..24")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationConfig:
        return strict_from_dict(cls, d, "calibration config")


def check_disjoint(cal: CalibrationConfig, evaluated_seeds: Sequence[int]) -> None:
    """One-line refusal when the calibration world would be one the simulation evaluates."""
    if cal.world_seed in set(evaluated_seeds):
        raise GenleakError(f"calibration.world_seed {cal.world_seed} is a seed the simulation draws its stealer "
                           f"world from ({sorted(set(evaluated_seeds))}); choose another one")
