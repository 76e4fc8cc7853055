"""Module, Parameter and Sequential: the layer API every layer builds on.

A layer's ``forward(x)`` keeps what its backward needs; ``backward(dy)`` returns dL/dx and
*adds* dL/dθ into each ``Parameter.grad`` (call ``zero_grad()`` between steps). Inside
``with no_grad():`` forwards keep nothing (inference: no memory held for a backward).
"""
import contextlib
import threading
from collections import OrderedDict

import numpy as np


_grad_mode = threading.local()


def is_grad_enabled():
    """False inside :func:`no_grad` (in this thread): forwards then keep no backward caches."""
    return getattr(_grad_mode, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """``with fc.no_grad(): y = net(x)``: forwards keep no caches, so ``backward`` raises after them."""
    previous = is_grad_enabled()
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


_NO_CACHE = object()  # what a forward under no_grad() leaves instead of its cache


class Parameter:
    """A trainable array: ``data`` and its accumulated gradient ``grad`` (same shape and dtype)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        data = np.array(data, copy=True)
        if data.dtype not in (np.float32, np.float64):
            raise TypeError(f"Parameter data must be float32 or float64, got {data.dtype}")
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class. Parameters, buffers and sub-modules assigned as attributes are registered."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        for registry in (self._parameters, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A state array saved in ``state_dict`` but not trained (e.g. BatchNorm running stats)."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    # -- calling -----------------------------------------------------------------------
    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    # -- traversal ---------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    # -- state -------------------------------------------------------------------------
    def state_dict(self):
        """Copies of every parameter and buffer, keyed like PyTorch (``"0.weight"``)."""
        state = OrderedDict()
        for module_name, module in self.named_modules():
            pre = f"{module_name}." if module_name else ""
            for name, p in module._parameters.items():
                state[pre + name] = p.data.copy()
            for name, b in module._buffers.items():
                state[pre + name] = np.array(b, copy=True)
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays (NumPy, or anything ``np.asarray`` takes: torch tensors too) into place.

        Shapes must match; values are cast to each parameter's dtype. With ``strict``, missing
        and unexpected keys raise KeyError.
        """
        targets = {}
        for module_name, module in self.named_modules():
            pre = f"{module_name}." if module_name else ""
            for name in module._parameters:
                targets[pre + name] = (module, name, True)
            for name in module._buffers:
                targets[pre + name] = (module, name, False)
        if strict:
            missing = sorted(set(targets) - set(state))
            unexpected = sorted(set(state) - set(targets))
            if missing or unexpected:
                raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            if key not in targets:
                continue
            module, name, is_param = targets[key]
            current = module._parameters[name].data if is_param else getattr(module, name)
            value = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
            if value.shape != np.shape(current):
                raise ValueError(f"{key}: expected shape {np.shape(current)}, got {value.shape}")
            if is_param:
                module._parameters[name].data[...] = value
            else:
                current = np.asarray(current)
                current[...] = value
                module.register_buffer(name, current)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            lines.append(f"  ({name}): " + repr(m).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class Sequential(Module):
    """Chain of modules: forward in order, backward in reverse."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Modules, got {type(layer).__name__} at position {i}")
            setattr(self, str(i), layer)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, dy):
        for layer in reversed(self._modules.values()):
            dy = layer.backward(dy)
        return dy


class CachedModule(Module):
    """A module whose backward needs state from its last forward; guards against misuse."""

    def _remember(self, cache):
        object.__setattr__(self, "_cache", cache if is_grad_enabled() else _NO_CACHE)

    def _recall(self):
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if cache is _NO_CACHE:
            raise RuntimeError(f"{type(self).__name__}.backward called after a forward under no_grad(), "
                               f"which keeps nothing for a backward; run the forward outside no_grad()")
        return cache
