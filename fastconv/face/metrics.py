"""Verification metrics. ``scores``: (N,) similarity, higher = more alike; ``labels``: (N,) 1 = same person.

A pair is predicted "same" when ``score >= threshold``.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "roc",
    "auc",
    "eer",
    "tar_at_far",
    "best_threshold",
    "accuracy_at",
    "kfold_accuracy",
    "verification_report",
]


def _check(scores, labels, need_both=True):
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D, got shapes {s.shape} and {y.shape}")
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape[0]} and {y.shape[0]}")
    if s.size == 0:
        raise ValueError("scores is empty")
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise TypeError(f"scores must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"labels must be 0/1, got values {np.unique(y)[:10].tolist()}")
    y = y.astype(np.int64)
    if need_both and (y.min() == y.max()):
        raise ValueError("labels must contain both same (1) and different (0) pairs")
    return s, y


def roc(scores, labels):
    """-> (fpr, tpr, thresholds): one point per distinct score, descending, after a first point (0, 0)
    at threshold inf; ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)`` in NumPy
    (so validation runs without scikit-learn)."""
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, s[last]]


def mean_tpr(curves, far_grid) -> np.ndarray:
    """Vertical average of ROC curves: for each FAR in ``far_grid``, the mean over ``curves`` of the
    best TPR reached at a FAR <= it. ``curves``: list of ``(fpr, tpr)`` (non-decreasing, as from :func:`roc`)."""
    grid = np.asarray(far_grid, dtype=float)
    tprs = []
    for fpr, tpr in curves:
        fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        last = np.searchsorted(fpr, grid, side="right") - 1  # last ROC point with FAR <= the grid value
        tprs.append(np.where(last >= 0, tpr[np.maximum(last, 0)], 0.0))
    return np.mean(tprs, axis=0)


def auc(scores, labels) -> float:
    """Area under the ROC curve."""
    from sklearn.metrics import roc_auc_score

    s, y = _check(scores, labels)
    return float(roc_auc_score(y, s))


def eer(scores, labels) -> tuple[float, float]:
    """-> (EER, threshold): where FPR = 1 - TPR, linearly interpolated between ROC points."""
    fpr, tpr, thr = roc(scores, labels)
    d = fpr - (1.0 - tpr)  # rises from -1 to +1 along the curve
    j = int(np.argmax(d >= 0))  # first point at or past the crossing (d[-1] = 1 so it exists)
    if d[j] == 0 or j == 0:
        t_hi = thr[j] if np.isfinite(thr[j]) else thr[j + 1]
        return float(fpr[j]), float(t_hi)
    i = j - 1
    w = -d[i] / (d[j] - d[i])
    rate = fpr[i] + w * (fpr[j] - fpr[i])
    t_i = thr[i] if np.isfinite(thr[i]) else thr[j]
    threshold = t_i + w * (thr[j] - t_i)
    return float(rate), float(threshold)


def tar_at_far(scores, labels, far: float) -> float:
    """True accept rate at the strictest operating point with false accept rate <= ``far``."""
    if not isinstance(far, (int, float)) or isinstance(far, bool):
        raise TypeError(f"far must be a float, got {type(far).__name__}")
    if not 0.0 < far <= 1.0:
        raise ValueError(f"far must be in (0, 1], got {far}")
    fpr, tpr, _ = roc(scores, labels)
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max())


def accuracy_at(scores, labels, threshold: float) -> float:
    """Fraction of pairs classified correctly with ``score >= threshold`` meaning same."""
    s, y = _check(scores, labels, need_both=False)
    return float(np.mean((s >= threshold) == (y == 1)))


def best_threshold(scores, labels) -> tuple[float, float]:
    """-> (threshold, accuracy) maximising accuracy; the threshold sits midway between two scores."""
    s, y = _check(scores, labels, need_both=False)
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    # Cut after position k (k = 0..N): the first k sorted pairs are predicted same.
    distinct = np.r_[True, ss[1:] != ss[:-1]]  # valid cuts only between distinct scores
    tp = np.r_[0, np.cumsum(yy)]
    fp = np.r_[0, np.cumsum(1 - yy)]
    n_neg = int((1 - y).sum())
    correct = tp + (n_neg - fp)
    valid = np.r_[distinct, True]  # cut k is valid if ss[k] differs from ss[k-1] (or k = 0 / N)
    correct = np.where(valid, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        threshold = float(np.nextafter(ss[0], np.inf))
    elif k == len(ss):
        threshold = float(ss[-1])
    else:
        threshold = float((ss[k - 1] + ss[k]) / 2.0)
        if not ss[k] < threshold <= ss[k - 1]:  # guard against rounding for very close scores
            threshold = float(ss[k - 1])
    return threshold, float(correct[k] / len(ss))


def kfold_accuracy(scores, labels, folds: np.ndarray) -> tuple[float, float, list[float]]:
    """LFW-style: fold i is scored at the threshold that is best on all other folds.

    -> (mean, std (population, ddof=0), per-fold accuracies in sorted fold-id order).
    """
    s, y = _check(scores, labels, need_both=False)
    f = np.asarray(folds)
    if f.shape != s.shape:
        raise ValueError(f"folds must have shape {s.shape}, got {f.shape}")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError(f"kfold_accuracy needs at least 2 folds, got {ids.size}")
    accs = []
    for k in ids:
        test = f == k
        thr, _ = best_threshold(s[~test], y[~test])
        accs.append(accuracy_at(s[test], y[test], thr))
    return float(np.mean(accs)), float(np.std(accs)), accs


def verification_report(scores, labels, folds=None) -> dict:
    """Summary dict (JSON-ready floats) of EER, AUC, TAR@FAR, best-threshold accuracy (+ k-fold)."""
    s, y = _check(scores, labels)
    e, e_thr = eer(s, y)
    thr, acc = best_threshold(s, y)
    report = {
        "n_pairs": int(s.size),
        "n_same": int(y.sum()),
        "n_different": int(s.size - y.sum()),
        "eer": e,
        "eer_threshold": e_thr,
        "auc": auc(s, y),
        "tar_at_far_1e-3": tar_at_far(s, y, 1e-3),
        "tar_at_far_1e-2": tar_at_far(s, y, 1e-2),
        "best_threshold": thr,
        "accuracy": acc,
    }
    if folds is not None:
        mean, std, per = kfold_accuracy(s, y, folds)
        report.update(
            {"kfold_accuracy_mean": mean, "kfold_accuracy_std": std, "kfold_accuracies": per,
             "n_folds": len(per)}
        )
    return report
