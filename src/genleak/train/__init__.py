"""Training and fine-tuning loops (on HF accelerate)."""

from genleak.train.ddpm import TrainConfig, TrainHooks, train_ddpm

__all__ = ["TrainConfig", "TrainHooks", "train_ddpm"]
