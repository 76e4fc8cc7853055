"""L2Normalize: the layer form of ``fc.nn.functional.normalize`` (x / max(||x||_2, eps) along dim)."""
from . import functional as NF
from .module import CachedModule


class L2Normalize(CachedModule):
    """x: (N, D) (or any shape) -> x / max(||x|| along ``dim``, eps)."""

    def __init__(self, dim=1, eps=1e-12):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x):
        y = NF.normalize(x, self.dim, self.eps)
        self._remember(x)
        return y

    def backward(self, dy):
        return NF.normalize_backward(dy, self._recall(), self.dim, self.eps)

    def extra_repr(self):
        return f"dim={self.dim}, eps={self.eps}"
