"""Textual inversion (Gal et al. 2022) as Shake-to-Leak's ``--method embedding`` on text-to-image targets.

Textual inversion learns *one new word*: a placeholder token S* is added to a copy of the
tokenizer, a row for it is added to a copy of the CLIP text encoder's token-embedding matrix, and
only that row is optimised with the ordinary latent-diffusion loss
``|| eps - eps_theta(z_t, t, c(prompt with S*)) ||^2`` through the frozen UNet (Gal et al. 2022,
eq. 2). Every other weight (VAE, UNet, the rest of the text encoder, all other
embedding rows) stays byte-identical; the original target is not touched.

How S2L uses it (002, "Method Summary"): step 1 prompts the pre-trained model with the domain
prompt to build the synthetic private set, step 2 fine-tunes on it with a concept-injection
method (DreamBooth, Textual Inversion), step 3 re-runs the MIA on the domain's original member /
non-member images. The choices below, and why:

* **Training prompt** ``prompt_template.format(prompt=<domain prompt>, token=S*)``, default
  ``"{prompt} {token}"``: the domain prompt *with the token appended*. S2L's synthetic images are
  generated from the domain prompt ("photo of <name>", 002 Method Summary; ``sp_gen.py`` in the
  authors' code), and its concept-injection recipes train on that same prompt (the DreamBooth
  ``--instance_prompt="photo of <name>"``). Appending S* keeps the words the model already ties to
  the domain and lets S* absorb what the synthetic set adds, as textual inversion's "a photo of
  S*" templates do (Gal et al. 2022). ``"{token}"`` makes S* stand for the whole prompt.
* **Initial embedding**: Gal et al. initialise v* with the embedding of a single-word coarse
  descriptor of the concept ("Implementation details" paragraph); we have the domain prompt, so
  the default descriptor is the mean embedding of its tokens (``initializer`` picks other words).
* **Learning rate** 5e-3: Gal et al.'s base rate 0.005 ("Implementation details" paragraph),
  without their scaling by batch size and GPU count (our batches are tiny).
* **Re-attack prompts**: an attack on a text-to-image model conditions every query image on its
  own caption (SecMI as S2L runs it on each domain's member / non-member images: 002 "Critical
  path" step 3; the authors' ``SecMI/src/mia/secmi.py`` reads each image's caption). A model whose
  only change is a new word answers any prompt *without* that word exactly as before, so an audit
  that left the word out would report a zero change by construction. S2L attacks the model as
  concept injection delivers it, i.e. used with the injected concept (002 "Method Summary":
  "Textual Inversion" among the concept-injection methods whose S2L fine-tuning amplifies MIA,
  Tables I and II): ``TextualInversionTarget.conditions`` returns each image's caption with the
  same template, ``{prompt}`` being the caption (``"<caption> <s2l-domain>"`` by default). The stored paper text (a structured summary)
  does not spell the attack prompt out, so this is our reading; the template is recorded in the
  target's ``describe()`` and in the S2L report's settings, and ``--embedding-template`` changes it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.targets.latent import LatentDiffusionTarget
from genleak.targets.textual_inversion import TextualInversionTarget

__all__ = ["DEFAULT_PLACEHOLDER", "DEFAULT_PROMPT_TEMPLATE", "TextualInversionTarget", "textual_inversion"]

DEFAULT_PLACEHOLDER = "<s2l-domain>"
DEFAULT_PROMPT_TEMPLATE = "{prompt} {token}"
DEFAULT_LR = 5e-3  # Gal et al. 2022, "Implementation details": base learning rate 0.005


def _check_template(template: str) -> None:
    if "{token}" not in template:
        raise GenleakError(f"the embedding prompt template must contain {{token}}, got {template!r}")
    try:
        template.format(prompt="p", token="t")
    except (KeyError, IndexError, ValueError):
        raise GenleakError(f"the embedding prompt template may only use {{prompt}} and {{token}}, got {template!r}") from None


def _add_placeholder(tokenizer: Any, placeholder: str) -> tuple[Any, int]:
    """A copy of ``tokenizer`` with ``placeholder`` as one new token; refuses a token that exists."""
    if not placeholder or any(ch.isspace() for ch in placeholder):
        raise GenleakError(f"the placeholder token must be one word without spaces, got {placeholder!r}")
    known = [i for i in tokenizer(placeholder).input_ids if i not in tokenizer.all_special_ids]
    if placeholder in tokenizer.get_vocab() or len(known) == 1:
        # an existing word would change the meaning of every caption that uses it
        raise GenleakError(f"the placeholder {placeholder!r} is already in the tokenizer's vocabulary; choose a new token (e.g. <s2l-domain>)")
    tok = copy.deepcopy(tokenizer)
    if tok.add_tokens([placeholder]) != 1:
        raise GenleakError(f"the tokenizer refused the placeholder token {placeholder!r}")
    new_id = int(tok.convert_tokens_to_ids(placeholder))
    # CLIP lower-cases text: an upper-case placeholder would never be matched in a prompt
    inner = [i for i in tok(placeholder).input_ids if i not in tok.all_special_ids]
    if inner != [new_id]:
        raise GenleakError(f"the tokenizer does not read {placeholder!r} back as one token; use a lower-case token such as <s2l-domain>")
    return tok, new_id


def _initial_embedding(weight: torch.Tensor, tokenizer: Any, words: str) -> torch.Tensor:
    ids = [i for i in tokenizer(words).input_ids if i not in tokenizer.all_special_ids]
    if not ids:
        raise GenleakError(f"the initializer {words!r} has no tokens; give a descriptive word")
    return weight[ids].detach().float().mean(0)


def textual_inversion(
    target: LatentDiffusionTarget,
    images: torch.Tensor,
    prompts: Sequence[str],
    *,
    placeholder: str = DEFAULT_PLACEHOLDER,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    initializer: str | None = None,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = DEFAULT_LR,
    sample_latents: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> tuple[TextualInversionTarget, dict[str, Any]]:
    """Learn the embedding of a new token ``placeholder`` on ``images`` (in [-1, 1], NCHW) whose
    captions are ``prompts``; returns (the target that uses it, info).

    Only the new embedding row trains; deterministic per ``seed`` (batches, latent samples, noise
    and timesteps come from one seeded generator). Latents are VAE posterior samples scaled like
    ``genleak.train.latent.train_latent`` (``sample_latents=False``: posterior means).
    """
    from genleak.train.latent import _posteriors
    from genleak.train.loop import LoopConfig, make_accelerator, run_loop

    if not isinstance(target, LatentDiffusionTarget) or not target.conditional:
        raise GenleakError("textual inversion needs a text-conditioned latent target (an SD-style folder with text_encoder/ and tokenizer/)")
    if target.text_encoder is None or target.tokenizer is None:
        raise GenleakError("textual inversion needs the target's text encoder and tokenizer; this target has none")
    encoder = target.text_encoder
    embedding = encoder.get_input_embeddings() if hasattr(encoder, "get_input_embeddings") else None
    if not isinstance(embedding, torch.nn.Embedding):
        raise GenleakError(f"the text encoder {type(target.text_encoder).__name__} has no token-embedding table to extend")
    if images.ndim != 4 or images.shape[0] == 0:
        raise GenleakError(f"textual inversion needs a non-empty (N, C, H, W) image tensor, got {tuple(images.shape)}")
    if len(prompts) != images.shape[0]:
        raise GenleakError(f"{len(prompts)} prompts for {images.shape[0]} images")
    if tuple(images.shape[1:]) != tuple(target.image_shape):
        raise GenleakError(f"images of shape {tuple(images.shape[1:])} do not fit the target's {tuple(target.image_shape)}")
    if steps < 1 or batch_size < 1:
        raise GenleakError(f"textual inversion needs steps >= 1 and batch_size >= 1, got {steps} and {batch_size}")
    _check_template(prompt_template)

    device = target.device
    tokenizer, new_id = _add_placeholder(target.tokenizer, placeholder)
    if any(placeholder in str(p) for p in prompts):
        raise GenleakError(f"the prompts already contain the placeholder {placeholder!r}; choose another token")
    text_encoder = copy.deepcopy(target.text_encoder).eval().requires_grad_(False)
    rows = text_encoder.get_input_embeddings().weight.shape[0]
    if new_id >= rows:
        # new rows are overwritten below; mean_resizing would only spend random draws on them
        text_encoder.resize_token_embeddings(new_id + 1, mean_resizing=False)
    text_encoder.requires_grad_(False)
    table = text_encoder.get_input_embeddings()
    init_words = initializer if initializer is not None else str(prompts[0])
    init = _initial_embedding(table.weight, target.tokenizer, init_words)

    train_prompts = [prompt_template.format(prompt=str(p), token=placeholder) for p in prompts]
    unique = sorted(set(train_prompts))
    index = torch.tensor([unique.index(p) for p in train_prompts])
    ids = tokenizer(unique, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    if not bool((ids == new_id).any(1).all()):
        raise GenleakError(f"the placeholder was cut off: prompts are longer than the tokenizer's {tokenizer.model_max_length} tokens; shorten the domain prompt")

    vec = torch.nn.Parameter(init.to(device))
    optimizer = torch.optim.AdamW([vec], lr=lr, weight_decay=0.0)

    def splice(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        # the looked-up rows for S* become the trainable vector: gradients reach it and nothing else
        hit = (args[0] == new_id).unsqueeze(-1)
        return torch.where(hit, vec.to(output.dtype), output)

    unet = target.unet
    flags = [p.requires_grad for p in unet.parameters()]
    handle = table.register_forward_hook(splice)
    acp = target.scheduler.alphas_cumprod.to(device, torch.float32)
    start = time.perf_counter()

    def loss_step(_: Any, idx: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        """The UNet's own objective on scaled VAE posterior samples, captioned with the placeholder."""
        z0 = mu[idx.to(device)]
        if sample_latents:
            z0 = z0 + sigma[idx.to(device)] * torch.randn(z0.shape, generator=gen).to(device, z0.dtype)
        z0 = (z0 - target.shift_factor) * target.scaling_factor
        noise = torch.randn(z0.shape, generator=gen).to(device, z0.dtype)
        t = torch.randint(0, target.num_train_timesteps, (idx.shape[0],), generator=gen).to(device)
        a = acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        hidden = text_encoder(ids)[0][index[idx].to(device)]
        pred = unet(x_t, t, encoder_hidden_states=hidden, return_dict=False)[0]
        if target.prediction_type == "v_prediction":  # the objective the UNet was trained with
            goal = a.sqrt() * noise - (1 - a).sqrt() * z0
        elif target.prediction_type == "sample":
            goal = z0
        else:
            goal = noise
        return torch.nn.functional.mse_loss(pred.float(), goal.float())

    loop = LoopConfig(steps, batch_size, int(seed))
    # on the target's device: the UNet, VAE and text encoder stay where the target keeps them
    accelerator = make_accelerator(loop, cpu=torch.device(device).type == "cpu")
    try:
        unet.requires_grad_(False)  # a loaded target's UNet may still ask for gradients; none may reach it
        with torch.inference_mode(False), torch.enable_grad():
            mu, sigma = _posteriors(target.vae, images.to(device, target.vae.dtype))
            # the one trainable tensor, as a module for the trainer; the splice hook reads it
            _, losses, _ = run_loop(torch.nn.ParameterList([vec]), optimizer, loop, loss_step, accelerator=accelerator,
                                    n=images.shape[0], desc="textual-inversion", progress=progress)
    finally:
        handle.remove()
        for p, flag in zip(unet.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    with torch.no_grad():
        table.weight[new_id] = vec.detach().to(table.weight.dtype)
    tuned = TextualInversionTarget(
        target.vae, unet, target.scheduler, text_encoder, tokenizer, guidance_scale=target.guidance_scale,
        caption_template=target.caption_template, device=device, placeholder=placeholder, prompt_template=prompt_template,
    )
    k = max(1, min(10, len(losses) // 2))
    info = {
        "placeholder": placeholder,
        "token_id": new_id,
        "prompt_template": prompt_template,
        "initializer": init_words,
        "lr": lr,
        "trainable_parameters": int(vec.numel()),
        "loss_first": sum(losses[:k]) / k,
        "loss_last": sum(losses[-k:]) / k,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return tuned, info
