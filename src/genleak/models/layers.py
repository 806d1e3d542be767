"""The one transformer trunk the tiny IARs share (VAR-, RAR- and MAR-style models).

PyTorch's own pre-norm ``nn.TransformerEncoderLayer`` (no re-implementation of attention); the
models differ only in their attention mask (causal, block-causal, bidirectional) and in what they
embed, which each model file spells out.
"""

from __future__ import annotations

import torch
from torch import nn


class Trunk(nn.Module):
    """``depth`` pre-norm transformer layers + final LayerNorm, batch-first, no dropout."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim * mlp_ratio, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(self.layers(x, mask=mask))


def additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    """Boolean "query i may attend to key j" (L, L) -> the float mask nn.Transformer expects."""
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


def drop_labels(labels: torch.Tensor, null_class: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Classifier-free guidance training (Ho & Salimans 2022): replace each label by the null class
    with probability ``p``, so the same network also learns p(x | c_null)."""
    drop = torch.rand(labels.shape, generator=generator) < p
    return torch.where(drop.to(labels.device), torch.full_like(labels, null_class), labels)


def pick_tokens(
    logits: torch.Tensor, greedy: bool, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Greedy (argmax) or temperature sampling from (..., V) logits (thesis supp. D.5.4)."""
    if greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat.cpu(), 1, generator=generator).view(probs.shape[:-1]).to(logits.device)
