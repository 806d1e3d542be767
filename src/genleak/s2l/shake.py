"""Shake-to-Leak (002): fine-tune a target on its own generations for a domain, then re-attack.

The attack (002, "Method Summary" and "Critical path"): 1) prompt the pre-trained model with the
target domain (a celebrity's name there; a class label or "all" for pixel DDPMs here) to build a
synthetic private set, 2) fine-tune on it (dense fine-tuning, LoRA, textual-inversion-style
embeddings, ...), 3) run the same MIAs on the *original* member / non-member split of that domain
against the fine-tuned model and report the change. S2L reports +5.4 points MIA AUC on SD
(002, Key Results) and more leakage from parameter-efficient methods than from dense fine-tuning
(002, Mechanism 2; Tables I and II).

Domains and methods by target type (``check_method`` dispatches on the type):

* Pixel DDPMs (``DiffusionTarget``): unconditional UNets have one domain, ``"all"``;
  class-conditional UNets (``num_class_embeds``) take a class index as the domain and generate /
  fine-tune / evaluate on that class only. ``full`` and ``lora`` run ``train_ddpm``.
* Latent targets (``LatentDiffusionTarget``): a text-to-image target takes a *prompt* as the
  domain; the synthetic set is generated from it and carries it as every image's caption, and the
  given split is taken to be that domain's split (S2L attacks each domain's own member /
  non-member folders). An unconditional latent target has the domain ``"all"``. ``full`` and
  ``lora`` run ``genleak.train.latent.train_latent(init=target)`` (LoRA on the attention
  projections, as there); ``embedding`` is textual inversion (``genleak.s2l.textual_inversion``),
  text-to-image targets only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.s2l.report import Comparison
from genleak.s2l.textual_inversion import DEFAULT_LR, DEFAULT_PLACEHOLDER, DEFAULT_PROMPT_TEMPLATE
from genleak.train import TrainHooks

__all__ = [
    "METHODS",
    "ClassLabelHooks",
    "ShakeConfig",
    "domain_conditions",
    "domain_split",
    "finetune",
    "make_domain_set",
    "run_s2l",
]

METHODS = ("full", "lora", "embedding")

# LoRA goes on the UNet's ResNet convolutions and time-embedding projections: the small pixel UNets
# (build_unet) have no attention, so these are the layers that carry the content. Override with
# ShakeConfig.lora_targets for UNets with attention (e.g. add "to_q", "to_k", "to_v", "to_out.0").
DEFAULT_LORA_TARGETS = ("conv1", "conv2", "time_emb_proj")


@dataclass(frozen=True)
class ShakeConfig:
    """Synthetic-set and fine-tuning settings.

    Steps / learning rate are sized for the tiny CPU models of the tests (tests/conftest.py); S2L fine-tunes SD
    with each method's usual recipe (002, Method Summary), which has no tiny-model equivalent.
    """

    n_synthetic: int = 256  # size of the self-generated domain set
    sample_steps: int = 50  # DDIM steps for generating it
    steps: int = 300  # fine-tuning optimiser steps
    lr: float = 1e-4
    lora_lr: float = 1e-3  # LoRA adapters start at zero and need a larger step than dense weights
    batch_size: int = 32
    ema_decay: float | None = None  # fine-tuning keeps the last iterate, like S2L's fine-tuning recipes
    lora_alpha: float | None = None  # None: alpha = rank (scale 1)
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # pixel UNets; latent LoRA follows train_latent
    # Latent full / LoRA: no caption dropout, as S2L's fine-tuning scripts (DreamBooth / LoRA on the
    # domain prompt, VITA-Group/Shake-to-Leak experiments/s2l.py) train on the prompt every step.
    cond_dropout: float = 0.0
    # --method embedding (textual inversion, genleak.s2l.textual_inversion): the new token, the
    # prompt it is used in (training and re-attack), the words its embedding starts from (None: the
    # domain prompt) and its learning rate (Gal et al. 2022, "Implementation details": 0.005).
    placeholder: str = DEFAULT_PLACEHOLDER
    embedding_template: str = DEFAULT_PROMPT_TEMPLATE
    embedding_init: str | None = None
    embedding_lr: float = DEFAULT_LR
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d


# -- domains -------------------------------------------------------------------------------------------
def _is_latent(target: Any) -> bool:
    from genleak.targets.latent import LatentDiffusionTarget

    return isinstance(target, LatentDiffusionTarget)


def _is_text(target: Any) -> bool:
    """A text-to-image latent target: its domains are prompts."""
    return _is_latent(target) and target.text_conditioned


def domain_conditions(target: Any, domain: str | int, n: int) -> Any:
    """Per-sample conditions that make ``target`` generate ``domain``: the prompt n times for a
    text-to-image target, class labels for a class-conditional UNet, None for unconditional."""
    dom = str(domain).strip()
    if _is_text(target):
        if not dom or dom.lower() == "all":
            raise GenleakError(f"the target is text-conditioned: give a prompt as the domain (e.g. --domain \"a photo of ...\"), got {dom!r}")
        return [dom] * n
    classes = target.num_classes
    if classes is None:
        if dom.lower() != "all":
            raise GenleakError(f"the target is unconditional: its only domain is 'all', got {dom!r}")
        return None
    try:
        c = int(dom)
    except ValueError:
        raise GenleakError(f"the target is class-conditional ({classes} classes): give a class index as the domain, got {dom!r}") from None
    if not 0 <= c < classes:
        raise GenleakError(f"class {c} is outside the target's {classes} classes")
    return torch.full((n,), c, dtype=torch.long)


def domain_split(split: Any, domain: str | int, target: Any = None) -> Any:
    """The part of ``split`` in ``domain``: all of it for "all", else the images with that class label.

    For a text-to-image ``target`` the domain is a prompt and the whole split is that domain's
    split: S2L attacks each domain's own member / non-member sets (the authors' SecMI runs read
    ``member/<domain>`` and ``nonmember/<domain>``), and a caption need not name the domain prompt.
    """
    dom = str(domain).strip()
    if dom.lower() == "all" or (target is not None and _is_text(target)):
        return split
    try:
        c = int(dom)
    except ValueError:
        raise GenleakError(f"prompt domains need a text-conditioned target; got domain {dom!r}") from None
    parts = []
    for side in (split.members, split.nonmembers):
        if side.labels is None:
            raise GenleakError(f"domain {c} needs class labels in the split; this split's images carry none")
        rows = [i for i, v in enumerate(side.labels) if v == c]
        if not rows:
            raise GenleakError(f"the split has no {'members' if side is split.members else 'non-members'} of class {c}")
        parts.append(side[rows])
    return type(split)(members=parts[0], nonmembers=parts[1], source=split.source, seed=split.seed,
                       name=f"{split.name}[class={c}]", metadata=dict(split.metadata))


def make_domain_set(target: Any, domain: str | int, config: ShakeConfig, *, progress: bool = True) -> Any:
    """Step 1 of S2L: the synthetic private set, generated by the target itself for ``domain``."""
    from genleak.data import ImageSet
    from genleak.targets.sampling import generate

    n = config.n_synthetic
    if n < 1:
        raise GenleakError(f"n_synthetic must be >= 1, got {n}")
    cond = domain_conditions(target, domain, n)
    images = generate(target, n, steps=config.sample_steps, seed=config.seed, cond=cond, progress=progress)
    labels = cond.tolist() if isinstance(cond, torch.Tensor) else None
    captions = cond if isinstance(cond, list) else None  # text targets: every image's caption is the prompt
    return ImageSet(images=images, ids=[f"s2l/{domain}/{i}" for i in range(n)], labels=labels, captions=captions,
                    source={"kind": "generated", "domain": str(domain), "seed": config.seed})


# -- fine-tuning -----------------------------------------------------------------------------------------
class _Conditioned(torch.nn.Module):
    """Forwards (x_t, t) to the UNet with the class labels of the batch the hooks chose."""

    def __init__(self, inner: torch.nn.Module, hooks: ClassLabelHooks) -> None:
        super().__init__()
        self.inner = inner
        self._hooks = [hooks]  # a list: not registered as a submodule

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_dict: bool = True) -> Any:
        labels = self._hooks[0].current.to(x.device)
        return self.inner(x, t, class_labels=labels, return_dict=return_dict)


class ClassLabelHooks(TrainHooks):
    """Class-conditional training through ``train_ddpm``'s hooks: the same epoch-wise shuffling as
    the default loop, remembering the batch so the wrapped UNet can be given its labels. Pass
    ``unet=build_unet(..., num_class_embeds=K)`` with it to train a class-conditional target."""

    def __init__(self, labels: torch.Tensor, batch_size: int) -> None:
        self.labels = labels.long()
        self.batch_size = batch_size
        self.perm: torch.Tensor | None = None
        self.cursor = 0
        self.current = self.labels[:0]

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        return _Conditioned(model, self), optimizer

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.inner if isinstance(model, _Conditioned) else model

    def batch_indices(self, step: int, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.perm is None or self.cursor + self.batch_size > n:
            self.perm, self.cursor = torch.randperm(n, generator=generator), 0
        idx = self.perm[self.cursor : self.cursor + min(self.batch_size, n)]
        self.cursor += self.batch_size
        self.current = self.labels[idx]
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.cursor = state.get("perm"), state.get("cursor", 0)


def _check_schedule(target: Any) -> None:
    """train_ddpm trains on the default DDPM schedule; fine-tuning a target on another would be wrong."""
    from genleak.targets import default_scheduler

    default = default_scheduler(target.num_train_timesteps).alphas_cumprod.to(torch.float64)
    if not torch.allclose(default, target.alphas_cumprod, rtol=0, atol=1e-7):
        raise GenleakError(
            "the target's noise schedule differs from genleak's default DDPM schedule; fine-tuning it "
            "needs train_ddpm to accept the target's scheduler"
        )


def trainable_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_method(target: Any, method: str) -> None:
    """Raise a one-line GenleakError if ``method`` cannot fine-tune ``target``.

    Dispatch on the target type: pixel ``DiffusionTarget`` -> ``full`` / ``lora`` via
    ``train_ddpm``; ``LatentDiffusionTarget`` -> ``full`` / ``lora`` via ``train_latent`` and, for
    text-to-image targets, ``embedding`` (textual inversion).
    """
    from genleak.targets import DiffusionTarget

    if method not in METHODS:
        raise GenleakError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "embedding":
        if not _is_text(target):
            raise GenleakError(
                f"--method embedding (textual inversion) needs a text-conditioned target with a tokenizer; a "
                f"{'pixel DDPM' if isinstance(target, DiffusionTarget) else type(target).__name__} has no prompt "
                "embedding: use --method full or lora"
            )
        if target.text_encoder is None or target.tokenizer is None:
            raise GenleakError("--method embedding (textual inversion) needs the text-conditioned target's text encoder and tokenizer; this one has none")
        return
    if _is_latent(target):
        if not target.conditional and target.num_classes is not None:
            raise GenleakError(f"--method {method}: fine-tuning class-conditional latent targets is not supported (train_latent has no class labels)")
        return
    if not isinstance(target, DiffusionTarget):
        raise GenleakError(
            f"--method {method} fine-tunes pixel DDPMs and latent diffusion targets; a {type(target).__name__} "
            "needs its own training loop"
        )


def finetune(
    target: Any,
    data: Any,
    method: str,
    config: ShakeConfig,
    *,
    rank: int = 4,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Step 2 of S2L: fine-tune a copy of ``target`` on ``data`` (an ImageSet). Returns (target, info).

    ``full`` updates every UNet weight; ``lora`` trains rank-``rank`` adapters (peft) and merges them
    into the weights, so the result is a plain diffusers UNet the attacks query like any other;
    ``embedding`` (textual inversion, text-to-image latent targets) learns one new token embedding
    and returns a ``TextualInversionTarget`` whose attack prompts carry that token
    (``genleak.s2l.textual_inversion`` says why). For text targets ``data.captions`` are the prompts.
    """
    check_method(target, method)
    if method == "lora" and rank < 1:
        raise GenleakError(f"LoRA rank must be >= 1, got {rank}")
    if method == "embedding":
        return _finetune_embedding(target, data, config, progress)
    if _is_latent(target):
        return _finetune_latent(target, data, method, config, rank, progress)
    return _finetune_pixel(target, data, method, config, rank, progress)


def _text_prompts(target: Any, data: Any) -> list[str] | None:
    if not _is_text(target):
        return None
    if data.captions is None:
        raise GenleakError("the target is text-conditioned but the fine-tuning images carry no captions; "
                           "generate them with make_domain_set(target, prompt) or give the ImageSet captions")
    return list(data.captions)


def _finetune_embedding(target: Any, data: Any, config: ShakeConfig, progress: bool) -> tuple[Any, dict[str, Any]]:
    from genleak.s2l.textual_inversion import textual_inversion

    tuned, ti = textual_inversion(
        target, data.images, _text_prompts(target, data), placeholder=config.placeholder,
        prompt_template=config.embedding_template, initializer=config.embedding_init, steps=config.steps,
        batch_size=config.batch_size, lr=config.embedding_lr, seed=config.seed, progress=progress,
    )
    total = sum(p.numel() for m in (target.unet, target.text_encoder) for p in m.parameters())
    info = {"method": "embedding", "rank": None, "trainable_parameters": ti.pop("trainable_parameters"),
            "total_parameters": total, "seconds": ti.pop("seconds"), **ti}
    return tuned, info


def _finetune_latent(target: Any, data: Any, method: str, config: ShakeConfig, rank: int, progress: bool) -> tuple[Any, dict[str, Any]]:
    """``full`` / ``lora`` on a latent target through ``train_latent(init=target)``: the same loop,
    latents, LoRA placement and merge as latent training (not a copy of it)."""
    from genleak.train.latent import LatentTrainConfig, train_latent

    prompts = _text_prompts(target, data)
    lora = method == "lora"
    cfg = LatentTrainConfig(
        steps=config.steps, batch_size=config.batch_size, lr=config.lora_lr if lora else config.lr,
        ema_decay=config.ema_decay, lora_rank=rank if lora else None, lora_alpha=config.lora_alpha,
        cond_dropout=config.cond_dropout, seed=config.seed, extra={"s2l_method": method, "rank": rank if lora else None},
    )
    start = time.perf_counter()
    tuned = train_latent(data.images, None, cfg, captions=None if prompts is None else [[p] for p in prompts],
                         init=target, progress=progress)
    seconds = time.perf_counter() - start
    if tuned.guidance_scale != target.guidance_scale:  # attack the tuned model the way the original is attacked
        tuned = tuned.with_guidance(target.guidance_scale)
    total = sum(p.numel() for p in target.unet.parameters())
    info = {"method": method, "rank": rank if lora else None,
            "trainable_parameters": _latent_lora_parameters(target.unet, cfg) if lora else total,
            "total_parameters": total, "seconds": round(seconds, 2)}
    return tuned, info


def _latent_lora_parameters(unet: torch.nn.Module, cfg: Any) -> int:
    """Adapter size of ``train_latent``'s LoRA, counted on a weightless (meta-device) twin of the UNet
    so the layer choice is exactly train_latent's and nothing is allocated."""
    from genleak.train.latent import _add_lora

    with torch.device("meta"):
        twin = type(unet).from_config(unet.config)
    return trainable_parameters(_add_lora(twin, cfg))


def _finetune_pixel(target: Any, data: Any, method: str, config: ShakeConfig, rank: int, progress: bool) -> tuple[Any, dict[str, Any]]:
    from genleak.targets import DiffusionTarget
    from genleak.train import TrainConfig, train_ddpm

    unet = target.unet
    _check_schedule(target)
    model = copy.deepcopy(unet).to("cpu" if not torch.cuda.is_available() else target.device)
    lr = config.lr
    if method == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(r=rank, lora_alpha=config.lora_alpha or rank, target_modules=list(config.lora_targets),
                          lora_dropout=0.0, init_lora_weights=True)
        try:
            model = inject_adapter_in_model(lora, model)
        except ValueError as err:
            raise GenleakError(f"LoRA could not be attached: {str(err).splitlines()[0]}") from None
        lr = config.lora_lr
    else:
        model.requires_grad_(True)
    n_trainable = trainable_parameters(model)
    hooks = None
    if target.num_classes is not None:
        if data.labels is None:
            raise GenleakError("the target is class-conditional but the fine-tuning images carry no labels")
        hooks = ClassLabelHooks(torch.as_tensor(data.labels), config.batch_size)
    train_cfg = TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=lr, ema_decay=config.ema_decay,
                            seed=config.seed, num_train_timesteps=target.num_train_timesteps,
                            extra={"s2l_method": method, "rank": rank if method == "lora" else None})
    start = time.perf_counter()
    trained = train_ddpm(data.images, train_cfg, None, unet=model, hooks=hooks, progress=progress)
    seconds = time.perf_counter() - start
    tuned = trained.unet
    if method == "lora":
        tuned = merge_lora(tuned)
    tuned.requires_grad_(False)
    info = {"method": method, "rank": rank if method == "lora" else None, "trainable_parameters": n_trainable,
            "total_parameters": sum(p.numel() for p in unet.parameters()), "seconds": round(seconds, 2),
            }
    return DiffusionTarget(tuned.eval(), target.scheduler, device=target.device), info


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold peft LoRA adapters into their base layers and drop the wrappers (a plain UNet again)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in wrapped:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    return model


# -- the experiment --------------------------------------------------------------------------------------
@dataclass
class Variant:
    method: str
    rank: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        return self.method if self.rank is None else f"{self.method}-r{self.rank}"


def parse_variants(methods: Sequence[str], ranks: Sequence[int]) -> list[Variant]:
    """``full`` once, ``lora`` once per rank, ``embedding`` once."""
    out: list[Variant] = []
    for m in methods:
        if m not in METHODS:
            raise GenleakError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
        if m == "lora":
            if not ranks:
                raise GenleakError("--method lora needs at least one --rank")
            out.extend(Variant("lora", int(r)) for r in ranks)
        else:
            out.append(Variant(m))
    if not out:
        raise GenleakError("no fine-tuning method given; use --method full, lora or embedding")
    return out


def run_s2l(
    target: Any,
    split: Any,
    domain: str | int,
    variants: Sequence[Variant],
    attacks: Sequence[str],
    config: ShakeConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    attack_params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    command: str = "",
    synthetic: Any = None,
) -> Comparison:
    """Steps 1-4 of S2L for each variant; one shared synthetic set; the original model as baseline.

    ``synthetic`` replaces the self-generated set (e.g. a control experiment with off-domain data,
    002 Mechanism 1: unrelated data should not amplify).
    """
    from genleak.pipeline import run_attacks

    config = config or ShakeConfig()
    for v in variants:  # refuse before spending time on generation
        check_method(target, v.method)
    domain_conditions(target, domain, 1)  # a bad domain fails here, not after the baseline audit
    eval_split = domain_split(split, domain, target)
    out = Path(out_dir) if out_dir is not None else None
    start = time.perf_counter()
    data = synthetic if synthetic is not None else make_domain_set(target, domain, config, progress=progress)
    gen_seconds = time.perf_counter() - start
    if out is not None:
        from genleak.extraction.grids import image_grid, save_png

        out.mkdir(parents=True, exist_ok=True)
        data.save_npz(out / "synthetic_set.npz")
        save_png(image_grid([data.images[i : i + 16] for i in range(0, min(64, len(data)), 16)]), out / "synthetic_set.png")
    common = dict(attack_params=attack_params, seed=seed, batch_size=batch_size, progress=progress)
    base = run_attacks(target, eval_split, list(attacks), None if out is None else out / "base", **common)
    comp = Comparison(
        kind="s2l", base=base, command=command,
        settings={"domain": str(domain), "attacks": list(attacks), "config": config.to_dict(),
                  "synthetic_set": {"n": len(data), "generation_seconds": round(gen_seconds, 2),
                                    "source": data.source}},
    )
    for v in variants:
        tuned, info = finetune(target, data, v.method, config, rank=v.rank or 0, progress=progress)
        audit = run_attacks(tuned, eval_split, list(attacks), None if out is None else out / v.label(), **common)
        comp.add({"method": v.method, "rank": v.rank}, audit, finetune=info)
    return comp
