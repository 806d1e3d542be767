"""The IAR target protocol and its adapters (VAR-style, RAR-style, MAR-style).

An IAR target is what the IAR attacks, dataset inference, extraction and the output-noise defense
see of an image autoregressive model. Like the diffusion ``Target`` it has ``encode`` (images ->
the model's working space, here *tokens*), ``decode``, ``conditions``, ``fingerprint`` and
``describe``, so :func:`genleak.pipeline.run_attacks` runs IAR attacks unchanged. On top:

* discrete models (VAR, RAR): ``logits(tokens, labels)`` -> teacher-forced per-token logits
  (B, N, V) in one forward pass, N = all tokens (VAR: all scales, coarse to fine; RAR: raster);
  ``token_groups`` names each token's scale (VAR) or position (RAR);
* continuous models (MAR): ``token_losses(...)`` -> per-token diffusion losses (see ``models/mar.py``);
* all: ``generate(labels, prefix, prefix_len, ...)`` and ``decode``.

``output_noise`` = sigma switches on the mitigation of thesis supp. D.11.1: N(0, sigma^2) is added
to every logit the model outputs (VAR/RAR) or to every continuous token it samples (MAR). It is part
of the fingerprint, so cached scores of the undefended model are never reused for the defended one.

The networks themselves (tokenizers, VAR / RAR / MAR) are in ``genleak.models``.

Folders: ``config.json`` (``_class_name`` ``IARTarget``, format, kind, tokenizer and model configs) + ``tokenizer.safetensors`` +
``model.safetensors``; written by :meth:`IARTarget.save_pretrained`, read by
:func:`load_iar_target`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from genleak.errors import GenleakError, TargetError
from genleak.models.rar import RARConfig, RARModel
from genleak.models.var import VARConfig, VARModel, scale_index
from genleak.models.vq import VQConfig, VQTokenizer
from genleak.targets.base import Autoregressive
from genleak.targets.folders import IAR_FORMAT

IAR_VERSION = 1
CONFIG_FILE = "config.json"


class IARTarget(Autoregressive):
    """Common part of the IAR adapters: device, labels, noise, fingerprint, folders."""

    kind: ClassVar[str] = ""  # the architecture: var, rar or mar

    def __init__(self, tokenizer: nn.Module, model: nn.Module, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.tokenizer = tokenizer.to(self.device).eval()
        self.model = model.to(self.device).eval()
        self.num_classes = int(model.config.num_classes)
        self.null_class = self.num_classes  # the CFG "no class" label (thesis ch. 9.5.1: c_null)
        self.output_noise = 0.0
        self._noise_gen = torch.Generator().manual_seed(0)
        self._fingerprint: str | None = None

    # -- mitigation ------------------------------------------------------------------------------
    def set_output_noise(self, sigma: float, seed: int = 0) -> None:
        """Turn on the output-noise defense (supp. D.11.1) with scale ``sigma`` (0 turns it off).

        The defense's randomness belongs to the model owner: one generator per target, seeded here.
        """
        if sigma < 0:
            raise TargetError(f"output noise sigma must be >= 0, got {sigma}")
        self.output_noise = float(sigma)
        self._noise_gen = torch.Generator().manual_seed(seed)
        self._fingerprint = None

    def _noised(self, x: torch.Tensor) -> torch.Tensor:
        if not self.output_noise:
            return x
        return x + self.output_noise * torch.randn(x.shape, generator=self._noise_gen).to(x.device, x.dtype)

    # -- protocol --------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = self.tokenizer.config
        return (int(c.channels), int(c.image_size), int(c.image_size))

    def conditions(self, samples: Any) -> torch.Tensor:
        """Class labels of an ``ImageSet`` (IARs here are class-conditional, thesis ch. 9.4)."""
        labels = getattr(samples, "labels", None)
        if labels is None:
            raise TargetError("the IAR target is class-conditional but the samples carry no labels")
        return self.labels(labels)

    def labels(self, labels: Any) -> torch.Tensor:
        """Validate labels and move them to the device (a user mistake raises one line)."""
        lab = torch.as_tensor(labels, dtype=torch.long).to(self.device)
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) > self.num_classes):
            raise TargetError(f"class labels must be in 0..{self.num_classes - 1} (or {self.null_class} = null)")
        return lab

    def networks(self) -> list[torch.nn.Module]:
        return [self.tokenizer, self.model]

    def fingerprint(self) -> str:
        """sha256 over both networks' weights, their configs and the output-noise setting."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for prefix, module in (("tokenizer.", self.tokenizer), ("model.", self.model)):
                for name, tensor in sorted(module.state_dict().items()):
                    h.update((prefix + name).encode())
                    h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
            h.update(json.dumps(self._config_dict(), sort_keys=True).encode())
            h.update(f"output_noise={self.output_noise}".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {
            "kind": f"iar-{self.kind}",
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "tokenizer_parameters": sum(p.numel() for p in self.tokenizer.parameters()),
            "image_shape": list(self.image_shape),
            "sequence_length": self.sequence_length,
            "num_classes": self.num_classes,
            "output_noise": self.output_noise,
            **self._config_dict(),
            "fingerprint": self.fingerprint(),
        }

    def _config_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.config.to_dict(), "model": self.model.config.to_dict()}

    @property
    def sequence_length(self) -> int:
        raise NotImplementedError

    # -- folders ---------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` + two safetensors files atomically (config last: marks complete)."""
        from safetensors.torch import save_file

        from genleak.io import atomic_path, atomic_write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, module in (("tokenizer", self.tokenizer), ("model", self.model)):
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            with atomic_path(folder / f"{name}.safetensors") as tmp:
                save_file(state, str(tmp))
        atomic_write_json(folder / CONFIG_FILE, {"_class_name": "IARTarget", "format": IAR_FORMAT, "version": IAR_VERSION,
                                                 "kind": self.kind, **self._config_dict()})

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None) -> IARTarget:
        return load_iar_target(folder, device)


class DiscreteIARTarget(IARTarget):
    """VAR/RAR: token logits from one teacher-forced pass."""

    def logits(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-token logits (B, N, V) for ``tokens`` given class ``labels`` (null class allowed)."""
        return self._noised(self._raw_logits(tokens.to(self.device), labels.to(self.device)))

    def _raw_logits(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)


class RARTarget(DiscreteIARTarget):
    """RAR-style: raster-order next-token prediction over single-scale VQ tokens."""

    kind = "rar"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.tokenize(images.to(self.device))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode_tokens(tokens.to(self.device))

    def _raw_logits(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model(tokens, labels)

    @property
    def sequence_length(self) -> int:
        return int(self.model.config.seq_len)

    def token_groups(self) -> torch.Tensor:
        """Each token's raster position (the RAR 'per position' view of the scores)."""
        return torch.arange(self.sequence_length)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, prefix: torch.Tensor | None = None, prefix_len: int = 0, *,
                 cfg_scale: float = 1.0, greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        noise_gen = generator if generator is not None else self._noise_gen
        check_prefix(prefix, prefix_len, self.sequence_length, len(labels))
        return self.model.generate(self.labels(labels), _dev(prefix, self.device), prefix_len, cfg_scale=cfg_scale,
                                   greedy=greedy, temperature=temperature, logit_noise=self.output_noise,
                                   generator=noise_gen)


class VARTarget(DiscreteIARTarget):
    """VAR-style: next-scale prediction over multi-scale residual VQ tokens."""

    kind = "var"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.tokenize_scales(images.to(self.device))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode_scales(tokens.to(self.device))

    def _raw_logits(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model(self.tokenizer.next_scale_inputs(tokens), labels)

    @property
    def sequence_length(self) -> int:
        return int(self.model.config.seq_len)

    def token_groups(self) -> torch.Tensor:
        """Each token's scale index (the VAR 'per scale' view of the scores)."""
        return scale_index(self.model.config.scales)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, prefix: torch.Tensor | None = None, prefix_len: int = 0, *,
                 cfg_scale: float = 1.0, greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        noise_gen = generator if generator is not None else self._noise_gen
        check_prefix(prefix, prefix_len, self.sequence_length, len(labels))
        return self.model.generate(self.labels(labels), self.tokenizer, _dev(prefix, self.device), prefix_len,
                                   cfg_scale=cfg_scale, greedy=greedy, temperature=temperature,
                                   logit_noise=self.output_noise, generator=noise_gen)


class MARTarget(IARTarget):
    """MAR-style target: continuous tokens, per-token diffusion losses instead of logits."""

    kind = "mar"
    discrete = False

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.tokenize(images.to(self.device))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode_tokens(tokens.to(self.device))

    @property
    def sequence_length(self) -> int:
        return int(self.model.config.seq_len)

    def token_groups(self) -> torch.Tensor:
        return torch.arange(self.sequence_length)

    @torch.no_grad()
    def token_losses(
        self,
        latents: torch.Tensor,
        labels: torch.Tensor,
        noise: Any = None,
        *,
        mask_ratio: float = 0.95,
        timestep: int | None = 500,
        noise_draws: int = 64,
        mask_draws: int = 4,
        with_null: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-token diffusion loss (B, N) at a fixed timestep, averaged over ``noise_draws`` noises
        and over the ``mask_draws`` random masks that hid the token (supp. D.8: ratio 0.95, t = 500,
        64 draws). ``noise`` is the attack's per-sample ``NoiseSource`` (masks and noises are drawn
        from it, so scores do not depend on batching). ``with_null`` also returns the losses under
        the null class with the *same* masks and noises (the CFG difference). ``timestep`` None
        draws t uniformly per noise draw (the training-time loss: the "baseline" of Table 9.5.2 and
        the Unified MIA of supp. D.4.1).

        The output-noise defense perturbs the head's noise prediction by N(0, sigma^2) (the
        continuous output an attacker observes here).
        """
        b, n, c = latents.shape
        if not 0.0 < mask_ratio <= 1.0:
            raise GenleakError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        n_mask = min(n, max(1, round(mask_ratio * n)))
        if noise is not None:
            orders = torch.argsort(noise.draw(mask_draws)[..., 0], dim=-1)  # (B, R, N) random permutations
            eps = noise.draw(mask_draws * noise_draws)  # (B, R*K, N, C)
        else:
            g = torch.Generator().manual_seed(0)
            orders = torch.argsort(torch.randn(b, mask_draws, n, generator=g), dim=-1)
            eps = torch.randn(b, mask_draws * noise_draws, n, c, generator=g)
        orders, eps = orders.to(latents.device), eps.to(latents.device, latents.dtype)
        steps = self.model.config.num_train_timesteps
        if timestep is None:  # t ~ U{0..T-1} per (sample, draw), from the sample's own noise stream
            z = noise.draw(mask_draws * noise_draws)[..., 0, 0] if noise is not None else \
                torch.randn(b, mask_draws * noise_draws, generator=g)
            t_draw = (torch.special.ndtr(z.float()) * steps).long().clamp(0, steps - 1).to(latents.device)
        else:
            if not 0 <= int(timestep) < steps:
                raise GenleakError(f"timestep must be in 0..{steps - 1} (or None: random), got {timestep}")
            t_draw = torch.full((b, mask_draws * noise_draws), int(timestep), dtype=torch.long, device=latents.device)
        label_sets = [labels] + ([torch.full_like(labels, self.null_class)] if with_null else [])
        totals = [torch.zeros(b, n, device=latents.device) for _ in label_sets]
        counts = torch.zeros(b, n, device=latents.device)
        for r in range(mask_draws):
            rank = torch.argsort(orders[:, r], dim=-1)
            mask = rank < n_mask
            counts += mask
            e = eps[:, r * noise_draws : (r + 1) * noise_draws]  # (B, K, N, C)
            t = t_draw[:, r * noise_draws : (r + 1) * noise_draws, None].expand(b, noise_draws, n).reshape(-1)
            x0 = latents[:, None].expand_as(e)
            x_t = self.model.q_sample(x0.reshape(-1, c), t, e.reshape(-1, c))
            for i, lab in enumerate(label_sets):
                z = self.model.context(latents, mask, lab)  # (B, N, d)
                zz = z[:, None].expand(b, noise_draws, n, z.shape[-1]).reshape(-1, z.shape[-1])
                pred = self._noised(self.model.head(x_t, t, zz))
                loss = (pred - e.reshape(-1, c)).pow(2).mean(-1).view(b, noise_draws, n).mean(1)
                totals[i] += loss * mask
        out = []
        for tot in totals:
            per_token = tot / counts.clamp_min(1)
            fallback = (tot.sum(1, keepdim=True) / counts.sum(1, keepdim=True).clamp_min(1)).expand_as(per_token)
            out.append(torch.where(counts > 0, per_token, fallback))
        return (out[0], out[1]) if with_null else out[0]

    @torch.no_grad()
    def masked_reconstruction(self, latents: torch.Tensor, labels: torch.Tensor, *, mask_ratio: float = 0.95,
                              seed: int = 0, steps: int = 25) -> torch.Tensor:
        """Extraction step 1 for MAR (ch. 9.5.3): hide 95% of the tokens, predict them in a single
        step from the other 5% (deterministic DDIM from zero noise), keep the visible ones."""
        b, n, c = latents.shape
        g = torch.Generator().manual_seed(seed)
        order = torch.argsort(torch.rand(b, n, generator=g), dim=1).to(latents.device)
        mask = torch.argsort(order, dim=1) < min(n, max(1, round(mask_ratio * n)))
        z = self.model.context(latents, mask, self.labels(labels))
        pred = self.model.sample_tokens(z[mask], torch.zeros(int(mask.sum()), c, device=latents.device), steps)
        out = latents.clone()
        out[mask] = self._noised(pred)
        return out

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, prefix: torch.Tensor | None = None, prefix_len: int = 0, *,
                 cfg_scale: float = 1.0, greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None, iterations: int = 4, steps: int = 25) -> torch.Tensor:
        """MaskGIT/MAR-style iterative generation in a random order per sample; the first
        ``prefix_len`` tokens of that order are copied from ``prefix`` (the MAR prefix of ch. 9.5.3).
        ``greedy``: DDIM from zero noise (the deterministic analogue of greedy decoding)."""
        labels = self.labels(labels)
        b, n, c = labels.shape[0], self.sequence_length, self.model.config.token_dim
        check_prefix(prefix, prefix_len, n, b)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        order = torch.argsort(torch.rand(b, n, generator=gen), dim=1).to(self.device)
        rank = torch.argsort(order, dim=1)
        tokens = torch.zeros(b, n, c, device=self.device)
        known = rank < prefix_len
        if prefix_len:
            tokens[known] = prefix.to(self.device)[known]
        null = torch.full_like(labels, self.null_class)
        remaining = n - prefix_len
        for it in range(iterations):
            if remaining <= 0:
                break
            # cosine schedule (MaskGIT): fraction still hidden after this iteration
            hidden_after = math.floor(remaining * math.cos(math.pi / 2 * (it + 1) / iterations))
            if it == iterations - 1:
                hidden_after = 0
            reveal = rank < (n - hidden_after)
            new = reveal & ~known
            if not new.any():
                continue
            mask = ~known
            z = self.model.context(tokens, mask, labels)
            z_null = self.model.context(tokens, mask, null) if cfg_scale != 1.0 else None
            m = int(new.sum())
            init = torch.zeros(m, c) if greedy else temperature * torch.randn(m, c, generator=gen)
            sampled = self.model.sample_tokens(z[new], init.to(self.device), steps,
                                               None if z_null is None else z_null[new], cfg_scale)
            tokens[new] = self._noised(sampled)
            known = known | new
        return tokens


def _dev(x: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if x is None else x.to(device)


def check_prefix(prefix: torch.Tensor | None, prefix_len: int, seq_len: int, batch: int) -> None:
    """A prefix completion needs ``prefix_len`` in 0..seq_len and a prefix of the right shape."""
    if not 0 <= prefix_len <= seq_len:
        raise TargetError(f"prefix length must be in 0..{seq_len} tokens, got {prefix_len}")
    if prefix_len and (prefix is None or prefix.shape[0] != batch or prefix.shape[1] < prefix_len):
        raise TargetError(f"a prefix of {prefix_len} tokens needs prefix tokens of shape ({batch}, >= {prefix_len}, ...)")


def build_target(kind: str, tokenizer_config: dict[str, Any], model_config: dict[str, Any]) -> IARTarget:
    """Fresh (untrained) target of ``kind`` from config dicts."""
    if kind == "rar":
        return RARTarget(VQTokenizer(VQConfig.from_dict(tokenizer_config)), RARModel(RARConfig.from_dict(model_config)))
    if kind == "var":
        return VARTarget(VQTokenizer(VQConfig.from_dict(tokenizer_config)), VARModel(VARConfig.from_dict(model_config)))
    if kind == "mar":
        from genleak.models.mar import KLConfig, KLTokenizer, MARConfig, MARModel

        return MARTarget(KLTokenizer(KLConfig.from_dict(tokenizer_config)), MARModel(MARConfig.from_dict(model_config)))
    raise TargetError(f"unknown IAR kind '{kind}'; choose var, rar or mar")


def load_iar_target(folder: str | Path, device: str | torch.device | None = None) -> IARTarget:
    """Load an IAR target folder written by ``save_pretrained`` / ``genleak train iar``."""
    from safetensors.torch import load_file

    path = Path(folder)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise TargetError(f"'{folder}' has no {CONFIG_FILE}: not an IAR target folder (train one with `genleak train iar`)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TargetError(f"'{cfg_path}' is not valid JSON ({err})") from err
    if not isinstance(cfg, dict) or cfg.get("format") != IAR_FORMAT:
        raise TargetError(f"'{folder}' is not a genleak IAR target (format {cfg.get('format') if isinstance(cfg, dict) else None!r})")
    if cfg.get("version") != IAR_VERSION:
        raise TargetError(f"'{folder}' has IAR format version {cfg.get('version')!r}; this genleak reads {IAR_VERSION}")
    target = build_target(cfg["kind"], cfg["tokenizer"], cfg["model"])
    for name, module in (("tokenizer", target.tokenizer), ("model", target.model)):
        file = path / f"{name}.safetensors"
        if not file.is_file():
            raise TargetError(f"'{folder}' has no {name}.safetensors; the folder is incomplete")
        try:
            module.load_state_dict(load_file(str(file)))
        except RuntimeError as err:
            raise TargetError(f"'{file}' does not match {CONFIG_FILE}: {str(err).splitlines()[0]}") from err
    if device is not None:
        target.device = torch.device(device)
        target.tokenizer.to(target.device)
        target.model.to(target.device)
    target._fingerprint = None
    return target
