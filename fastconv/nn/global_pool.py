"""Global average pooling: x (N, C, H, W) -> (N, C, 1, 1), the mean over H and W.

``AdaptiveAvgPool2d(1)`` is the same layer under torch's name (only output size 1 exists here).
Backward: dx = dy / (H W), broadcast over the window (the whole map).
"""
import numpy as np

from .._validate import check_grad, check_input

from .module import CachedModule


class GlobalAvgPool2d(CachedModule):
    """x: (N, C, H, W) -> y: (N, C, 1, 1), ``y[n, c] = mean(x[n, c])``."""

    def forward(self, x):
        x = check_input(x, type(self).__name__)
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects (N, C, H, W), got shape {x.shape}")
        if 0 in x.shape:
            raise ValueError(f"{type(self).__name__} input must not be empty, got shape {x.shape}")
        self._remember((x.shape, x.dtype))
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dy):
        shape, dtype = self._recall()
        check_grad(dy, shape[:2] + (1, 1), dtype)
        scale = dy.dtype.type(1.0 / (shape[2] * shape[3]))
        return np.broadcast_to(dy * scale, shape).copy()


class AdaptiveAvgPool2d(GlobalAvgPool2d):
    """torch's ``AdaptiveAvgPool2d(output_size)`` for ``output_size`` 1 (or (1, 1)): global pooling."""

    def __init__(self, output_size=1):
        super().__init__()
        if output_size not in (1, (1, 1), [1, 1]):
            raise ValueError(f"AdaptiveAvgPool2d supports output_size 1 (global pooling) only, got "
                             f"{output_size!r}")
        self.output_size = (1, 1)

    def extra_repr(self):
        return "output_size=1"
