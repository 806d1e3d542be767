"""Vectorised nearest-neighbour search between generated images and a reference set.

Generate-and-filter extraction (Carlini et al. 2023) compares every generation with every training
image: N x M distances. ``torch.cdist`` in its matrix-multiply mode computes a chunk of them as one
GEMM (``|a|^2 + |b|^2 - 2 a.b``), which is what makes N = 10^4 generations against M = 10^4
training images take seconds on a CPU. The GEMM form loses precision exactly where extraction
looks (near-duplicates: a large |a|^2 minus an almost equal 2 a.b), so the GEMM only *ranks*; the
distance to each query's winner is then recomputed directly from the pixel difference.

Distances are the *normalised* l2 of Carlini et al. 2023: images mapped to [0, 1] and
``||a - b||_2 / sqrt(d)`` (d = pixels x channels), i.e. the root-mean-square pixel difference.
That makes a threshold such as S2L's 0.15 mean the same thing at every resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genleak.errors import DataError

__all__ = ["Neighbours", "flatten_unit", "nearest", "rms_distance"]

# GEMM-ranked candidates per query whose distances are then recomputed exactly.
_CANDIDATES = 4


@dataclass(frozen=True)
class Neighbours:
    """For each query: the distance to its nearest reference and that reference's row index."""

    distance: torch.Tensor  # (N,) float32, normalised l2 (RMS in [0, 1] pixel units)
    index: torch.Tensor  # (N,) int64 rows of the reference set


def flatten_unit(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, d) float32 in [0, 1]: the space distances are measured in."""
    if images.ndim < 2:
        raise DataError(f"expected a batch of images (N, ...), got shape {tuple(images.shape)}")
    return ((images.detach().to("cpu", torch.float32).flatten(1) + 1.0) * 0.5).contiguous()


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise normalised l2 between two equally shaped image batches in [-1, 1]: (N,)."""
    fa, fb = flatten_unit(a), flatten_unit(b)
    if fa.shape != fb.shape:
        raise DataError(f"cannot compare image batches of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return (fa - fb).pow(2).mean(1).sqrt()


def nearest(
    queries: torch.Tensor,
    references: torch.Tensor,
    *,
    query_chunk: int = 4096,
    ref_chunk: int = 8192,
    device: str | torch.device | None = None,
) -> Neighbours:
    """Nearest reference (normalised l2) for every query image; both in [-1, 1], same per-image shape.

    Works in (query_chunk x ref_chunk) blocks keeping each query's few best candidates, so memory
    stays bounded (``query_chunk * ref_chunk * 4`` bytes per block, 128 MiB with the defaults)
    whatever N and M are; the candidates' distances are then recomputed exactly. Exact ties go to
    the lowest reference index. ``device`` runs the GEMMs there (e.g. ``"cuda"``).
    """
    if queries.shape[1:] != references.shape[1:]:
        raise DataError(
            f"generated images have shape {tuple(queries.shape[1:])} but reference images {tuple(references.shape[1:])}"
        )
    if references.shape[0] == 0:
        raise DataError("no reference images to compare against")
    if query_chunk < 1 or ref_chunk < 1:
        raise DataError(f"chunk sizes must be >= 1, got {query_chunk}, {ref_chunk}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    q = flatten_unit(queries)
    r = flatten_unit(references)
    n = q.shape[0]
    k = min(_CANDIDATES, r.shape[0])
    cand = torch.empty((n, k), dtype=torch.long)
    r_chunks = [r[s : s + ref_chunk].to(dev) for s in range(0, r.shape[0], ref_chunk)]
    with torch.inference_mode():
        for qs in range(0, n, query_chunk):
            qc = q[qs : qs + query_chunk].to(dev)
            run_sq = torch.empty((qc.shape[0], 0), dtype=torch.float32, device=dev)
            run_idx = torch.empty((qc.shape[0], 0), dtype=torch.long, device=dev)
            offset = 0
            for rc in r_chunks:
                sq = torch.cdist(qc, rc, compute_mode="use_mm_for_euclid_dist")
                kk = min(k, rc.shape[0])
                val, idx = sq.topk(kk, dim=1, largest=False)
                run_sq = torch.cat([run_sq, val], 1)
                run_idx = torch.cat([run_idx, idx + offset], 1)
                if run_sq.shape[1] > k:
                    keep = run_sq.topk(k, dim=1, largest=False).indices
                    run_sq, run_idx = run_sq.gather(1, keep), run_idx.gather(1, keep)
                offset += rc.shape[0]
            cand[qs : qs + qc.shape[0]] = run_idx.cpu()
        # Exact distances to the few GEMM candidates: the GEMM form is imprecise for near-duplicates,
        # where two references may be within its rounding error of each other.
        exact = (q.unsqueeze(1) - r[cand]).pow(2).mean(2).sqrt()  # (N, k)
        # ties -> lowest reference index: sort candidates by index first, argmin takes the first minimum
        order = cand.argsort(dim=1)
        cand, exact = cand.gather(1, order), exact.gather(1, order)
        pos = exact.argmin(dim=1, keepdim=True)
    return Neighbours(distance=exact.gather(1, pos).squeeze(1), index=cand.gather(1, pos).squeeze(1))
