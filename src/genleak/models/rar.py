"""RAR-style target: class-conditional next-token prediction over VQ tokens with a causal
transformer, trained on random permutations of the token order that anneal to raster order.

RAR (Yu et al. 2024; thesis ch. 9.2): "randomly permuting token sequences ... optimizes eq. (9.2)
over all possible permutations". Each input position carries the embedding of the token it holds
*and* a target-aware position embedding of the position it must predict next, so the network knows
where it is going in a permuted order. The permutation probability goes linearly from 1 to 0 between
25% and 75% of training (RAR anneals between epochs 100 and 300 of 400), so sampling and the attacks
use raster order. The class enters as the first token (the null class for unconditional CFG passes)
and is also added to every position (a stand-in for RAR's adaptive-LayerNorm conditioning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genleak.config import JsonConfig
from genleak.models.layers import Trunk, additive_mask, drop_labels, pick_tokens


@dataclass
class RARConfig(JsonConfig):
    vocab_size: int = 64
    seq_len: int = 16
    num_classes: int = 10
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    class_dropout: float = 0.1  # CFG label drop rate of VAR/RAR/MAR training
    anneal: tuple[float, float] = (0.25, 0.75)  # fraction of training where p(permute) goes 1 -> 0


class RARModel(nn.Module):
    """Causal transformer: input position i holds the class (i = 0) or token order[i-1]; its output
    predicts token order[i]. Logits are returned in raster order whatever the order was."""

    def __init__(self, config: RARConfig) -> None:
        super().__init__()
        self.config = config
        d, n = config.dim, config.seq_len
        self.null_class = config.num_classes
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.cls_emb = nn.Embedding(config.num_classes + 1, d)
        self.pos_emb = nn.Parameter(torch.randn(n, d) * 0.02)  # where the held token sits
        self.target_pos_emb = nn.Parameter(torch.randn(n, d) * 0.02)  # where the next token goes
        self.trunk = Trunk(d, config.depth, config.heads, config.mlp_ratio)
        self.head = nn.Linear(d, config.vocab_size)
        self.register_buffer("causal", additive_mask(torch.ones(n, n).tril().bool()), persistent=False)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, N, V) for every token, in raster order."""
        b, n = tokens.shape
        if order is None:
            order = torch.arange(n, device=tokens.device).expand(b, n)
        held = torch.gather(tokens, 1, order[:, :-1])
        x_tok = self.tok_emb(held) + self.pos_emb[order[:, :-1]]
        c = self.cls_emb(labels)[:, None]
        x = torch.cat([c, x_tok], dim=1) + self.target_pos_emb[order] + c
        out = self.head(self.trunk(x, self.causal))
        raster = torch.empty_like(out)
        raster.scatter_(1, order[:, :, None].expand_as(out), out)
        return raster

    def training_loss(
        self, tokens: torch.Tensor, labels: torch.Tensor, progress: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Cross-entropy of next-token prediction (eq. 9.2) on a permuted order with probability r."""
        b, n = tokens.shape
        lo, hi = self.config.anneal
        r = 1.0 if progress <= lo else 0.0 if progress >= hi else (hi - progress) / (hi - lo)
        order = torch.arange(n).expand(b, n).clone()
        permute = torch.rand(b, generator=generator) < r
        if permute.any():
            order[permute] = torch.argsort(torch.rand(int(permute.sum()), n, generator=generator), dim=1)
        labels = drop_labels(labels, self.null_class, self.config.class_dropout, generator)
        logits = self(tokens, labels, order.to(tokens.device))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor,
        prefix: torch.Tensor | None = None,
        prefix_len: int = 0,
        *,
        cfg_scale: float = 1.0,
        greedy: bool = True,
        temperature: float = 1.0,
        logit_noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Raster-order generation; the first ``prefix_len`` tokens are copied from ``prefix``.

        ``cfg_scale`` = 1 is plain conditional sampling (what extraction uses, ch. 9.5.3 "We do not
        use classifier-free guidance during generation"); ``logit_noise`` = sigma adds N(0, sigma^2)
        to the logits before each choice (the output-noise mitigation, supp. D.11.1).
        """
        b, n = labels.shape[0], self.config.seq_len
        tokens = torch.zeros(b, n, dtype=torch.long, device=labels.device)
        if prefix_len:
            tokens[:, :prefix_len] = prefix[:, :prefix_len]
        for i in range(prefix_len, n):
            logits = guided_logits(self, tokens, labels, cfg_scale)[:, i]
            if logit_noise:
                logits = logits + logit_noise * torch.randn(logits.shape, generator=generator).to(logits.device)
            tokens[:, i] = pick_tokens(logits, greedy, temperature, generator)
        return tokens


def guided_logits(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Conditional logits, or l_null + s (l_cond - l_null) for ``cfg_scale`` s != 1 (one batched pass)."""
    if cfg_scale == 1.0:
        return model(tokens, labels)
    null = torch.full_like(labels, model.null_class)
    both = model(torch.cat([tokens, tokens]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + cfg_scale * (cond - uncond)
