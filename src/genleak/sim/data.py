"""Data for the simulation benchmarks: the ch. 4 synthetic 2-D set and a ZDC-like response simulator.

Both produce a :class:`SimData`: raw condition vectors, raw responses (2-D points or photon-count
images), a group id per *unique condition* (f_div is computed per group, thesis eq. 4.3) and a
train/test mask. docs/sim.md documents every choice the thesis leaves open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from genleak.errors import GenleakError
from genleak.io import atomic_save_npz

KINDS = ("synthetic", "zdc-neutron", "zdc-proton")
COND_NAMES = ("energy", "mass", "charge", "vx", "vy", "vz", "px", "py", "pz")  # ch. 5.3 order

# --- ch. 4.4.1 synthetic benchmark -------------------------------------------------------------
# Variance 1 (spread False) and 100 (spread True) are the thesis' (Fig. 4.4.1). Left open there: the
# centres, the counts and the split. Centres on a 3x3 grid 50 apart: 5 sigma of the wide clusters, so
# neighbouring spread-True clusters overlap by < 1% of their mass.
CENTRE_SPACING = 50.0
SPREAD_STD = (1.0, 10.0)


@dataclass
class SimData:
    kind: str
    cond: np.ndarray  # (N, d) float32, raw units
    x: np.ndarray  # (N, 2) points or (N, H, W) photon counts, float32
    group: np.ndarray  # (N,) int64: samples with equal conditions share a group
    train: np.ndarray  # (N,) bool
    seed: int = 0

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 3

    def part(self, train: bool) -> SimData:
        m = self.train if train else ~self.train
        return SimData(self.kind, self.cond[m], self.x[m], self.group[m], self.train[m], self.seed)

    def save(self, path: str | Path) -> Path:
        return atomic_save_npz(path, cond=self.cond, x=self.x, group=self.group, train=self.train,
                               meta=np.array(json.dumps({"kind": self.kind, "seed": self.seed})))

    @classmethod
    def load(cls, path: str | Path) -> SimData:
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                return cls(meta["kind"], z["cond"], z["x"], z["group"], z["train"], int(meta["seed"]))
        except (OSError, KeyError, ValueError) as err:
            raise GenleakError(f"{path}: not a `genleak sim data` file ({err})") from None


def synthetic_2d(n_per_cell: int = 1000, seed: int = 0, test_fraction: float = 0.2) -> SimData:
    """Nine classes x spread {0, 1}, ``n_per_cell`` points each; condition = one-hot class + spread.

    The split is per (class, spread) cell, ``test_fraction`` of each cell at random (the thesis' ch. 5
    80:20), so every condition appears in train and test (there are only 18 conditions).
    """
    if n_per_cell < 5 or not 0 < test_fraction < 1:
        raise GenleakError("synthetic data needs --n >= 5 points per cell and 0 < test fraction < 1")
    rng = np.random.default_rng(seed)
    cls, spread = np.divmod(np.repeat(np.arange(18), n_per_cell), 2)
    centres = CENTRE_SPACING * np.stack([cls % 3 - 1, cls // 3 - 1], 1)
    x = centres + rng.normal(size=(len(cls), 2)) * np.take(SPREAD_STD, spread)[:, None]
    cond = np.concatenate([np.eye(9)[cls], spread[:, None]], 1)
    train = np.zeros(len(cls), bool)
    n_test = max(1, round(test_fraction * n_per_cell))
    for g in range(18):
        idx = np.flatnonzero(cls * 2 + spread == g)
        train[rng.permutation(idx)[n_test:]] = True
    return SimData("synthetic", cond.astype(np.float32), x.astype(np.float32), cls * 2 + spread, train, seed)


def synthetic_labels(cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class 0..8, spread 0/1) back from the synthetic condition vectors."""
    return cond[:, :9].argmax(1), cond[:, 9].round().astype(int)


# --- ZDC-like simulator ------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    name: str
    shape: tuple[int, int]  # (rows, cols): neutron ZN 44x44, proton ZP 56x30 (ch. 5.3)
    mix: tuple[tuple[str, float, float, float], ...]  # (particle, mass GeV, charge, probability)


DETECTORS = {
    "zdc-neutron": Detector("zdc-neutron", (44, 44), (("neutron", 0.9396, 0.0, 0.5), ("proton", 0.9383, 1.0, 0.2),
                                                       ("photon", 0.0, 0.0, 0.15), ("pion", 0.1396, 1.0, 0.15))),
    "zdc-proton": Detector("zdc-proton", (56, 30), (("proton", 0.9383, 1.0, 0.6), ("neutron", 0.9396, 0.0, 0.1),
                                                     ("photon", 0.0, 0.0, 0.15), ("pion", 0.1396, 1.0, 0.15))),
}
ENERGY_RANGE = (20.0, 2500.0)  # GeV, log-uniform
PHOTONS_PER_GEV = 2.0  # light yield of a contained hadron-free (mass 0) shower
EARLY_SHOWER_P = 0.5  # a charged particle starts showering upstream with this probability


def detector(kind: str) -> Detector:
    if kind not in DETECTORS:
        raise GenleakError(f"unknown ZDC variant '{kind}' (choose from {', '.join(DETECTORS)})")
    return DETECTORS[kind]


def sample_conditions(n: int, det: Detector, rng: np.random.Generator) -> np.ndarray:
    """(n, 9) particles: type from the detector's mix, log-uniform energy, Gaussian vertex and angles."""
    probs = np.array([p for *_, p in det.mix])
    kind = rng.choice(len(det.mix), n, p=probs / probs.sum())
    mass = np.array([m for _, m, _, _ in det.mix])[kind]
    charge = np.array([q for _, _, q, _ in det.mix])[kind]
    energy = np.exp(rng.uniform(*np.log(ENERGY_RANGE), n))
    vertex = rng.normal(size=(n, 3)) * np.array([1.0, 1.0, 5.0])  # mm, mm, cm
    pz = np.sqrt(energy**2 - mass**2)
    pxy = pz[:, None] * rng.normal(size=(n, 2)) * 1e-4  # angles ~ N(0, 0.1 mrad)
    return np.column_stack([energy, mass, charge, vertex, pxy, pz]).astype(np.float32)


def shower_parameters(cond: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic part of the response: centre (row, col) in pixels, width sigma, mean photon count.

    centre = detector middle + 1.5 px per mm of vertex + 7 px per 0.1 mrad of angle (px/pz, py/pz),
    plus a magnet bend of 3*charge*sqrt(100/E) px for charged particles; sigma grows with mass
    (hadronic showers are wider) and shrinks with energy; the light is 2 photons/GeV, 30% less for
    hadrons.
    """
    e, m, q = cond[:, 0].astype(np.float64), np.minimum(cond[:, 1], 1.0), cond[:, 2]
    vx, vy, vz, px, py, pz = (cond[:, i].astype(np.float64) for i in range(3, 9))
    col = (shape[1] - 1) / 2 + 1.5 * vx + 7e4 * px / pz + 3 * q * np.sqrt(100 / e)
    row = (shape[0] - 1) / 2 + 1.5 * vy + 7e4 * py / pz
    sigma = (1 + 1.5 * m) * (1 + 4 / np.sqrt(e)) * np.exp(0.02 * vz)
    lam = PHOTONS_PER_GEV * e * (1 - 0.3 * m)
    return np.stack([row, col], 1), sigma, lam


def _profile(centre: np.ndarray, sigma: np.ndarray, n_pix: int) -> np.ndarray:
    """Per-pixel mass of a 1-D Gaussian (exact integral over each fibre), (n, n_pix)."""
    edges = np.arange(n_pix + 1)[None, :] - 0.5
    cdf = ndtr((edges - centre[:, None]) / sigma[:, None])
    return np.diff(cdf, axis=1)


def mean_image(centre: np.ndarray, sigma: np.ndarray, lam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Expected photon counts: lam x Gaussian mass in each fibre (light falling outside is lost)."""
    r, c = _profile(centre[:, 0], sigma, shape[0]), _profile(centre[:, 1], sigma, shape[1])
    return lam[:, None, None] * r[:, :, None] * c[:, None, :]


def simulate(cond: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One stochastic response per row of ``cond``: (n, H, W) photon counts.

    Neutral particles: fixed shower, Poisson photon counts only (near-deterministic responses).
    Charged particles: the centre jitters by N(0, 2 px), and with probability 0.5 the shower starts
    upstream: displaced by a further N(0, 6 px), 2.5x wider, and only U(0.05, 0.5) of the light
    arrives (widely varying responses: the property SDI-GAN exploits). Poisson counts per fibre are
    exactly what tracing each photon of a Poisson-sized shower would give.
    """
    centre, sigma, lam = shower_parameters(cond, shape)
    n = len(cond)
    charged = cond[:, 2] != 0
    early = charged & (rng.random(n) < EARLY_SHOWER_P)
    centre = centre + rng.normal(size=(n, 2)) * (2.0 * charged + 6.0 * early)[:, None]
    sigma = np.where(early, 2.5 * sigma, sigma)
    lam = np.where(early, lam * rng.uniform(0.05, 0.5, n), lam)
    return rng.poisson(mean_image(centre, sigma, lam, shape)).astype(np.float32)


def zdc_dataset(kind: str = "zdc-neutron", n_particles: int = 2000, repeats: int = 5, seed: int = 0,
                test_fraction: float = 0.2) -> SimData:
    """``n_particles`` particles, each simulated ``repeats`` times (several outcomes per condition, as the
    thesis' GEANT4 runs). The split is by particle (test particles are unseen in training)."""
    det = detector(kind)
    if n_particles < 5 or repeats < 1 or not 0 < test_fraction < 1:
        raise GenleakError("ZDC data needs --n >= 5 particles, --repeats >= 1 and 0 < test fraction < 1")
    rng = np.random.default_rng(seed)
    particles = sample_conditions(n_particles, det, rng)
    group = np.repeat(np.arange(n_particles), repeats)
    cond = particles[group]
    x = np.concatenate([simulate(cond[i:i + 4096], det.shape, rng) for i in range(0, len(cond), 4096)])
    test_particles = rng.permutation(n_particles)[: max(1, round(test_fraction * n_particles))]
    return SimData(kind, cond, x, group, ~np.isin(group, test_particles), seed)


def make_data(kind: str, n: int, seed: int = 0, repeats: int = 5) -> SimData:
    """``n`` = points per (class, spread) cell for ``synthetic``, particles for the ZDC variants."""
    if kind == "synthetic":
        return synthetic_2d(n, seed)
    if kind in DETECTORS:
        return zdc_dataset(kind, n, repeats, seed)
    raise GenleakError(f"unknown data kind '{kind}' (choose from {', '.join(KINDS)})")


def channels(x: np.ndarray) -> np.ndarray:
    """(N, H, W) photon counts -> (N, 5) PMT sums [PMTc, PMT1..4] (ch. 5.3).

    Every alternate fibre (checkerboard, (i + j) even) goes to PMTc; the others are bundled by
    quadrant (top-left, top-right, bottom-left, bottom-right) into PMT1-4. The real fibre map is not
    public; this is our layout.
    """
    h, w = x.shape[1:]
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pmt = np.where((i + j) % 2 == 0, 0, 1 + (i >= h // 2) * 2 + (j >= w // 2))
    return np.stack([x[:, pmt == k].sum(1) for k in range(5)], 1)


def peak_coordinates(x: np.ndarray) -> np.ndarray:
    """(N, 2) (row, col) of each image's brightest fibre: the auxiliary regressor's target (ch. 5.4.1)."""
    flat = x.reshape(len(x), -1).argmax(1)
    return np.stack(np.divmod(flat, x.shape[2]), 1).astype(np.float32)
