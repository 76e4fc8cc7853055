"""LFW people with at least ``min_faces`` images, as small grey images for classification.

Each deep-funneled 250x250 JPEG is turned to grey (Pillow "L"), centre-cropped to a
``crop`` x ``crop`` square (the funneled faces are centred; 100 px keeps brows, eyes, nose
and mouth and drops hair and background: it classified better than 90, 105, 120 or 135 px) and resized to ``size`` x ``size`` (bilinear, with
antialiasing). The decoded uint8 images are cached once in
``fastconv.paths.cache_dir()/lfw_people_<settings>.npy`` with a ``.json`` manifest holding labels,
names and a checksum (:mod:`fastconv.cache`); later calls verify and load it, and a damaged entry
is warned about once and rebuilt.

With the defaults (``min_faces=20``) this gives 62 people and 3,023 images.
"""
import dataclasses
import hashlib
import pathlib
import sys

import numpy as np

from .. import cache as array_cache
from ..images import centre_crop_resize
from ..paths import cache_dir, lfw_root
from ..paths import image_dir as lfw_image_dir

_CACHE_VERSION = 2


@dataclasses.dataclass
class LFWPeople:
    """images: (N, 1, size, size) float32 in [0, 1]; labels: (N,) int64 in [0, K);
    names: K person names (label k is ``names[k]``); skipped: unreadable files left out."""

    images: np.ndarray
    labels: np.ndarray
    names: list
    skipped: int

    @property
    def num_classes(self):
        return len(self.names)


def _check_settings(min_faces, size, crop):
    for name, value in (("min_faces", min_faces), ("size", size), ("crop", crop)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if crop > 250:
        raise ValueError(f"crop must be at most the 250 px of an LFW image, got {crop}")


def _decode(path, size, crop):
    """One JPEG -> (size, size) uint8 grey image of its centre ``crop`` square."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(centre_crop_resize(img.convert("L"), crop, size), dtype=np.uint8)


def _decode_all(image_dir, min_faces, size, crop, verbose):
    """Decode every image of the people with >= min_faces readable images."""
    people = sorted(d for d in image_dir.iterdir() if d.is_dir())
    candidates = [(d.name, sorted(d.glob("*.jpg"))) for d in people]
    candidates = [(name, files) for name, files in candidates if len(files) >= min_faces]
    images, labels, names, skipped = [], [], [], 0
    for name, files in candidates:
        decoded = []
        for f in files:
            try:
                decoded.append(_decode(f, size, crop))
            except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
                skipped += 1
                print(f"lfw_people: skipping unreadable image {f}: {exc}", file=sys.stderr)
        if len(decoded) < min_faces:
            continue
        labels += [len(names)] * len(decoded)
        names.append(name)
        images += decoded
    if not images:
        raise ValueError(f"no person in {image_dir} has >= {min_faces} readable images")
    if verbose:
        print(f"lfw_people: decoded {len(images)} images of {len(names)} people "
              f"({skipped} unreadable skipped)", file=sys.stderr)
    return np.stack(images), np.asarray(labels, np.int64), names, skipped


def _check_entry(images, index, size):
    """Range checks of a cache entry (raises ValueError): one label in 0..K-1 per image of size x size."""
    labels, names = np.asarray(index["labels"]), index["names"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
        raise ValueError(f"images are {images.dtype} {images.shape}, expected uint8 (N, {size}, {size})")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{labels.shape} labels for {len(images)} images")
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("names must be a non-empty list of strings")
    if labels.min() < 0 or labels.max() >= len(names):
        raise ValueError(f"labels outside 0..{len(names) - 1}")
    if isinstance(index["skipped"], bool) or not isinstance(index["skipped"], int):
        raise ValueError("skipped must be an int")


def load_lfw_people(min_faces=20, size=32, crop=100, root=None, cache=True, verbose=True):
    """Load (and cache) the LFW people with at least ``min_faces`` images -> :class:`LFWPeople`.

    root: the LFW folder (default ``fastconv.paths.lfw_root()``), holding ``lfw-deepfunneled``.
    Raises FileNotFoundError when it is missing.
    """
    _check_settings(min_faces, size, crop)
    root = pathlib.Path(root) if root is not None else lfw_root()
    image_dir = lfw_image_dir(root)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"LFW images not found at {image_dir}; set FASTCONV_LFW to the "
                                f"folder holding lfw-deepfunneled/")
    key = hashlib.sha1(f"{_CACHE_VERSION}|{image_dir.resolve()}|{min_faces}|{size}|{crop}".encode())
    base = cache_dir() / f"lfw_people_m{min_faces}_s{size}_c{crop}_{key.hexdigest()[:10]}"
    cached = array_cache.load(base, check=lambda a, index: _check_entry(a, index, size)) if cache else None
    if cached is not None:
        images, index = cached
        labels, names, skipped = np.asarray(index["labels"], np.int64), index["names"], index["skipped"]
    else:
        images, labels, names, skipped = _decode_all(image_dir, min_faces, size, crop, verbose)
        if cache:
            index = {"labels": labels.tolist(), "names": names, "skipped": skipped}
            try:
                array_cache.save(base, images, index)
            except OSError as exc:
                print(f"lfw_people: could not write the cache {base}.npy: {exc}", file=sys.stderr)
    x = (images.astype(np.float32) / 255.0)[:, None]
    return LFWPeople(x, labels, names, skipped)


def stratified_split(labels, test_fraction=0.25, seed=0):
    """Fixed stratified split: per class, a seeded shuffle puts round(n * test_fraction)
    (at least 1 when n >= 2) in the test set. labels: (N,) ints -> (train_idx, test_idx), sorted."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
