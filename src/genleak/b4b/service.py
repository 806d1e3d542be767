"""The request path of an encoder-as-a-service with B4B, without HTTP (the server is a thin layer).

For one batch of images from an authenticated user (Figure 6.1.1):

1. the encoder computes the representations ``r``;
2. LSH maps ``r`` to buckets and the store ORs them into the user's bitset, atomically;
3. the coverage after this batch gives ``sigma`` via Eq. 6.1, and ``r + N(0, sigma^2)`` is drawn;
4. the user's own transformation (from their seed) is applied and the result returned.

Coverage is measured on the encoder's own representations before noise and transformation: that is
the space B4B protects, the same for every user and replica, and it makes a user's state a pure
function of what they asked (so it can be checked offline, see the load test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genleak.b4b.config import B4BConfig
from genleak.b4b.defense import B4BDefense, CostFunction, UserTransform, noise_rng
from genleak.b4b.store import StateStore, UserRecord

if TYPE_CHECKING:  # the admin CLI uses user_status() without importing torch
    from genleak.b4b.encoder import Encoder


@dataclass(frozen=True)
class UserStatus:
    """What an administrator sees for a user (never shown to users: it would reveal the cost curve)."""

    name: str
    policy: str
    active: bool
    n_queries: int
    n_requests: int
    coverage: float
    sigma: float
    transform: str


class B4BService:
    """Encoder + defense + state: ``embed(user, images)`` answers one API request.

    Args:
        encoder: the protected model.
        store: where users and their bitsets live (shared by all replicas).
        config: B4B parameters; ``None`` adopts the database's (or the paper defaults for a new one).
    """

    def __init__(self, encoder: Encoder, store: StateStore, config: B4BConfig | None = None) -> None:
        self.encoder = encoder
        self.store = store
        self.config = store.ensure_config(config)
        store.ensure_encoder(encoder.embed_dim, encoder.fingerprint())
        self.defense = B4BDefense(self.config, encoder.embed_dim)
        self._identity = UserTransform(encoder.embed_dim)

    def authenticate(self, api_key: str | None) -> UserRecord | None:
        return self.store.authenticate(api_key)

    def transform_of(self, user: UserRecord) -> UserTransform:
        if user.policy != "b4b":
            return self._identity
        return self.defense.transform_for(user.seed, user.transforms)

    def embed(self, user: UserRecord, images: np.ndarray) -> np.ndarray:
        """The representations user ``user`` receives for ``images`` (N, C, H, W) float32 in [0, 1].

        The bucket update is committed before this returns, so an answer that reached the user is
        always accounted for. Raises PermissionError if the user was revoked meanwhile.
        """
        clean = self.encoder.embed(images)
        lsh = self.defense.lsh
        receipt = self.store.record_queries(user.id, lsh.bitset(lsh.buckets(clean)), len(clean))
        if user.policy == "none":
            return clean
        sigma = sigma_for(user, receipt.n_occupied / lsh.n_buckets, self.defense.cost)
        return self.defense.respond(clean, sigma, self.transform_of(user), noise_rng(user.seed, receipt.first_query))



def sigma_for(user: UserRecord, coverage: float, cost: CostFunction) -> float:
    """Noise scale for ``user`` at ``coverage``: Eq. 6.1 under policy b4b, fixed under static."""
    if user.policy == "none":
        return 0.0
    if user.policy == "static":
        return float(user.static_sigma or 0.0)
    return cost(coverage)


def user_status(user: UserRecord, config: B4BConfig) -> UserStatus:
    """Admin view of a user; needs only the config (no encoder), so `b4b admin` stays light."""
    coverage = user.n_occupied / config.n_buckets
    cost = CostFunction(config.lam, config.alpha, config.beta, config.max_sigma)
    kinds = (user.transforms if user.transforms is not None else config.transforms) if user.policy == "b4b" else ()
    return UserStatus(user.name, user.policy, user.active, user.n_queries, user.n_requests, coverage,
                      sigma_for(user, coverage, cost), "+".join(kinds) or "identity")
