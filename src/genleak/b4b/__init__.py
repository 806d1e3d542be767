"""B4B (Bucks for Buckets): an encoder-as-a-service API that defends itself against model stealing.

Thesis chapter 6 / supplement A. Pieces, each usable on its own:

* :class:`~genleak.b4b.encoder.Encoder` wraps any ``torch.nn.Module`` (or trains the default victim);
* :class:`~genleak.b4b.defense.B4BDefense` = :class:`LSHCoverage` + :class:`CostFunction` +
  per-user :class:`UserTransform` s, configured by :class:`~genleak.b4b.config.B4BConfig`;
* :class:`~genleak.b4b.store.StateStore` keeps users and bucket bitsets in SQLite / PostgreSQL;
* :class:`~genleak.b4b.service.B4BService` is the request path, :mod:`genleak.b4b.server` its
  FastAPI app, :class:`~genleak.b4b.client.B4BClient` a client;
* :func:`~genleak.b4b.simulate.run_simulation` reproduces Table 6.4.1 against a running API.

Attributes are imported lazily so ``import genleak.b4b`` (and ``genleak --help``) stays light.
"""

from genleak._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "B4BConfig": "genleak.b4b.config",
    "load_config": "genleak.b4b.config",
    "B4BDefense": "genleak.b4b.defense",
    "LSHCoverage": "genleak.b4b.defense",
    "CostFunction": "genleak.b4b.defense",
    "UserTransform": "genleak.b4b.defense",
    "make_user_transform": "genleak.b4b.defense",
    "Encoder": "genleak.b4b.encoder",
    "SmallConvEncoder": "genleak.b4b.encoder",
    "train_simclr_encoder": "genleak.b4b.encoder",
    "StateStore": "genleak.b4b.store",
    "B4BService": "genleak.b4b.service",
    "create_app": "genleak.b4b.server",
    "B4BClient": "genleak.b4b.client",
    "SimulationConfig": "genleak.b4b.simulate",
    "run_simulation": "genleak.b4b.simulate",
}

__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
