"""Winograd F(m x m, 3 x 3) convolution as a forward/backward pair (stride 1, dilation 1).

Same ``(y, cache)`` / ``(dx, dw, db)`` contract as :func:`fastconv.functional.conv_forward`;
the math is :mod:`fastconv.winograd`. Per call, with ``a = m + 2``, U = filter_in(w, G) cached
per layer (:class:`FilterCache`), and the tiles taken in blocks of ``tb`` (:func:`block_tiles`):

    forward   y = winograd_conv(x, U, b)          per block: V_b = B^T d B, M_b = U V_b
                                                  (a*a GEMMs), y_b = A^T M_b A + b
    dW        dU = winograd_filter_grad(x, dy)    per block: dM_b = A dy A^T, V_b recomputed
                                                  from x, dU += dM_b V_b^T (a*a GEMMs)
              dW = filter_out(dU, G^T)            (O, C, 3, 3)
    dx        winograd_conv of dy padded by 2 - p with the flipped, channel-transposed w

The kernels run in the current backend's Winograd module (reference, cython, numba).
"""
from types import SimpleNamespace

import numpy as np

from . import winograd as wino
from .cpu_cache import l2_cache_bytes

_MODULES = {
    "reference": "fastconv.winograd",
    "cython": "fastconv.kernels.cython_winograd",
    "numba": "fastconv.kernels.numba_winograd",
}
MIN_BLOCK_TILES = 64    # measured: below this the per-call cost of the a*a BLAS calls shows
MAX_BLOCK_TILES = 512
GRAD_BLOCK_FACTOR = 2   # the weight gradient's blocks are larger: each block also reads and
                        # writes the a*a*O*C accumulator


def winograd_module(backend):
    """The module holding ``backend``'s Winograd kernels (docs/KERNELS.md)."""
    import importlib

    if backend not in _MODULES:
        raise ValueError(f"backend {backend!r} has no Winograd transforms; expected one of "
                         f"{sorted(_MODULES)}")
    return importlib.import_module(_MODULES[backend])


def block_tiles(c, o, m, itemsize, l2_bytes=None):
    """Tiles per block: the block's transformed inputs and products, ``a*a (C + O) tb``
    elements, fill about twice the L2 cache (each of the a*a GEMMs then works on a slice of
    ``(C + O) tb`` of them, well inside L2), rounded down to a multiple of 8 (the transforms'
    vector width) and clipped to ``[MIN_BLOCK_TILES, MAX_BLOCK_TILES]``."""
    l2 = l2_cache_bytes() if l2_bytes is None else l2_bytes
    per_tile = (m + 2) ** 2 * (c + o) * itemsize
    tb = (2 * l2) // per_tile // 8 * 8
    return int(min(MAX_BLOCK_TILES, max(MIN_BLOCK_TILES, tb)))


class FilterCache:
    """Transformed weights of one layer, recomputed only when the weights change.

    ``get(kernels, w, m)`` returns ``(U, U_dx)``: U (a*a, O, C) for the forward and U_dx
    (a*a, C, O) for the input gradient (flipped, channel-transposed w). Change is detected by
    comparing ``w`` with the copy the transforms were made from (a memcmp-speed pass over the
    weights; it catches in-place optimiser updates, ``load_state_dict`` and any other write).
    """

    def __init__(self):
        self._entries = {}
        self.transforms = 0  # how many times the filter transform ran (tests read it)

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


def _correlate(kernels, x, u, bias, m, ph, pw, mats):
    """Stride-1 3x3 correlation of x (N, C, H, W) with pre-transformed filters u (a*a, O, C)
    (+ bias) -> y (N, O, H + 2ph - 2, W + 2pw - 2). A negative padding crops x."""
    at, _, bt = mats
    if ph < 0 or pw < 0:  # the input gradient of a layer with padding > 2
        x = np.ascontiguousarray(x[:, :, max(0, -ph):x.shape[2] - max(0, -ph),
                                   max(0, -pw):x.shape[3] - max(0, -pw)])
        ph, pw = max(ph, 0), max(pw, 0)
    tb = block_tiles(x.shape[1], u.shape[1], m, x.dtype.itemsize)
    return kernels.winograd_conv(x, u, bias, bt, at, ph, pw, tb)


def winograd_forward(x, w, bias, padding, m, backend, filter_cache=None):
    """x (N, C, H, W), w (O, C, 3, 3), bias (O,) or None, padding (ph, pw) -> (y, cache).

    Operands are validated by the caller (C-contiguous, one float dtype, 3x3 kernel). The
    cache keeps a reference to x (the weight gradient recomputes its transform)."""
    kernels = winograd_module(backend)
    cache_obj = filter_cache if filter_cache is not None else FilterCache()
    u, u_dx = cache_obj.get(kernels, w, m)
    mats = wino.matrices(m, x.dtype)
    ph, pw = padding
    y = _correlate(kernels, x, u, bias, m, ph, pw, mats)
    cache = SimpleNamespace(kernels=kernels, m=m, mats=mats, x=x, u_dx=u_dx, padding=(ph, pw),
                            x_shape=x.shape, w_shape=w.shape, has_bias=bias is not None,
                            out_shape=y.shape, dtype=x.dtype)
    return y, cache


def winograd_backward(dy, cache):
    """dy (N, O, oh, ow) (C-contiguous, forward dtype) -> (dx (N, C, H, W), dw (O, C, 3, 3), db)."""
    kernels, m, (at, g, bt) = cache.kernels, cache.m, cache.mats
    ph, pw = cache.padding
    x = cache.x
    tb = GRAD_BLOCK_FACTOR * block_tiles(x.shape[1], dy.shape[1], m, x.dtype.itemsize)
    du = kernels.winograd_filter_grad(x, dy, bt, np.ascontiguousarray(at.T), ph, pw, tb)  # (a*a, O, C)
    dw = kernels.winograd_filter_out(du, np.ascontiguousarray(g.T))
    db = dy.sum(axis=(0, 2, 3)) if cache.has_bias else None
    dx = _correlate(kernels, dy, cache.u_dx, None, m, 2 - ph, 2 - pw, cache.mats)
    return dx, dw, db
