"""Closed- and open-set identification with face embeddings (one LFW View 2 test fold at a time).

Protocol (:func:`split_gallery`): every person with >= 2 images puts their first image (in the
given order) into the gallery and the others in as probes; people with one image are impostor
probes (absent from the gallery). :func:`identification_report` scores every probe against every
gallery image with a scorer of :mod:`.scoring` (``score_matrix``) and reports

- rank-k accuracy (k = 1, 5): the fraction of genuine probes whose own gallery image is among the
  k best-scoring gallery images (closed set);
- DIR at FAR (detection and identification rate, open set): the threshold t is set on the
  impostors' best gallery scores so that at most ``floor(FAR * n_impostors)`` of them exceed it;
  DIR = fraction of genuine probes that are rank-1 correct *and* score above t.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["split_gallery", "identification_report", "open_set_threshold"]


def split_gallery(labels):
    """``labels (N,)`` -> (gallery index (G,), genuine probe index (P,), impostor probe index (I,))."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    gallery, probes, impostors = [], [], []
    classes, counts = np.unique(labels, return_counts=True)
    count = dict(zip(classes.tolist(), counts.tolist()))
    seen = set()
    for i, y in enumerate(labels.tolist()):
        if count[y] == 1:
            impostors.append(i)
        elif y in seen:
            probes.append(i)
        else:
            seen.add(y)
            gallery.append(i)
    return np.array(gallery, np.int64), np.array(probes, np.int64), np.array(impostors, np.int64)


def open_set_threshold(impostor_best, far):
    """Threshold t with ``#{impostor_best > t} <= floor(far * n)`` (accept means score > t)."""
    s = np.sort(np.asarray(impostor_best, dtype=np.float64))[::-1]
    if not len(s):
        raise ValueError("open-set threshold needs impostor probes")
    return float(s[min(int(math.floor(far * len(s) + 1e-9)), len(s) - 1)])


def identification_report(embeddings, labels, scorer, ranks=(1, 5), far=1e-2):
    """Rank-k accuracies and DIR at ``far`` of ``embeddings (N, D)`` with identity ``labels (N,)``."""
    emb = np.asarray(embeddings)
    g, p, imp = split_gallery(labels)
    if emb.ndim != 2 or emb.shape[0] != len(np.asarray(labels)):
        raise ValueError(f"embeddings must be (N, D) with N = len(labels), got {emb.shape}")
    if len(g) < 2 or not len(p):
        raise ValueError(f"identification needs >= 2 people with >= 2 images, got {len(g)}")
    labels = np.asarray(labels)
    gl = labels[g]
    s = scorer.score_matrix(emb[p], emb[g])  # (P, G)
    own = s[np.arange(len(p)), _own_column(gl, labels[p])]
    rank = (s > own[:, None]).sum(1)  # 0 = own gallery image scores best (ties count in its favour)
    report = {"n_gallery": int(len(g)), "n_probes": int(len(p)), "n_impostors": int(len(imp)),
              "scorer": scorer.name}
    for k in ranks:
        report[f"rank{k}"] = float(np.mean(rank < k))
    key = f"dir_at_far_{far:g}"
    if len(imp):
        t = open_set_threshold(scorer.score_matrix(emb[imp], emb[g]).max(1), far)
        report[key] = float(np.mean((rank == 0) & (own > t)))
        report["open_set_threshold"] = t
    else:
        report[key] = None
    return report


def _own_column(gallery_labels, probe_labels):
    col = {y: j for j, y in enumerate(gallery_labels.tolist())}
    return np.array([col[y] for y in probe_labels.tolist()], np.int64)


def fold_people_images(lfw, fold):
    """(relpaths, identity labels) of every image of the people of View 2 people fold ``fold`` (1..10)."""
    import os

    from .lfw import image_relpath, read_people

    folds = read_people(os.path.join(os.fspath(lfw), "people.txt"))
    if not 1 <= fold <= len(folds):
        raise ValueError(f"fold must be in 1..{len(folds)}, got {fold}")
    rel, labels = [], []
    for name, n in sorted(folds[fold - 1].items()):
        for k in range(1, n + 1):
            rel.append(image_relpath(name, k))
            labels.append(name)
    return rel, labels


def identify_fold(model, lfw, fold, root, pre, scorer, cache_dir=None, device="cpu", flip=True, batch_size=256,
                  progress=False):
    """:func:`identification_report` of the people of View 2 fold ``fold`` (test-fold people only: none of
    them is a training identity of that fold's model). Unreadable images are left out."""
    from .data import ImageCache
    from .evaluate import embed

    rel, labels = fold_people_images(lfw, fold)
    images, kept = ImageCache(root, pre, cache_dir=cache_dir, progress=progress).load(rel)
    emb = embed(model, images, batch_size=batch_size, flip=flip, device=device, progress=progress)
    report = identification_report(emb, [labels[i] for i in kept.tolist()], scorer)
    report["fold"] = fold
    return report
