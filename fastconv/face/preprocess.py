"""Torch-free face-image preprocessing: decode with Pillow, crop, resize, normalise.

Shared by training, evaluation, ``fastconv face verify/embed`` and the torch-free runtime
(``fastconv.face.runtime``), so every path sees the same pixels. NumPy and Pillow only:

1. decode as RGB;
2. if the image is not 250x250 (the LFW size), resize its shorter side to 250
   (bilinear) and centre-crop 250x250, so any photo framed like LFW maps onto LFW;
3. centre-crop ``crop`` x ``crop`` pixels;
4. resize to ``size`` x ``size`` (bilinear, antialiased when shrinking).

Both presets use a 150 px centre crop: deep-funneled LFW faces are centred and the
face box is about 110-120 px (the detector box enlarged 2.2x into 250 px), so 150 px keeps
forehead, chin and both ears with a small margin, while dropping most of the background.
The 112 preset keeps the same field of view at a finer resolution (150 -> 112 is only a
1.34x shrink), so models at both sizes see the same part of the face.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..images import CANONICAL, centre_crop_resize
from .progress import progress_bar

__all__ = ["Preprocess", "CANONICAL", "UnreadableImage", "load_image", "IMAGE_EXTENSIONS",
           "list_images", "decode_images", "normalize_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Preprocess:
    """Centre-crop ``crop`` px of the 250x250 image and resize to ``size`` x ``size`` RGB."""

    size: int = 64
    crop: int = 150

    def __post_init__(self):
        for name in ("size", "crop"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Preprocess.{name} must be an int, got {type(v).__name__}")
        if not 8 <= self.size <= 1024:
            raise ValueError(f"Preprocess.size must be in 8..1024, got {self.size}")
        if not 1 <= self.crop <= CANONICAL:
            raise ValueError(f"Preprocess.crop must be in 1..{CANONICAL}, got {self.crop}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "Preprocess":
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise TypeError(f"Preprocess.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Preprocess keys {sorted(unknown)}, expected a subset of {sorted(known)}")
        return cls(**d)


class UnreadableImage(ValueError):
    """An image file that is missing, corrupt or not an image."""

    def __init__(self, path, reason):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _decode(path):
    """Decode ``path`` to an RGB PIL image (fully loaded). Separate so tests can patch it."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def load_image(path, pre: Preprocess) -> np.ndarray:
    """Read and preprocess one image -> uint8 (3, size, size). Raises ``UnreadableImage``."""
    if not isinstance(pre, Preprocess):
        raise TypeError(f"pre must be a Preprocess, got {type(pre).__name__}")
    if not os.path.isfile(path):
        raise UnreadableImage(path, "missing file")
    try:
        arr = np.asarray(centre_crop_resize(_decode(path), pre.crop, pre.size), dtype=np.uint8)  # (S, S, 3)
    except Exception as exc:  # PIL raises many types for corrupt data (also while resizing a lazy image)
        raise UnreadableImage(path, f"{type(exc).__name__}: {exc}") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _check_root(root):
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"image root {root} is not a directory")
    return root


def list_images(root) -> list[str]:
    """All image files under ``root`` (recursive), as sorted '/'-separated relative paths."""
    root = _check_root(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith("."):
                rel = os.path.relpath(os.path.join(dirpath, fn), root)
                out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def _resolve(root, rel):
    return rel if os.path.isabs(rel) else os.path.join(root, rel)


def decode_images(root, relpaths, pre: Preprocess, progress=True, workers=2, load=None):
    """Decode ``relpaths`` -> (images uint8 (M,3,S,S), kept int64 (M,), skipped [(relpath, reason)]).

    ``load(path, pre)`` reads one image (default :func:`load_image`; raises ``UnreadableImage``)."""
    load = load_image if load is None else load
    root = os.fspath(root)
    n = len(relpaths)
    out = np.empty((n, 3, pre.size, pre.size), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    skipped = []

    def work(i):
        try:
            out[i] = load(_resolve(root, relpaths[i]), pre)
            return i, None
        except UnreadableImage as exc:
            return i, exc.reason

    bar = progress_bar(n, f"decoding {n} images", unit="img", enabled=bool(progress and n))
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for i, reason in pool.map(work, range(n), chunksize=64):
            if reason is None:
                ok[i] = True
            else:
                skipped.append((relpaths[i], reason))
            bar.update(1)
    bar.close()
    kept = np.flatnonzero(ok).astype(np.int64)
    images = out if kept.size == n else out[kept]
    return images, kept, skipped



def normalize_images(x_uint8, dtype=np.float32):
    """uint8 (N,3,H,W) or (3,H,W) -> ``dtype`` in [-1, 1]: ``x/127.5 - 1`` (= ``(x/255 - 0.5)/0.5``).

    The NumPy twin of ``fastconv.face.data.normalize``: in float32 it gives the same bits.
    """
    if not isinstance(x_uint8, np.ndarray) or x_uint8.dtype != np.uint8:
        raise TypeError(f"normalize_images expects a uint8 ndarray, got {getattr(x_uint8, 'dtype', type(x_uint8).__name__)}")
    if x_uint8.ndim not in (3, 4) or x_uint8.shape[-3] != 3:
        raise ValueError(f"normalize_images expects (N,3,H,W) or (3,H,W), got {x_uint8.shape}")
    dtype = np.dtype(dtype)
    return x_uint8.astype(dtype) / dtype.type(127.5) - dtype.type(1.0)
