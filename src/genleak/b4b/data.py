"""Tiny image worlds for the B4B experiments: a *broad* distribution and a *narrow* downstream task.

B4B rests on one observation (Section 6.3.1, Figure 6.3.1 of the thesis): an encoder is trained on
diverse data, a legitimate user queries one narrow downstream task whose representations sit in a
small sub-space, while a stealer queries broad data to cover the whole space. The thesis uses
ImageNet (broad) against CIFAR10 / SVHN / FashionMNIST (narrow). On two CPU cores we rebuild the same
geometry from genleak's built-in data (scikit-learn's 8x8 digits, upsampled to 16x16 by ``genleak.data``) plus
procedurally drawn families (shapes, gratings, blobs, strokes):

* ``world``: the broad mixture. The victim encoder is trained on it and the stealer queries it
  (like ImageNet in Table 6.4.1). Its digit family only uses the *public* half of ``load_digits``.
* ``task``: the legitimate user's downstream task, 10-way digit classification on the *private*
  half of ``load_digits``, lightly jittered (like CIFAR10 in Table 6.4.1). Nobody trains on it.

Every sampler is a pure function of its seed, so simulations and tests are reproducible. Images are
float32 in [0, 1], shape ``(N, 1, 16, 16)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 16
FAMILIES: tuple[str, ...] = ("digits", "shapes", "gratings", "blobs", "strokes")


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """genleak's built-in digits (:func:`genleak.data.sources.digits_source`) at 16x16, in [0, 1]."""
    from genleak.data.sources import digits_source

    ds = digits_source(size=IMAGE_SIZE)
    img = ((ds.images.numpy() + 1.0) / 2.0).astype(np.float32)
    return img, np.asarray(ds.labels, dtype=np.int64)


def digit_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the public (world) and private (task) halves of ``load_digits``, disjoint."""
    _, y = _digits()
    perm = np.random.default_rng(seed).permutation(len(y))
    half = len(y) // 2
    return np.sort(perm[:half]), np.sort(perm[half:])


def _jitter(img: np.ndarray, rng: np.random.Generator, max_shift: int, max_rot_deg: float,
            scale: tuple[float, float]) -> np.ndarray:
    """Random rotation/scale/shift of a batch (N, 1, H, W) with scipy's affine resampling."""
    from scipy.ndimage import affine_transform

    out = np.empty_like(img)
    n, _, h, w = img.shape
    c = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    for i in range(n):
        a = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg))
        s = rng.uniform(*scale)
        m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / s
        shift = rng.integers(-max_shift, max_shift + 1, size=2)
        offset = c - m @ (c + shift)
        out[i, 0] = affine_transform(img[i, 0], m, offset=offset, order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    return yy, xx


def _shapes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Filled or outlined circles, rectangles and triangles at random places and sizes."""
    yy, xx = _grid()
    out = np.zeros((n, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i in range(n):
        kind = rng.integers(3)
        cy, cx = rng.uniform(4, 12, size=2)
        r = rng.uniform(2.5, 6.0)
        if kind == 0:
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            m = d <= r if rng.random() < 0.5 else np.abs(d - r) <= 0.9
        elif kind == 1:
            ry, rx = rng.uniform(1.5, 6.0, size=2)
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            m = inside if rng.random() < 0.5 else inside & ~((np.abs(yy - cy) <= ry - 1.2) & (np.abs(xx - cx) <= rx - 1.2))
        else:
            a0 = rng.uniform(0, 2 * np.pi)
            pts = [(cy + r * np.sin(a0 + k * 2 * np.pi / 3), cx + r * np.cos(a0 + k * 2 * np.pi / 3)) for k in range(3)]
            m = np.ones_like(yy, dtype=bool)
            for k in range(3):
                (y0, x0), (y1, x1) = pts[k], pts[(k + 1) % 3]
                (y2, x2) = pts[(k + 2) % 3]
                side = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
                ref = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                m &= side * np.sign(ref) >= 0
        out[i, 0] = m * rng.uniform(0.5, 1.0)
    return out


def _gratings(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sinusoidal gratings of random frequency, orientation, phase and contrast."""
    yy, xx = _grid()
    f = rng.uniform(0.06, 0.35, size=(n, 1, 1))
    th = rng.uniform(0, np.pi, size=(n, 1, 1))
    ph = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    c = rng.uniform(0.2, 0.5, size=(n, 1, 1))
    g = 0.5 + c * np.sin(2 * np.pi * f * (xx * np.cos(th) + yy * np.sin(th)) + ph)
    return g[:, None].astype(np.float32)


def _blobs(n: int, rng: np.random.Generator) -> np.ndarray:
    """Smoothed noise fields: cloud-like textures with random smoothness."""
    from scipy.ndimage import gaussian_filter

    out = np.empty((n, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i in range(n):
        z = gaussian_filter(rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE)), sigma=rng.uniform(1.0, 3.0), mode="wrap")
        z = (z - z.min()) / (np.ptp(z) + 1e-8)
        out[i, 0] = z ** rng.uniform(0.7, 2.0)
    return out


def _strokes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random polylines (scribbles), drawn as thick anti-aliased segments."""
    yy, xx = _grid()
    out = np.zeros((n, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i in range(n):
        pts = rng.uniform(1, 15, size=(rng.integers(2, 5), 2))
        img = np.zeros_like(yy)
        for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:], strict=True):
            dy, dx = y1 - y0, x1 - x0
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx + 1e-8), 0, 1)
            d = np.sqrt((yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2)
            img = np.maximum(img, np.clip(1.5 - d, 0, 1))
        out[i, 0] = img
    return out


def sample_family(family: str, n: int, seed: int, digit_pool: np.ndarray | None = None) -> np.ndarray:
    """``n`` images of one family, a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    if family == "digits":
        x, _ = _digits()
        pool = digit_pool if digit_pool is not None else digit_split()[0]
        idx = rng.choice(pool, size=n, replace=True)
        return _jitter(x[idx], rng, max_shift=2, max_rot_deg=20.0, scale=(0.85, 1.15))
    if family == "shapes":
        return _shapes(n, rng)
    if family == "gratings":
        return _gratings(n, rng)
    if family == "blobs":
        return _blobs(n, rng)
    if family == "strokes":
        return _strokes(n, rng)
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


def sample_world(n: int, seed: int) -> np.ndarray:
    """``n`` images of the broad mixture (equal share per family, shuffled): the stealer's data."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [1.0 / len(FAMILIES)] * len(FAMILIES))
    parts = [sample_family(f, int(c), seed=int(rng.integers(2**31))) for f, c in zip(FAMILIES, counts, strict=True)]
    x = np.concatenate(parts)
    return x[rng.permutation(n)]


@dataclass(frozen=True)
class Task:
    """A labelled downstream task: train and test images with labels (the legitimate user's data)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def x_all(self) -> np.ndarray:
        return np.concatenate([self.x_train, self.x_test])


def digits_task(seed: int = 0, test_fraction: float = 0.4) -> Task:
    """The narrow downstream task: 10-way classification of the private half of ``load_digits``.

    Images get a small jitter (one draw per image, fixed by ``seed``) so the task is not trivially
    linearly separable in pixel space; the victim's invariances then matter for the probe.
    """
    x, y = _digits()
    _, private = digit_split()
    rng = np.random.default_rng(seed + 1)
    xi = _jitter(x[private], rng, max_shift=2, max_rot_deg=15.0, scale=(0.9, 1.1))
    yi = y[private]
    perm = rng.permutation(len(yi))
    n_test = int(round(len(yi) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return Task(xi[tr], yi[tr], xi[te], yi[te])
