"""Convolution layers: Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d (PyTorch layouts)."""
import math

import numpy as np

from .. import conv_algo
from .. import functional as F
from .._validate import check_channels, check_size, float_dtype, int_tuple
from ..conv_winograd import FilterCache
from ..random import uniform
from .module import CachedModule, Parameter, is_grad_enabled


class _ConvNd(CachedModule):
    """Shared init: weight U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch's default, bias likewise.

    kernel_size, stride, padding, dilation, output_padding: validated once here and stored as
    ``nd``-tuples, which go unchanged to ``fastconv.functional``. ``groups`` splits the channels
    into that many blocks (both counts divisible by it; ``groups = in_channels`` is depthwise).
    """

    transposed = False

    def __init__(self, nd, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 bias, dtype, output_padding=0, groups=1):
        super().__init__()
        check_channels(in_channels=in_channels, out_channels=out_channels, groups=groups)
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                             f"by groups ({groups})")
        self.kernel_size = int_tuple(kernel_size, nd, "kernel_size", 1)
        self.stride = int_tuple(stride, nd, "stride", 1)
        self.padding = int_tuple(padding, nd, "padding", 0)
        self.dilation = int_tuple(dilation, nd, "dilation", 1)
        self.output_padding = int_tuple(output_padding, nd, "output_padding", 0)
        dtype = float_dtype(dtype)
        check_size("weight", self.in_channels, self.out_channels, *self.kernel_size)
        if self.transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        fan_in = shape[1] * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = Parameter(uniform(bound, shape, dtype))
        self.bias = Parameter(uniform(bound, (self.out_channels,), dtype)) if bias else None

    def forward(self, x):
        b = None if self.bias is None else self.bias.data
        if self.transposed:
            y, cache = F.conv_transpose_forward(x, self.weight.data, b, self.stride, self.padding,
                                                self.output_padding, self.dilation, self.groups)
        else:
            y, cache = F.conv_forward(x, self.weight.data, b, self.stride, self.padding, self.dilation,
                                      self.groups)
        self._remember(cache)
        return y

    def _conv_backward(self, dy, cache):
        return (F.conv_transpose_backward if self.transposed else F.conv_backward)(dy, cache)

    def backward(self, dy):
        dx, dw, db = self._conv_backward(dy, self._recall())
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}")
        if self.transposed:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}, dtype={self.weight.dtype}"


class Conv1d(_ConvNd):
    """x: (N, C_in, W) -> (N, C_out, W_out), ``W_out = floor((W + 2p - d(k-1) - 1)/s) + 1``.

    weight: (C_out, C_in/groups, k); bias: (C_out,).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, dtype=np.float64, groups=1):
        super().__init__(1, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, dtype,
                         groups=groups)


class Conv2d(_ConvNd):
    """x: (N, C_in, H, W) -> (N, C_out, H_out, W_out), ``H_out = floor((H + 2p - d(k-1) - 1)/s) + 1``.

    weight: (C_out, C_in/groups, kh, kw); bias: (C_out,). ``algo``: "im2col", "winograd",
    "winograd_f2", "winograd_f4", "winograd_batched" (= "winograd_batched_f4") or "auto"
    (fastest measured); None follows
    :func:`fastconv.set_conv_algo` (see :mod:`fastconv.conv_algo`).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, dtype=np.float64, groups=1, algo=None):
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, dtype,
                         groups=groups)
        self.algo = conv_algo.check_layer_algo(algo, self.kernel_size, self.stride, self.dilation,
                                               self.groups)
        self._filter_cache = FilterCache()  # Winograd-transformed weights, refreshed when they change

    def forward(self, x):
        b = None if self.bias is None else self.bias.data
        y, cache = conv_algo.conv2d_forward(x, self.weight.data, b, self.stride, self.padding,
                                            self.dilation, self.algo, self._filter_cache, self.groups,
                                            keep_v=self.training and is_grad_enabled())
        self._remember(cache)
        return y

    def _conv_backward(self, dy, cache):
        return conv_algo.conv2d_backward(dy, cache)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.algo is None else f", algo={self.algo!r}")


class ConvTranspose1d(_ConvNd):
    """x: (N, C_in, W) -> (N, C_out, W_out), ``W_out = (W-1)s - 2p + d(k-1) + output_padding + 1``.

    weight: (C_in, C_out/groups, k); bias: (C_out,).
    """

    transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True, dilation=1, dtype=np.float64, groups=1):
        super().__init__(1, in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                         dtype, output_padding, groups)


class ConvTranspose2d(_ConvNd):
    """x: (N, C_in, H, W) -> (N, C_out, H_out, W_out), ``H_out = (H-1)s - 2p + d(k-1) + output_padding + 1``.

    weight: (C_in, C_out/groups, kh, kw); bias: (C_out,).
    """

    transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True, dilation=1, dtype=np.float64, groups=1):
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                         dtype, output_padding, groups)
