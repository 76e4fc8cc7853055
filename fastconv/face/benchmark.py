"""LFW View 2 benchmark: one training per held-out fold, the fold's 600 pairs scored by its best.pt.

A run folder holds ``foldKK/`` (checkpoints, ``test_fold.json``, ``scores.npz``), ``summary.json``
(per-fold accuracy / EER / TAR@FAR=1e-3 / minutes, their means, the config) and ``roc.png`` (each
fold's ROC and their mean). Runs that split the folds over processes or machines are combined by
:func:`merge`.
"""
import json
import pathlib
import statistics
import time
import warnings
import zipfile

import numpy as np

from ..atomic import atomic_write, write_json


def parse_folds(text):
    """``"1,2,5"`` -> ``[1, 2, 5]``; ValueError unless distinct integers in 1..10."""
    try:
        folds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--folds expects comma-separated integers 1..10, got {text!r}") from None
    if not folds or any(not 1 <= k <= 10 for k in folds) or len(set(folds)) != len(folds):
        raise ValueError(f"--folds expects distinct integers in 1..10, got {text!r}")
    return folds


def fold_scores(fold_dir, fold):
    """``(scores, labels, threshold)`` of View 2 fold ``fold``'s test pairs under ``fold_dir/best.pt``.

    Read from ``fold_dir/scores.npz`` when present, else computed (embeddings with flip TTA, cosine)
    and saved there. ``threshold`` is the checkpoint's training-side cosine threshold (or None).
    """
    fold_dir = pathlib.Path(fold_dir)
    cached = fold_dir / "scores.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                thr = float(z["threshold"][0]) if z["threshold"].size else None
                return z["scores"], z["labels"], thr
        except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
            warnings.warn(f"recomputing unreadable {cached}: {type(exc).__name__}: {exc}", stacklevel=2)
    from fastconv.paths import cache_dir, image_dir, lfw_root

    from .checkpoint import load_for_inference
    from .evaluate import pair_scores
    from .protocols import check_disjoint, view2_fold

    split = view2_fold(lfw_root(), fold)
    check_disjoint(split)
    model, _, pre, thr = load_for_inference(fold_dir / "best.pt")
    scores, labels, _ = pair_scores(model, split.test_pairs, image_dir(), pre,
                                    cache_dir=cache_dir() / "images", progress=False)
    atomic_write(cached, lambda f: np.savez(f, scores=scores, labels=labels,
                                            threshold=np.array([] if thr is None else [thr], dtype=float)))
    return scores, labels, thr


def score_fold(fold_dir, fold):
    """Per-fold result: accuracy at the checkpoint's training-side threshold (and at the fold's own
    best threshold), EER and TAR@FAR=1e-3 on the fold's 600 pairs."""
    from .metrics import accuracy_at, best_threshold, eer, tar_at_far

    t0 = time.time()
    scores, labels, thr = fold_scores(fold_dir, fold)
    e, _ = eer(scores, labels)
    _, acc_oracle = best_threshold(scores, labels)
    return {"fold": fold, "accuracy": accuracy_at(scores, labels, thr) if thr is not None else acc_oracle,
            "accuracy_best_threshold": acc_oracle, "threshold": thr, "eer": e,
            "tar_at_far_1e-3": tar_at_far(scores, labels, 1e-3), "n_pairs": int(len(labels)),
            "minutes_test": (time.time() - t0) / 60}


def run_fold(cfg, fold, out_dir, progress=True):
    """Train ``cfg`` with View 2 fold ``fold`` held out into ``out_dir``, then score the fold."""
    from .train import train

    t0 = time.time()
    cfg = json.loads(json.dumps(cfg))
    cfg["data"]["protocol"], cfg["data"]["fold"], cfg["data"]["val_devtest"] = "view2", fold, False
    out_dir = pathlib.Path(out_dir)
    (out_dir / "scores.npz").unlink(missing_ok=True)  # scores of an earlier training are stale
    train(cfg, out_dir, progress=progress)
    res = score_fold(out_dir, fold)
    res["minutes_train"] = (time.time() - t0) / 60 - res["minutes_test"]
    res["minutes"] = (time.time() - t0) / 60
    write_json(out_dir / "test_fold.json", res)
    return res


def write_summary(out, cfg, results, total_minutes):
    """``out/summary.json`` from the per-fold ``results``; returns the summary dict."""
    accs = [r["accuracy"] for r in results]
    summary = {"folds": results, "mean_accuracy": statistics.fmean(accs),
               "std_accuracy": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
               "mean_eer": statistics.fmean(r["eer"] for r in results),
               "mean_tar_at_far_1e-3": statistics.fmean(r["tar_at_far_1e-3"] for r in results),
               "mean_accuracy_best_threshold": statistics.fmean(r["accuracy_best_threshold"] for r in results),
               "total_minutes": total_minutes, "config": cfg,
               "accuracy_note": "accuracy at the cosine threshold calibrated on training-side validation pairs"}
    write_json(pathlib.Path(out) / "summary.json", summary)
    return summary


def write_roc(out, fold_dirs, summary):
    """``out/roc.png``: each fold's ROC (thin) and their mean (bold), from ``fold_dirs`` (fold -> folder)."""
    from .plots import plot_roc_folds
    from .metrics import roc

    curves, n_different = [], []
    for fold, d in sorted(fold_dirs.items()):
        scores, labels, _ = fold_scores(d, fold)
        fpr, tpr, _ = roc(scores, labels)
        curves.append((fpr, tpr))
        n_different.append(int(np.sum(np.asarray(labels) == 0)))
    # the smallest FAR a fold resolves, as a power of ten: 300 different pairs a fold -> 1e-3
    floor = min(1e-1, 10.0 ** np.floor(np.log10(1.0 / max(1, max(n_different)))))
    n = len(curves)
    label = (f"mean of {n} fold{'s' if n > 1 else ''}: acc {100 * summary['mean_accuracy']:.1f} %, "
             f"EER {100 * summary['mean_eer']:.1f} %")
    plot_roc_folds(curves, pathlib.Path(out) / "roc.png", title="LFW View 2 ROC", label=label, floor=floor)


def run(cfg, folds, out, progress=True, log=print):
    """Train and score ``folds`` into ``out``; writes summary.json after every fold and roc.png at the end."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = []
    for k in folds:
        log(f"=== fold {k}: training on the other nine folds ===")
        r = run_fold(cfg, k, out / f"fold{k:02d}", progress=progress)
        results.append(r)
        log(f"fold {k}: accuracy {r['accuracy']:.4f} (best-threshold {r['accuracy_best_threshold']:.4f}), "
            f"EER {r['eer']:.4f}, TAR@FAR1e-3 {r['tar_at_far_1e-3']:.4f}, {r['minutes']:.1f} min")
        summary = write_summary(out, cfg, results, (time.time() - t0) / 60)
    write_roc(out, {k: out / f"fold{k:02d}" for k in folds}, summary)
    return summary


_FOLD_KEYS = ("fold", "accuracy", "accuracy_best_threshold", "eer", "tar_at_far_1e-3", "minutes")


def _check_summary(part, path):
    """ValueError unless ``part`` looks like a summary.json of :func:`run` (config, folds with their scores)."""
    if not isinstance(part, dict) or "config" not in part or not isinstance(part.get("folds"), list):
        raise ValueError(f"{path} is not a benchmark summary (expected 'config' and a 'folds' list)")
    for r in part["folds"]:
        missing = [k for k in _FOLD_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise ValueError(f"{path}: a fold record lacks {missing}")
        if isinstance(r["fold"], bool) or not isinstance(r["fold"], int) or not 1 <= r["fold"] <= 10:
            raise ValueError(f"{path}: fold {r['fold']!r} is not an integer in 1..10")


def merge(dirs, out):
    """Combine earlier runs (same config, disjoint folds) into ``out/summary.json`` and ``out/roc.png``.

    The ROC is drawn when every fold folder (``DIR/foldKK`` with scores.npz or best.pt) is found.
    ValueError names an unreadable summary, a config mismatch or a fold present twice.
    """
    results, cfg, fold_dirs = [], None, {}
    for d in dirs:
        path = pathlib.Path(d) / "summary.json"
        try:
            with open(path) as f:
                part = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        _check_summary(part, path)
        if cfg is None:
            cfg = part["config"]
        elif part["config"] != cfg:
            raise ValueError(f"{path} was made with a different config than {pathlib.Path(dirs[0]) / 'summary.json'}")
        for r in part["folds"]:
            if r["fold"] in fold_dirs:
                raise ValueError(f"the runs share folds: fold {r['fold']} is in {fold_dirs[r['fold']].parent} "
                                 f"and {d}")
            fold_dirs[r["fold"]] = pathlib.Path(d) / f"fold{r['fold']:02d}"
            results.append(r)
    results.sort(key=lambda r: r["fold"])
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = write_summary(out, cfg, results, sum(r["minutes"] for r in results))
    if all((d / "scores.npz").is_file() or (d / "best.pt").is_file() for d in fold_dirs.values()):
        write_roc(out, fold_dirs, summary)
    return summary
