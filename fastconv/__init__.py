"""fastconv: a CNN engine written from scratch, made fast.

>>> import fastconv as fc
>>> layer = fc.nn.Conv2d(3, 8, 3, stride=2, padding=1)
>>> y = layer(x); dx = layer.backward(dy)
"""
from . import functional, nn, optim
from ._backend import (available_backends, get_backend, register_backend, set_backend,
                       set_grain_size, set_num_threads, use_backend)
from .conv_algo import conv_algo_report, get_conv_algo, set_conv_algo, use_conv_algo
from .nn.module import is_grad_enabled, no_grad
from .random import manual_seed

__version__ = "0.1.0"
__all__ = ["nn", "optim", "functional", "available_backends", "get_backend", "set_backend",
           "use_backend", "set_num_threads", "set_grain_size", "register_backend", "manual_seed",
           "set_conv_algo", "get_conv_algo", "use_conv_algo", "conv_algo_report", "no_grad",
           "is_grad_enabled"]


def __getattr__(name):  # lazy: scanning/models pull in more code than most users need
    if name in ("scanning", "models"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")
