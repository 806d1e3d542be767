"""Pixel-space DDPM targets: a diffusers ``UNet2DModel`` plus its noise scheduler."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, SchedulerMixin, UNet2DModel

from genleak.errors import TargetError
from genleak.targets.base import PixelDiffusion


class DiffusionTarget(PixelDiffusion):
    """A pixel DDPM wrapped for attacks: ``eps(x_t, t, cond)`` and the scheduler's schedule.

    The wrapped objects stay diffusers objects (``self.unet``, ``self.scheduler``): nothing here
    re-implements the network or the noise schedule. ``cond`` is passed as ``class_labels`` to
    class-conditional UNets and must be ``None`` otherwise.
    """

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else _default_device()
        self.unet = unet.to(self.device).eval()
        self.scheduler = scheduler
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TargetError(f"scheduler {type(scheduler).__name__} has no alphas_cumprod; use a DDPM/DDIM scheduler")
        self.alphas_cumprod = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if prediction_type != "epsilon":
            raise TargetError(
                f"scheduler prediction_type={prediction_type!r}; genleak's attacks need an epsilon-prediction model"
            )
        self._fingerprint: str | None = None

    # -- the protocol ---------------------------------------------------------------------------
    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        if isinstance(t, int):
            t = torch.full((x_t.shape[0],), t, dtype=torch.long, device=self.device)
        else:
            t = t.to(self.device)
        kwargs = {}
        if cond is not None:
            kwargs["class_labels"] = torch.as_tensor(cond, device=self.device)
        return self.unet(x_t.to(self.device), t, return_dict=False, **kwargs)[0]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def conditions(self, samples: Any) -> Any:
        """Class labels of an ``ImageSet`` for a class-conditional UNet; None for unconditional ones."""
        if self.num_classes is None:
            return None
        labels = getattr(samples, "labels", None)
        if labels is None:
            raise TargetError("the target is class-conditional but the samples carry no labels")
        return torch.as_tensor(labels, dtype=torch.long)

    def networks(self) -> list[torch.nn.Module]:
        return [self.unet]

    def fingerprint(self) -> str:
        """sha256 over the UNet's parameters and buffers and the scheduler config."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, tensor in sorted(self.unet.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
            # underscore keys (_class_name, _diffusers_version, ...) are bookkeeping, not the schedule
            schedule = {k: v for k, v in dict(self.scheduler.config).items() if not k.startswith("_")}
            h.update(json.dumps(schedule, sort_keys=True, default=str).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    @property
    def num_classes(self) -> int | None:
        return self.unet.config.get("num_class_embeds")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (int(self.unet.config.in_channels), int(h), int(w))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for `genleak data inspect` and result provenance."""
        n_params = sum(p.numel() for p in self.unet.parameters())
        return {
            "kind": "pixel-ddpm",
            "model": type(self.unet).__name__,
            "parameters": n_params,
            "image_shape": list(self.image_shape),
            "block_out_channels": list(self.unet.config.block_out_channels),
            "scheduler": type(self.scheduler).__name__,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.scheduler.config.get("beta_schedule"),
            "beta_start": self.scheduler.config.get("beta_start"),
            "beta_end": self.scheduler.config.get("beta_end"),
            "fingerprint": self.fingerprint(),
        }

    # -- loading and saving ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None) -> DiffusionTarget:
        """Load a diffusers folder from disk: ``DDPMPipeline`` / ``DDIMPipeline`` layout (``unet/``,
        ``scheduler/``; safetensors or bin, plain or a ``variant`` such as fp16) or a flat model folder
        (``config.json`` + weights + ``scheduler_config.json``, as in ``google/ddpm-cifar10-32``).
        Nothing is downloaded."""
        path = Path(folder)
        if not path.is_dir():
            raise TargetError(f"target folder '{folder}' does not exist; train one with `genleak train ddpm` or pass a diffusers folder")
        if (path / "unet" / "config.json").is_file():
            unet_dir = path / "unet"
        elif (path / "config.json").is_file():
            unet_dir = path
        else:
            raise TargetError(f"'{folder}' has neither unet/config.json nor config.json: not a diffusers model folder")
        if (path / "scheduler" / "scheduler_config.json").is_file():
            sched_dir = path / "scheduler"
        elif (path / "scheduler_config.json").is_file():
            sched_dir = path
        else:
            raise TargetError(f"'{folder}' has no scheduler/scheduler_config.json: save the scheduler with the model")
        from genleak.targets.loading import folder_scheduler, weights_variant

        try:  # fp32 whatever the weights' variant: scores are computed in fp32
            unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True, torch_dtype=torch.float32,
                                               variant=weights_variant(unet_dir))
            scheduler = folder_scheduler(sched_dir)
        except (OSError, ValueError) as err:
            raise TargetError(f"could not load diffusers model from '{folder}': {str(err).splitlines()[0]}") from err
        return cls(unet, scheduler, device=device)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a standard ``DDPMPipeline`` folder (loadable by diffusers and by genleak)."""
        from diffusers import DDPMPipeline

        DDPMPipeline(unet=self.unet, scheduler=self.scheduler).save_pretrained(str(folder), safe_serialization=True)

    # -- sampling ----------------------------------------------------------------------------------
    def ddim_scheduler(self, num_inference_steps: int) -> DDIMScheduler:
        """A deterministic DDIM sampler on this target's noise schedule (Song et al. 2021)."""
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        return scheduler


def _default_device() -> torch.device:
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:  # torchrun / accelerate launch: one GPU a process
        return torch.device(f"cuda:{os.environ['LOCAL_RANK']}")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_unet(
    image_size: int,
    channels: int = 1,
    block_out_channels: tuple[int, ...] = (16, 32),
    layers_per_block: int = 1,
    attention: bool = False,
    num_class_embeds: int | None = None,
) -> UNet2DModel:
    """A small diffusers UNet of the tiny CPU shape the tests train (tests/conftest.py; no attention by default)."""
    n = len(block_out_channels)
    down = tuple("AttnDownBlock2D" if attention and i > 0 else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if attention and i < n - 1 else "UpBlock2D" for i in range(n))
    groups = min(32, min(block_out_channels) // 2)
    if any(c % groups for c in block_out_channels):
        raise ValueError(f"block_out_channels {block_out_channels} must be multiples of {groups}")
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=block_out_channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        norm_num_groups=groups,
        add_attention=attention,
        num_class_embeds=num_class_embeds,
    )


def default_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """DDPM schedule of Ho et al. (2020): T=1000, linear betas 1e-4..0.02, epsilon prediction."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        clip_sample=True,
    )
