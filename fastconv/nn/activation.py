"""Element-wise activations and Softmax; each keeps what its derivative needs."""
import numpy as np
from scipy.special import erf

from .. import _backend
from .._validate import check_grad, check_input
from .module import CachedModule


class _Elementwise(CachedModule):
    """y = f(x); backward: dx = dy * f'(x), with f' from the cached (x, y)."""

    def forward(self, x):
        x = check_input(x, type(self).__name__)
        y = self.f(x)
        self._remember((x, y))
        return y

    def backward(self, dy):
        x, y = self._recall()
        check_grad(dy, y.shape, y.dtype)
        return dy * self.df(x, y)


class ReLU(CachedModule):
    """max(x, 0); derivative 1 where x > 0 (equivalently y > 0). Runs the backend's
    ``relu_forward`` / ``relu_backward`` kernels (docs/KERNELS.md); keeps only y."""

    def forward(self, x):
        x = check_input(x, "ReLU")
        kernels = _backend.backend_module()
        y = kernels.relu_forward(x)
        self._remember((kernels, y))
        return y

    def backward(self, dy):
        kernels, y = self._recall()
        check_grad(dy, y.shape, y.dtype)
        return kernels.relu_backward(dy, y)


class LeakyReLU(_Elementwise):
    """x if x > 0 else a*x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def f(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def df(self, x, y):
        return np.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)); derivative y(1 - y)."""

    def f(self, x):
        out = np.empty_like(x)
        pos = x >= 0
        out[pos] = 1 / (1 + np.exp(-x[pos]))
        ex = np.exp(x[~pos])
        out[~pos] = ex / (1 + ex)
        return out

    def df(self, x, y):
        return y * (1 - y)


class Tanh(_Elementwise):
    """tanh(x); derivative 1 - y^2."""

    def f(self, x):
        return np.tanh(x)

    def df(self, x, y):
        return 1 - y * y


class GELU(_Elementwise):
    """x Φ(x) with Φ the standard normal CDF (exact, erf form, as torch's default)."""

    def f(self, x):
        return x * 0.5 * (1 + erf(x / np.sqrt(2)).astype(x.dtype))

    def df(self, x, y):
        cdf = 0.5 * (1 + erf(x / np.sqrt(2)))
        pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
        return (cdf + x * pdf).astype(x.dtype)


class SiLU(_Elementwise):
    """Swish: x sigmoid(x); derivative s(1 + x(1 - s))."""

    def f(self, x):
        return x * Sigmoid.f(self, x)

    def df(self, x, y):
        s = Sigmoid.f(self, x)
        return s * (1 + x * (1 - s))


Swish = SiLU


class Softmax(CachedModule):
    """y = exp(x) / sum exp(x) along ``dim``; backward dx = y (dy - sum(dy y))."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        x = check_input(x, "Softmax")
        z = np.exp(x - x.max(axis=self.dim, keepdims=True))
        y = z / z.sum(axis=self.dim, keepdims=True)
        self._remember(y)
        return y

    def backward(self, dy):
        y = self._recall()
        check_grad(dy, y.shape, y.dtype)
        return y * (dy - (dy * y).sum(axis=self.dim, keepdims=True))
