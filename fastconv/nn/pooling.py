"""Pooling layers: MaxPool1d/2d, MeanPool1d/2d (aliases AvgPool1d/2d), PyTorch semantics.

stride defaults to kernel_size; padding <= kernel_size // 2; mean pooling counts the padding.
``out = floor((in + 2p - k)/s) + 1``.
"""
from .. import functional as F
from .._validate import int_tuple
from .module import CachedModule


class _PoolNd(CachedModule):
    """kernel_size, stride (default: kernel_size), padding: ``nd``-tuples, validated once here."""

    nd = 2
    kind = "max"

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = int_tuple(kernel_size, self.nd, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else int_tuple(stride, self.nd, "stride", 1)
        self.padding = int_tuple(padding, self.nd, "padding", 0)

    def forward(self, x):
        fwd = F.max_pool_forward if self.kind == "max" else F.avg_pool_forward
        y, cache = fwd(x, self.kernel_size, self.stride, self.padding, nd=self.nd)
        self._remember(cache)
        return y

    def backward(self, dy):
        bwd = F.max_pool_backward if self.kind == "max" else F.avg_pool_backward
        return bwd(dy, self._recall())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool1d(_PoolNd):
    """x: (N, C, W) -> (N, C, W_out); the argmax is kept for backward."""
    nd, kind = 1, "max"


class MaxPool2d(_PoolNd):
    """x: (N, C, H, W) -> (N, C, H_out, W_out); the argmax is kept for backward."""
    nd, kind = 2, "max"


class MeanPool1d(_PoolNd):
    """x: (N, C, W) -> (N, C, W_out); window mean (padding counts)."""
    nd, kind = 1, "mean"


class MeanPool2d(_PoolNd):
    """x: (N, C, H, W) -> (N, C, H_out, W_out); window mean (padding counts)."""
    nd, kind = 2, "mean"


AvgPool1d = MeanPool1d
AvgPool2d = MeanPool2d
