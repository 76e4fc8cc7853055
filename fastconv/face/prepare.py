"""Training data of ``fastconv.face.train``: the training images of a protocol split (or an identity
folder) and the validation pairs, sampled among held-out training-side people (or View 1 DevTest).

``prepare_data(cfg)`` returns the dict ``train(data=...)`` and ``train_engine(data=...)`` take;
:func:`sample_val_pairs` draws half same-person, half different-person pairs. Torch-free (Pillow +
NumPy decoding through ``fastconv.face.image_sets``), so ``--engine fastconv`` runs without torch.
"""
import pathlib

import numpy as np

from ..paths import cache_dir, image_dir, lfw_root
from .image_sets import ImageCache, scan_identity_folder, training_set
from .preprocess import Preprocess
from .protocols import check_disjoint, view1, view2_fold

__all__ = ["prepare_data", "sample_val_pairs"]


def _people_of_folder(root):
    """{identity: image count} of an identity-folder tree ``root/<name>/*.jpg``."""
    rel, labels, classes = scan_identity_folder(root)
    counts = np.bincount(labels, minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, counts)}


def sample_val_pairs(people, n_pairs, rng):
    """Pairs (relpath_a, relpath_b, same) among ``people`` {name: [relpaths]} (half same, half different)."""
    names = sorted(people)
    multi = [n for n in names if len(people[n]) >= 2]
    if len(names) < 2 or not multi:
        return []
    pairs, seen = [], set()
    half = n_pairs // 2
    tries = 0
    while len(pairs) < half and tries < 50 * n_pairs:
        tries += 1
        n = multi[rng.integers(len(multi))]
        a, b = rng.choice(len(people[n]), 2, replace=False)
        key = (n, min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            pairs.append((people[n][a], people[n][b], True))
    while len(pairs) < n_pairs and tries < 100 * n_pairs:
        tries += 1
        i, j = rng.choice(len(names), 2, replace=False)
        a = people[names[i]][rng.integers(len(people[names[i]]))]
        b = people[names[j]][rng.integers(len(people[names[j]]))]
        if (a, b) not in seen:
            seen.add((a, b))
            pairs.append((a, b, False))
    return pairs


def prepare_data(cfg, split=None, progress=True):
    """Training arrays and validation pairs for ``cfg``.

    Returns dict: images uint8 (M,3,S,S), labels int64 (M,), classes, val_images uint8 (V,3,S,S),
    val_pairs int64 (P,2) into val_images, val_same bool (P,), split (or None), image_root.
    """
    d = cfg["data"]
    pre = Preprocess(size=d["size"], crop=d["crop"])
    if split is None and d["protocol"] in ("view1", "view2"):
        root = lfw_root()
        split = view1(root) if d["protocol"] == "view1" else view2_fold(root, d["fold"])
        check_disjoint(split)
        image_root = image_dir(root)
    elif split is not None:
        image_root = image_dir(d["root"] or None)
    else:
        image_root = pathlib.Path(d["root"])
    people = dict(split.train_people) if split is not None else _people_of_folder(image_root)
    rng = np.random.default_rng(cfg["seed"])
    val_rel, val_idx, val_same = [], np.zeros((0, 2), np.int64), np.zeros(0, bool)
    val_people = {}
    if d["val_devtest"]:
        if d["protocol"] != "view1":
            raise ValueError("data.val_devtest is only allowed with the view1 protocol (never View 2 test folds)")
        raw = [(p.a, p.b, p.same) for p in split.test_pairs]
    elif d["val_people"] > 0:
        rel, labels, classes = scan_identity_folder(image_root, people)
        by = {c: [] for c in classes}
        for r, lab in zip(rel, labels):
            by[classes[lab]].append(r)
        multi = sorted(c for c in classes if len(by[c]) >= 2)
        k = min(d["val_people"], len(multi) // 2)
        chosen = [multi[i] for i in sorted(rng.choice(len(multi), k, replace=False))] if k >= 2 else []
        val_people = {c: by[c] for c in chosen}
        raw = sample_val_pairs(val_people, d["val_pairs"], rng)
    else:
        raw = []
    if raw:
        val_rel = sorted({r for a, b, _ in raw for r in (a, b)})
        cache = ImageCache(image_root, pre, cache_dir=cache_dir() / "images", progress=progress)
        val_images, kept = cache.load(val_rel)
        pos = np.full(len(val_rel), -1, np.int64)
        pos[kept] = np.arange(len(kept))
        where = {r: pos[i] for i, r in enumerate(val_rel)}
        good = [(where[a], where[b], s) for a, b, s in raw if where[a] >= 0 and where[b] >= 0]
        val_idx = np.array([(a, b) for a, b, _ in good], np.int64).reshape(-1, 2)
        val_same = np.array([s for _, _, s in good], bool)
        val_images = np.asarray(val_images)
    else:
        val_images = np.zeros((0, 3, d["size"], d["size"]), np.uint8)
    train_people = {n: c for n, c in people.items() if n not in val_people}
    images, labels, classes = training_set(image_root, train_people, pre, min_images=d["min_images"],
                                           cache_dir=cache_dir() / "images", progress=progress)
    if d["max_classes"] > 0 and len(classes) > d["max_classes"]:
        keep = labels < d["max_classes"]
        images, labels, classes = images[keep], labels[keep], classes[:d["max_classes"]]
    if len(classes) < 2:
        raise ValueError(f"need at least 2 training identities, got {len(classes)} "
                         f"(min_images={d['min_images']}, people={len(train_people)})")
    return {"images": np.array(images, copy=True), "labels": labels, "classes": classes,
            "val_images": val_images, "val_pairs": val_idx, "val_same": val_same,
            "split": split, "image_root": str(image_root), "preprocess": pre}
