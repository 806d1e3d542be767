"""Latent diffusion targets: a VAE, a (text-conditioned) UNet on its latents, a noise scheduler.

``LatentDiffusionTarget`` wraps the diffusers/transformers objects of a Stable-Diffusion-style
folder (``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) or of an
unconditional LDM (``vae/``, ``unet/`` holding a ``UNet2DModel``, ``scheduler/``) behind the target
protocol of ``genleak.targets.base``. Attacks therefore run unchanged in latent space:

* ``encode(images)`` is the VAE posterior *mean* times the config's ``scaling_factor`` (minus
  ``shift_factor`` where a VAE has one), the deterministic latent an attacker can compute; the
  UNet was trained on posterior *samples* (diffusers' ``train_text_to_image``), which is the
  mechanism by which a larger KL weight hides members (SimA, arXiv 2509.25003).
* ``conditions(samples)`` returns the samples' captions (or captions made from their labels with
  the caption template the model was trained with); the pipeline passes them as ``cond``.
* ``eps(z_t, t, cond)`` embeds captions with the frozen text encoder (cached per caption) and, for
  a guidance scale s != 1, applies classifier-free guidance
  ``eps = eps_uncond + s (eps_cond - eps_uncond)`` with the empty caption as the unconditional
  input (two UNet evaluations per sample). The default s = 1 queries the conditional model only.
  The papers attack with s = 7.5 (thesis supplement B.4.1, "for all methods ... scale 7.5",
  and 100 for *reversed noising*); 001 (DualMD) generates with the diffusers default 7.5.

Nothing is downloaded: folders are read with ``local_files_only=True``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    SchedulerMixin,
    UNet2DConditionModel,
    UNet2DModel,
)

from genleak.errors import TargetError
from genleak.targets.base import LatentDiffusion
from genleak.targets.folders import LATENT_META

LATENT_FORMAT = "genleak.latent"

# -- captions from templates ------------------------------------------------------------------------
# No captioning model is available offline, so captions come from templates over the class label and
# three attributes measured on the pixels (captions then differ between images of one class, as BLIP
# captions do). Fields: {label} (number), {name} (digit name), {thickness}, {slant}, {width}.
DIGIT_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_CAPTION_TEMPLATE = "a {thickness} handwritten digit {name} {slant}"
# Rephrasings for prompt diversification (the DualMD paper draws one of six prompts per image: the
# original plus five BLIP captions, 001 section 4.2).
CAPTION_VARIANTS: tuple[str, ...] = (
    "the number {label} written by hand",
    "a scanned {width} digit {name}",
    "{name} drawn with a {thickness} pen",
    "a small grayscale picture of the numeral {name}",
    "handwriting showing {label} {slant}",
    "a {width} {name} on a white card",
    "digit {label} in {thickness} ink",
)
# Attribute thresholds: the tertiles of the 1,797 scikit-learn digits (the same at 8, 16 and 32 px),
# fixed so that an image's caption never depends on which set it is in.
_INK_TERTILES = (0.288, 0.321)  # mean ink in [0, 1]
_SLANT_TERTILES = (-0.0009, 0.0076)  # x-y moment / (H W)
_WIDTH_TERTILES = (0.023, 0.028)  # x variance / W^2


def template_captions(samples: Any, template: str = DEFAULT_CAPTION_TEMPLATE) -> list[str]:
    """One caption per image of an ``ImageSet`` (needs ``labels``) from a format template."""
    labels = getattr(samples, "labels", None)
    if labels is None:
        raise TargetError("template captions need class labels; give the samples labels or captions")
    attrs = image_attributes(samples.images)
    return [template.format(label=int(v), name=_digit_name(v), **attrs[i]) for i, v in enumerate(labels)]


def caption_sets(samples: Any, n_variants: int = 0, template: str = DEFAULT_CAPTION_TEMPLATE) -> list[list[str]]:
    """Per image: the original caption (its own ``captions`` entry, else ``template``) followed by
    ``n_variants`` rephrasings from ``CAPTION_VARIANTS`` (prompt diversification)."""
    if not 0 <= n_variants <= len(CAPTION_VARIANTS):
        raise TargetError(f"n_variants must be in 0..{len(CAPTION_VARIANTS)}, got {n_variants}")
    own = getattr(samples, "captions", None)
    first = list(own) if own is not None else template_captions(samples, template)
    if n_variants == 0:
        return [[c] for c in first]
    labels = getattr(samples, "labels", None)
    if labels is None:
        raise TargetError("caption variants are made from class labels; the samples have none")
    attrs = image_attributes(samples.images)
    return [[first[i]] + [CAPTION_VARIANTS[k].format(label=int(v), name=_digit_name(v), **attrs[i]) for k in range(n_variants)]
            for i, v in enumerate(labels)]


def caption_vocabulary(template: str = DEFAULT_CAPTION_TEMPLATE) -> list[str]:
    """Every caption the templates can produce for digits (a tokenizer corpus that covers them)."""
    import itertools

    out = []
    for tmpl in (template, *CAPTION_VARIANTS):
        for v, thick, slant, width in itertools.product(range(10), ("thin", "regular", "bold"),
                                                         ("leaning left", "upright", "leaning right"),
                                                         ("narrow", "medium", "wide")):
            out.append(tmpl.format(label=v, name=DIGIT_NAMES[v], thickness=thick, slant=slant, width=width))
    return sorted(set(out))


def image_attributes(pixels: torch.Tensor) -> list[dict[str, str]]:
    """Stroke thickness, slant and width words for images in [-1, 1] (N, C, H, W)."""
    ink = ((pixels.detach().float().cpu() + 1) / 2).mean(1)
    _, h, w = ink.shape
    mass = ink.flatten(1).sum(1).clamp_min(1e-6)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    cy = ((ink * ys).flatten(1).sum(1) / mass).view(-1, 1, 1)
    cx = ((ink * xs).flatten(1).sum(1) / mass).view(-1, 1, 1)
    slant = (ink * (xs - cx) * (ys - cy)).flatten(1).sum(1) / mass / (h * w)
    width = (ink * (xs - cx) ** 2).flatten(1).sum(1) / mass / (w * w)
    density = mass / (h * w)

    def word(v: float, cuts: tuple[float, float], words: tuple[str, str, str]) -> str:
        return words[0] if v < cuts[0] else words[2] if v > cuts[1] else words[1]

    return [
        {
            "thickness": word(float(density[i]), _INK_TERTILES, ("thin", "regular", "bold")),
            "slant": word(float(slant[i]), _SLANT_TERTILES, ("leaning left", "upright", "leaning right")),
            "width": word(float(width[i]), _WIDTH_TERTILES, ("narrow", "medium", "wide")),
        }
        for i in range(ink.shape[0])
    ]


def _digit_name(v: Any) -> str:
    v = int(v)
    return DIGIT_NAMES[v] if 0 <= v < len(DIGIT_NAMES) else str(v)


class LatentDiffusionTarget(LatentDiffusion):
    """A latent diffusion model (optionally text-to-image) wrapped for attacks.

    The wrapped objects stay diffusers/transformers objects (``self.vae``, ``self.unet``,
    ``self.scheduler``, ``self.text_encoder``, ``self.tokenizer``). ``counters`` count UNet
    evaluations and VAE encode/decode calls per image, for cost reports (benchmarks/latent.py).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder: Any = None,
        tokenizer: Any = None,
        *,
        guidance_scale: float = 1.0,
        caption_template: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        from genleak.targets.ddpm import _default_device

        self.device = torch.device(device) if device is not None else _default_device()
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.unet = unet.to(self.device).eval()
        self.scheduler = scheduler
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False) if text_encoder is not None else None
        self.tokenizer = tokenizer
        self.conditional = isinstance(unet, UNet2DConditionModel)
        if self.conditional and (text_encoder is None) != (tokenizer is None):
            raise TargetError("a text-conditioned target needs both a text encoder and a tokenizer (or neither)")
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TargetError(f"scheduler {type(scheduler).__name__} has no alphas_cumprod; use a DDPM/DDIM-type scheduler")
        self.alphas_cumprod = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise TargetError(f"scheduler prediction_type={self.prediction_type!r} is not supported")
        if int(unet.config.in_channels) != int(vae.config.latent_channels):
            raise TargetError(
                f"the UNet takes {unet.config.in_channels} channels but the VAE's latents have {vae.config.latent_channels}"
            )
        self.guidance_scale = float(guidance_scale)
        self.caption_template = caption_template
        self.scaling_factor = float(vae.config.get("scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(vae.config.get("shift_factor", None) or 0.0)
        self.counters = {"unet": 0, "vae_encode": 0, "vae_decode": 0}
        self._embed_cache: dict[str, torch.Tensor] = {}
        self._fingerprint: str | None = None

    # -- the protocol ---------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> scaled VAE posterior mean (the latent an attacker computes)."""
        self.counters["vae_encode"] += int(images.shape[0])
        dist = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist
        return (dist.mean - self.shift_factor) * self.scaling_factor

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (the VAE decoder; not clamped)."""
        self.counters["vae_decode"] += int(x.shape[0])
        return self.vae.decode(x.to(self.device, self.vae.dtype) / self.scaling_factor + self.shift_factor).sample

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        """Predicted noise; with a text UNet, ``cond`` is captions, embeddings or None (empty caption)."""
        n = x_t.shape[0]
        x_t = x_t.to(self.device)
        t_vec = torch.full((n,), t, dtype=torch.long, device=self.device) if isinstance(t, int) else t.to(self.device)
        if not self.conditional:
            kwargs = {}
            if cond is not None:
                if self.num_classes is None:
                    raise TargetError("this latent target is unconditional but was given conditions")
                kwargs["class_labels"] = torch.as_tensor(cond, device=self.device)
            self.counters["unet"] += n
            out = self.unet(x_t, t_vec, return_dict=False, **kwargs)[0]
        else:
            hidden = self.embed(cond, n)
            s = self.guidance_scale
            if s == 1.0:
                self.counters["unet"] += n
                out = self.unet(x_t, t_vec, encoder_hidden_states=hidden, return_dict=False)[0]
            else:
                null = self.embed(None, n)
                self.counters["unet"] += 2 * n
                both = self.unet(
                    torch.cat([x_t, x_t]), torch.cat([t_vec, t_vec]),
                    encoder_hidden_states=torch.cat([null, hidden]), return_dict=False,
                )[0]
                uncond, cond_eps = both.chunk(2)
                out = uncond + s * (cond_eps - uncond)
        return self._to_eps(out, x_t, t_vec)

    def conditions(self, samples: Any) -> Any:
        """Captions of an ``ImageSet`` for a text UNet (from labels via the caption template if the
        set has no captions); None for unconditional latent models."""
        if not self.conditional:
            if self.num_classes is None:
                return None
            labels = getattr(samples, "labels", None)
            if labels is None:
                raise TargetError("the target is class-conditional but the samples carry no labels")
            return torch.as_tensor(labels, dtype=torch.long)
        captions = getattr(samples, "captions", None)
        if captions is not None:
            return list(captions)
        if getattr(samples, "labels", None) is not None and self.caption_template:
            return template_captions(samples, self.caption_template)
        raise TargetError(
            "the target is text-conditioned but the samples carry no captions; build the split from a source "
            "with captions (e.g. `genleak data caption`) or save a caption template with the target"
        )

    def null_condition(self, n: int) -> list[str]:
        """The unconditional input (the empty caption) for n samples: what CFG and CLiD compare against."""
        if not self.conditional:
            raise TargetError("this latent target is unconditional: it has no null condition")
        return [""] * n

    def networks(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, *([self.text_encoder] if self.text_encoder is not None else [])]

    def fingerprint(self) -> str:
        """sha256 over all weights, the scheduler config, tokenizer vocabulary, scale factors and CFG scale."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"genleak.latent\x00")
            modules = [("vae", self.vae), ("unet", self.unet)]
            if self.text_encoder is not None:
                modules.append(("text_encoder", self.text_encoder))
            for prefix, module in modules:
                for name, tensor in sorted(module.state_dict().items()):
                    h.update(f"{prefix}.{name}".encode())
                    h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
            schedule = {k: v for k, v in dict(self.scheduler.config).items() if not k.startswith("_")}
            h.update(json.dumps(schedule, sort_keys=True, default=str).encode())
            if self.tokenizer is not None:
                h.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
            meta = {"scale": self.scaling_factor, "shift": self.shift_factor, "cfg": self.guidance_scale,
                    "template": self.caption_template}
            h.update(json.dumps(meta, sort_keys=True).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # -- conditions ------------------------------------------------------------------------------
    def embed(self, cond: Any, n: int) -> torch.Tensor:
        """Text-encoder hidden states (n, L, D) for captions (cached per caption), or pass-through
        for precomputed embeddings; None means the empty caption."""
        if isinstance(cond, torch.Tensor) and cond.is_floating_point():
            if cond.ndim != 3 or cond.shape[0] != n:
                raise TargetError(f"embeddings must be (N={n}, L, D), got {tuple(cond.shape)}")
            return cond.to(self.device)
        if self.text_encoder is None:
            raise TargetError("this target has no text encoder: pass encoder_hidden_states tensors as conditions")
        if cond is None:
            captions = [""] * n
        elif isinstance(cond, str):
            captions = [cond] * n
        else:
            captions = [str(c) for c in cond]
            if len(captions) != n:
                raise TargetError(f"{len(captions)} captions for a batch of {n}")
        missing = sorted({c for c in captions if c not in self._embed_cache})
        if missing:
            # Outside inference mode so the cached tensors can also feed attacks that need gradients.
            with torch.inference_mode(False), torch.no_grad():
                for start in range(0, len(missing), 256):
                    chunk = missing[start : start + 256]
                    ids = self.tokenizer(
                        chunk, padding="max_length", max_length=self.tokenizer.model_max_length,
                        truncation=True, return_tensors="pt",
                    ).input_ids.to(self.device)
                    hidden = self.text_encoder(ids)[0]
                    for c, hs in zip(chunk, hidden, strict=True):
                        self._embed_cache[c] = hs.clone()
        return torch.stack([self._embed_cache[c] for c in captions])

    def with_guidance(self, scale: float) -> LatentDiffusionTarget:
        """The same model answering with CFG scale ``scale`` (shares modules and the caption cache)."""
        if scale != 1.0 and not self.conditional:
            raise TargetError("classifier-free guidance needs a text-conditioned target")
        view = copy.copy(self)
        view.guidance_scale = float(scale)
        view._fingerprint = None
        return view

    def _to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert v- or x0-predictions to noise predictions: attacks speak epsilon."""
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod[t.cpu()].to(out.device, out.dtype).view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022)
            return a.sqrt() * out + (1 - a).sqrt() * x_t
        return (x_t - a.sqrt() * out) / (1 - a).sqrt().clamp_min(1e-8)

    # -- shapes, description ---------------------------------------------------------------------
    @property
    def text_conditioned(self) -> bool:
        return self.conditional

    @property
    def num_classes(self) -> int | None:
        return None if self.conditional else self.unet.config.get("num_class_embeds")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (int(self.unet.config.in_channels), int(h), int(w))

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.latent_shape
        f = self.downsample_factor
        return (int(self.vae.config.in_channels), h * f, w * f)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for `genleak data inspect` and result provenance."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {
            "kind": "text-to-image-ldm" if self.conditional else "latent-diffusion",
            "model": type(self.unet).__name__,
            "parameters": count(self.unet),
            "vae_parameters": count(self.vae),
            "text_encoder_parameters": count(self.text_encoder),
            "image_shape": list(self.image_shape),
            "latent_shape": list(self.latent_shape),
            "scaling_factor": self.scaling_factor,
            "guidance_scale": self.guidance_scale,
            "caption_template": self.caption_template,
            "scheduler": type(self.scheduler).__name__,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.scheduler.config.get("beta_schedule"),
            "prediction_type": self.prediction_type,
            "fingerprint": self.fingerprint(),
        }

    def ddim_scheduler(self, num_inference_steps: int) -> DDIMScheduler:
        """A deterministic DDIM sampler on this target's noise schedule (Song et al. 2021)."""
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        return scheduler

    # -- folders ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str | torch.device | None = None, guidance_scale: float | None = None
    ) -> LatentDiffusionTarget:
        """Load an SD-style folder (``vae/ unet/ scheduler/ [text_encoder/ tokenizer/]``) from disk."""
        path = Path(folder)
        if not is_latent_folder(path):
            raise TargetError(f"'{folder}' has no vae/config.json and unet/config.json: not a latent diffusion folder")
        sched_dir = path / "scheduler"
        if not (sched_dir / "scheduler_config.json").is_file():
            raise TargetError(f"'{folder}' has no scheduler/scheduler_config.json: save the scheduler with the model")
        meta = json.loads((path / LATENT_META).read_text()) if (path / LATENT_META).is_file() else {}
        unet_cfg = json.loads((path / "unet" / "config.json").read_text())
        unet_cls = UNet2DModel if unet_cfg.get("_class_name") == "UNet2DModel" else UNet2DConditionModel
        text_encoder = tokenizer = None
        from genleak.targets.loading import folder_scheduler, weights_variant

        try:  # fp32 whatever the weights' variant (fp16 SD folders): scores are computed in fp32
            _quiet_transformers()
            vae = AutoencoderKL.from_pretrained(str(path / "vae"), local_files_only=True, torch_dtype=torch.float32,
                                                variant=weights_variant(path / "vae"))
            unet = unet_cls.from_pretrained(str(path / "unet"), local_files_only=True, torch_dtype=torch.float32,
                                            variant=weights_variant(path / "unet"))
            scheduler = folder_scheduler(sched_dir)
            if unet_cls is UNet2DConditionModel and (path / "text_encoder" / "config.json").is_file():
                from transformers import AutoTokenizer

                text_encoder = _load_text_encoder(path / "text_encoder")
                tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"), local_files_only=True)
        except (OSError, ValueError) as err:
            raise TargetError(f"could not load latent diffusion folder '{folder}': {str(err).splitlines()[0]}") from err
        scale = guidance_scale if guidance_scale is not None else float(meta.get("guidance_scale", 1.0))
        return cls(vae, unet, scheduler, text_encoder, tokenizer, guidance_scale=scale,
                   caption_template=meta.get("caption_template"), device=device, **cls._meta_kwargs(meta))

    def save_pretrained(self, folder: str | Path) -> None:
        """Write an SD-style folder: components in diffusers/transformers format plus
        ``model_index.json`` (a ``StableDiffusionPipeline`` index for text models) and
        ``genleak_latent.json`` (caption template, default CFG scale)."""
        from genleak.io import atomic_write_json

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(str(path / "vae"), safe_serialization=True)
        self.unet.save_pretrained(str(path / "unet"), safe_serialization=True)
        self.scheduler.save_pretrained(str(path / "scheduler"))
        import diffusers

        index: dict[str, Any] = {
            "_diffusers_version": diffusers.__version__,
            "vae": ["diffusers", type(self.vae).__name__],
            "unet": ["diffusers", type(self.unet).__name__],
            "scheduler": ["diffusers", type(self.scheduler).__name__],
        }
        if self.text_encoder is not None:
            _quiet_transformers()
            self.text_encoder.save_pretrained(str(path / "text_encoder"), safe_serialization=True)
            self.tokenizer.save_pretrained(str(path / "tokenizer"))
            index.update({
                "_class_name": "StableDiffusionPipeline",
                "text_encoder": ["transformers", type(self.text_encoder).__name__],
                "tokenizer": ["transformers", type(self.tokenizer).__name__],
                "safety_checker": [None, None],
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
            })
        else:
            # diffusers has no stock pipeline for a KL-VAE + UNet2DModel; the components load one by one.
            index["_class_name"] = "LatentDiffusionTarget"
        atomic_write_json(path / "model_index.json", index)
        atomic_write_json(path / LATENT_META, {
            "format": LATENT_FORMAT,
            "version": 1,
            "caption_template": self.caption_template,
            "guidance_scale": self.guidance_scale,
            **self._extra_meta(),
        })

    def _extra_meta(self) -> dict[str, Any]:
        """Subclass settings that ``from_pretrained`` needs to rebuild the same target."""
        return {}

    @classmethod
    def _meta_kwargs(cls, meta: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments a subclass reads back from what ``_extra_meta`` saved."""
        return {}


def is_latent_folder(folder: str | Path) -> bool:
    path = Path(folder)
    return (path / "vae" / "config.json").is_file() and (path / "unet" / "config.json").is_file()


def _load_text_encoder(folder: Path) -> Any:
    from transformers import AutoModel, CLIPTextModel

    from genleak.targets.loading import weights_variant

    config = json.loads((folder / "config.json").read_text())
    cls = CLIPTextModel if config.get("model_type") in ("clip_text_model", "clip") else AutoModel
    return cls.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32, variant=weights_variant(folder))


def _quiet_transformers() -> None:
    """transformers 5 prints a progress bar per loaded/saved model; genleak shows its own."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - cosmetic only
        pass


def build_latent_unet(
    latent_size: int,
    latent_channels: int,
    block_out_channels: tuple[int, ...] = (32, 64),
    layers_per_block: int = 1,
    cross_attention_dim: int | None = None,
    attention_head_dim: int = 8,
) -> UNet2DModel | UNet2DConditionModel:
    """A small diffusers UNet for latents: ``UNet2DModel`` (unconditional, the same shape as the
    pixel targets' ``build_unet``) or, with ``cross_attention_dim``, an SD-style
    ``UNet2DConditionModel`` with cross-attention in every block but the last down block."""
    from genleak.targets.ddpm import build_unet

    if cross_attention_dim is None:
        return build_unet(latent_size, latent_channels, tuple(block_out_channels), layers_per_block)
    n = len(block_out_channels)
    groups = min(32, min(block_out_channels) // 2)
    down = tuple("CrossAttnDownBlock2D" if i < n - 1 else "DownBlock2D" for i in range(n))
    up = tuple("UpBlock2D" if i == 0 else "CrossAttnUpBlock2D" for i in range(n))
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=groups,
    )


def build_vae(
    image_size: int,
    channels: int = 1,
    block_out_channels: tuple[int, ...] = (32, 64),
    latent_channels: int = 4,
    layers_per_block: int = 1,
) -> AutoencoderKL:
    """A small KL autoencoder (SD's ``AutoencoderKL``, downsampling 2^(len(blocks)-1)), without the
    mid-block attention that tiny images do not need."""
    n = len(block_out_channels)
    groups = min(32, min(block_out_channels) // 2)
    if any(c % groups for c in block_out_channels):
        raise ValueError(f"block_out_channels {block_out_channels} must be multiples of {groups}")
    if image_size % 2 ** (n - 1):
        raise ValueError(f"image size {image_size} is not divisible by the VAE's downsampling {2 ** (n - 1)}")
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=groups,
        sample_size=image_size,
        mid_block_add_attention=False,
    )


def sd_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """Stable Diffusion's training schedule: scaled-linear betas 0.00085..0.012, T = 1000, epsilon
    prediction (Rombach et al. 2022; SD v1 ``scheduler_config.json``)."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )
