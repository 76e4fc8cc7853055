"""Resampling layers that express stride: zero-insertion upsampling and decimation.

Upsample: ``W_out = k(W-1) + 1``, ``y[..., ::k] = x``. Downsample: ``y = x[..., ::k]``,
``W_out = ceil(W/k)``; its backward scatters back into the stored input width.
"""
from .. import functional as F
from .._validate import int_tuple
from .module import CachedModule


class _Resample(CachedModule):
    nd = 1
    up = True

    def __init__(self, factor):
        super().__init__()
        self.factor = int_tuple(factor, self.nd, "factor", 1)  # an nd-tuple, validated once

    def forward(self, x):
        fwd = F.upsample_forward if self.up else F.downsample_forward
        y, cache = fwd(x, self.factor, nd=self.nd)
        self._remember(cache)
        return y

    def backward(self, dy):
        bwd = F.upsample_backward if self.up else F.downsample_backward
        return bwd(dy, self._recall())

    def extra_repr(self):
        return f"factor={self.factor}"


class Upsample1d(_Resample):
    """x: (N, C, W) -> (N, C, k(W-1)+1), zeros between samples."""
    nd, up = 1, True


class Upsample2d(_Resample):
    """x: (N, C, H, W) -> (N, C, kh(H-1)+1, kw(W-1)+1), zeros between samples."""
    nd, up = 2, True


class Downsample1d(_Resample):
    """x: (N, C, W) -> x[..., ::k]: (N, C, ceil(W/k))."""
    nd, up = 1, False


class Downsample2d(_Resample):
    """x: (N, C, H, W) -> x[..., ::kh, ::kw]: (N, C, ceil(H/kh), ceil(W/kw))."""
    nd, up = 2, False
