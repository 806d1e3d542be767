"""Train the tiny IAR targets on a split's members: tokenizer first, then the autoregressive model.

The tokenizer (VQ-VAE for VAR/RAR, KL-VAE for MAR) is trained on the same images and then frozen;
the images are tokenised once and the transformer trains on the tokens with AdamW, epoch-wise
shuffling (every member seen once per epoch, as the DDPM trainer does, so "training budget" means
the same thing for both) and classifier-free-guidance label dropout. One tokenizer can be shared by
several models (``tokenizer=``): VAR and RAR targets trained on the same members then differ only
in their autoregressive model.

A folder that already holds a finished run with the same config is loaded instead of retrained;
a run is seconds to a minute on CPU, so there are no mid-run checkpoints. Both stages run on the
one trainer (``genleak.train.loop``: accelerate, gradient accumulation, mixed precision).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genleak.config import JsonConfig
from genleak.errors import GenleakError
from genleak.models.vq import VQConfig
from genleak.targets.folders import TARGET_SPLIT_FILE, TRAIN_RECORD
from genleak.targets.iar import IARTarget, build_target, load_iar_target
from genleak.train.loop import LoopConfig, TrainHooks, make_accelerator, run_loop
from genleak.train.runs import check_config, finished_run, output_folder, training_data

KINDS = ("var", "rar", "mar")


@dataclass
class IARTrainConfig(JsonConfig):
    """Hyperparameters of one IAR run. Defaults: tiny models on 8x8 digits (tests, configs/)."""

    kind: str = "rar"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    seed: int = 0
    num_classes: int = 10
    tokenizer_steps: int = 1500
    tokenizer_lr: float = 2e-3
    tokenizer: dict[str, Any] = field(default_factory=dict)  # overrides of VQConfig / KLConfig
    model: dict[str, Any] = field(default_factory=dict)  # overrides of VARConfig / RARConfig / MARConfig
    grad_accum: int = 1  # micro-batches of batch_size per optimiser step (accelerate; tokenizer and model)
    mixed_precision: str = "no"  # accelerate's "no", "fp16" (GPU) or "bf16"

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IARTrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise GenleakError(f"unknown IAR training setting(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if images.ndim != 4 or images.shape[0] == 0:
        raise GenleakError(f"IAR training needs a non-empty (N, C, H, W) image tensor, got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise GenleakError(f"IAR training needs square images, got {tuple(images.shape[-2:])}")
    if labels is None or len(labels) != images.shape[0]:
        raise GenleakError("IAR training needs one class label per image (the targets are class-conditional)")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise GenleakError(f"labels must be in 0..{num_classes - 1}; set num_classes")


# VAR's scale schedule (Tian et al. 2024, 256px: a 16x16 token map); smaller maps keep the sides below theirs
VAR_SCALES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def _tokenizer_config(config: IARTrainConfig, images: torch.Tensor) -> dict[str, Any]:
    """Image shape plus overrides; VAR scales default to VAR's schedule up to the latent side, which
    depends on the image size (a fixed default only fits 8x8 images: (1, 2, 3, 4) for a 4x4 map)."""
    cfg: dict[str, Any] = {"image_size": int(images.shape[-1]), "channels": int(images.shape[1]), **config.tokenizer}
    if config.kind != "mar" and "scales" not in cfg:
        side = cfg["image_size"] // int(cfg.get("downsample", VQConfig.downsample))
        cfg["scales"] = [s for s in VAR_SCALES if s < side] + [side]
    return cfg


def _schedule(step: int, config: IARTrainConfig) -> float:
    """Linear warm-up then constant learning rate."""
    return min(1.0, (step + 1) / max(1, config.warmup))


def train_tokenizer(images: torch.Tensor, config: IARTrainConfig, *, progress: bool = True) -> torch.nn.Module:
    """Train the tokenizer of ``config.kind`` (VQ-VAE for var/rar, KL-VAE for mar) on ``images``, on the one
    trainer: Adam on random batches of ``2 * batch_size`` images, with the VQ's dead codes restarted."""
    loop = LoopConfig(config.tokenizer_steps, config.batch_size * 2, config.seed + 7, grad_accum=config.grad_accum,
                      mixed_precision=config.mixed_precision)
    accelerator = make_accelerator(loop, cpu=True)  # images and tokens stay on the CPU
    torch.manual_seed(config.seed)
    cfg = _tokenizer_config(config, images)
    if config.kind == "mar":
        from genleak.models.mar import KLConfig, KLTokenizer

        tok: torch.nn.Module = KLTokenizer(KLConfig.from_dict(cfg))
    else:
        from genleak.models.vq import VQConfig, VQTokenizer

        tok = VQTokenizer(VQConfig.from_dict(cfg))
    hooks = _CodebookHooks(tok, images, config)

    def loss_step(model: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        loss, batch_used = model.training_loss(images[idx])
        if config.kind != "mar":
            hooks.used[batch_used] = True
        return loss

    tok.train()
    run_loop(tok, torch.optim.Adam(tok.parameters(), lr=config.tokenizer_lr), loop, loss_step, accelerator=accelerator,
             n=images.shape[0], hooks=hooks, desc="tokenizer", progress=progress)
    if config.kind == "mar":
        tok.fit_scale(images)
    return tok.eval()


class _CodebookHooks(TrainHooks):
    """The tokenizer's batches (drawn with replacement) and, for VQ tokenizers, dead-code restarts; both
    from the tokenizer's own generator (seed + 7), which the restarts also draw from."""

    def __init__(self, tok: torch.nn.Module, images: torch.Tensor, config: IARTrainConfig) -> None:
        self.tok, self.images, self.config = tok, images, config
        self.gen = torch.Generator().manual_seed(config.seed + 7)
        self.used = torch.zeros(getattr(tok.config, "codebook_size", 1), dtype=torch.bool)

    def batch_indices(self, step: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, n, (min(self.config.batch_size * 2, n),), generator=self.gen)

    def after_step(self, step: int) -> None:
        # restart dead codes during the first 3/4 of training only, so the codebook settles
        if self.config.kind != "mar" and step % 100 == 0 and step - 1 < 0.75 * self.config.tokenizer_steps:
            self.tok.restart_dead_codes(self.images, self.used, self.gen)
            self.used.zero_()


def train_iar(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: IARTrainConfig,
    out_dir: str | Path | None = None,
    *,
    tokenizer: torch.nn.Module | None = None,
    split_manifest: dict[str, Any] | None = None,
    progress: bool = True,
) -> IARTarget:
    """Train an IAR target of ``config.kind`` on ``images`` (N, C, H, W) in [-1, 1] with ``labels``.

    ``tokenizer`` reuses a trained tokenizer (shared by VAR and RAR); otherwise one is trained.
    With ``out_dir`` the target folder is written (and a finished identical run is just loaded).
    """
    if config.kind not in KINDS:
        raise GenleakError(f"unknown IAR kind '{config.kind}'; choose one of {', '.join(KINDS)}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    _check_inputs(images, labels, config.num_classes)
    check_config(config)
    out = output_folder(out_dir)
    data_info = training_data(images, split_manifest) if out is not None else {}
    if out is not None and finished_run(out, config.to_dict(), what="IAR run", data=data_info):
        return load_iar_target(out)

    start = time.time()
    if tokenizer is None:
        tokenizer = train_tokenizer(images, config, progress=progress)
    tokenizer = tokenizer.eval()
    loop = LoopConfig(config.steps, config.batch_size, config.seed * 1000 + 1, grad_accum=config.grad_accum,
                      mixed_precision=config.mixed_precision)
    accelerator = make_accelerator(loop, cpu=True)  # tokens stay on the CPU
    torch.manual_seed(config.seed)
    model_cfg = _model_config(config, tokenizer)
    target = build_target(config.kind, tokenizer.config.to_dict(), model_cfg)
    target.tokenizer.load_state_dict(tokenizer.state_dict())
    target.tokenizer.eval()
    with torch.no_grad():
        tokens = torch.cat([target.encode(images[i : i + 256]) for i in range(0, images.shape[0], 256)])
    model = target.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = images.shape[0]

    def loss_step(model: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        x, y = tokens[idx], labels[idx]
        if config.kind == "rar":
            return model.training_loss(x, y, step / max(1, config.steps), gen)
        if config.kind == "var":
            return model.training_loss(x, y, target.tokenizer, gen)
        return model.training_loss(x, y, gen)

    _, losses, _ = run_loop(model, opt, loop, loss_step, accelerator=accelerator, n=n,
                            lr_scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, config)),
                            desc=f"train {config.kind}", progress=progress)
    model.eval()
    target._fingerprint = None
    if out is not None:
        from genleak.io import atomic_write_json

        target.save_pretrained(out)
        if split_manifest is not None:
            atomic_write_json(out / TARGET_SPLIT_FILE, split_manifest)
        atomic_write_json(out / TRAIN_RECORD, {
            "format": "genleak.iar-train", "version": 1, "config": config.to_dict(), "steps": len(losses),
            "epochs": round(len(losses) * config.batch_size * config.grad_accum / n, 2),
            "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
            "train_seconds": round(time.time() - start, 2), "fingerprint": target.fingerprint(), **data_info,
        })
    return target


def _model_config(config: IARTrainConfig, tokenizer: torch.nn.Module) -> dict[str, Any]:
    """Model config derived from the tokenizer (vocabulary, sequence length) plus user overrides."""
    tc = tokenizer.config
    if config.kind == "rar":
        base = {"vocab_size": tc.codebook_size, "seq_len": tc.latent_size**2}
    elif config.kind == "var":
        base = {"vocab_size": tc.codebook_size, "latent_dim": tc.latent_dim, "scales": list(tc.scales)}
    else:
        base = {"token_dim": tc.latent_dim, "seq_len": tc.latent_size**2}
    return {**base, "num_classes": config.num_classes, **config.model}
