"""Winograd F(m x m, 3 x 3) convolution as a forward/backward pair (stride 1, dilation 1).

Same ``(y, cache)`` / ``(dx, dw, db)`` contract as :func:`fastconv.functional.conv_forward`;
the math is :mod:`fastconv.winograd`. Two designs (``batched``), with ``a = m + 2`` and
U = filter_in(w, G) cached per layer (:class:`FilterCache`).

Fused (``"winograd_f*"``), the tiles taken in blocks of ``tb`` (:func:`block_tiles`), BLAS on one
thread inside the kernels' own parallel loop:

    forward   y = winograd_conv(x, U, b)          per block: V_b = B^T d B, M_b = U V_b
                                                  (a*a GEMMs), y_b = A^T M_b A + b; with
                                                  keep_v, V_b is written into the stored V
    dW        dU = winograd_filter_grad(x, dy)    per block: dM_b = A dy A^T, V_b read from
                                                  the stored V (or recomputed from x),
                                                  dU += dM_b V_b^T (a*a GEMMs)
              dW = filter_out(dU, G^T)            (O, C, 3, 3)
    dx        winograd_conv of dy padded by 2 - p with the flipped, channel-transposed w

Batched (``"winograd_batched_f*"``), whole-batch passes with the a*a GEMMs over all T tiles
(``np.matmul``; on more than one thread the a*a positions are split over a thread team, each
thread's GEMMs on single-threaded BLAS: :func:`fastconv._blas.team_matmul`):

    forward   V = tiles_in(x, B^T)                (a*a, C, T)   kept for dW when a backward follows
              M = U @ V                           (a*a, O, T)   a*a GEMMs
              y = tiles_out(M, A^T) + b           (N, O, oh, ow)
    dW        dM = tiles_in(dy, A)                (a*a, O, T)
              dU = dM @ V^T                       (a*a, O, C)   a*a GEMMs (V recomputed if not kept)
    dx        the batched forward on dy padded by 2 - p with the flipped, channel-transposed w

The kernels run in the current backend's Winograd module (reference, cython, numba).
"""
from types import SimpleNamespace

import numpy as np

from . import _blas
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
        self._buffers = {}
        self.transforms = 0  # how many times the filter transform ran (tests read it)

    def buffer(self, name, shape, dtype):
        """A scratch array kept between calls (the batched design's GEMM products, used up by
        the output transform within the call): reusing it saves a fresh allocation's page faults."""
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


def _crop(x, ph, pw):
    """x (N, C, H, W) with a negative padding cropped off (the input gradient of a layer with
    padding > 2) -> (x, ph, pw), ph, pw >= 0."""
    if ph < 0 or pw < 0:
        x = np.ascontiguousarray(x[:, :, max(0, -ph):x.shape[2] - max(0, -ph),
                                   max(0, -pw):x.shape[3] - max(0, -pw)])
    return x, max(ph, 0), max(pw, 0)


def _correlate(kernels, x, u, bias, m, ph, pw, mats, keep_v=False):
    """Stride-1 3x3 correlation of x (N, C, H, W) with pre-transformed filters u (a*a, O, C)
    (+ bias), fused kernel -> (y (N, O, H + 2ph - 2, W + 2pw - 2), tb, V): V (a*a*C*T,) the
    input transform in block layout when ``keep_v`` (ph, pw >= 0), else None."""
    at, _, bt = mats
    x, ph, pw = _crop(x, ph, pw)
    tb = block_tiles(x.shape[1], u.shape[1], m, x.dtype.itemsize)
    v = None
    if keep_v:
        th, tw = wino.tile_grid(x.shape[2] + 2 * ph - 2, x.shape[3] + 2 * pw - 2, m)
        v = np.empty((m + 2) ** 2 * x.shape[1] * x.shape[0] * th * tw, dtype=x.dtype)
    return kernels.winograd_conv(x, u, bias, bt, at, ph, pw, tb, v), tb, v


def _correlate_batched(kernels, x, u, bias, m, ph, pw, mats, scratch):
    """The same correlation, batched: V = tiles_in(x, B^T) (a*a, C, T), M = u @ V (a*a GEMMs
    over all tiles, into ``scratch``'s buffer), y = tiles_out(M, A^T) + bias -> (y, V).
    ``scratch``: ``(FilterCache, name)``."""
    at, _, bt = mats
    x, ph, pw = _crop(x, ph, pw)
    n, _, h, w = x.shape
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = wino.tile_grid(oh, ow, m)
    v = kernels.winograd_tiles_in(x, bt, m, ph, pw, th, tw)
    prod = _blas.team_matmul(u, v, scratch[0].buffer(scratch[1], (u.shape[0], u.shape[1], v.shape[2]), v.dtype),
                             _blas.backend_threads(kernels))
    return kernels.winograd_tiles_out(prod, at, n, oh, ow, th, tw, bias), v


def winograd_forward(x, w, bias, padding, m, backend, filter_cache=None, keep_v=False, batched=False):
    """x (N, C, H, W), w (O, C, 3, 3), bias (O,) or None, padding (ph, pw) -> (y, cache).

    Operands are validated by the caller (C-contiguous, one float dtype, 3x3 kernel). The
    cache keeps a reference to x, and with ``keep_v`` (a backward will follow) the input
    transform V (a*a*C*T values), which the weight gradient then reads instead of
    recomputing it from x. ``batched``: the batched design instead of the fused kernels."""
    kernels = winograd_module(backend)
    cache_obj = filter_cache if filter_cache is not None else FilterCache()
    u, u_dx = cache_obj.get(kernels, w, m)
    mats = wino.matrices(m, x.dtype)
    ph, pw = padding
    if batched:
        y, v = _correlate_batched(kernels, x, u, bias, m, ph, pw, mats, (cache_obj, "y"))
        tb, v = None, v if keep_v else None
    else:
        y, tb, v = _correlate(kernels, x, u, bias, m, ph, pw, mats, keep_v)
    cache = SimpleNamespace(kernels=kernels, m=m, mats=mats, x=x, u_dx=u_dx, padding=(ph, pw), v=v, tb=tb,
                            batched=batched, filters=cache_obj, x_shape=x.shape, w_shape=w.shape,
                            has_bias=bias is not None, out_shape=y.shape, dtype=x.dtype)
    return y, cache


def _filter_grad_batched(kernels, x, dy, bt, a_mat, m, ph, pw, v):
    """dU (a*a, O, C) = dM @ V^T over all tiles, dM = tiles_in(dy, A); V: the forward's (a*a,
    C, T), or None: recomputed from x."""
    th, tw = wino.tile_grid(dy.shape[2], dy.shape[3], m)
    dm = kernels.winograd_tiles_in(dy, a_mat, m, 0, 0, th, tw)   # (a*a, O, T)
    if v is None:
        v = kernels.winograd_tiles_in(x, bt, m, ph, pw, th, tw)  # (a*a, C, T)
    return _blas.team_matmul(dm, v.transpose(0, 2, 1), np.empty((dm.shape[0], dm.shape[1], v.shape[1]), dm.dtype),
                             _blas.backend_threads(kernels))


def winograd_backward(dy, cache):
    """dy (N, O, oh, ow) (C-contiguous, forward dtype) -> (dx (N, C, H, W), dw (O, C, 3, 3), db)."""
    kernels, m, (at, g, bt) = cache.kernels, cache.m, cache.mats
    ph, pw = cache.padding
    x, a_mat = cache.x, np.ascontiguousarray(at.T)
    if cache.batched:
        du = _filter_grad_batched(kernels, x, dy, bt, a_mat, m, ph, pw, cache.v)
        dx = _correlate_batched(kernels, dy, cache.u_dx, None, m, 2 - ph, 2 - pw, cache.mats,
                                (cache.filters, "dx"))[0]
    else:
        # the stored V is in the forward's blocks; recomputing it, larger blocks measured faster
        tb = cache.tb if cache.v is not None else GRAD_BLOCK_FACTOR * block_tiles(
            x.shape[1], dy.shape[1], m, x.dtype.itemsize)
        du = kernels.winograd_filter_grad(x, dy, bt, a_mat, ph, pw, tb, cache.v)  # (a*a, O, C)
        dx = _correlate(kernels, dy, cache.u_dx, None, m, 2 - ph, 2 - pw, cache.mats)[0]
    dw = kernels.winograd_filter_out(du, np.ascontiguousarray(g.T))
    db = dy.sum(axis=(0, 2, 3)) if cache.has_bias else None
    return dx, dw, db
