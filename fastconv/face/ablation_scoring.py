"""DevTest scores of one ablation variant's last epoch: cosine and PLDA, each without and with framing jitter.

:func:`score_last_epoch` loads ``run_dir/last.pt`` (the weights after the last epoch, never a
checkpoint picked by its test score), fits the PLDA back-end on the training side exactly as
``fastconv face fit-scorer`` does (``scoring.fit_training_side``: flip-TTA embeddings of the
training images and their identity labels), and scores the View 1 DevTest pairs four ways with
``evaluate.evaluate_pairs``: cosine and PLDA, each on the plain crops and on crops re-framed by
``eval --jitter``'s default draws (``jitter.REALISTIC``, seed 0).

Thresholds: an accuracy "at the stored threshold" is reported only for a threshold chosen on the
training side. A run validated on DevTest itself (``data.val_devtest``, as the ablation trains)
has none: its checkpoint's cosine threshold was picked on DevTest, so it is left out (None), and
the PLDA is fit without validation pairs (no threshold) so that nothing of DevTest enters the fit.
Best-threshold accuracies (chosen on DevTest, optimistic) are reported for every way.
"""
from __future__ import annotations

import copy
import pathlib
import time

__all__ = ["WAYS", "score_last_epoch"]

WAYS = ("cosine", "plda", "cosine_jitter", "plda_jitter")


def _fit_config(cfg):
    """``cfg`` for the PLDA fit: a DevTest-validated run gets no validation pairs (and so no threshold)
    and the same training images (all of DevTrain); any other run keeps its training-side pairs."""
    cfg = copy.deepcopy(cfg)
    if cfg["data"]["val_devtest"]:
        cfg["data"]["val_devtest"] = False
        cfg["data"]["val_people"] = 0
    return cfg


def _way(report):
    return {"eer": report["eer"], "best_threshold_accuracy": report["accuracy"],
            "stored_threshold": report.get("checkpoint_threshold"),
            "stored_threshold_accuracy": report.get("checkpoint_threshold_accuracy"),
            "auc": report["auc"], "n_pairs": report["n_pairs"]}


def score_last_epoch(run_dir, jitter_seed=0, log=print):
    """-> dict: the four ways of :data:`WAYS` (each eer, best_threshold_accuracy, stored_threshold and its
    accuracy or None, auc, n_pairs) plus what was scored (``weights``, ``jitter``, ``plda_fit``, ``minutes``).

    The pairs are View 1 DevTest of ``fastconv.paths.lfw_root()``; images go through the decoded-image
    cache (``$FASTCONV_CACHE/images``), as ``eval`` does.
    """
    import torch

    from ..paths import cache_dir, image_dir, lfw_root
    from .checkpoint import load_checkpoint, load_for_inference
    from .device import resolve_device
    from .evaluate import evaluate_pairs
    from .jitter import REALISTIC
    from .prepare import prepare_data
    from .protocols import view1
    from .scoring import CosineScorer, fit_training_side

    t0 = time.time()
    path = pathlib.Path(run_dir) / "last.pt"
    model, meta, pre, cos_thr = load_for_inference(path)
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        raise ValueError(f"{path} stores no training config (meta['config']) to find its training side")
    state = load_checkpoint(path)
    where = f"{state.get('stage', '?')} epoch {state.get('history', [{}])[-1].get('epoch', '?')}"
    device = resolve_device(cfg["device"])
    threads = torch.get_num_threads()
    if device.type == "cpu" and cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    try:
        model.to(device)
        data = prepare_data(_fit_config(cfg), progress=False)
        plda = fit_training_side(model, data, device, dim=cfg["scorer"]["dim"],
                                 calibration=cfg.get("calibration", "best"))
        if cfg["data"]["val_devtest"]:
            cos_thr = None  # chosen on DevTest itself: not a training-side threshold
        root = lfw_root()
        pairs = view1(root).test_pairs
        jitter = (REALISTIC, jitter_seed)
        out = {}
        for name, scorer, thr in (("cosine", CosineScorer(), cos_thr), ("plda", plda, plda.threshold)):
            for suffix, jit in (("", None), ("_jitter", jitter)):
                report = evaluate_pairs(model, pairs, image_dir(root), pre, threshold=thr, scorer=scorer, jitter=jit,
                                        cache_dir=cache_dir() / "images", device=device, progress=False)
                out[name + suffix] = _way(report)
                log(f"[ablation] {path.parent.name}: {name}{' under jitter' if jit else ''}: DevTest EER "
                    f"{report['eer']:.4f}")
    finally:
        torch.set_num_threads(threads)
    out.update({"weights": f"last.pt ({where})", "jitter": {"scale_shift_rotation": list(jitter[0]),
                                                            "seed": jitter_seed},
                "plda_fit": {"images": int(len(data["labels"])), "identities": len(data["classes"]),
                             "dim": int(plda.psi.shape[0]), "threshold": plda.threshold},
                "minutes": (time.time() - t0) / 60})
    return out
