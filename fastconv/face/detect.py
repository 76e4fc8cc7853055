"""Face detection for arbitrary photos and the LFW-style crop (OpenCV Haar cascade, Pillow).

LFW images were made by detecting a face (Viola-Jones), enlarging the box 2.2x about its centre
and scaling that square to 250x250. :func:`lfw_crop` does the same, so a model trained on LFW
framing sees a photo framed the same way; the model's own :class:`~fastconv.face.data.Preprocess`
(centre ``crop`` of the 250 frame, resize to ``size``) is applied after it.

The detector is the frontal-face Haar cascade that ships inside ``opencv-python-headless``
(``cv2.data.haarcascades``): no weights are downloaded. ``fastconv face serve`` and
``fastconv face verify/embed --detect`` both go through :func:`detect_and_crop`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..images import CANONICAL

__all__ = ["ENLARGE", "Box", "NoFaceFound", "HaarDetector", "largest_face", "lfw_crop", "detect_and_crop",
           "default_detector"]

ENLARGE = 2.2  # LFW: detector box enlarged 2.2x about its centre
_DETECT_SIDE = 640  # photos are searched at most this large (longer side), boxes mapped back


@dataclass(frozen=True)
class Box:
    """Face box in pixels of the (EXIF-oriented) photo: left ``x``, top ``y``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def to_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


class NoFaceFound(ValueError):
    """The detector found no face in the photo."""


class HaarDetector:
    """OpenCV's ``haarcascade_frontalface_default.xml``; ``detect(rgb uint8 (H, W, 3)) -> list[Box]``.

    ``cv2.CascadeClassifier`` is not documented as thread-safe, so each thread gets its own.
    """

    def __init__(self, scale_factor=1.1, min_neighbors=5, min_size=24, min_fraction=1 / 8):
        try:
            import cv2
        except ImportError as exc:  # pragma: no cover - only without the serve extra
            raise ImportError("face detection needs opencv-python-headless: pip install 'fastconv[serve]'") from exc
        self._cv2 = cv2
        self._path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.min_fraction = min_fraction  # faces narrower than this part of the shorter side are not searched
        self._local = threading.local()
        self._cascade()  # fail now, not on the first request

    def _cascade(self):
        c = getattr(self._local, "cascade", None)
        if c is None:
            c = self._cv2.CascadeClassifier(self._path)
            if c.empty():
                raise RuntimeError(f"could not load the Haar cascade {self._path}")
            self._local.cascade = c
        return c

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """rgb uint8 (H, W, 3) -> face boxes in its pixel coordinates (possibly empty)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        scale = min(1.0, _DETECT_SIDE / max(h, w))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        side = max(self.min_size, int(self.min_fraction * min(grey.shape)))
        found = self._cascade().detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                 minSize=(side, side))
        return [Box(round(x / scale), round(y / scale), round(bw / scale), round(bh / scale))
                for x, y, bw, bh in np.asarray(found).reshape(-1, 4).tolist()]


_DEFAULT = None
_DEFAULT_LOCK = threading.Lock()


def default_detector() -> HaarDetector:
    """One shared :class:`HaarDetector` per process."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = HaarDetector()
        return _DEFAULT


def largest_face(boxes) -> Box:
    """The box of largest area (ties: the first); raises :class:`NoFaceFound` when there is none."""
    boxes = list(boxes)
    if not boxes:
        raise NoFaceFound("no face found in the image (use no-detect for images that are already "
                          "250x250 LFW-style face crops)")
    return max(boxes, key=lambda b: b.area)


def lfw_crop(img, box: Box, enlarge: float = ENLARGE):
    """PIL RGB image -> 250x250 PIL image of the square of side ``enlarge * max(w, h)`` centred on ``box``.

    The square may reach past the photo's border; that part is black (as Pillow's ``crop`` pads).
    """
    from PIL import Image

    side = enlarge * max(box.w, box.h)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    s = max(1, round(side))
    return img.crop((left, top, left + s, top + s)).resize((CANONICAL, CANONICAL), Image.Resampling.BILINEAR)


def detect_and_crop(img, detector=None):
    """PIL RGB image -> (250x250 LFW-style PIL crop of its largest face, :class:`Box`).

    Raises :class:`NoFaceFound` when the detector finds no face.
    """
    detector = default_detector() if detector is None else detector
    box = largest_face(detector.detect(np.asarray(img.convert("RGB"), dtype=np.uint8)))
    return lfw_crop(img, box), box
