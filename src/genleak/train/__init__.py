"""Training and fine-tuning loops (on HF accelerate)."""

from genleak._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "TrainConfig": "genleak.train.ddpm",
    "TrainHooks": "genleak.train.loop",
    "train_ddpm": "genleak.train.ddpm",
}

__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
