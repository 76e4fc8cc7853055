"""Branching containers: ``Residual`` (y = main(x) + shortcut(x)) and ``Gate`` (y = x * gate(x)).

Backward sends dy into both branches and adds the input gradients they return:
Residual: dx = main.backward(dy) + shortcut.backward(dy).
Gate: the gate output g (e.g. (N, C, 1, 1) squeeze-excitation weights) broadcasts against x;
dx = dy g + gate.backward(sum of dy x over the broadcast axes).

Subclasses that must keep other parameter names (the face backbones mirror torch's state-dict
keys) register their layers under those names and override :meth:`branches`.
"""
import numpy as np

from .._validate import check_grad, check_input
from .module import CachedModule, Module, Sequential


def chain(*layers):
    """A Sequential of ``layers`` meant to be kept unregistered (``object.__setattr__``): it only
    fixes the order; the layers themselves are registered under their own names elsewhere."""
    return Sequential(*layers)


def sum_to_shape(a, shape):
    """Sum ``a`` over the axes where ``shape`` broadcast to ``a.shape`` (the adjoint of broadcasting)."""
    lead = a.ndim - len(shape)
    if lead:
        a = a.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=axes, keepdims=True) if axes else a


class Residual(Module):
    """y = main(x) + shortcut(x), or main(x) + x when ``shortcut`` is None; both terms share a shape."""

    def __init__(self, main, shortcut=None):
        super().__init__()
        if not isinstance(main, Module) or not (shortcut is None or isinstance(shortcut, Module)):
            raise TypeError("Residual takes Modules for main and shortcut")
        self.main = main
        self.shortcut = shortcut

    def branches(self):
        """``(main, shortcut)``: modules, the shortcut None for the identity."""
        return self.main, self.shortcut

    def forward(self, x):
        main, shortcut = self.branches()
        y, s = main(x), (x if shortcut is None else shortcut(x))
        if y.shape != s.shape:
            raise ValueError(f"{type(self).__name__}: main branch gives shape {y.shape} but the shortcut "
                             f"gives {s.shape}; they must match to be summed")
        return y + s

    def backward(self, dy):
        main, shortcut = self.branches()
        return main.backward(dy) + (dy if shortcut is None else shortcut.backward(dy))


class Gate(CachedModule):
    """y = x * gate(x), gate(x) broadcast against x (squeeze-excitation: (N, C, 1, 1) on (N, C, H, W))."""

    def __init__(self, gate):
        super().__init__()
        if not isinstance(gate, Module):
            raise TypeError(f"Gate takes a Module, got {type(gate).__name__}")
        self.gate = gate

    def branches(self):
        """``(gate,)``: the module computing the multiplier."""
        return (self.gate,)

    def forward(self, x):
        x = check_input(x, type(self).__name__)
        (gate,) = self.branches()
        g = gate(x)
        try:
            shape = np.broadcast_shapes(g.shape, x.shape)
        except ValueError:
            shape = None
        if shape != x.shape:
            raise ValueError(f"{type(self).__name__}: gate output {g.shape} does not broadcast to the "
                             f"input shape {x.shape}")
        self._remember((x, g))
        return x * g

    def backward(self, dy):
        x, g = self._recall()
        check_grad(dy, x.shape, x.dtype)
        (gate,) = self.branches()
        return dy * g + gate.backward(sum_to_shape(dy * x, g.shape))
