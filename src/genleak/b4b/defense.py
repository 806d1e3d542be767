"""B4B's three building blocks as plain objects, independent of HTTP and storage.

* :class:`LSHCoverage` (building block 1, Section 6.3.2): random-projection LSH maps each returned
  representation to one of ``2**n`` buckets; a user's coverage is the fraction of buckets their
  representations have ever occupied, kept as a packed bitset (512 bytes for 2^12 buckets, A.3.1).
* :class:`CostFunction` (building block 2, Eq. 6.1, Section 6.3.3): coverage -> noise scale sigma.
* :class:`UserTransform` and its kinds (building block 3, Section 6.3.4): a per-user map drawn from a
  per-user seed, so representations from two sybil accounts live in different spaces.

:class:`B4BDefense` composes them: ``answer = T_user(r + N(0, sigma(coverage)^2))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from genleak.b4b.config import B4BConfig
from genleak.errors import GenleakError


# ------------------------------------------------------------------------------ 1. coverage (LSH)
class LSHCoverage:
    """Random-projection LSH (the thesis implements random projections [9] from scratch, Section 6.4).

    Bucket of ``r`` = the sign pattern of ``r @ W`` for ``n_hyperplanes`` Gaussian directions ``W``
    (hyperplanes through the origin, i.e. the angle of ``r`` is hashed): similar representations fall
    into the same bucket (Section 6.3.2). Hyperplanes are a pure function of ``(seed, dim,
    n_hyperplanes)`` so every API replica hashes identically.
    """

    def __init__(self, dim: int, n_hyperplanes: int = 12, seed: int = 0) -> None:
        if dim < 1:
            raise GenleakError(f"embedding dimension must be >= 1, got {dim}")
        self.dim = int(dim)
        self.n_hyperplanes = int(n_hyperplanes)
        self.n_buckets = 2 ** self.n_hyperplanes
        self.n_bytes = max(1, self.n_buckets // 8)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), self.dim, self.n_hyperplanes]))
        self.planes = rng.standard_normal((self.dim, self.n_hyperplanes))
        self._weights = (1 << np.arange(self.n_hyperplanes, dtype=np.int64))

    def buckets(self, embeddings: np.ndarray) -> np.ndarray:
        """Bucket index (int64 in ``[0, 2**n)``) of each row of ``embeddings`` (N, dim)."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise GenleakError(f"expected embeddings of shape (N, {self.dim}), got {e.shape}")
        bits = (e @ self.planes) > 0
        return bits.astype(np.int64) @ self._weights

    def empty(self) -> bytes:
        return bytes(self.n_bytes)

    def bitset(self, buckets: np.ndarray) -> bytes:
        """Packed bitset (little bit order) with the given bucket indices set."""
        occ = np.zeros(self.n_bytes * 8, dtype=bool)
        occ[np.asarray(buckets, dtype=np.int64)] = True
        return np.packbits(occ, bitorder="little").tobytes()

    def add(self, bits: bytes, embeddings: np.ndarray) -> bytes:
        """``bits`` with the buckets of ``embeddings`` set (the offline twin of the store's atomic OR)."""
        return union(bits, self.bitset(self.buckets(embeddings)))

    def coverage(self, bits: bytes) -> float:
        """Fraction of buckets occupied: the estimate of the covered embedding space (Section 6.3.2)."""
        return popcount(bits) / self.n_buckets


def union(a: bytes, b: bytes) -> bytes:
    """Bitwise OR of two equal-length bitsets."""
    if len(a) != len(b):
        raise ValueError(f"bitsets differ in length ({len(a)} vs {len(b)} bytes)")
    return (np.frombuffer(a, np.uint8) | np.frombuffer(b, np.uint8)).tobytes()


def popcount(bits: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(bits, np.uint8)).sum())


# ----------------------------------------------------------------------------------- 2. cost
class CostFunction:
    """Eq. 6.1: ``sigma(c) = lam * (exp(ln(alpha / lam) * c / beta) - 1)``.

    ``lam`` flattens the curve near zero so narrow users get almost no noise; the curve passes through
    ``sigma(beta) ~= alpha`` (the target penalty at the bucket fraction considered too large). Defaults
    lam = 1e-6, alpha = 1, beta = 0.8 are from Section 6.4.2.
    """

    def __init__(self, lam: float = 1e-6, alpha: float = 1.0, beta: float = 0.8, max_sigma: float | None = None) -> None:
        if not (0 < lam < alpha) or not 0 < beta <= 1:
            raise GenleakError(f"cost function needs 0 < lam < alpha and 0 < beta <= 1, got {lam}, {alpha}, {beta}")
        self.lam, self.alpha, self.beta, self.max_sigma = float(lam), float(alpha), float(beta), max_sigma
        self._rate = math.log(self.alpha / self.lam) / self.beta

    def __call__(self, coverage: float) -> float:
        c = min(max(float(coverage), 0.0), 1.0)
        sigma = self.lam * math.expm1(self._rate * c)
        return sigma if self.max_sigma is None else min(sigma, float(self.max_sigma))


# ---------------------------------------------------------------------------- 3. transforms
class UserTransform:
    """A per-user map of representations ``(N, d_in) -> (N, d_out)`` (Section 6.3.4)."""

    kind = "identity"

    def __init__(self, dim: int) -> None:
        self.in_dim = int(dim)
        self.out_dim = int(dim)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def describe(self) -> str:
        return self.kind


class Affine(UserTransform):
    """``x -> A x + b`` with ``A = Q diag(s)``: a random rotation times log-uniform scales in
    ``scale``, so ``A`` is well conditioned and a linear probe loses nothing (Table A.6.7)."""

    kind = "affine"

    def __init__(self, dim: int, rng: np.random.Generator, scale: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__(dim)
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))  # Haar-uniform rotation
        s = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]), size=dim))
        self.matrix = (q * s).astype(np.float64)
        self.bias = rng.standard_normal(dim)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) @ self.matrix.T + self.bias).astype(np.float32)


class Pad(UserTransform):
    """Append ``n`` per-user constants to every representation."""

    kind = "pad"

    def __init__(self, dim: int, rng: np.random.Generator, n: int = 8) -> None:
        super().__init__(dim)
        self.values = rng.standard_normal(n)
        self.out_dim = dim + n

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return np.concatenate([x, np.broadcast_to(self.values.astype(np.float32), (len(x), len(self.values)))], axis=1)


class Add(UserTransform):
    """Insert ``n`` per-user constants at per-user random positions."""

    kind = "add"

    def __init__(self, dim: int, rng: np.random.Generator, n: int = 8) -> None:
        super().__init__(dim)
        self.out_dim = dim + n
        self.positions = np.sort(rng.choice(self.out_dim, size=n, replace=False))
        self.values = rng.standard_normal(n).astype(np.float32)
        self.keep = np.setdiff1d(np.arange(self.out_dim), self.positions)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        out = np.empty((len(x), self.out_dim), np.float32)
        out[:, self.keep] = x
        out[:, self.positions] = self.values
        return out


class Shuffle(UserTransform):
    """Permute the coordinates with a per-user permutation."""

    kind = "shuffle"

    def __init__(self, dim: int, rng: np.random.Generator) -> None:
        super().__init__(dim)
        self.perm = rng.permutation(dim)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32)[:, self.perm]


class Binary(UserTransform):
    """Map to ``factor * dim`` bits by a per-user random partition of the space (random unit
    directions, each with a random threshold); lossy, hardest to remap (Figure 6.4.3). Thresholds are
    drawn at the scale of unit-norm embeddings, ``N(0, (0.5 / sqrt(dim))^2)``."""

    kind = "binary"

    def __init__(self, dim: int, rng: np.random.Generator, factor: int = 4) -> None:
        super().__init__(dim)
        self.out_dim = factor * dim
        w = rng.standard_normal((dim, self.out_dim))
        self.planes = w / np.linalg.norm(w, axis=0, keepdims=True)
        self.offsets = rng.standard_normal(self.out_dim) * 0.5 / np.sqrt(dim)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (((np.asarray(x, np.float64) @ self.planes) + self.offsets) > 0).astype(np.float32)


class Compose(UserTransform):
    """Apply several transforms in order (Section 6.3.4: 'can additionally be combined')."""

    kind = "compose"

    def __init__(self, parts: Sequence[UserTransform]) -> None:
        dim = parts[0].in_dim if parts else 0
        super().__init__(dim)
        self.parts = list(parts)
        self.out_dim = parts[-1].out_dim if parts else dim

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for p in self.parts:
            x = p(x)
        return np.asarray(x, np.float32)

    def describe(self) -> str:
        return "+".join(p.kind for p in self.parts) or "identity"


def make_user_transform(kinds: Sequence[str], seed: int, dim: int, config: B4BConfig | None = None) -> UserTransform:
    """The transformation of the user with ``seed``: each kind gets its own randomness (Section 6.3.4:
    'the randomness is also added on a per-transformation basis')."""
    cfg = config or B4BConfig()
    parts: list[UserTransform] = []
    d = dim
    for i, kind in enumerate(kinds):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i, 0xB4B]))
        if kind == "affine":
            t: UserTransform = Affine(d, rng, cfg.affine_scale)
        elif kind == "pad":
            t = Pad(d, rng, cfg.pad_dims)
        elif kind == "add":
            t = Add(d, rng, cfg.add_dims)
        elif kind == "shuffle":
            t = Shuffle(d, rng)
        elif kind == "binary":
            t = Binary(d, rng, cfg.binary_factor)
        else:
            raise GenleakError(f"unknown transform {kind!r}")
        parts.append(t)
        d = t.out_dim
    return Compose(parts) if parts else UserTransform(dim)


# ------------------------------------------------------------------------------------ defense
class B4BDefense:
    """The composed defense for one encoder: hashing, pricing and transforming representations.

    State (each user's bitset) lives outside, in a :class:`~genleak.b4b.store.StateStore` or, for
    offline analysis, in plain ``bytes``; this object is stateless apart from caches.
    """

    def __init__(self, config: B4BConfig, dim: int) -> None:
        self.config = config
        self.dim = int(dim)
        self.lsh = LSHCoverage(dim, config.n_hyperplanes, config.lsh_seed)
        self.cost = CostFunction(config.lam, config.alpha, config.beta, config.max_sigma)
        self._transform = lru_cache(maxsize=4096)(self._make_transform)

    def _make_transform(self, seed: int, kinds: tuple[str, ...]) -> UserTransform:
        return make_user_transform(kinds, seed, self.dim, self.config)

    def transform_for(self, seed: int, kinds: Sequence[str] | None = None) -> UserTransform:
        """The (cached) transformation of the user with ``seed``; ``kinds`` defaults to the config's."""
        return self._transform(int(seed), tuple(self.config.transforms if kinds is None else kinds))

    def sigma(self, bits: bytes) -> float:
        return self.cost(self.lsh.coverage(bits))

    def respond(self, clean: np.ndarray, sigma: float, transform: UserTransform,
                rng: np.random.Generator) -> np.ndarray:
        """``T_user(clean + N(0, sigma^2))``: the representations B4B returns (Figure 6.1.1, steps 2-4)."""
        x = np.asarray(clean, np.float64)
        if sigma > 0:
            x = x + sigma * rng.standard_normal(x.shape)
        return transform(x)


def noise_rng(noise_seed: int, first_query: int) -> np.random.Generator:
    """Generator for the noise of a batch whose first query has index ``first_query`` in the user's
    history: answers depend on (user, query index) only, not on replica, thread or timing."""
    return np.random.default_rng(np.random.SeedSequence([int(noise_seed), int(first_query)]))
