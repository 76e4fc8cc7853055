"""Inverted dropout: zero with probability p in training and scale the rest by 1/(1-p)."""

from .._validate import check_grad, check_input
from ..random import rng
from .module import CachedModule


class Dropout(CachedModule):
    """Element-wise dropout; identity in eval mode. x: any shape."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def _mask_shape(self, x):
        return x.shape

    def forward(self, x):
        x = check_input(x, type(self).__name__)
        if not self.training or self.p == 0.0:
            self._remember((None, x.shape, x.dtype))
            return x
        keep = rng().random(self._mask_shape(x)) >= self.p
        mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        self._remember((mask, x.shape, x.dtype))
        return x * mask

    def backward(self, dy):
        mask, shape, dtype = self._recall()
        check_grad(dy, shape, dtype)
        return dy if mask is None else dy * mask

    def extra_repr(self):
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Channel dropout: x (N, C, H, W); whole channels are zeroed together."""

    def _mask_shape(self, x):
        if x.ndim != 4:
            raise ValueError(f"Dropout2d expects (N, C, H, W), got shape {x.shape}")
        return x.shape[:2] + (1, 1)
