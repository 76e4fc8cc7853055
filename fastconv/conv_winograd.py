"""Winograd F(m x m, 3 x 3) convolution as a forward/backward pair (stride 1, dilation 1).

Same ``(y, cache)`` / ``(dx, dw, db)`` contract as :func:`fastconv.functional.conv_forward`;
the math is :mod:`fastconv.winograd`. Per call, with ``a = m + 2`` and T tiles:

    forward   V = tiles_in(x, B^T)                (a*a, C, T)   input transform
              M = U @ V                           (a*a, O, T)   a*a GEMMs, U = filter_in(w, G)
              y = tiles_out(M, A^T) + b           (N, O, oh, ow)
    dW        dM = tiles_in(dy, A)                (a*a, O, T)   transform of dy
              dU = dM @ V^T                       (a*a, O, C)   a*a GEMMs, V kept from forward
              dW = filter_out(dU, G^T)            (O, C, 3, 3)
    dx        the forward applied to dy padded by 2 - p, with w flipped and channel-transposed

The transforms run in the current backend's Winograd module (reference, cython, numba).
"""
from types import SimpleNamespace

import numpy as np

from . import winograd as wino

_MODULES = {
    "reference": "fastconv.winograd",
    "cython": "fastconv.kernels.cython_winograd",
    "numba": "fastconv.kernels.numba_winograd",
}


def winograd_module(backend):
    """The module holding ``backend``'s four Winograd transforms (docs/KERNELS.md)."""
    import importlib

    if backend not in _MODULES:
        raise ValueError(f"backend {backend!r} has no Winograd transforms; expected one of "
                         f"{sorted(_MODULES)}")
    return importlib.import_module(_MODULES[backend])


class FilterCache:
    """Transformed weights of one layer, recomputed only when the weights change.

    ``get(kernels, w, m)`` returns ``(U, U_dx)``: U (a*a, O, C) for the forward and U_dx
    (a*a, C, O) for the input gradient (flipped, channel-transposed w). Change is detected by
    comparing ``w`` with the copy the transforms were made from (a memcmp-speed pass over the
    weights; it catches in-place optimiser updates, ``load_state_dict`` and any other write).
    """

    def __init__(self):
        self._entries = {}
        self._buffers = {}
        self.transforms = 0  # how many times the filter transform ran (tests read it)

    def buffer(self, name, shape, dtype):
        """A scratch array kept between calls (the GEMM products, used up by the output
        transform within the call): reusing it saves the page faults of a fresh allocation."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype=dtype)
        return buf

    def get(self, kernels, w, m):
        key = (kernels.NAME, m, w.dtype.str, w.shape)
        hit = self._entries.get(key)
        if hit is not None and np.array_equal(hit[0], w):
            return hit[1], hit[2]
        _, g, _ = wino.matrices(m, w.dtype)
        u = kernels.winograd_filter_in(w, g)
        u_dx = kernels.winograd_filter_in(np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)), g)
        self._entries = {key: (w.copy(), u, u_dx)}
        self.transforms += 1
        return u, u_dx


def _correlate(kernels, x, u, m, ph, pw, mats, scratch=None):
    """Stride-1 3x3 correlation of x (N, C, H, W) with pre-transformed filters u (a*a, O, C).

    Returns ``(y (N, O, H + 2ph - 2, W + 2pw - 2), V)``. A negative padding crops x.
    ``scratch``: ``(FilterCache, name)`` whose buffer receives the GEMM product, or None."""
    at, _, bt = mats
    if ph < 0 or pw < 0:  # the input gradient of a layer with padding > 2
        x = np.ascontiguousarray(x[:, :, max(0, -ph):x.shape[2] - max(0, -ph),
                                   max(0, -pw):x.shape[3] - max(0, -pw)])
        ph, pw = max(ph, 0), max(pw, 0)
    n, _, h, w = x.shape
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = wino.tile_grid(oh, ow, m)
    v = kernels.winograd_tiles_in(x, bt, m, ph, pw, th, tw)   # (a*a, C, T)
    shape = (u.shape[0], u.shape[1], v.shape[2])
    out = None if scratch is None else scratch[0].buffer(scratch[1], shape, v.dtype)
    prod = np.matmul(u, v, out=out)                            # (a*a, O, T)
    return kernels.winograd_tiles_out(prod, at, n, oh, ow, th, tw), v


def winograd_forward(x, w, bias, padding, m, backend, filter_cache=None):
    """x (N, C, H, W), w (O, C, 3, 3), bias (O,) or None, padding (ph, pw) -> (y, cache).

    Operands are validated by the caller (C-contiguous, one float dtype, 3x3 kernel)."""
    kernels = winograd_module(backend)
    cache_obj = filter_cache if filter_cache is not None else FilterCache()
    u, u_dx = cache_obj.get(kernels, w, m)
    mats = wino.matrices(m, x.dtype)
    ph, pw = padding
    y, v = _correlate(kernels, x, u, m, ph, pw, mats, None if filter_cache is None else (filter_cache, "y"))
    if bias is not None:
        y += bias[:, None, None]
    cache = SimpleNamespace(kernels=kernels, m=m, mats=mats, v=v, u_dx=u_dx, padding=(ph, pw), filters=filter_cache,
                            x_shape=x.shape, w_shape=w.shape, has_bias=bias is not None,
                            out_shape=y.shape, dtype=x.dtype)
    return y, cache


def winograd_backward(dy, cache):
    """dy (N, O, oh, ow) (C-contiguous, forward dtype) -> (dx (N, C, H, W), dw (O, C, 3, 3), db)."""
    kernels, m, (at, g, bt) = cache.kernels, cache.m, cache.mats
    n, o, oh, ow = dy.shape
    ph, pw = cache.padding
    th, tw = wino.tile_grid(oh, ow, m)
    dm = kernels.winograd_tiles_in(dy, np.ascontiguousarray(at.T), m, 0, 0, th, tw)  # (a*a, O, T)
    du = np.matmul(dm, cache.v.transpose(0, 2, 1))                                     # (a*a, O, C)
    dw = kernels.winograd_filter_out(du, np.ascontiguousarray(g.T))
    db = dy.sum(axis=(0, 2, 3)) if cache.has_bias else None
    scratch = None if cache.filters is None else (cache.filters, "dx")
    dx, _ = _correlate(kernels, dy, cache.u_dx, m, 2 - ph, 2 - pw, cache.mats, scratch)
    return dx, dw, db
