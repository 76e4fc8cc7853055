"""Verified array caches: one ``.npy`` array plus a JSON manifest that is written last.

An entry ``<base>`` is ``<base>.npy`` (any numeric array, memory-mapped on load) and
``<base>.json`` = ``{"format", "version", "shape", "dtype", "index", "sha256"}``, where ``index``
is the caller's JSON metadata (row-to-file index, labels, names, ...) and ``sha256`` hashes the
array file's bytes together with the canonical JSON of ``index``. The array is written first and
the manifest last (both atomically), so the pair is committed as one unit: a reader that finds a
manifest whose checksum does not cover the array file beside it (overwritten pixels, a permuted or
edited index, a torn pair from a killed writer) treats the entry as missing.

:func:`load` returns ``None`` for a missing entry and warns once (``UserWarning``, naming the file
and the reason) for a damaged one; the caller then rebuilds and :func:`save` replaces it. A
``check(array, index)`` callback adds the caller's range checks (it raises ``ValueError``).
Used by ``fastconv.face.data.ImageCache`` and ``fastconv.datasets.lfw_people``.
"""
import hashlib
import json
import os
import warnings

import numpy as np

from .atomic import atomic_write, write_json

FORMAT = "fastconv-array-cache"
VERSION = 1

__all__ = ["load", "save", "paths", "CacheMismatch"]


class CacheMismatch(ValueError):
    """A cache entry whose files do not match their manifest."""


def paths(base):
    """``(<base>.npy, <base>.json)``."""
    base = os.fspath(base)
    return base + ".npy", base + ".json"


def _index_bytes(index):
    return json.dumps(index, sort_keys=True, separators=(",", ":")).encode()


class _HashingWriter:
    """File-like wrapper that hashes what ``np.save`` writes through it."""

    def __init__(self, fh, digest):
        self.fh, self.digest = fh, digest

    def write(self, data):
        self.digest.update(data)
        return self.fh.write(data)


def save(base, array, index):
    """Write ``array`` (numeric ndarray) and ``index`` (JSON-able) as the entry ``base``; returns the .npy path.

    Raises OSError when the folder is not writable (callers warn and continue without a cache).
    """
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise TypeError("cache arrays must be numeric, got an object array")
    npy, manifest = paths(base)
    digest = hashlib.sha256()
    atomic_write(npy, lambda fh: np.save(_HashingWriter(fh, digest), array, allow_pickle=False))
    digest.update(_index_bytes(index))
    write_json(manifest, {"format": FORMAT, "version": VERSION, "shape": list(array.shape),
                          "dtype": array.dtype.str, "index": index, "sha256": digest.hexdigest()})
    return npy


def _file_digest(path):
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256")


def _read(base, check):
    npy, manifest = paths(base)
    try:
        with open(manifest, "r", encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheMismatch(f"unreadable manifest: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CacheMismatch("not a fastconv cache manifest of this version")
    missing = [k for k in ("shape", "dtype", "index", "sha256") if k not in meta]
    if missing:
        raise CacheMismatch(f"manifest lacks {missing}")
    try:
        digest = _file_digest(npy)
    except OSError as exc:
        raise CacheMismatch(f"unreadable array file: {exc}") from None
    digest.update(_index_bytes(meta["index"]))
    if digest.hexdigest() != meta["sha256"]:
        raise CacheMismatch("checksum mismatch (array or index changed after it was written)")
    try:
        array = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheMismatch(f"unreadable array file: {exc}") from None
    if list(array.shape) != meta["shape"] or array.dtype.str != meta["dtype"]:
        raise CacheMismatch(f"array is {array.dtype.str} {array.shape}, manifest says {meta['dtype']} "
                            f"{tuple(meta['shape'])}")
    if check is not None:
        try:
            check(array, meta["index"])
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise CacheMismatch(f"index check failed: {type(exc).__name__}: {exc}") from None
    return array, meta["index"]


def load(base, check=None):
    """``(array (read-only memmap), index)`` of the entry ``base``, or ``None`` when it is missing or damaged.

    A damaged entry (unreadable, checksum or shape mismatch, ``check`` failure) gives one warning.
    """
    npy, manifest = paths(base)
    if not (os.path.exists(npy) or os.path.exists(manifest)):
        return None
    try:
        return _read(base, check)
    except CacheMismatch as exc:
        warnings.warn(f"rebuilding damaged cache {npy}: {exc}", stacklevel=3)
        return None
