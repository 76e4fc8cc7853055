"""Batch normalisation over the channel axis, PyTorch semantics.

Training: normalise with the batch mean and biased variance, update running stats with the
unbiased variance (``running = (1 - momentum) running + momentum batch``). Eval: running stats.
"""
import numpy as np

from .._validate import check_channels, check_grad, check_input, float_dtype, same_dtype
from .module import CachedModule, Parameter


class _BatchNorm(CachedModule):
    ndims = (2, 4)
    layout = "(N, C, H, W)"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float64):
        super().__init__()
        check_channels(num_features=num_features)
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = float_dtype(dtype)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))

    def _axes(self, x):
        x = check_input(x, type(self).__name__)
        if x.ndim not in self.ndims:
            raise ValueError(f"{type(self).__name__} expects {self.layout}, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels, got {x.shape[1]}")
        if self.affine:
            same_dtype(x, self.weight.data, "input", "weight")
        elif self.track_running_stats:
            same_dtype(x, self.running_mean, "input", "running_mean")
        return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x):
        axes, bshape = self._axes(x)
        if self.training or not self.track_running_stats:
            count = x.size // x.shape[1]
            if count < 2 and self.training:
                raise ValueError(f"{type(self).__name__} needs more than 1 value per channel in training, "
                                 f"got input shape {x.shape}")
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            if self.training and self.track_running_stats:
                m = self.momentum
                self.running_mean[...] = (1 - m) * self.running_mean + m * mean
                self.running_var[...] = (1 - m) * self.running_var + m * var * count / (count - 1)
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)
        y = xhat * self.weight.data.reshape(bshape) + self.bias.data.reshape(bshape) if self.affine else xhat
        batch_stats = self.training or not self.track_running_stats
        self._remember((xhat, inv_std, axes, bshape, batch_stats))
        return y.astype(x.dtype, copy=False)

    def backward(self, dy):
        xhat, inv_std, axes, bshape, batch_stats = self._recall()
        check_grad(dy, xhat.shape, xhat.dtype)
        if self.affine:
            self.weight.grad += (dy * xhat).sum(axis=axes)
            self.bias.grad += dy.sum(axis=axes)
            dxhat = dy * self.weight.data.reshape(bshape)
        else:
            dxhat = dy
        if not batch_stats:  # running statistics are constants
            return dxhat * inv_std.reshape(bshape)
        mean_dxhat = dxhat.mean(axis=axes, keepdims=True)
        mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)
        return inv_std.reshape(bshape) * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """x: (N, C) or (N, C, L); statistics per channel over N (and L)."""
    ndims = (2, 3)
    layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """x: (N, C, H, W); statistics per channel over N, H, W."""
    ndims = (4,)
    layout = "(N, C, H, W)"
