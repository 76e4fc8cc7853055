"""Uploaded image bytes -> an RGB PIL image, or a :class:`BadUpload` that names the 4xx status.

Checks, in order: size (``max_bytes``), type by content (JPEG, PNG or WebP magic bytes; the file
name and declared content type are ignored), Pillow's decompression-bomb guard (more than
``max_pixels`` pixels is refused before decoding), sides of at least ``MIN_SIDE`` px and an aspect
ratio of at most ``MAX_ASPECT``, a full decode, EXIF orientation, and conversion
of greyscale / palette / alpha images to RGB (transparent parts composited on white).
"""
from __future__ import annotations

import base64
import binascii
import io
import warnings

__all__ = ["BadUpload", "sniff_type", "decode_image", "decode_base64", "MAX_PIXELS"]

MAX_PIXELS = 40_000_000  # 40 MP: larger images are refused as possible decompression bombs
MIN_SIDE = 16  # px; smaller images hold no usable face
MAX_ASPECT = 8  # longer side / shorter side; an LFW frame made from a 1 x 10000 strip would be huge


class BadUpload(Exception):
    """A request the service refuses: ``status`` (4xx), ``code`` (machine-readable), message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def sniff_type(data: bytes) -> str | None:
    """'jpeg', 'png' or 'webp' from the first bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _to_rgb(im):
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def decode_image(data: bytes, field: str, max_bytes: int, max_pixels: int = MAX_PIXELS):
    """bytes -> RGB PIL image (EXIF orientation applied). Raises :class:`BadUpload` (400/413/415/422)."""
    from PIL import Image, ImageOps

    if not data:
        raise BadUpload(400, "empty_image", f"{field}: the image is empty")
    if len(data) > max_bytes:
        raise BadUpload(413, "image_too_large",
                        f"{field}: image of {len(data)} bytes is over the limit of {max_bytes} bytes")
    kind = sniff_type(data)
    if kind is None:
        raise BadUpload(415, "unsupported_type", f"{field}: not a JPEG, PNG or WebP image (by content)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind.upper()]) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadUpload(413, "too_many_pixels", f"{field}: {w}x{h} pixels is over the limit of "
                                    f"{max_pixels} (decompression-bomb guard)")
                if min(w, h) < MIN_SIDE:
                    raise BadUpload(422, "too_small", f"{field}: {w}x{h} pixels; at least {MIN_SIDE} px per side")
                if max(w, h) > MAX_ASPECT * min(w, h):
                    raise BadUpload(422, "bad_aspect", f"{field}: {w}x{h} pixels; the longer side may be at most "
                                    f"{MAX_ASPECT}x the shorter")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadUpload:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadUpload(413, "too_many_pixels", f"{field}: {exc}") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise BadUpload(422, "corrupt_image", f"{field}: cannot decode the {kind.upper()} image "
                        f"({type(exc).__name__}: {exc})") from None


def decode_base64(text, field: str, max_bytes: int) -> bytes:
    """A base64 string (optionally a ``data:image/...;base64,`` URL) -> bytes. Raises :class:`BadUpload`."""
    if not isinstance(text, str):
        raise BadUpload(422, "bad_field", f"{field}: expected a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise BadUpload(422, "bad_base64", f"{field}: a data URL must be base64-encoded")
    if len(text) > 4 * (max_bytes // 3 + 1) + 4:
        raise BadUpload(413, "image_too_large", f"{field}: image is over the limit of {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadUpload(422, "bad_base64", f"{field}: not valid base64") from None
