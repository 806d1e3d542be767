"""VAR-style target: class-conditional next-*scale* prediction over multi-scale VQ token maps.

VAR (Tian et al. 2024; thesis ch. 9.2) predicts the whole k-th token map r_k at once from the
class and all coarser maps r_1..r_{k-1}: p(x) = prod_k p(r_k | r_<k, c). The input for scale k is
the latent reconstructed from the coarser scales, resized to k's size (``VQTokenizer.
next_scale_inputs``); attention is block-causal (a token sees its own and all coarser scales). The
class embedding is the start token of scale 1 and is also added to every position (a stand-in for
VAR's adaptive LayerNorm conditioning). One forward pass gives the logits of every token of every
scale: the per-scale token log-probabilities the IAR attacks read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from genleak.config import JsonConfig
from genleak.models.layers import Trunk, additive_mask, drop_labels, pick_tokens

if TYPE_CHECKING:
    from genleak.models.vq import VQTokenizer


@dataclass
class VARConfig(JsonConfig):
    vocab_size: int = 64
    latent_dim: int = 16
    scales: tuple[int, ...] = (1, 2, 3, 4)
    num_classes: int = 10
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    class_dropout: float = 0.1  # CFG label drop rate (VAR trains with 10% null labels)

    @property
    def seq_len(self) -> int:
        return sum(s * s for s in self.scales)


def scale_index(scales: tuple[int, ...]) -> torch.Tensor:
    """Scale number (0..K-1) of each position of the flattened multi-scale sequence."""
    return torch.cat([torch.full((s * s,), k, dtype=torch.long) for k, s in enumerate(scales)])


class VARModel(nn.Module):
    """Block-causal transformer over [class start token, next-scale inputs of scales 2..K]."""

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        self.config = config
        d, n = config.dim, config.seq_len
        self.null_class = config.num_classes
        self.word_embed = nn.Linear(config.latent_dim, d)
        self.cls_emb = nn.Embedding(config.num_classes + 1, d)
        self.pos_emb = nn.Parameter(torch.randn(n, d) * 0.02)
        self.lvl_emb = nn.Embedding(len(config.scales), d)
        self.trunk = Trunk(d, config.depth, config.heads, config.mlp_ratio)
        self.head = nn.Linear(d, config.vocab_size)
        lvl = scale_index(config.scales)
        self.register_buffer("lvl", lvl, persistent=False)
        self.register_buffer("block_causal", additive_mask(lvl[:, None] >= lvl[None, :]), persistent=False)

    def forward(self, next_inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, V) of all scales' tokens from the teacher-forcing inputs (B, L-1, C)."""
        c = self.cls_emb(labels)[:, None]
        x = torch.cat([c, self.word_embed(next_inputs)], dim=1)
        x = x + self.pos_emb + self.lvl_emb(self.lvl) + c
        return self.head(self.trunk(x, self.block_causal))

    def training_loss(
        self,
        tokens: torch.Tensor,
        labels: torch.Tensor,
        tokenizer: VQTokenizer,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Cross-entropy over all tokens of all scales, teacher-forced (VAR's training objective)."""
        with torch.no_grad():
            inputs = tokenizer.next_scale_inputs(tokens)
        labels = drop_labels(labels, self.null_class, self.config.class_dropout, generator)
        logits = self(inputs, labels)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor,
        tokenizer: VQTokenizer,
        prefix: torch.Tensor | None = None,
        prefix_len: int = 0,
        *,
        cfg_scale: float = 1.0,
        greedy: bool = True,
        temperature: float = 1.0,
        logit_noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Scale-by-scale generation (K forward passes); the first ``prefix_len`` tokens of the
        flattened coarse-to-fine sequence are copied from ``prefix`` (ch. 9.5.3: prefix length i
        counts tokens, e.g. i = 30 = scales 1..4 of VAR-d30, Table D.12.1)."""
        b, n = labels.shape[0], self.config.seq_len
        tokens = torch.zeros(b, n, dtype=torch.long, device=labels.device)
        if prefix_len:
            tokens[:, :prefix_len] = prefix[:, :prefix_len]
        start = 0
        for s in self.config.scales:
            stop = start + s * s
            if stop > prefix_len:
                inputs = tokenizer.next_scale_inputs(tokens)
                if cfg_scale == 1.0:
                    logits = self(inputs, labels)
                else:
                    null = torch.full_like(labels, self.null_class)
                    cond, uncond = self(torch.cat([inputs, inputs]), torch.cat([labels, null])).chunk(2)
                    logits = uncond + cfg_scale * (cond - uncond)
                logits = logits[:, start:stop]
                if logit_noise:
                    logits = logits + logit_noise * torch.randn(logits.shape, generator=generator).to(logits.device)
                chosen = pick_tokens(logits, greedy, temperature, generator)
                keep = max(prefix_len - start, 0)
                tokens[:, start + keep : stop] = chosen[:, keep:]
            start = stop
        return tokens
