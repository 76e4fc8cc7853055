"""PReLU: ``y = x`` where ``x > 0``, else ``a x``, with one slope ``a`` or one per channel (axis 1)."""
import numpy as np

from .._validate import check_grad, check_input, same_dtype

from .module import CachedModule, Parameter


class PReLU(CachedModule):
    """x: (N, C, *) -> same shape. weight: (num_parameters,), 1 (shared) or C (per channel).

    dx = dy where x > 0 else a dy;  da_c = sum over all but axis 1 of (x dy where x <= 0).
    """

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float64):
        super().__init__()
        if isinstance(num_parameters, bool) or not isinstance(num_parameters, (int, np.integer)) \
                or num_parameters < 1:
            raise ValueError(f"num_parameters must be an int >= 1, got {num_parameters!r}")
        self.num_parameters = int(num_parameters)
        self.weight = Parameter(np.full(self.num_parameters, init, dtype=np.dtype(dtype)))

    def _slope_shape(self, x):
        if self.num_parameters == 1:
            return (1,) * x.ndim
        if x.ndim < 2 or x.shape[1] != self.num_parameters:
            raise ValueError(f"PReLU({self.num_parameters}) expects (N, {self.num_parameters}, *), "
                             f"got shape {x.shape}")
        return (1, self.num_parameters) + (1,) * (x.ndim - 2)

    def forward(self, x):
        x = check_input(x, "PReLU")
        same_dtype(x, self.weight.data, "input", "weight")
        a = self.weight.data.reshape(self._slope_shape(x))
        positive = x > 0
        self._remember((x, positive, a))
        return np.where(positive, x, a * x)

    def backward(self, dy):
        x, positive, a = self._recall()
        check_grad(dy, x.shape, x.dtype)
        negative_part = np.where(positive, 0, x * dy)
        if self.num_parameters == 1:
            self.weight.grad += negative_part.sum()
        else:
            axes = (0,) + tuple(range(2, x.ndim))
            self.weight.grad += negative_part.sum(axis=axes)
        return np.where(positive, dy, a * dy)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"
