"""Batch normalisation over the channel axis, PyTorch semantics.

Training: normalise with the batch mean and biased variance, update running stats with the
unbiased variance (``running = (1 - momentum) running + momentum batch``). Eval: running stats.
The statistics, the normalisation and its gradient run in the backend's kernels
(``batchnorm_stats`` / ``batchnorm_forward`` / ``batchnorm_backward``, docs/KERNELS.md) on x
seen as (N, C, L).
"""
import numpy as np

from .. import _backend
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

    def _check(self, x):
        """x: an ndarray of the layer's layout, channel count and dtype (else TypeError/ValueError)."""
        x = check_input(x, type(self).__name__)
        if x.ndim not in self.ndims:
            raise ValueError(f"{type(self).__name__} expects {self.layout}, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels, got {x.shape[1]}")
        if self.affine:
            same_dtype(x, self.weight.data, "input", "weight")
        elif self.track_running_stats:
            same_dtype(x, self.running_mean, "input", "running_mean")

    def forward(self, x):
        self._check(x)
        n, c = x.shape[:2]
        x3 = np.ascontiguousarray(x).reshape(n, c, -1)  # (N, C, L): the kernels' layout
        kernels = _backend.backend_module()
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            count = x3.shape[0] * x3.shape[2]
            if count < 2 and self.training:
                raise ValueError(f"{type(self).__name__} needs more than 1 value per channel in training, "
                                 f"got input shape {x.shape}")
            mean, var = kernels.batchnorm_stats(x3)
            if self.training and self.track_running_stats:
                m = self.momentum
                self.running_mean[...] = (1 - m) * self.running_mean + m * mean
                self.running_var[...] = (1 - m) * self.running_var + m * var * count / (count - 1)
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype, copy=False)
        weight, bias = self._affine(x.dtype)
        y = kernels.batchnorm_forward(x3, mean.astype(x.dtype, copy=False), inv_std, weight, bias)
        self._remember((kernels, x3, mean, inv_std, batch_stats, x.shape))
        return y.reshape(x.shape)

    def _affine(self, dtype):
        """(weight, bias) of the affine map; ones and zeros without one."""
        if self.affine:
            return self.weight.data, self.bias.data
        return np.ones(self.num_features, dtype), np.zeros(self.num_features, dtype)

    def backward(self, dy):
        kernels, x3, mean, inv_std, batch_stats, shape = self._recall()
        check_grad(dy, shape, x3.dtype)
        dy3 = np.ascontiguousarray(dy).reshape(x3.shape)
        weight = self._affine(x3.dtype)[0]
        if batch_stats:
            dx, dweight, dbias = kernels.batchnorm_backward(dy3, x3, mean, inv_std, weight)
        else:  # running statistics are constants: dx = dy * weight * inv_std
            per_channel = (1, -1, 1)
            xhat = (x3 - mean.reshape(per_channel)) * inv_std.reshape(per_channel)
            dweight, dbias = (dy3 * xhat).sum(axis=(0, 2)), dy3.sum(axis=(0, 2))
            dx = dy3 * (weight * inv_std).reshape(per_channel)
        if self.affine:
            self.weight.grad += dweight
            self.bias.grad += dbias
        return dx.reshape(shape)

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
