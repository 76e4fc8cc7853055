"""Augmentation of a whole batch at once: the per-image pipeline of ``augment.build_transform`` as one
warp and a few tensor passes.

``augment.build_transform`` runs torchvision v2 ops one image at a time; on a 64 px face each op call
costs about 0.1-0.3 ms of dispatch, more than the arithmetic, and on CPU the loader runs in the
training process, so that cost adds to every step (README "Training throughput"). This module draws
the same random parameters from the same distributions and applies them to a uint8 batch
``x: (B, 3, S, S)`` in a handful of batched passes:

* **Geometry, one bilinear ``grid_sample``.** Horizontal flip (p = 0.5), RandomResizedCrop (area
  fraction ``a ~ U[crop_scale, 1]``, aspect ``r``, ``log r ~ U[log 0.9, log 1.1]``, redrawn up to
  10 times until the window's half-sides ``w = sqrt(a r)``, ``h = sqrt(a / r)`` fit, else the whole
  image, as torchvision does; centre ``c ~ U`` inside the image, in coordinates where the image
  spans ``[-1, 1]``) and framing jitter (``jitter.reframe``:
  factor ``f``, shift ``(dx, dy)``, angle ``t``) compose into one affine map from an output pixel
  ``o`` to the source pixel it samples::

      p_crop = f R(t) (o - (-2 dx, -2 dy))          framing, R(t) = [[cos t, sin t], [-sin t, cos t]]
      p_flip = c + diag(w, h) p_crop                  resized crop
      p      = (s x, y) of p_flip, s = -1 if flipped  flip

  Where framing reaches outside the cropped window (``|p_crop| > 1``) the pixel is black, as
  ``reframe`` fills it.
* **Colour, per-image factors.** ColorJitter's brightness ``b``, contrast ``c`` and saturation ``s``,
  each ``~ U[max(0, 1 - j), 1 + j]``: ``x b``, ``m + c (x - m)`` with ``m`` the image's mean grey
  level, ``g + s (x - g)`` with ``g = 0.2989 R + 0.587 G + 0.114 B``, each clamped to ``[0, 1]``, in an
  order drawn once per batch (torchvision draws one per image).

The result is normalised like ``data.normalize``: float32 ``(x / 255 - 0.5) / 0.5``. Differences from
the per-image pipeline are of detail, not of distribution: continuous crop windows instead of integer
pixel boxes, no rounding to uint8 between ops, one op order per batch. ``RandomPerspective`` has no
batched form here (``augment.perspective > 0`` needs ``augment.batched = false``).

Random draws come from torch's global generator on the CPU (the training loop seeds it per epoch),
so a run is reproducible and resumes exactly, on any device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["BatchAugment", "build_batch_augment", "affine_theta", "color_jitter"]

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
CROP_TRIES = 10                  # RandomResizedCrop's redraws of a window that does not fit


def build_batch_augment(aug):
    """:class:`BatchAugment` from the ``[augment]`` config section (``batched`` on), else None."""
    if not aug.get("batched", False):
        return None
    if float(aug.get("perspective", 0.0)) > 0:
        raise ValueError("augment.perspective has no batched form: set augment.batched=false to use it")
    return BatchAugment(aug)


def affine_theta(flip, crop, framing):
    """``(B, 2, 3)`` float64 sampling maps (output -> source, ``F.affine_grid`` convention).

    flip ``(B,)`` bool; crop ``(B, 4)``: centre x, centre y, half-width w, half-height h (image = [-1, 1]);
    framing ``(B, 4)``: factor f, dx, dy, angle in degrees (``jitter.reframe``'s arguments).
    """
    f, dx, dy, t = framing.double().unbind(1)
    t = torch.deg2rad(t)
    cos, sin = torch.cos(t), torch.sin(t)
    a = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) * f[:, None, None]
    shift = torch.stack([-2 * dx, -2 * dy], 1)
    frame = torch.cat([a, -(a @ shift[:, :, None])], 2)                      # p_crop = A o - A shift
    cx, cy, w, h = crop.double().unbind(1)
    scale = torch.stack([w, h], 1)
    theta = torch.cat([frame[:, :, :2] * scale[:, :, None],
                       frame[:, :, 2:] * scale[:, :, None] + torch.stack([cx, cy], 1)[:, :, None]], 2)
    sign = torch.where(flip, -1.0, 1.0).double()
    theta[:, 0] *= sign[:, None]
    return theta, frame


def color_jitter(x, factors, order):
    """Float ``x (B, 3, S, S)`` in [0, 1] with per-image ``factors (B, 3)`` (brightness, contrast,
    saturation) applied in ``order`` (a permutation of 0, 1, 2); values clamped to [0, 1] after each.
    In place on ``x``: every op is ``k x + (1 - k) ref`` with ``ref`` = 0 (brightness), the image's mean
    grey level (contrast; = sum_c w_c mean(x_c)) or its grey image (saturation)."""
    grey_w = torch.tensor(GREY, dtype=x.dtype, device=x.device)
    for op in order:
        k = factors[:, op].to(x.dtype).view(-1, 1, 1, 1)
        if op == 0:
            x.mul_(k)
        elif op == 1:
            m = (x.mean((2, 3)) @ grey_w).view(-1, 1, 1, 1)
            x.mul_(k).add_((1 - k) * m)
        else:
            g = torch.einsum("bchw,c->bhw", x, grey_w).unsqueeze(1)
            x.mul_(k).add_(g.mul_(1 - k))
        x.clamp_(0.0, 1.0)
    return x


def _sample_grid(theta, b, h, w, device):
    """``(B, H, W, 2)`` source coordinates of ``theta (B, 2, 3)`` at the output pixel centres
    (``F.affine_grid(..., align_corners=False)``, by broadcasting instead of a batched matmul)."""
    th = theta.to(device, torch.float32)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device).view(1, 1, w)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device).view(1, h, 1)
    grid = torch.empty(b, h, w, 2, device=device)
    for i in range(2):
        torch.add(th[:, i, 0].view(-1, 1, 1) * xs, th[:, i, 1].view(-1, 1, 1) * ys + th[:, i, 2].view(-1, 1, 1),
                  out=grid[..., i])
    return grid


class BatchAugment:
    """uint8 ``(B, 3, S, S)`` batch -> augmented float32 ``(B, 3, S, S)``, normalised to [-1, 1]."""

    def __init__(self, aug):
        self.flip = bool(aug.get("flip", False))
        self.resized_crop = bool(aug.get("resized_crop", False))
        self.crop_scale = float(aug.get("crop_scale", 0.8))
        if self.resized_crop and not 0 < self.crop_scale <= 1:
            raise ValueError(f"augment.crop_scale must be in (0, 1], got {self.crop_scale}")
        self.framing = bool(aug.get("framing", False))
        self.framing_spec = (float(aug.get("framing_scale", 0.1)), float(aug.get("framing_shift", 0.06)),
                             float(aug.get("framing_rotation", 8.0)))
        self.color = float(aug.get("color_jitter", 0.0))
        self.geometric = self.flip or self.resized_crop or self.framing

    def draw(self, n):
        """Random parameters of ``n`` images: dict(flip (n,), crop (n, 4), framing (n, 4), color (n, 3),
        order (3,)); identities for what is switched off."""
        u = torch.rand(n, 12, dtype=torch.float64)
        flip = (u[:, 0] < 0.5) if self.flip else torch.zeros(n, dtype=torch.bool)
        crop = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).repeat(n, 1)
        if self.resized_crop:
            crop = self._draw_crops(n, u[:, 1:5])
        framing = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).repeat(n, 1)
        if self.framing:
            scale, shift, rot = self.framing_spec
            framing = torch.stack([1 - scale + 2 * scale * u[:, 5], shift * (2 * u[:, 6] - 1),
                                   shift * (2 * u[:, 7] - 1), rot * (2 * u[:, 8] - 1)], 1)
        j = self.color
        color = max(0.0, 1 - j) + (1 + j - max(0.0, 1 - j)) * u[:, 9:12]
        order = torch.randperm(3) if j > 0 else torch.arange(3)
        return {"flip": flip, "crop": crop, "framing": framing, "color": color, "order": order}

    def _draw_crops(self, n, u_pos, tries=CROP_TRIES):
        """``(n, 4)`` crop windows (cx, cy, w, h) as torchvision's RandomResizedCrop draws them: area
        fraction and aspect ratio are redrawn (up to ``tries`` times) until the window fits inside the
        image, else the whole image; the position ``u_pos[:, 2:]`` is uniform over where it fits."""
        area = self.crop_scale + (1 - self.crop_scale) * torch.rand(n, tries, dtype=torch.float64)
        ratio = torch.exp(math.log(0.9) + (math.log(1.1) - math.log(0.9)) * torch.rand(n, tries, dtype=torch.float64))
        w_all, h_all = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        fits = (w_all <= 1) & (h_all <= 1)
        first = fits.double().argmax(1)                       # the first try that fits (0 when none does)
        w = torch.where(fits.any(1), w_all.gather(1, first[:, None])[:, 0], torch.ones(n, dtype=torch.float64))
        h = torch.where(fits.any(1), h_all.gather(1, first[:, None])[:, 0], torch.ones(n, dtype=torch.float64))
        return torch.stack([(1 - w) * (2 * u_pos[:, 2] - 1), (1 - h) * (2 * u_pos[:, 3] - 1), w, h], 1)

    def apply(self, x, params):
        """Augment uint8 ``x (B, 3, S, S)`` with drawn ``params`` -> float32 in [-1, 1]."""
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"batch augmentation expects uint8 (B, 3, S, S), got {x.dtype} {tuple(x.shape)}")
        out = x.float().div_(255.0)
        if self.geometric:
            theta, frame = affine_theta(params["flip"], params["crop"], params["framing"])
            b, _, h, w = out.shape
            out = F.grid_sample(out, _sample_grid(theta, b, h, w, out.device), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
            if self.framing:  # black where the re-framed box leaves the cropped window
                inner = _sample_grid(frame, b, h, w, out.device)
                out.mul_((inner.abs().amax(-1) <= 1.0).unsqueeze(1))
        if self.color > 0:
            out = color_jitter(out, params["color"].to(out.device), params["order"].tolist())
        return out.sub_(0.5).div_(0.5)

    def __call__(self, x):
        return self.apply(x, self.draw(x.shape[0]))
