"""Face image sets on disk, torch-free: identity-folder scanning, the on-disk decode cache and the
training set of an identity folder (NumPy + Pillow through ``fastconv.face.preprocess``).

Shared by both training engines, evaluation and identification; ``fastconv.face.data`` re-exports
it beside the torch ``Dataset``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings

import numpy as np

from .. import cache as array_cache
from .preprocess import IMAGE_EXTENSIONS, Preprocess, _check_root, _resolve, decode_images

__all__ = ["scan_identity_folder", "ImageCache", "training_set"]

log = logging.getLogger(__name__)

_CACHE_VERSION = 2


def scan_identity_folder(root, people: dict[str, int] | None = None, min_images: int = 1):
    """Scan ``root/<identity>/<image>`` -> (relpaths, labels int64 (N,) in 0..K-1, class names sorted).

    With ``people``, only those identities are used (missing ones are warned about).
    Identities with fewer than ``min_images`` images are dropped.
    """
    root = _check_root(root)
    if isinstance(min_images, bool) or not isinstance(min_images, int) or min_images < 1:
        raise ValueError(f"min_images must be an int >= 1, got {min_images!r}")
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if people is not None:
        wanted = set(people)
        missing = sorted(wanted - set(names))
        if missing:
            msg = f"{len(missing)} identities not found under {root}: {', '.join(missing[:5])}"
            warnings.warn(msg + (" ..." if len(missing) > 5 else ""), stacklevel=2)
        names = [n for n in names if n in wanted]
    relpaths, labels, classes = [], [], []
    for name in names:
        files = sorted(
            f for f in os.listdir(os.path.join(root, name))
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        )
        if len(files) < min_images:
            continue
        label = len(classes)
        classes.append(name)
        relpaths.extend(f"{name}/{f}" for f in files)
        labels.extend([label] * len(files))
    return relpaths, np.asarray(labels, dtype=np.int64), classes



def _report_skipped(skipped, total):
    if not skipped:
        return
    shown = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
    msg = f"skipped {len(skipped)} unreadable images of {total}: {shown}" + (" ..." if len(skipped) > 5 else "")
    log.warning(msg)
    warnings.warn(msg, stacklevel=3)


class ImageCache:
    """Decode images once into ``<cache_dir>/images-<key>.npy`` (+ ``.json`` manifest, see
    :mod:`fastconv.cache`); later loads verify its checksum and memory-map it.

    The key hashes the preprocess settings, the absolute image root and the file list
    (with each file's size and modification time).
    Unreadable or missing files are skipped, reported and kept in ``self.skipped``.
    """

    def __init__(self, root, pre: Preprocess, cache_dir=None, progress=True, workers=2):
        if not isinstance(pre, Preprocess):
            raise TypeError(f"pre must be a Preprocess, got {type(pre).__name__}")
        self.root = os.path.abspath(os.fspath(root))
        self.pre = pre
        if cache_dir is None:
            from fastconv.paths import cache_dir as default_cache

            cache_dir = os.path.join(default_cache(), "images")
        self.cache_dir = os.fspath(cache_dir)
        self.progress = progress
        self.workers = workers
        self.skipped: list[tuple[str, str]] = []
        self.last_hit: bool | None = None
        self.last_path: str | None = None

    def key(self, relpaths) -> str:
        """Hex digest of (version, preprocess settings, root, file list, each file's size and mtime).

        Size and mtime make an edited, added or removed image invalidate the entry.
        """
        h = hashlib.sha256()
        h.update(json.dumps(
            {"v": _CACHE_VERSION, "pre": self.pre.to_dict(), "root": self.root}, sort_keys=True
        ).encode())
        for rel in relpaths:
            try:
                st = os.stat(_resolve(self.root, rel))
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(b"\0" + rel.encode("utf-8", "surrogateescape") + b"\0" + stamp.encode())
        return h.hexdigest()[:24]

    def load(self, relpaths: list[str]):
        """-> (images uint8 (M,3,S,S) (read-only memmap), kept_index int64 (M,) into ``relpaths``).

        The entry is a :mod:`fastconv.cache` entry (checksummed array + index); a damaged one is
        warned about once and rebuilt.
        """
        relpaths = [os.fspath(r) for r in relpaths]
        base = os.path.join(self.cache_dir, f"images-{self.key(relpaths)}")
        self.last_path = array_cache.paths(base)[0]
        cached = array_cache.load(base, check=lambda a, index: self._check(a, index, len(relpaths)))
        if cached is not None:
            images, index = cached
            self.skipped = [tuple(s) for s in index["skipped"]]
            self.last_hit = True
            _report_skipped(self.skipped, len(relpaths))
            return images, np.asarray(index["kept"], dtype=np.int64)
        self.last_hit = False
        if not os.path.isdir(self.root):
            raise ValueError(f"image root {self.root} is not a directory")
        images, kept, skipped = decode_images(
            self.root, relpaths, self.pre, progress=self.progress, workers=self.workers
        )
        self.skipped = skipped
        _report_skipped(skipped, len(relpaths))
        index = {"preprocess": self.pre.to_dict(), "root": self.root, "n_files": len(relpaths),
                 "kept": kept.tolist(), "skipped": [list(s) for s in skipped]}
        try:
            npy = array_cache.save(base, images, index)
        except OSError as exc:
            warnings.warn(f"could not write image cache {self.last_path}: {exc}", stacklevel=2)
            return images, kept
        return np.load(npy, mmap_mode="r"), kept

    def _check(self, images, index, n):
        """Range checks of a cache entry: raises ValueError when it cannot belong to these ``n`` files."""
        kept = np.asarray(index["kept"], dtype=np.int64)
        s = self.pre.size
        if index["n_files"] != n or index["preprocess"] != self.pre.to_dict():
            raise ValueError(f"entry is for {index['n_files']} files / {index['preprocess']}")
        if kept.ndim != 1 or (kept.size and (kept[0] < 0 or kept[-1] >= n or np.any(np.diff(kept) <= 0))):
            raise ValueError(f"kept index is not increasing within 0..{n - 1}")
        if images.dtype != np.uint8 or images.shape != (len(kept), 3, s, s):
            raise ValueError(f"images are {images.dtype} {images.shape}, expected uint8 {(len(kept), 3, s, s)}")
        if len(kept) + len(index["skipped"]) != n:
            raise ValueError("kept and skipped do not add up to the file count")


def training_set(root, people: dict[str, int] | None, pre: Preprocess, min_images=1, cache_dir=None,
                 progress=True):
    """-> (images uint8 (M,3,S,S), labels int64 (M,) in 0..K-1, class names); unreadable images dropped.

    ``min_images`` is applied again after dropping, and labels are renumbered to stay contiguous.
    """
    relpaths, labels, classes = scan_identity_folder(root, people, min_images=min_images)
    if not relpaths:
        raise ValueError(f"no images found under {root} (people={'given' if people else 'all'}, "
                         f"min_images={min_images})")
    cache = ImageCache(root, pre, cache_dir=cache_dir, progress=progress)
    images, kept = cache.load(relpaths)
    labels = labels[kept]
    counts = np.bincount(labels, minlength=len(classes))
    keep_cls = np.flatnonzero(counts >= min_images)
    if keep_cls.size != len(classes):
        remap = np.full(len(classes), -1, dtype=np.int64)
        remap[keep_cls] = np.arange(keep_cls.size)
        mask = remap[labels] >= 0
        images, labels = images[mask], remap[labels[mask]]
        classes = [classes[i] for i in keep_cls]
    if not classes:
        raise ValueError(f"no identity under {root} has >= {min_images} readable images")
    return images, labels, classes
