"""LFW evaluation protocols (View 1 and the ten View 2 folds) as train/test splits.

``root`` is the LFW folder holding ``pairs.txt``, ``people.txt`` and the View 1 files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .lfw import Pair, pair_identities, read_pairs, read_people

__all__ = ["Split", "view1", "view2_fold", "view2_all", "check_disjoint", "N_FOLDS"]

N_FOLDS = 10


@dataclass
class Split:
    """Train identities ``{name: n_images}`` and test pairs of one protocol split."""

    train_people: dict[str, int]
    test_pairs: list[Pair] = field(default_factory=list)
    name: str = ""


def _file(root, name):
    path = os.path.join(os.fspath(root), name)
    if not os.path.isfile(path):
        raise ValueError(f"LFW protocol file {path} not found (is {root} the LFW folder?)")
    return path


def view1(root) -> Split:
    """View 1: train on ``peopleDevTrain.txt``, test on ``pairsDevTest.txt``."""
    (train,) = read_people(_file(root, "peopleDevTrain.txt"))
    (test,) = read_pairs(_file(root, "pairsDevTest.txt"))
    return Split(train_people=train, test_pairs=test, name="view1")


def _check_fold(k):
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"fold must be an int in 1..{N_FOLDS}, got {type(k).__name__}")
    if not 1 <= k <= N_FOLDS:
        raise ValueError(f"fold must be in 1..{N_FOLDS}, got {k}")


def view2_fold(root, k: int) -> Split:
    """View 2 fold ``k`` (1..10, file order): train on the other nine people folds, test on pairs fold k."""
    _check_fold(k)
    people = read_people(_file(root, "people.txt"))
    pairs = read_pairs(_file(root, "pairs.txt"))
    if len(people) != N_FOLDS or len(pairs) != N_FOLDS:
        raise ValueError(
            f"expected {N_FOLDS} folds in people.txt and pairs.txt, got {len(people)} and {len(pairs)}"
        )
    train: dict[str, int] = {}
    for i, fold in enumerate(people, start=1):
        if i != k:
            train.update(fold)
    return Split(train_people=train, test_pairs=pairs[k - 1], name=f"view2-fold{k}")


def view2_all(root):
    """All ten View 2 test folds: (pairs, fold_index int64 (6000,), 0-based)."""
    from .lfw import flatten_folds

    return flatten_folds(read_pairs(_file(root, "pairs.txt")))


def check_disjoint(split: Split) -> None:
    """Raise ``ValueError`` if any identity of a test pair is also in ``split.train_people``."""
    overlap = sorted(pair_identities(split.test_pairs) & set(split.train_people))
    if overlap:
        shown = ", ".join(overlap[:5]) + (" ..." if len(overlap) > 5 else "")
        raise ValueError(
            f"split {split.name!r}: {len(overlap)} test identities are also training identities: {shown}"
        )
