"""Choosing the same/different threshold on validation pairs of held-out training-side people.

``best``: the threshold of best accuracy on all validation pairs (``metrics.best_threshold``).
``cv-median``: split the validation people into ``folds`` disjoint groups, take the best-accuracy
threshold of each group's pairs, and use the median of those ``folds`` thresholds: a threshold
that holds across disjoint sets of people instead of the one that fits these pairs best.

People are not stored with the pairs, so a "person" is a connected component of the same-person
pairs over image indices (images joined by a same pair belong to one person); a pair goes to the
group of its first image's person. Groups are a seeded random split of the people.
"""
from __future__ import annotations

import numpy as np

from .metrics import best_threshold

__all__ = ["CALIBRATIONS", "calibrate_threshold", "people_of_pairs"]

CALIBRATIONS = ("best", "cv-median")


def people_of_pairs(pairs, same):
    """``pairs`` int (P, 2) image indices, ``same`` bool (P,) -> int (N,) person id of every image index
    0..max(pairs) (connected components of the same-person pairs; unpaired indices get their own id)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    parent = np.arange(int(pairs.max()) + 1 if pairs.size else 0)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs[np.asarray(same, dtype=bool)]:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(len(parent))], dtype=np.int64)


def calibrate_threshold(scores, same, pairs=None, method="best", folds=5, seed=0):
    """-> threshold on ``scores`` (P,) of pairs with truth ``same`` (P,) by ``method`` (module doc).

    ``pairs`` (P, 2) image indices, needed by ``cv-median`` to group the pairs by person; a group
    whose pairs are all same or all different adds no threshold. ValueError for an unknown method.
    """
    if method not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {method!r}")
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same, dtype=np.int64)
    if method == "best":
        return best_threshold(scores, y)[0]
    if pairs is None:
        raise ValueError("cv-median calibration needs the pairs' image indices")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    person = people_of_pairs(pairs, y.astype(bool))
    people = np.unique(person[pairs[:, 0]])
    group_of = dict(zip(np.random.default_rng(seed).permutation(people).tolist(),
                        np.arange(len(people)) % folds))
    group = np.array([group_of[int(p)] for p in person[pairs[:, 0]]])
    thresholds = [best_threshold(scores[group == g], y[group == g])[0] for g in range(folds)
                  if 0 < y[group == g].sum() < (group == g).sum()]
    if not thresholds:
        return best_threshold(scores, y)[0]
    return float(np.median(thresholds))
