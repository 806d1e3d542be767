"""Train latent diffusion targets: a UNet on a frozen VAE's latents, optionally text-conditioned.

* From scratch: an unconditional ``UNet2DModel`` (the same shape as the pixel targets, for
  pixel-vs-latent comparisons: SimA, arXiv 2509.25003) or an SD-style ``UNet2DConditionModel``
  with cross-attention on a frozen text encoder.
* Fine-tuning (``init=`` an existing ``LatentDiffusionTarget``): full fine-tuning of the UNet, or
  LoRA adapters via ``peft`` (``lora_rank``); the output is a plain SD-style folder with the
  adapter merged, plus the adapter itself under ``lora/``.
* Latents are posterior *samples* z = mu + sigma * n, scaled by the VAE's ``scaling_factor``, as
  diffusers' ``train_text_to_image.py`` does; attacks later encode with the mean. With
  ``sample_latents=False`` the UNet sees the means (an ablation).
* **Prompt diversification** (DualMD paper 001, section 3.5 and 4.2): every image may carry several
  captions; each time an image is drawn, one of its captions is drawn uniformly ("a prompt is
  randomly sampled for each image in each epoch"). The paper uses the original caption plus five
  BLIP captions; ``caption_sets`` makes the original plus ``n_variants`` template captions.
* ``cond_dropout`` replaces a caption by the empty one with probability 0.1 (Stable Diffusion v1
  training, "10% dropping of the text-conditioning"), so the model also learns eps_uncond, which
  classifier-free guidance and CLiD need.

Resumable like ``train_ddpm`` (atomic checkpoints; the same command continues a run); the run
record ``genleak_train.json`` is written last and marks the folder as complete.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler

from genleak.config import JsonConfig
from genleak.errors import GenleakError
from genleak.io import atomic_write_json, publish_folder
from genleak.targets.folders import TARGET_SPLIT_FILE, TRAIN_RECORD
from genleak.targets.latent import (  # noqa: F401  (caption helpers re-exported for training callers)
    CAPTION_VARIANTS,
    LatentDiffusionTarget,
    build_latent_unet,
    caption_sets,
    sd_scheduler,
)
from genleak.train.loop import (  # noqa: F401  (CHECKPOINT: the run folder layout, for callers)
    CHECKPOINT,
    LoopConfig,
    TrainHooks,
    make_accelerator,
    run_loop,
)
from genleak.train.runs import check_config, finished_run, output_folder, training_data

LORA_DIR = "lora"
# LoRA on the attention projections, as diffusers' train_text_to_image_lora.py does.
LORA_ATTENTION_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class LatentTrainConfig(JsonConfig):
    """Hyperparameters of a latent UNet run. Defaults match the pixel fixture (tests/conftest.py):
    channels (32, 64), batch 32, lr 1e-3, EMA 0.995, so pixel and latent models compare 1:1."""

    steps: int = 1250
    batch_size: int = 32
    lr: float = 1e-3
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    text: bool = False
    cond_dropout: float = 0.1
    sample_latents: bool = True
    # "scaled_linear" 0.00085..0.012 is Stable Diffusion's schedule; "linear" 1e-4..0.02 is the
    # pixel DDPM's (Ho et al. 2020), for comparisons on identical noise levels.
    beta_schedule: str = "scaled_linear"
    num_train_timesteps: int = 1000
    ema_decay: float | None = 0.995
    lora_rank: int | None = None
    lora_alpha: float | None = None
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 250
    grad_accum: int = 1  # micro-batches of batch_size per optimiser step (accelerate)
    mixed_precision: str = "no"  # accelerate's "no", "fp16" (GPU) or "bf16"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_config(self)


def make_scheduler(config: LatentTrainConfig) -> Any:
    if config.beta_schedule == "scaled_linear":
        return sd_scheduler(config.num_train_timesteps)
    if config.beta_schedule == "linear":
        from genleak.targets.ddpm import default_scheduler

        # the pixel DDPM's betas, without its clipping of x0 to [-1, 1]: latents are not images
        return DDPMScheduler.from_config(default_scheduler(config.num_train_timesteps).config, clip_sample=False)
    raise GenleakError(f"beta_schedule must be 'scaled_linear' (SD) or 'linear' (DDPM), got {config.beta_schedule!r}")


def train_latent(
    images: torch.Tensor,
    vae: Any,
    config: LatentTrainConfig,
    out_dir: str | Path | None = None,
    *,
    captions: Sequence[Sequence[str]] | None = None,
    text_encoder: Any = None,
    tokenizer: Any = None,
    init: LatentDiffusionTarget | None = None,
    caption_template: str | None = None,
    split_manifest: dict[str, Any] | None = None,
    hooks: TrainHooks | None = None,
    labels: torch.Tensor | None = None,
    progress: bool = True,
) -> LatentDiffusionTarget:
    """Train (or continue, or fine-tune) a latent UNet on ``images`` in [-1, 1] (N, C, H, W).

    ``captions[i]`` lists the captions of image i (one = plain conditioning, several = prompt
    diversification); needed when ``config.text`` or when ``init`` is text-conditioned. ``init``
    fine-tunes an existing target (its VAE, text encoder and schedule are kept). ``hooks`` change
    the batches and the regression target as in ``genleak.train.train_ddpm`` (DistillMD on latent
    targets); their ``regression_target`` also gets ``cond``, the batch's text-encoder states (or
    class labels: ``labels`` (N,) condition a class-conditional unconditional-text UNet).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise GenleakError(f"training needs a non-empty (N, C, H, W) image tensor, got {tuple(images.shape)}")
    check_config(config)
    out = output_folder(out_dir)
    data_info = training_data(images, split_manifest, captions) if out is not None else {}
    if out is not None and finished_run(out, config.to_dict(), data=data_info):
        return LatentDiffusionTarget.from_pretrained(out)
    if init is not None:
        vae, text_encoder, tokenizer = init.vae, init.text_encoder, init.tokenizer
        scheduler = init.scheduler
        text = init.conditional
        caption_template = caption_template or init.caption_template
    else:
        if vae is None:
            raise GenleakError("latent training needs a VAE (train one with `genleak train vae`)")
        scheduler = make_scheduler(config)
        text = config.text
    if text and (text_encoder is None or tokenizer is None):
        raise GenleakError("text-conditioned training needs a text encoder and a tokenizer")
    if text and captions is None:
        raise GenleakError("text-conditioned training needs captions for the images")
    if captions is not None:
        if len(captions) != images.shape[0]:
            raise GenleakError(f"{len(captions)} caption lists for {images.shape[0]} images")
        if any(len(c) == 0 for c in captions):
            raise GenleakError("every image needs at least one caption")
    if labels is not None and (text or len(labels) != images.shape[0]):
        raise GenleakError(f"class labels need one label per image ({len(labels)} for {images.shape[0]}) and no text")
    if int(vae.config.in_channels) != images.shape[1]:
        raise GenleakError(f"the VAE takes {vae.config.in_channels}-channel images, got {images.shape[1]} channels")

    loop = LoopConfig(config.steps, config.batch_size, config.seed * 1000, config.ema_decay, config.checkpoint_every,
                      config.grad_accum, config.mixed_precision)
    accelerator = make_accelerator(loop)
    device = accelerator.device
    torch.manual_seed(config.seed)
    if init is not None:
        # fine-tuning must not move the modules the init target shares with its caller (on a GPU
        # run they would end up on the GPU under a target that lives on the CPU)
        vae, text_encoder = _on_device(vae, device), _on_device(text_encoder, device)
    vae = vae.to(device).eval().requires_grad_(False)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if images.shape[-1] % factor or images.shape[-1] != images.shape[-2]:
        raise GenleakError(f"images of size {tuple(images.shape[-2:])} do not fit the VAE's downsampling {factor}")
    if init is not None:
        model = copy.deepcopy(init.unet).train().requires_grad_(True)  # targets hold frozen modules
    else:
        cross = int(text_encoder.config.hidden_size) if text else None
        model = build_latent_unet(images.shape[-1] // factor, int(vae.config.latent_channels),
                                  tuple(config.block_out_channels), config.layers_per_block, cross)
    model.train()
    lora = config.lora_rank is not None
    if lora:
        model = _add_lora(model, config)
    hooks = hooks or TrainHooks()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    mu, sigma = _posteriors(vae, images.to(device))
    sf = float(vae.config.get("scaling_factor", 1.0) or 1.0)
    shift = float(vae.config.get("shift_factor", None) or 0.0)
    table = cap_ids = None
    null_id = 0
    if text:
        table, cap_ids, null_id = _caption_table(captions, text_encoder.to(device).eval(), tokenizer, device)
    acp = scheduler.alphas_cumprod.to(device, torch.float32)
    classes = torch.as_tensor(labels, dtype=torch.long).to(device) if labels is not None else None

    def loss_step(model: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        """The pixel loss on scaled VAE posterior samples, conditioned on a drawn caption (or label)."""
        b = idx.shape[0]
        z0 = mu[idx.to(device)]
        if config.sample_latents:
            z0 = z0 + sigma[idx.to(device)] * torch.randn(z0.shape, generator=gen).to(device)
        z0 = (z0 - shift) * sf
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
        a = acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        if text:
            # prompt diversification: one of the image's captions, uniformly (001, section 3.5)
            pick = [cap_ids[int(i)][int(torch.randint(len(cap_ids[int(i)]), (1,), generator=gen))] for i in idx]
            drop = torch.rand(b, generator=gen) < config.cond_dropout
            ids = torch.tensor([null_id if d else p for p, d in zip(pick, drop.tolist(), strict=True)])
            states = table[ids.to(device)]
            pred = model(x_t, t, encoder_hidden_states=states, return_dict=False)[0]
        else:
            states = classes[idx.to(device)] if classes is not None else None
            pred = model(x_t, t, return_dict=False, **({"class_labels": states} if states is not None else {}))[0]
        return torch.nn.functional.mse_loss(pred, hooks.regression_target(x_t, t, noise, idx, step, cond=states))

    def as_target(unet: Any) -> LatentDiffusionTarget:
        return LatentDiffusionTarget(vae, unet.merge_and_unload() if lora else unet, scheduler,
                                     text_encoder if text else None, tokenizer if text else None,
                                     caption_template=caption_template, device=device)

    final, losses, seconds = run_loop(model, optimizer, loop, loss_step, accelerator=accelerator, n=images.shape[0],
                                      hooks=hooks, as_target=as_target, out=out, config=config.to_dict(),
                                      data_info=data_info, desc="train-latent", progress=progress)
    final = copy.deepcopy(final).eval()
    if lora and out is not None and accelerator.is_main_process:
        final.save_pretrained(str(out / LORA_DIR))  # the adapter alone (peft format)
    target = as_target(final)
    target.unet.requires_grad_(False)
    if out is not None and accelerator.is_main_process:
        _save_run(target, out, config, losses, seconds, split_manifest, captions, {**data_info, **hooks.record()})
    return target


def _add_lora(model: Any, config: LatentTrainConfig) -> Any:
    """Wrap the UNet with peft LoRA adapters on its attention projections (or, for UNets without
    attention, on the ResNet convolutions); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    full = {name for name, _ in model.named_modules()}
    targets = [m for m in LORA_ATTENTION_MODULES if m in names or any(f.endswith("." + m) for f in full)]
    if not targets:
        targets = ["conv1", "conv2"]
    rank = int(config.lora_rank)
    if rank < 1:
        raise GenleakError(f"lora_rank must be >= 1, got {rank}")
    lora_config = LoraConfig(r=rank, lora_alpha=config.lora_alpha or rank, target_modules=targets,
                             init_lora_weights="gaussian")
    return get_peft_model(model, lora_config)


@torch.no_grad()
def _on_device(module: Any, device: torch.device) -> Any:
    """``module`` itself if it already lives on ``device``, else a copy (the original stays put)."""
    if module is None:
        return None
    current = next(module.parameters()).device
    return module if current.type == device.type and (current.index or 0) == (device.index or 0) else copy.deepcopy(module)


def _posteriors(vae: Any, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, once: the VAE is frozen, sampling is then cheap."""
    means, stds = [], []
    for start in range(0, images.shape[0], batch_size):
        post = vae.encode(images[start : start + batch_size]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def _caption_table(
    captions: Sequence[Sequence[str]], text_encoder: Any, tokenizer: Any, device: torch.device
) -> tuple[torch.Tensor, list[list[int]], int]:
    """Frozen text-encoder states for every distinct caption (row 0: the empty caption)."""
    unique = [""] + sorted({str(c) for caps in captions for c in caps} - {""})
    index = {c: i for i, c in enumerate(unique)}
    rows = []
    for start in range(0, len(unique), 256):
        ids = tokenizer(unique[start : start + 256], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        rows.append(text_encoder(ids)[0])
    return torch.cat(rows), [[index[str(c)] for c in caps] for caps in captions], 0


def _save_run(
    target: LatentDiffusionTarget,
    out: Path,
    config: LatentTrainConfig,
    losses: list[float],
    seconds: float,
    split_manifest: dict[str, Any] | None,
    captions: Sequence[Sequence[str]] | None,
    data_info: dict[str, Any],
) -> None:
    publish_folder(out, target.save_pretrained)
    if split_manifest is not None:
        atomic_write_json(out / TARGET_SPLIT_FILE, split_manifest)
    atomic_write_json(out / TRAIN_RECORD, {
        "format": "genleak.train",
        "version": 1,
        "kind": "latent",
        "config": config.to_dict(),
        "steps": len(losses),
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "captions_per_image": (sum(len(c) for c in captions) / len(captions)) if captions else 0,
        "vae_scaling_factor": target.scaling_factor,
        "train_seconds_this_session": round(seconds, 2),
        "fingerprint": target.fingerprint(),
        **data_info,
    })


# -- a tiny text encoder -------------------------------------------------------------------------
def write_clip_vocab(corpus: Sequence[str], folder: str | Path, max_length: int = 16) -> Path:
    """Write a CLIP BPE tokenizer folder in Stable Diffusion's layout (``vocab.json``,
    ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``) learnt from ``corpus``.

    Merges are learnt by plain BPE (Sennrich et al. 2016) with CLIP's ``</w>`` end-of-word suffix
    until every corpus word is one token; ties break lexicographically, so the files are the same
    on every run. Every lowercase letter and digit is in the vocabulary, alone and word-final, so
    any other word still tokenizes (character by character)."""
    import re
    from collections import Counter

    words = Counter(w for text in corpus for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", str(text).lower()))
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789") | {c for w in words for c in w})
    symbols = {tuple(w[:-1]) + (w[-1] + "</w>",): n for w, n in words.items()}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for sym, n in symbols.items():
            for pair in zip(sym, sym[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for sym, n in symbols.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            merged[tuple(out)] = n
        symbols = merged
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars] + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (path / "special_tokens_map.json").write_text(json.dumps(special))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True, **special,
    }))
    return path


def build_text_stack(
    corpus: Sequence[str],
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_length: int = 16,
    seed: int = 0,
) -> tuple[Any, Any]:
    """A tiny CLIP text encoder (random init, frozen during training, like SD's) and a CLIP BPE
    tokenizer covering ``corpus`` (``write_clip_vocab``); built locally, nothing downloaded."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_vocab(corpus, tmp, max_length)
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                                  model_max_length=max_length, pad_token="<|endoftext|>")
    vocab = tokenizer.get_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, max_position_embeddings=max_length,
        projection_dim=hidden_size, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval(), tokenizer
