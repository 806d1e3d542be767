"""Training-data extraction from IARs with prefixes (thesis ch. 9.5.3, supp. D.12).

Three steps, as in the thesis:

1. **Candidate identification** in one forward pass per image: VAR/RAR predict every token of the
   tokenised image at once (teacher forcing) and the greedy prediction t_hat is compared with t:
   d(t, t_hat) = 100 - 100 * mean_i 1(t_i = t_hat_i) ("an average prediction error"). MAR masks 95%
   of the tokens and predicts them from the other 5% in a single step: d = ||t - t_hat||^2. The
   top-k (k = 5 in the thesis) smallest d per class become candidates.
2. **Generation**: the first ``prefix_len`` tokens of the candidate are kept and the rest is
   completed greedily, without classifier-free guidance ("We do not use classifier-free guidance
   during generation"). Prefix lengths of the thesis: 30 tokens for VAR-d30 and RAR-XXL, 5 for
   MAR-H (Table D.12.1) — here the sequences are 16-30 tokens, so the default is a quarter of them.
3. **Assessment**: the completion is decoded and compared with the candidate. The thesis uses SSCD
   similarity >= 0.75 (Wen et al.); SSCD is not available offline, so genleak uses the pixel
   similarity 1 - RMS distance in [0, 1] units (Carlini et al. 2023's normalised l2) against the
   tokenizer's reconstruction of the candidate (what a perfect memoriser would output), with the
   threshold reported next to the counts. The distance to the raw image is reported too.

**False-positive check** (supp. D.12.2: "we start experiencing false-positives once the prefix
length surpasses 30"): the same procedure runs on validation images the model never saw; a
validation image "extracted" means the prefix alone determines the image, so the count is not
evidence of memorisation at that prefix length. Both counts are always reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genleak.data import ImageSet
from genleak.errors import GenleakError
from genleak.extraction.nn import rms_distance

# Ch. 9.5.3: "for each class we select top-5 samples with the smallest d".
TOP_K_PER_CLASS = 5


@dataclass
class IARExtractionConfig:
    top_k_per_class: int = TOP_K_PER_CLASS
    prefix_len: int | None = None  # tokens; None = a quarter of the sequence (Table D.12.1 scaled)
    threshold: float = 0.95  # similarity (1 - RMS in [0, 1] units) counted as extracted
    batch_size: int = 64
    seed: int = 0

    def resolved_prefix(self, seq_len: int) -> int:
        p = seq_len // 4 if self.prefix_len is None else int(self.prefix_len)
        if not 0 <= p < seq_len:
            raise GenleakError(f"prefix length must be in 0..{seq_len - 1} tokens, got {p}")
        return p


@dataclass
class SideResult:
    """Candidates and completions of one image set (training or validation)."""

    candidate_ids: list[str]
    candidate_labels: list[int]
    distance: np.ndarray  # candidate-selection distance of each candidate
    similarity: np.ndarray  # completion vs reconstruction of the original
    similarity_raw: np.ndarray  # completion vs the original image
    token_agreement: np.ndarray  # fraction of completed tokens equal to the original's
    extracted: np.ndarray  # bool

    @property
    def count(self) -> int:
        return int(self.extracted.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": len(self.candidate_ids),
            "extracted": self.count,
            "extracted_ids": [i for i, e in zip(self.candidate_ids, self.extracted) if e],
            "mean_similarity": float(self.similarity.mean()) if len(self.similarity) else None,
            "mean_token_agreement": float(self.token_agreement.mean()) if len(self.token_agreement) else None,
            "rows": [
                {"id": i, "label": int(lab), "distance": float(d), "similarity": float(s), "similarity_raw": float(r),
                 "token_agreement": float(a), "extracted": bool(e)}
                for i, lab, d, s, r, a, e in zip(self.candidate_ids, self.candidate_labels, self.distance,
                                                 self.similarity, self.similarity_raw, self.token_agreement,
                                                 self.extracted)
            ],
        }


@dataclass
class IARExtractionResult:
    config: dict[str, Any]
    prefix_len: int
    sequence_length: int
    train: SideResult
    validation: SideResult | None
    seconds: float = 0.0
    seconds_per_candidate: float = 0.0
    generated: torch.Tensor | None = field(default=None, repr=False)  # completions of train candidates
    originals: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "prefix_len": self.prefix_len,
            "sequence_length": self.sequence_length,
            "extracted": self.train.count,
            "false_positives": self.validation.count if self.validation is not None else None,
            "seconds": round(self.seconds, 3),
            "seconds_per_candidate": self.seconds_per_candidate,
            "train": self.train.to_dict(),
            "validation": self.validation.to_dict() if self.validation is not None else None,
        }


@torch.no_grad()
def candidate_distances(target: Any, images: torch.Tensor, labels: Any, batch_size: int = 64,
                        seed: int = 0) -> np.ndarray:
    """Step 1: d(t, t_hat) from one forward pass per image (lower = more likely memorised)."""
    lab = target.labels(labels)
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = target.encode(images[start : start + batch_size])
        y = lab[start : start + batch_size]
        if target.discrete:
            pred = target.logits(x, y).argmax(-1)
            out.append(100.0 - 100.0 * (pred == x).float().mean(1))
        else:
            pred = target.masked_reconstruction(x, y, seed=seed)
            out.append((pred - x).pow(2).flatten(1).sum(1))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def select_candidates(distances: np.ndarray, labels: Any, k: int) -> np.ndarray:
    """Indices of the k smallest distances per class (ties by index), in class order."""
    labels = np.asarray(labels)
    picks = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        order = rows[np.lexsort((rows, distances[rows]))]
        picks.extend(order[:k].tolist())
    return np.asarray(picks, dtype=np.int64)


@torch.no_grad()
def complete(target: Any, images: torch.Tensor, labels: Any, prefix_len: int, batch_size: int = 64,
             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2: keep ``prefix_len`` tokens, complete greedily without CFG. Returns (tokens, original tokens)."""
    lab = target.labels(labels)
    gen, orig = [], []
    for start in range(0, images.shape[0], batch_size):
        x = target.encode(images[start : start + batch_size])
        g = torch.Generator().manual_seed(seed + start)
        gen.append(target.generate(lab[start : start + batch_size], prefix=x, prefix_len=prefix_len, greedy=True,
                                   generator=g))
        orig.append(x)
    return torch.cat(gen), torch.cat(orig)


def _side(target: Any, images: ImageSet, config: IARExtractionConfig, prefix_len: int
          ) -> tuple[SideResult, torch.Tensor, torch.Tensor]:
    labels = getattr(images, "labels", None)
    if labels is None:
        raise GenleakError("extraction needs class labels (the IARs are class-conditional)")
    d = candidate_distances(target, images.images, labels, config.batch_size, config.seed)
    idx = select_candidates(d, labels, config.top_k_per_class)
    sub = images[idx.tolist()]
    gen_tokens, orig_tokens = complete(target, sub.images, sub.labels, prefix_len, config.batch_size, config.seed)
    gen_img = target.decode(gen_tokens).cpu()
    rec_img = target.decode(orig_tokens).cpu()
    sim = 1.0 - rms_distance(gen_img, rec_img).numpy()
    sim_raw = 1.0 - rms_distance(gen_img, sub.images).numpy()
    if target.discrete:
        agree = (gen_tokens[:, prefix_len:] == orig_tokens[:, prefix_len:]).float().mean(1).cpu().numpy()
    else:
        agree = np.full(len(idx), np.nan)
    side = SideResult(candidate_ids=list(sub.ids), candidate_labels=[int(v) for v in np.asarray(sub.labels)],
                      distance=d[idx], similarity=sim.astype(np.float64), similarity_raw=sim_raw.astype(np.float64),
                      token_agreement=agree.astype(np.float64), extracted=sim >= config.threshold)
    return side, gen_img, sub.images


def extract_iar(target: Any, train: ImageSet, validation: ImageSet | None = None,
                config: IARExtractionConfig | None = None) -> IARExtractionResult:
    """Run candidate selection, prefix completion and assessment on the training images and, for
    the false-positive check, on validation images (never seen in training)."""
    import dataclasses
    import time

    config = config or IARExtractionConfig()
    prefix_len = config.resolved_prefix(target.sequence_length)
    start = time.perf_counter()
    train_side, gen, orig = _side(target, train, config, prefix_len)
    seconds = time.perf_counter() - start
    val_side = _side(target, validation, config, prefix_len)[0] if validation is not None else None
    return IARExtractionResult(config=dataclasses.asdict(config), prefix_len=prefix_len,
                               sequence_length=target.sequence_length, train=train_side, validation=val_side,
                               seconds=seconds, seconds_per_candidate=seconds / max(1, len(train_side.candidate_ids)),
                               generated=gen, originals=orig)
