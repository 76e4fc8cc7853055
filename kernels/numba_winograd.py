"""Numba twins of the Winograd transforms of ``fastconv.winograd`` (docs/KERNELS.md).

Same four functions and signatures as the reference. Each runs an ``@njit(parallel=True)``
kernel with ``prange`` over rows of tiles (one (n, c, tile-row) per task; output channels for
the filter transforms); inside a task the tile index is the innermost loop, so LLVM vectorises
over tiles and each of the a*a positions is written as a contiguous run of tiles: the GEMM
operands come out in the (a*a, channels, tiles) layout BLAS reads. Every task writes its own
elements only. Shapes and integer arguments are checked before a kernel runs; reads outside
the image are the zero padding, so no argument reads or writes out of bounds.
"""
import numpy as np
from numba import njit, prange

from fastconv._validate import check_index

from .numba_kernels import _launch  # and so numba_kernels' grain size (fc.set_grain_size)

NAME = "numba"
_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True)
_AMAX = 8
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(**_JIT)
def _tiles_in(x, L, m, ph, pw, th, tw, out):
    n_img, C, H, W = x.shape
    a, r = L.shape
    cols = (tw - 1) * m + r
    for task in prange(n_img * C * th):
        ti = task % th
        c = (task // th) % C
        n = task // (th * C)
        seg = np.zeros((r, cols), dtype=x.dtype)  # the r input rows of this tile row, padded
        for i in range(r):
            row = ti * m + i - ph
            if 0 <= row < H:
                for k in range(cols):
                    col = k - pw
                    if 0 <= col < W:
                        seg[i, k] = x[n, c, row, col]
        t1 = np.zeros((r, a, tw), dtype=x.dtype)  # row pass: t1[i, v] = sum_j L[v, j] d[i, j]
        for i in range(r):
            for v in range(a):
                for j in range(r):
                    cf = L[v, j]
                    if cf != 0:
                        for tj in range(tw):
                            t1[i, v, tj] += cf * seg[i, tj * m + j]
        t0 = (n * th + ti) * tw
        for u in range(a):
            for v in range(a):
                acc = np.zeros(tw, dtype=x.dtype)
                for i in range(r):
                    cf = L[u, i]
                    if cf != 0:
                        for tj in range(tw):
                            acc[tj] += cf * t1[i, v, tj]
                out[u * a + v, c, t0:t0 + tw] = acc


@njit(**_JIT)
def _tiles_out(M, R, n_img, oh, ow, th, tw, y):
    m, a = R.shape
    O = M.shape[1]
    for task in prange(n_img * O * th):
        ti = task % th
        o = (task // th) % O
        b = task // (th * O)
        t0 = (b * th + ti) * tw
        t1 = np.zeros((a, m, tw), dtype=M.dtype)  # t1[u, j] = sum_v R[j, v] M[u, v]
        for u in range(a):
            for j in range(m):
                for v in range(a):
                    cf = R[j, v]
                    if cf != 0:
                        for tj in range(tw):
                            t1[u, j, tj] += cf * M[u * a + v, o, t0 + tj]
        row_buf = np.empty(tw * m, dtype=M.dtype)
        for i in range(m):
            row = ti * m + i
            if row >= oh:
                break
            for j in range(m):
                acc = np.zeros(tw, dtype=M.dtype)
                for u in range(a):
                    cf = R[i, u]
                    if cf != 0:
                        for tj in range(tw):
                            acc[tj] += cf * t1[u, j, tj]
                for tj in range(tw):
                    row_buf[tj * m + j] = acc[tj]
            y[b, o, row, :] = row_buf[:ow]


@njit(**_JIT)
def _sandwich_all(g, P, out):
    """out[o, c] = P g[o, c] P^T for every (o, c): g (O, C, p, p), P (q, p), out (O, C, q, q)."""
    O, C, p, _ = g.shape
    q = P.shape[0]
    for o in prange(O):
        t = np.empty((q, p), dtype=g.dtype)
        for c in range(C):
            for u in range(q):
                for j in range(p):
                    t[u, j] = 0
                    for i in range(p):
                        t[u, j] += P[u, i] * g[o, c, i, j]
            for u in range(q):
                for v in range(q):
                    out[o, c, u, v] = 0
                    for j in range(p):
                        out[o, c, u, v] += P[v, j] * t[u, j]


def _array(x, name, ndim):
    if not isinstance(x, np.ndarray) or x.dtype not in _FLOATS or x.ndim != ndim:
        raise TypeError(f"{name} must be a {ndim}-D float32/float64 ndarray")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return x


def _matrix(mat, name, dtype):
    mat = _array(mat, name, 2)
    if mat.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {mat.dtype}")
    rows, cols = mat.shape
    if not (1 <= rows <= _AMAX and 1 <= cols <= _AMAX):
        raise ValueError(f"{name} must be between 1x1 and {_AMAX}x{_AMAX}, got {rows}x{cols}")
    return mat


def _tiles(m, th, tw):
    """Ints in [1, INDEX_MAX] (fastconv._validate), so no index product wraps int64."""
    return [check_index(v, name, 1) for v, name in ((m, "m"), (th, "th"), (tw, "tw"))]


def winograd_tiles_in(x, L, m, ph, pw, th, tw):
    """x (N, C, H, W), L (a, r) -> V (a*a, C, N*th*tw); see fastconv.winograd.winograd_tiles_in."""
    x = _array(x, "x", 4)
    L = _matrix(L, "L", x.dtype)
    m, th, tw = _tiles(m, th, tw)
    ph, pw = check_index(ph, "ph", 0), check_index(pw, "pw", 0)
    n, c, _, _ = x.shape
    a = L.shape[0]
    out = np.empty((a * a, c, n * th * tw), dtype=x.dtype)
    _launch(_tiles_in, out.size, x, L, m, ph, pw, th, tw, out)
    return out


def winograd_tiles_out(M, R, n, oh, ow, th, tw):
    """M (a*a, O, n*th*tw), R (m, a) -> y (n, O, oh, ow); see fastconv.winograd.winograd_tiles_out."""
    M = _array(M, "M", 3)
    R = _matrix(R, "R", M.dtype)
    m, a = R.shape
    _, th, tw = _tiles(m, th, tw)
    n = check_index(n, "n", 1)
    if M.shape[0] != a * a or M.shape[2] != n * th * tw:
        raise ValueError(f"M must have shape ({a * a}, O, {n * th * tw}) for n={n}, th={th}, "
                         f"tw={tw}, got {M.shape}")
    if not ((th - 1) * m < oh <= th * m and (tw - 1) * m < ow <= tw * m):
        raise ValueError(f"a {th}x{tw} grid of {m}x{m} tiles does not cover exactly an "
                         f"{oh}x{ow} output")
    y = np.empty((n, M.shape[1], oh, ow), dtype=M.dtype)
    _launch(_tiles_out, M.size, M, R, n, oh, ow, th, tw, y)
    return y


def winograd_filter_in(w, G):
    """w (O, C, r, r), G (a, r) -> U (a*a, O, C) with U = G g G^T per filter."""
    w = _array(w, "w", 4)
    G = _matrix(G, "G", w.dtype)
    a, r = G.shape
    if w.shape[2:] != (r, r):
        raise ValueError(f"w must have {r}x{r} filters for a G with {r} columns, got {w.shape[2:]}")
    out = np.empty(w.shape[:2] + (a, a), dtype=w.dtype)
    _launch(_sandwich_all, out.size, w, G, out)
    return np.ascontiguousarray(out.reshape(w.shape[0], w.shape[1], a * a).transpose(2, 0, 1))


def winograd_filter_out(dU, GT):
    """dU (a*a, O, C), GT (r, a) -> dW (O, C, r, r) with dW = G^T dU G per filter."""
    dU = _array(dU, "dU", 3)
    GT = _matrix(GT, "GT", dU.dtype)
    r, a = GT.shape
    if dU.shape[0] != a * a:
        raise ValueError(f"dU must have {a * a} positions for a GT with {a} columns, got {dU.shape[0]}")
    g = np.ascontiguousarray(dU.reshape(a, a, dU.shape[1], dU.shape[2]).transpose(2, 3, 0, 1))
    out = np.empty(g.shape[:2] + (r, r), dtype=dU.dtype)
    _launch(_sandwich_all, out.size, g, GT, out)
    return out
