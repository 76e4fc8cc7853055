"""Embedding, pair scoring and verification reports (JSON, CSV and the plots of :mod:`.plots`)."""
from __future__ import annotations

import csv
import io
import logging
import os
import warnings

import numpy as np
import torch

from ..atomic import atomic_write, write_json
from .data import ImageCache, Preprocess, normalize
from .device import resolve_device
from .lfw import Pair
from .metrics import accuracy_at, roc, verification_report
from .plots import plot_roc, plot_score_histogram
from .progress import progress_bar

__all__ = [
    "embed",
    "pair_scores",
    "evaluate_pairs",
    "write_outputs",
    "format_report",
]

log = logging.getLogger(__name__)


def _as_uint8_batch(images):
    if isinstance(images, torch.Tensor):
        arr = images
    elif isinstance(images, np.ndarray):
        arr = images
    else:
        raise TypeError(f"images must be a uint8 ndarray or tensor (N,3,S,S), got {type(images).__name__}")
    dtype_ok = arr.dtype == (torch.uint8 if isinstance(arr, torch.Tensor) else np.uint8)
    if not dtype_ok:
        raise TypeError(f"images must have dtype uint8, got {arr.dtype}")
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"images must have shape (N,3,S,S), got {tuple(arr.shape)}")
    return arr


@torch.no_grad()
def embed(model, images_uint8, batch_size=256, flip=True, device="cpu", amp=False, progress=False) -> np.ndarray:
    """images uint8 (N,3,S,S) -> float32 (N,D) L2-normalised embeddings.

    With ``flip``: embedding(x) + embedding(hflip(x)), then normalised. The model gets
    ``normalize(x)`` and must return (B,D). It is put in eval mode (and restored after).
    """
    arr = _as_uint8_batch(images_uint8)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    n = arr.shape[0]
    chunks = []
    starts = range(0, n, batch_size)
    bar = progress_bar(len(starts), "embedding", unit="batch", enabled=bool(progress and n))
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    try:
        for start in starts:
            batch = arr[start:start + batch_size]
            if isinstance(batch, np.ndarray):
                batch = torch.from_numpy(np.array(batch, copy=True))
            x = normalize(batch.to(dev, non_blocking=True))
            with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=bool(amp)):
                e = model(x)
                if flip:
                    e = e.float() + model(torch.flip(x, dims=[3])).float()
            if e.dim() != 2 or e.shape[0] != x.shape[0]:
                raise ValueError(f"model must return (B, D) embeddings, got {tuple(e.shape)} for B={x.shape[0]}")
            e = torch.nn.functional.normalize(e.float(), dim=1)
            chunks.append(e.cpu())
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


def pair_scores(model, pairs: list[Pair], root, pre: Preprocess, cache_dir=None, flip=True, device="cpu",
                batch_size=256, progress=True, amp=False):
    """-> (cosine scores float64 (P,), labels int64 (P,), kept_pair_index) for pairs whose images load.

    Every distinct image is decoded (through ``ImageCache``) and embedded once.
    """
    if not pairs:
        raise ValueError("pairs is empty")
    if not all(isinstance(p, Pair) for p in pairs):
        raise TypeError("pairs must be a list of Pair")
    unique = list(dict.fromkeys(path for p in pairs for path in (p.a, p.b)))
    cache = ImageCache(root, pre, cache_dir=cache_dir, progress=progress)
    images, kept = cache.load(unique)
    row = {unique[i]: r for r, i in enumerate(kept.tolist())}
    emb = embed(model, images, batch_size=batch_size, flip=flip, device=device, amp=amp, progress=progress)
    keep = [i for i, p in enumerate(pairs) if p.a in row and p.b in row]
    if len(keep) < len(pairs):
        msg = f"skipped {len(pairs) - len(keep)} of {len(pairs)} pairs with an unreadable image"
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    if not keep:
        raise ValueError(f"no pair could be scored: all {len(pairs)} pairs have an unreadable image")
    ia = np.array([row[pairs[i].a] for i in keep])
    ib = np.array([row[pairs[i].b] for i in keep])
    scores = np.einsum("nd,nd->n", emb[ia].astype(np.float64), emb[ib].astype(np.float64))
    labels = np.array([int(pairs[i].same) for i in keep], dtype=np.int64)
    return scores, labels, keep


def evaluate_pairs(model, pairs, root, pre, folds=None, out_dir=None, threshold=None, extra=None, **kw) -> dict:
    """Score ``pairs`` and build ``verification_report``; with ``out_dir`` write
    ``metrics.json``, ``scores.csv``, ``roc.png`` and ``scores_hist.png``.

    ``folds``: optional int array (len(pairs),) of fold ids for k-fold accuracy.
    ``threshold``: optional fixed cosine threshold (e.g. the checkpoint's) to report accuracy at.
    ``extra``: optional dict merged into the report (e.g. checkpoint path).
    ``kw`` goes to ``pair_scores`` (cache_dir, flip, device, batch_size, progress, amp).
    """
    if folds is not None:
        folds = np.asarray(folds)
        if folds.shape != (len(pairs),):
            raise ValueError(f"folds must have shape ({len(pairs)},), got {folds.shape}")
    scores, labels, keep = pair_scores(model, pairs, root, pre, **kw)
    report = verification_report(scores, labels, None if folds is None else folds[keep])
    report.update({
        "n_pairs_total": len(pairs),
        "n_pairs_skipped": len(pairs) - len(keep),
        "flip": bool(kw.get("flip", True)),
        "preprocess": pre.to_dict(),
    })
    if threshold is not None:
        report["checkpoint_threshold"] = float(threshold)
        report["checkpoint_threshold_accuracy"] = accuracy_at(scores, labels, float(threshold))
    if extra:
        report.update(extra)
    if out_dir is not None:
        write_outputs(out_dir, report, [pairs[i] for i in keep], scores, labels)
    return report


def write_outputs(out_dir, report, pairs, scores, labels) -> None:
    """Write metrics.json, scores.csv (a,b,label,score), roc.png and scores_hist.png into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "metrics.json"), report, indent=2)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["a", "b", "label", "score"])
    for p, y, s in zip(pairs, labels, scores):
        writer.writerow([p.a, p.b, int(y), f"{s:.6f}"])
    csv_text = buf.getvalue()
    atomic_write(os.path.join(out_dir, "scores.csv"), lambda fh: fh.write(csv_text.encode()))
    fpr, tpr, _ = roc(scores, labels)
    plot_roc(fpr, tpr, os.path.join(out_dir, "roc.png"), label=f"AUC {report['auc']:.4f}")
    plot_score_histogram(scores, labels, report["best_threshold"], os.path.join(out_dir, "scores_hist.png"))


def format_report(report: dict) -> str:
    """Human-readable multi-line summary of a ``verification_report`` dict."""
    lines = [
        f"pairs            {report['n_pairs']} ({report['n_same']} same, {report['n_different']} different)"
        + (f", {report['n_pairs_skipped']} skipped" if report.get("n_pairs_skipped") else ""),
        f"EER              {100 * report['eer']:.2f}%  (cosine threshold {report['eer_threshold']:.4f})",
        f"AUC              {report['auc']:.4f}",
        f"TAR @ FAR=1e-3   {100 * report['tar_at_far_1e-3']:.2f}%",
        f"TAR @ FAR=1e-2   {100 * report['tar_at_far_1e-2']:.2f}%",
        f"best accuracy    {100 * report['accuracy']:.2f}%  (threshold {report['best_threshold']:.4f}, "
        "chosen on these pairs: optimistic)",
    ]
    if "kfold_accuracy_mean" in report:
        lines.append(
            f"{report['n_folds']}-fold accuracy  {100 * report['kfold_accuracy_mean']:.2f}% "
            f"+- {100 * report['kfold_accuracy_std']:.2f}%  (each fold's threshold from the other folds)"
        )
    if report.get("checkpoint_threshold") is not None:
        lines.append(
            f"accuracy at checkpoint threshold {report['checkpoint_threshold']:.4f}: "
            f"{100 * report['checkpoint_threshold_accuracy']:.2f}%"
        )
    return "\n".join(lines)
