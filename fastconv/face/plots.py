"""Verification plots (matplotlib, Agg, no display): ROC curves and score histograms as PNG files."""
import io

import numpy as np

from ..atomic import atomic_write
from .metrics import mean_tpr

__all__ = ["plot_roc", "plot_roc_folds", "plot_score_histogram"]


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_fig(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


_FAR_FLOOR = 1e-4


def _roc_axes(fig, title, floor=_FAR_FLOOR):
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate (log)")
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    return ax


def plot_roc(fpr, tpr, path, label=""):
    """ROC curve (FPR on a log axis, so the low-FAR region is visible) -> PNG at ``path``."""
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    fig = _figure()
    ax = _roc_axes(fig, "ROC")
    ax.plot(np.clip(fpr, _FAR_FLOOR, 1), tpr, label=label or None)
    if label:
        ax.legend(loc="lower right")
    _save_fig(fig, path)


def plot_roc_folds(curves, path, title="ROC", label="mean", floor=_FAR_FLOOR):
    """ROC of a k-fold benchmark -> PNG at ``path``: each fold thin, their vertical mean bold.

    ``curves``: list of ``(fpr, tpr)`` arrays, one per fold (e.g. from :func:`metrics.roc`). The
    mean curve is :func:`metrics.mean_tpr` on a log-spaced FAR grid from ``floor`` to 1; the
    smallest FAR a fold can resolve, 1 / its different pairs, is a sensible floor.
    """
    grid = np.concatenate([np.logspace(np.log10(floor), 0, 400), [1.0]])
    fig = _figure()
    ax = _roc_axes(fig, title, floor)
    for i, (fpr, tpr) in enumerate(curves):
        ax.plot(np.clip(np.asarray(fpr, dtype=float), floor, 1), tpr, color="0.6", lw=0.7,
                label="folds" if i == 0 else None)
    if curves:
        ax.plot(grid, mean_tpr(curves, grid), color="C0", lw=2, label=label)
    ax.legend(loc="lower right")
    _save_fig(fig, path)


def plot_score_histogram(scores, labels, threshold, path):
    """Histograms of same / different cosine scores with the threshold line -> PNG at ``path``."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = float(s.min()), float(s.max())
    pad = 0.05 * (hi - lo) + 1e-3
    bins = np.linspace(lo - pad, hi + pad, 61)
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label="same")
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label="different")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine score")
    ax.set_ylabel("pairs")
    ax.legend()
    _save_fig(fig, path)
