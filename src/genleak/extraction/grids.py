"""Image grids (PNG) for extraction and S2L reports: generated images next to their matches.

A reader has to *see* an extraction to trust it: a distance below a threshold can also come from
two blank images. The grid puts each flagged generation beside the training image it matched and,
when given, the nearest held-out image, so the false-positive check is visible too. Pure PIL,
nearest-neighbour upscaling (tiny images stay crisp), written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genleak.errors import DataError
from genleak.io import atomic_path

__all__ = ["comparison_grid", "image_grid", "to_uint8", "save_png"]

_PAD = 2  # pixels between tiles (after upscaling)
_BACKGROUND = 96  # mid-grey separators, distinguishable from black and white digits


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8 with C in {1, 3}."""
    if images.ndim != 4:
        raise DataError(f"expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    x = ((images.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.permute(0, 2, 3, 1).numpy()
    if x.shape[-1] not in (1, 3):
        x = x[..., :1]  # e.g. 4-channel latents: show the first channel rather than fail
    return x


def image_grid(rows: Sequence[torch.Tensor], scale: int = 4) -> np.ndarray:
    """Stack rows of images (each (N_i, C, H, W), same H, W, C) into one (H', W', 3) uint8 array.

    Shorter rows are padded with background; ``scale`` upsamples each pixel to scale x scale.
    """
    if not rows:
        raise DataError("no images to put in a grid")
    tiles = [to_uint8(r) for r in rows]
    h, w = tiles[0].shape[1:3]
    if any(t.shape[1:3] != (h, w) for t in tiles):
        raise DataError("all images in a grid must have the same height and width")
    ncol = max(t.shape[0] for t in tiles)
    th, tw = h * scale, w * scale
    canvas = np.full((len(tiles) * (th + _PAD) + _PAD, ncol * (tw + _PAD) + _PAD, 3), _BACKGROUND, np.uint8)
    for i, row in enumerate(tiles):
        for j in range(row.shape[0]):
            tile = row[j].repeat(scale, 0).repeat(scale, 1)
            if tile.shape[-1] == 1:
                tile = np.repeat(tile, 3, axis=-1)
            y, x = _PAD + i * (th + _PAD), _PAD + j * (tw + _PAD)
            canvas[y : y + th, x : x + tw] = tile
    return canvas


def comparison_grid(
    generated: torch.Tensor,
    matches: torch.Tensor,
    heldout: torch.Tensor | None = None,
    *,
    per_row: int = 8,
    scale: int = 4,
) -> np.ndarray:
    """Columns of (generated, nearest training image[, nearest held-out image]), ``per_row`` per row.

    Within each row band the first line is the generations, the second their training matches, the
    third (if given) their nearest held-out images.
    """
    if generated.shape != matches.shape or (heldout is not None and heldout.shape != generated.shape):
        raise DataError("generated, matched and held-out images must have the same shape")
    rows: list[torch.Tensor] = []
    for s in range(0, generated.shape[0], per_row):
        rows.append(generated[s : s + per_row])
        rows.append(matches[s : s + per_row])
        if heldout is not None:
            rows.append(heldout[s : s + per_row])
    return image_grid(rows, scale=scale)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
