"""Figures for the HTML report, as inline SVG strings (the page must work offline, no files beside it).

matplotlib's object API (``Figure``, no pyplot): no global state, no display. Text stays text
(``svg.fonttype: none``) so the page is searchable and small; each figure gets its own
``svg.hashsalt`` so the element ids of several inline SVGs on one page never collide (a clash
would make one figure clip to another figure's axes).
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genleak.metrics import roc_curve

# Attack colours (matplotlib tab10), shared by the ROC, the histograms and the table swatches.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
MEMBER_COLOR = "#d62728"
NONMEMBER_COLOR = "#1f77b4"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".svg": "image/svg+xml"}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _svg(fig: Any, salt: str) -> str:
    """Serialise a matplotlib figure to an inline-ready ``<svg>`` element (no XML prolog)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt, "font.size": 9}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # Drop the fixed pt size on the root element: the viewBox keeps the aspect ratio, CSS sets width.
    head_end = text.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    return head + ' class="figure" role="img"' + text[head_end:]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def roc_svg(curves: dict[str, tuple[np.ndarray, np.ndarray, str]], colors: dict[str, str], salt: str) -> str:
    """Log-log ROC of several attacks (the low-FPR region is what matters, Carlini et al. 2022).

    ``curves`` maps attack -> (member scores, non-member scores, legend label); the ROC itself comes
    from ``genleak.metrics.roc_curve``. The axes start one decade below the smallest FPR the
    non-member count can resolve (1/n), where FPR = 0 / TPR = 0 points are drawn.
    """
    fig = _figure(5.4, 4.3)
    ax = fig.add_subplot()
    n_max = max((len(n) for _, n, _ in curves.values()), default=100)
    floor = 10.0 ** math.floor(math.log10(0.5 / max(n_max, 1)))
    floor = max(min(floor, 1e-2), 1e-6)
    for name, (member, nonmember, label) in curves.items():
        roc = roc_curve(member, nonmember)
        fpr, tpr = _thin_curve(np.maximum(roc.fpr, floor), np.maximum(roc.tpr, floor))
        ax.step(fpr, tpr, where="post", label=label, color=colors.get(name), lw=1.6)
    grid = np.logspace(math.log10(floor), 0, 100)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    for alpha in (0.01, 0.001):
        if alpha > floor:
            ax.axvline(alpha, color="#999999", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate (dotted: 0.1% and 1%)")
    ax.set_ylabel("true positive rate")
    ax.grid(True, which="major", color="#eeeeee", lw=0.6)
    ax.legend(fontsize=7.5, loc="lower right")
    return _svg(fig, salt)


def _thin_curve(x: np.ndarray, y: np.ndarray, cells: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Drop ROC points that are invisible on a log-log plot, so 25k + 25k scores do not make a
    multi-megabyte SVG: on a ``cells`` x ``cells`` grid in log space, keep the first and last point
    of every run of consecutive points in the same cell (the curve is monotone, so runs are
    contiguous). Small curves pass through unchanged."""
    if len(x) <= 2 * cells:
        return x, y
    lx, ly = np.log10(x), np.log10(y)
    qx = np.round((lx - lx.min()) / (np.ptp(lx) or 1.0) * cells).astype(np.int64)
    qy = np.round((ly - ly.min()) / (np.ptp(ly) or 1.0) * cells).astype(np.int64)
    key = qx * (cells + 1) + qy
    edge = key[1:] != key[:-1]
    keep = np.r_[True, edge] | np.r_[edge, True]
    return x[keep], y[keep]


def histograms_svg(curves: dict[str, tuple[np.ndarray, np.ndarray, str]], salt: str) -> str:
    """Member vs non-member score histograms, one panel per attack, shared bins within a panel."""
    names = list(curves)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(3.1 * cols, 2.3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        member, nonmember, _ = curves[names[k]]
        both = np.concatenate([member, nonmember])
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            hi = lo + 1.0
        bins = np.linspace(lo, hi, 31)
        ax.hist(nonmember, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=NONMEMBER_COLOR,
                label=f"non-members ({len(nonmember)})")
        ax.hist(member, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=MEMBER_COLOR,
                label=f"members ({len(member)})")
        ax.set_title(names[k], fontsize=9)
        ax.set_xlabel("score (higher = member)", fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    return _svg(fig, salt)


def curve_svg(spec: dict[str, Any], salt: str) -> str:
    """A generic x/y curve with an optional horizontal reference line (e.g. CDI p-value vs |P|, alpha).

    ``spec``: ``x``, ``y`` (lists), optional ``x_label``, ``y_label``, ``log_x``, ``log_y``,
    ``hline`` (a number) and ``hline_label``; ``y_lo``/``y_hi`` draw a band (e.g. a CI over resamples).
    """
    x = np.asarray(spec["x"], dtype=float)
    y = np.asarray(spec["y"], dtype=float)
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot()
    if spec.get("y_lo") is not None and spec.get("y_hi") is not None:
        ax.fill_between(x, np.asarray(spec["y_lo"], float), np.asarray(spec["y_hi"], float), color=PALETTE[0], alpha=0.2)
    ax.plot(x, y, "o-", color=PALETTE[0], ms=3, lw=1.4, label=spec.get("label") or spec.get("y_label") or "value")
    if spec.get("hline") is not None:
        ax.axhline(float(spec["hline"]), color="#d62728", ls="--", lw=1,
                   label=spec.get("hline_label") or f"{float(spec['hline']):g}")
    if spec.get("log_x"):
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(_spread_ticks(x))
    if spec.get("log_y"):
        ax.set_yscale("log")
    ax.set_xlabel(spec.get("x_label") or "x")
    ax.set_ylabel(spec.get("y_label") or "y")
    ax.grid(True, color="#eeeeee", lw=0.6)
    ax.legend(fontsize=8)
    return _svg(fig, salt)


def _spread_ticks(x: np.ndarray, min_gap: float = 0.1) -> list[float]:
    """The data's x values as log-axis ticks, dropping those closer than ``min_gap`` decades to a
    kept neighbour (the last value, e.g. the full |P|, always stays)."""
    vals = sorted({float(v) for v in x if v > 0})
    kept: list[float] = []
    for v in vals:
        if not kept or math.log10(v) - math.log10(kept[-1]) >= min_gap:
            kept.append(v)
    if vals and kept[-1] != vals[-1]:
        kept[-1] = vals[-1]
    return kept


def image_data_uri(path: str | Path) -> str:
    """A file as a ``data:`` URI, so images travel inside the page."""
    p = Path(path)
    mime = IMAGE_TYPES.get(p.suffix.lower())
    if mime is None:
        raise ValueError(f"unsupported image type '{p.suffix}' (use {', '.join(sorted(IMAGE_TYPES))})")
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode('ascii')}"


def display_width(path: str | Path, target: int = 480, max_scale: int = 6) -> int | None:
    """Width to show a raster image at: an integer upscale of tiny grids (8x8 digits stay legible
    and crisp with ``image-rendering: pixelated``), never a downscale; None if unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            w = im.size[0]
    except Exception:
        return None
    return w * max(1, min(max_scale, target // max(w, 1)))


def safe_join(root: str | Path, rel: str, allowed: Sequence[str] = tuple(IMAGE_TYPES)) -> Path | None:
    """``root/rel`` if it stays inside ``root`` and has an allowed suffix, else None.

    Section results name image files relative to the run folder; a report must not be talked into
    embedding ``../../etc/...`` from a results file someone sent you.
    """
    base = Path(root).resolve()
    p = (base / rel).resolve()
    if p.suffix.lower() not in allowed or (base not in p.parents and p != base):
        return None
    return p
