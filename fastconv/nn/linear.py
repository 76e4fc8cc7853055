"""Linear, Flatten and Identity."""
import math

import numpy as np

from .._validate import check_channels, check_grad, check_input, float_dtype, same_dtype
from ..random import uniform
from .module import CachedModule, Module, Parameter


class Linear(CachedModule):
    """x: (N, *, in_features) -> y = x W^T + b: (N, *, out_features); weight (out, in), bias (out,)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float64):
        super().__init__()
        check_channels(in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = int(in_features), int(out_features)
        dtype = float_dtype(dtype)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter(uniform(bound, (self.out_features, self.in_features), dtype))
        self.bias = Parameter(uniform(bound, (self.out_features,), dtype)) if bias else None

    def forward(self, x):
        x = check_input(x, "Linear")
        same_dtype(x, self.weight.data, "input", "weight")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects input (..., {self.in_features}), got shape {x.shape}")
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        self._remember((x, y.shape))
        return y

    def backward(self, dy):
        x, out_shape = self._recall()
        check_grad(dy, out_shape, x.dtype)
        x2 = x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        self.weight.grad += dy2.T @ x2
        if self.bias is not None:
            self.bias.grad += dy2.sum(axis=0)
        return dy @ self.weight.data

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Flatten(CachedModule):
    """x: (N, d1, d2, ...) -> (N, d1*d2*...) for the dims from ``start_dim`` on."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        x = check_input(x, "Flatten")
        if x.ndim <= self.start_dim:
            raise ValueError(f"Flatten(start_dim={self.start_dim}) needs at least "
                             f"{self.start_dim + 1} dims, got shape {x.shape}")
        self._remember((x.shape, x.dtype))
        return x.reshape(x.shape[:self.start_dim] + (-1,))

    def backward(self, dy):
        shape, dtype = self._recall()
        return check_grad(dy, shape[:self.start_dim] + (math.prod(shape[self.start_dim:]),), dtype).reshape(shape)


class Identity(Module):
    """y = x."""

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy
