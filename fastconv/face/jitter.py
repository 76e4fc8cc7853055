"""Framing jitter: what a face detector's box does to an LFW-style crop, as a random similarity warp.

A detector box differs from the deep-funnelled LFW framing by a scale factor ``f`` (box side / LFW
side), a centre offset ``(dx, dy)`` (fractions of the side) and an in-plane rotation ``angle``.
Re-framing an ``(3, S, S)`` crop to such a box maps the content by rotation ``angle``, zoom ``1 / f``
and translation ``(-dx S, -dy S)`` (pixels that fall outside the crop become black).

``f ~ U[1 - scale, 1 + scale]``, ``dx, dy ~ U[-shift, shift]``, ``angle ~ U[-rotation, rotation]``
degrees. :func:`jitter_images` draws these per image from ``np.random.default_rng(seed)`` (the same
images and seed give the same crops); :class:`FramingJitter` is the training-time transform (torch RNG,
which the training loop seeds per epoch).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from .jitter_spec import REALISTIC, JitterSpec, parse_jitter

__all__ = ["JitterSpec", "REALISTIC", "parse_jitter", "reframe", "jitter_images", "FramingJitter"]


def reframe(img, factor, dx, dy, angle):
    """uint8 ``(3, S, S)`` tensor re-framed to a box of relative side ``factor`` moved by ``(dx, dy)``."""
    s = img.shape[-1]
    return TF.affine(img, angle=float(angle), translate=[-dx * s, -dy * s], scale=1.0 / factor, shear=[0.0, 0.0],
                     interpolation=TF.InterpolationMode.BILINEAR)


def _draw(spec, u):
    """Uniform(0, 1) draws ``u (4,)`` -> (factor, dx, dy, angle)."""
    scale, shift, rot = spec
    return (1 - scale + 2 * scale * u[0], shift * (2 * u[1] - 1), shift * (2 * u[2] - 1), rot * (2 * u[3] - 1))


def jitter_images(images, spec, seed):
    """uint8 ``(N, 3, S, S)`` ndarray -> the same images, each re-framed by its own draw of ``spec``."""
    spec = JitterSpec(*spec)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, S, S), got {images.dtype} {images.shape}")
    u = np.random.default_rng(seed).random((len(images), 4))
    out = np.empty_like(images)
    for i, img in enumerate(images):
        out[i] = reframe(torch.from_numpy(np.array(img)), *_draw(spec, u[i])).numpy()  # writable copy
    return out


class FramingJitter(torch.nn.Module):
    """Training transform: uint8 ``(3, S, S)`` -> a random re-framing drawn from ``spec`` (torch RNG)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = JitterSpec(*spec)

    def forward(self, img):
        return reframe(img, *_draw(self.spec, torch.rand(4).tolist()))
