"""Training and fine-tuning loops (on HF accelerate)."""

from genleak.train.ddpm import TrainConfig, train_ddpm

__all__ = ["TrainConfig", "train_ddpm"]
