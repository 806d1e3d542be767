"""The one place where pixel values and sizes are converted.

Every source funnels its pixels through these functions so that all of genleak agrees on what an
image is: a ``torch.float32`` tensor in ``[-1, 1]``, NCHW (the range diffusion models are trained
in). Keeping the conversions here means a split made from PNGs, an ``.npz`` or CIFAR pickles gives
bit-identical tensors — and therefore identical sha256 hashes — for identical pixels.

Choices (and why):

* uint8 ``v`` maps to ``v / 127.5 - 1`` in float32; :func:`to_uint8` inverts it with rounding, so
  uint8 -> [-1, 1] -> uint8 is exact.
* Downsizing uses bilinear interpolation with ``antialias=True`` (no aliasing of fine detail).
* Upsizing uses ``nearest-exact``: it only copies pixels, so it is bit-exact on every machine and
  invents no detail. This matters because splits verify images by sha256 of their float32 bytes;
  a floating-point interpolation kernel could differ in the last bit between CPUs.
* Sources read from 8-bit files snap resized images back onto the 8-bit grid
  (:func:`quantize_uint8`), as a PIL resize would. That makes a resized image exactly equal to what
  you get by saving it as PNG and loading it again, and keeps hashes stable across machines.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genleak.errors import DataError

__all__ = [
    "VALUE_RANGES",
    "detect_value_range",
    "from_uint8",
    "quantize_uint8",
    "resize",
    "to_model_range",
    "to_nchw",
    "to_uint8",
]

# The value ranges genleak understands; anything else is ambiguous and must be converted by the user.
VALUE_RANGES: tuple[tuple[float, float], ...] = ((0.0, 255.0), (0.0, 1.0), (-1.0, 1.0))
_TOL = 1e-4


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu()
    if isinstance(array, np.ndarray):
        if array.dtype == np.uint16 or array.dtype.kind not in "uif" or array.dtype == bool:
            raise DataError(
                f"pixel array has dtype {array.dtype}; convert it to uint8 [0, 255] or float [0, 1]/[-1, 1]"
            )
        return torch.from_numpy(np.ascontiguousarray(array))
    raise DataError(f"expected a numpy array or torch tensor of pixels, got {type(array).__name__}")


def detect_value_range(array: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Guess the value range of a whole pixel array (never per image: that would be inconsistent).

    uint8 (and other integer arrays within 0..255) -> (0, 255). Floats: any value below 0 ->
    (-1, 1); else any value above 1 -> (0, 255); else (0, 1). The only ambiguous case is a float
    array in [-1, 1] that happens to contain no negative value; pass ``value_range`` explicitly
    (or store uint8) when that can happen.
    """
    t = _as_tensor(array)
    if t.dtype == torch.bool:
        raise DataError("pixel array is boolean; convert it to uint8 [0, 255] or float [0, 1]")
    if t.numel() == 0:
        return (0.0, 255.0) if not t.is_floating_point() else (0.0, 1.0)
    if not t.is_floating_point():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"integer pixel array spans [{lo}, {hi}], not 0..255; convert it to uint8 or float [0, 1]"
            )
        return (0.0, 255.0)
    lo_t, hi_t = torch.aminmax(t.reshape(-1).to(torch.float32))  # NaN propagates, inf shows as inf
    lo, hi = float(lo_t), float(hi_t)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        n_bad = int((~torch.isfinite(t)).sum())
        raise DataError(f"pixel array contains {n_bad} NaN/inf values; fix or drop those images")
    if lo < 0:
        return (-1.0, 1.0)
    if hi > 1 + _TOL:
        return (0.0, 255.0)
    return (0.0, 1.0)


def to_model_range(
    array: np.ndarray | torch.Tensor, value_range: tuple[float, float] | None = None
) -> torch.Tensor:
    """Convert pixels (any layout) to a float32 tensor in [-1, 1].

    ``value_range`` is one of ``(0, 255)``, ``(0, 1)``, ``(-1, 1)``; ``None`` detects it with
    :func:`detect_value_range` (uint8 is always 0..255). Values outside the range (beyond 1e-4)
    raise :class:`DataError` rather than being clipped silently; values within the tolerance are
    clamped.
    """
    t = _as_tensor(array)
    vr = detect_value_range(t) if value_range is None else tuple(float(v) for v in value_range)
    if vr not in VALUE_RANGES:
        raise DataError(f"value_range {vr} is not supported; use one of (0, 255), (0, 1), (-1, 1)")
    if t.dtype == torch.bool:
        raise DataError("pixel array is boolean; convert it to uint8 [0, 255] or float [0, 1]")
    if t.numel() and not (t.dtype == torch.uint8 and vr == (0.0, 255.0)):  # uint8 0..255 needs no check
        lo_t, hi_t = torch.aminmax(t.reshape(-1).to(torch.float32) if t.is_floating_point() else t.reshape(-1))
        lo, hi = float(lo_t), float(hi_t)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            n_bad = int((~torch.isfinite(t.float())).sum())
            raise DataError(f"pixel array contains {n_bad} NaN/inf values; fix or drop those images")
        tol = _TOL * (vr[1] - vr[0]) / 2
        if lo < vr[0] - tol or hi > vr[1] + tol:
            raise DataError(
                f"pixel values span [{lo:g}, {hi:g}], outside the declared range [{vr[0]:g}, {vr[1]:g}]; "
                "rescale them or declare the right range"
            )
    x = t.to(torch.float32, copy=True)  # never modify the caller's array below
    if vr == (0.0, 255.0):
        x.div_(127.5).sub_(1.0)
    elif vr == (0.0, 1.0):
        x.mul_(2.0).sub_(1.0)
    # clamp absorbs the tolerance; + 0.0 turns -0.0 into 0.0 so equal pixels have equal bytes (hashes)
    return x.clamp_(-1.0, 1.0).add_(0.0)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] on the tensor's own device: the same operations as
    :func:`to_model_range` (so the same bytes and hashes), for batches decoded as uint8 and converted
    only once they reach the model's device."""
    return pixels.to(torch.float32).div_(127.5).sub_(1.0).clamp_(-1.0, 1.0).add_(0.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255] (same layout), rounding to nearest; for saving to PNG/npz."""
    x = images.detach().to(torch.float32)
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)


def quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    """Snap [-1, 1] images onto the 8-bit grid (what saving as PNG and reloading would give)."""
    return to_model_range(to_uint8(images), (0.0, 255.0))


def resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize NCHW (or CHW) [-1, 1] images to ``size`` (an int means square).

    If any side shrinks: bilinear, ``antialias=True``, ``align_corners=False``. If no side
    shrinks: ``nearest-exact`` (bit-exact everywhere, see the module docstring). Non-square
    inputs are stretched, not cropped. Returns float32 clamped to [-1, 1]; the input is returned
    unchanged (as float32) when it already has the requested size.
    """
    if isinstance(size, int | np.integer):
        out_hw = (int(size), int(size))
    else:
        out_hw = (int(size[0]), int(size[1]))
    if out_hw[0] <= 0 or out_hw[1] <= 0:
        raise DataError(f"image size must be positive, got {size}")
    squeeze = images.dim() == 3
    x = images.unsqueeze(0) if squeeze else images
    if x.dim() != 4:
        raise DataError(f"resize needs NCHW or CHW images, got shape {tuple(images.shape)}")
    x = x.to(torch.float32)
    h, w = x.shape[-2:]
    if (h, w) != out_hw and x.shape[0] > 0:
        if out_hw[0] < h or out_hw[1] < w:
            x = F.interpolate(x, size=out_hw, mode="bilinear", antialias=True, align_corners=False)
        else:
            x = F.interpolate(x, size=out_hw, mode="nearest-exact")
        x = x.clamp(-1.0, 1.0) + 0.0
    elif (h, w) != out_hw:
        x = x.new_zeros((0, x.shape[1], *out_hw))
    return x.squeeze(0) if squeeze else x


def to_nchw(array: np.ndarray | torch.Tensor, layout: str | None = None) -> np.ndarray | torch.Tensor:
    """Bring an image batch into NCHW layout (NHW greyscale gets a channel axis).

    ``layout`` is ``"nchw"`` or ``"nhwc"``; ``None`` detects it: a channel axis of size 1 or 3 at
    position 1 means NCHW, at the end means NHWC. When both (or neither) look like channels, e.g.
    ``(N, 3, 5, 3)``, the layout is ambiguous and :class:`DataError` asks for it explicitly.
    """
    if array.ndim == 3:
        array = array[:, None]
        return array
    if array.ndim != 4:
        raise DataError(
            f"image array has shape {tuple(array.shape)}; expected 4-D NCHW/NHWC or 3-D NHW greyscale"
        )
    if layout is None:
        first, last = array.shape[1] in (1, 3), array.shape[3] in (1, 3)
        if first and not last:
            layout = "nchw"
        elif last and not first:
            layout = "nhwc"
        else:
            raise DataError(
                f"cannot tell whether image array of shape {tuple(array.shape)} is NCHW or NHWC "
                "(channels must be 1 or 3); pass layout='nchw' or layout='nhwc'"
            )
    layout = layout.lower()
    if layout == "nchw":
        return array
    if layout == "nhwc":
        if isinstance(array, torch.Tensor):
            return array.permute(0, 3, 1, 2)
        return np.transpose(array, (0, 3, 1, 2))
    raise DataError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
