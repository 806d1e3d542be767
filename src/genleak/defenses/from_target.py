"""Defend the model that was audited: train a defense's models with the audited target's shape.

``TargetSpec.load(folder)`` reads a target folder's UNet config (any diffusers ``UNet2DModel`` or
``UNet2DConditionModel``), its scheduler (class and config, e.g. a DDIM scheduler with a cosine
schedule) and its conditioning (for latent folders: the same frozen VAE, text encoder / tokenizer
and caption template; class labels for class-conditional UNets). ``TargetSpec.train`` then trains a
fresh UNet of that config (``from_config``: diffusers builds it, genleak never rebuilds a UNet by
hand) on the user's member data with ``train_ddpm`` or ``train_latent``, so every defense
(disjoint teachers, DistillMD and KD students, DP-SGD) keeps checkpoints, resuming, the run record
and its split fingerprint, and its folders load with ``targets.loading.load_target``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genleak.errors import GenleakError

_UNETS = ("UNet2DModel", "UNet2DConditionModel")


def _config_file(folder: Path, sub: str, name: str) -> Path:
    """``folder/sub/name`` (pipeline layout) or ``folder/name`` (flat model folder)."""
    for path in (folder / sub / name, folder / name):
        if path.is_file():
            return path
    raise GenleakError(f"'{folder}' has no {sub}/{name}: not a diffusers target folder")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GenleakError(f"'{path}' is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise GenleakError(f"'{path}' is not a JSON object")
    return data


def load_scheduler(folder: str | Path) -> Any:
    """The folder's noise scheduler as ``load_target`` reads it (the DDPM-family class its config
    names); genleak's trainers regress on the noise, so other prediction types are refused."""
    from genleak.targets.loading import folder_scheduler

    path = _config_file(Path(folder), "scheduler", "scheduler_config.json")
    scheduler = folder_scheduler(path.parent)
    if scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise GenleakError(f"'{path}': prediction_type {scheduler.config.prediction_type!r}; genleak's trainers "
                           "regress on the noise (epsilon) only")
    return scheduler


@dataclass
class TargetSpec:
    """What a defense copies from the audited target folder (see the module doc)."""

    folder: Path
    base: Any  # the loaded target: DiffusionTarget (pixel) or LatentDiffusionTarget
    unet_class: type
    unet_config: dict[str, Any]
    scheduler: Any

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device | None = None) -> TargetSpec:
        import diffusers

        from genleak.targets.latent import LatentDiffusionTarget
        from genleak.targets.loading import load_target

        path = Path(folder)
        base = load_target(path, device=device)
        if not hasattr(base, "unet") or not hasattr(base, "scheduler"):
            raise GenleakError(f"'{folder}' is a {type(base).__name__}; defenses train pixel or latent "
                               "diffusion folders (for a DualMD folder pass one of its models)")
        unet_config = _read_json(_config_file(path, "unet", "config.json"))
        name = str(unet_config.get("_class_name", ""))
        if name not in _UNETS:
            raise GenleakError(f"'{folder}': UNet class {name!r} is not one of {', '.join(_UNETS)}")
        if isinstance(base, LatentDiffusionTarget) and base.prediction_type != "epsilon":
            raise GenleakError(f"'{folder}' predicts {base.prediction_type}; genleak's trainers regress on the noise")
        return cls(path, base, getattr(diffusers, name), unet_config, load_scheduler(path))

    @property
    def latent(self) -> bool:
        return hasattr(self.base, "vae")

    @property
    def class_conditional(self) -> bool:
        return self.unet_config.get("num_class_embeds") is not None

    def fresh_unet(self, seed: int) -> torch.nn.Module:
        """A newly initialised UNet of the target's config (seeded: teachers differ by seed)."""
        torch.manual_seed(seed)
        return self.unet_class.from_config(self.unet_config).train()

    def describe(self) -> dict[str, Any]:
        """What the run record keeps about the copied target (in ``config.extra``)."""
        return {"folder": str(self.folder), "fingerprint": self.base.fingerprint(), "unet": self.unet_class.__name__,
                "scheduler": type(self.scheduler).__name__}

    def check_schedule(self, *targets: Any) -> None:
        """Teachers must answer on the target's noise levels, or their labels mean other x_t."""
        from genleak.targets.latent import LatentDiffusionTarget

        acp = self.scheduler.alphas_cumprod.double()
        for t in targets:
            if t.alphas_cumprod.shape != acp.shape or not torch.allclose(t.alphas_cumprod.double(), acp):
                raise GenleakError(f"a teacher's noise schedule differs from the target '{self.folder}''s; "
                                   "train the teachers with `defend disjoint --target` on the same folder")
            if self.latent and isinstance(t, LatentDiffusionTarget) and not _same_weights(t.vae, self.base.vae):
                raise GenleakError(f"a teacher uses another VAE than the target '{self.folder}'")

    def train(
        self,
        split: Any,
        config: Any,
        out_dir: str | Path | None,
        *,
        rows: list[int] | None = None,
        unet: torch.nn.Module | None = None,
        hooks: Any = None,
        progress: bool = True,
    ) -> Any:
        """Train a UNet of the target's config (``unet``, else a fresh one seeded by ``config.seed``) on
        ``split``'s members (or the member ``rows``) with the target's scheduler and conditioning.

        ``config`` is a ``TrainConfig`` (steps, batch, lr, EMA, seed, extra); its shape fields are
        overwritten with the target's, so the run record says what was trained."""
        from genleak.targets.latent import DEFAULT_CAPTION_TEMPLATE, LatentDiffusionTarget, caption_sets

        members = split.members if rows is None else split.members[rows]
        model = unet if unet is not None else self.fresh_unet(config.seed)
        labels = None
        if self.class_conditional:
            if members.labels is None:
                raise GenleakError(f"the target '{self.folder}' is class-conditional but the split's members have no labels")
            labels = torch.as_tensor(members.labels, dtype=torch.long)
        extra = {**config.extra, "target": self.describe()}
        shape = {"block_out_channels": tuple(self.unet_config["block_out_channels"]),
                 "layers_per_block": int(self.unet_config.get("layers_per_block", 1)),
                 "num_train_timesteps": int(self.scheduler.config.num_train_timesteps)}
        self._check_size(members.images)
        if not self.latent:
            from genleak.train import train_ddpm

            config = dataclasses.replace(config, **shape, extra=extra)
            return train_ddpm(members.images, config, out_dir, split_manifest=split.to_manifest(), progress=progress,
                              unet=model, hooks=hooks, scheduler=self.scheduler, labels=labels)
        from genleak.train.latent import LatentTrainConfig, train_latent

        base = self.base
        lconfig = LatentTrainConfig(
            steps=config.steps, batch_size=config.batch_size, lr=config.lr, text=base.conditional,
            block_out_channels=shape["block_out_channels"], layers_per_block=shape["layers_per_block"],
            beta_schedule=str(self.scheduler.config.get("beta_schedule")),
            num_train_timesteps=shape["num_train_timesteps"], ema_decay=config.ema_decay, seed=config.seed,
            weight_decay=config.weight_decay, checkpoint_every=config.checkpoint_every, extra=extra)
        template = (base.caption_template or DEFAULT_CAPTION_TEMPLATE) if base.conditional else None
        captions = caption_sets(members, 0, template) if base.conditional else None
        # ``init`` hands train_latent the VAE, text encoder, tokenizer and scheduler; its UNet is ours
        init = LatentDiffusionTarget(base.vae, model, self.scheduler, base.text_encoder, base.tokenizer,
                                     caption_template=template, device=base.device)
        return train_latent(members.images, base.vae, lconfig, out_dir, captions=captions, init=init,
                            caption_template=template, split_manifest=split.to_manifest(), hooks=hooks,
                            labels=labels, progress=progress)

    def _check_size(self, images: torch.Tensor) -> None:
        c, h, w = self.base.image_shape
        if tuple(images.shape[1:]) != (c, h, w):
            raise GenleakError(f"the target '{self.folder}' takes {c}x{h}x{w} images but the split's members are "
                               f"{'x'.join(map(str, images.shape[1:]))}; load the split at the target's size")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
