"""Upload bytes -> model input: decode, detect + LFW-style 2.2x crop (or take the image as a crop),
then the model's own preprocessing (centre ``crop`` px of the 250 frame resized to ``size``).

The same steps as ``fastconv face verify --detect``; with detection off, an image is treated
exactly like ``fastconv face eval`` treats it.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from ...images import centre_crop_resize
from ..detect import Box, NoFaceFound, detect_and_crop
from .uploads import BadUpload, decode_image

__all__ = ["PreparedFace", "prepare_face"]


@dataclass
class PreparedFace:
    pixels: np.ndarray  # uint8 (3, S, S), the model input before normalisation
    box: Box
    detected: bool
    crop_url: str | None  # the 250x250 frame as a JPEG data URL, when asked for


def _jpeg_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def prepare_face(data: bytes, field: str, *, detect: bool, crop: int, size: int, max_bytes: int,
                 want_crop: bool = False, detector=None) -> PreparedFace:
    """Raises :class:`BadUpload` for a bad image (4xx) or no face (422)."""
    img = decode_image(data, field, max_bytes)
    if detect:
        try:
            frame, box = detect_and_crop(img, detector)
        except NoFaceFound as exc:
            raise BadUpload(422, "no_face", f"{field}: {exc}") from None
    else:
        frame, box = img, Box(0, 0, img.width, img.height)
    pixels = np.asarray(centre_crop_resize(frame, crop, size), dtype=np.uint8).transpose(2, 0, 1)
    url = None
    if want_crop:
        from ...images import CANONICAL

        shown = frame if frame.size == (CANONICAL, CANONICAL) else centre_crop_resize(frame, CANONICAL, CANONICAL)
        url = _jpeg_url(shown)
    return PreparedFace(np.ascontiguousarray(pixels), box, detect, url)


def load_detected(path, pre) -> np.ndarray:
    """``fastconv face verify/embed --detect``: one image file -> uint8 (3, S, S) exactly as the service
    prepares an upload with detection on. Raises :class:`~fastconv.face.data.UnreadableImage`
    (also for a photo without a face)."""
    from ..data import UnreadableImage

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return prepare_face(data, str(path), detect=True, crop=pre.crop, size=pre.size, max_bytes=len(data) + 1).pixels
    except OSError as exc:
        raise UnreadableImage(path, f"{type(exc).__name__}: {exc}") from None
    except BadUpload as exc:
        raise UnreadableImage(path, exc.message.split(": ", 1)[-1]) from None
