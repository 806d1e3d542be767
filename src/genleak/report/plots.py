"""Plots for reports. matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genleak.io import atomic_path
from genleak.metrics import auc, roc_curve, tpr_at_fpr


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str = "",
) -> None:
    """Log-log ROC of several attacks on one plot (the low-FPR region is what matters for MIAs,
    Carlini et al. 2022), with the chance line; legend shows AUC and TPR@1%FPR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    floor = 1e-4
    for name, (member, nonmember) in curves.items():
        roc = roc_curve(member, nonmember)
        label = f"{name} (AUC {auc(member, nonmember):.3f}, TPR@1% {tpr_at_fpr(member, nonmember, 0.01):.3f})"
        ax.step(np.maximum(roc.fpr, floor), np.maximum(roc.tpr, floor), where="post", label=label)
    grid = np.logspace(np.log10(floor), 0, 100)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
