"""Numba twins of the Winograd kernels of ``fastconv.winograd`` (docs/KERNELS.md).

Same six functions and signatures as the reference: the two filter transforms, the two
fused, cache-blocked convolution kernels, and the two tile transforms over the whole batch
(``winograd_tiles_in`` / ``winograd_tiles_out``, one (n, c) plane per ``prange`` task: the batched
algorithm, whose GEMMs between them ``fastconv.conv_winograd`` runs). The tiles (``t = (n*th + ti)*tw + tj``) are cut into
blocks of ``tb`` consecutive tiles; ``@njit(parallel=True)`` workers (``prange``) take blocks in
turn (worker w: blocks w, w + nw, ...), and for each block a worker transforms the block's
input tiles into ``Vb (a*a, C, nt)`` (tiles contiguous), runs the a*a GEMMs with ``np.dot``
(which Numba sends to scipy's BLAS, single-threaded inside the loop: ``fastconv._blas``), and
transforms the products straight into y (+ bias), or, for the weight gradient, adds
``dMb Vb^T`` into its own accumulator (summed over workers at the end). Every worker writes
its own elements only. Shapes and integer arguments are checked before a kernel runs; reads
outside the image are the zero padding, so no argument reads or writes out of bounds.
"""
import numpy as np
from numba import njit, prange

from fastconv import _blas
from fastconv._validate import check_index

from . import numba_kernels as _kernels  # the grain size and thread count (fc.set_grain_size)

NAME = "numba"
_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True)
_SERIAL = dict(cache=True, fastmath=False, nogil=True)
_AMAX = 8
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
get_num_threads = _kernels.get_num_threads


@njit(**_SERIAL)
def _lmul_swap(L, src, dst):
    """dst[q, u, k] = sum_i L[u, i] src[i, q, k] (zero entries of L skipped): src (r, Q, K),
    dst (Q, a, K). Applied twice it is the 2-D transform: L d L^T with (u, v) in that order."""
    a, r = L.shape
    dst[...] = 0
    for q in range(src.shape[1]):
        for u in range(a):
            for i in range(r):
                cf = L[u, i]
                if cf != 0:
                    for k in range(src.shape[2]):
                        dst[q, u, k] += cf * src[i, q, k]


@njit(**_SERIAL)
def _tile_row_segments(t0, nt, th, tw):
    """(n, ti, tj, seg) of the runs of tiles [t0, t0 + nt) that share a tile row."""
    runs = []
    t = t0
    while t < t0 + nt:
        n = t // (th * tw)
        ti = (t - n * th * tw) // tw
        tj = t - (n * th + ti) * tw
        seg = min(tw - tj, t0 + nt - t)
        runs.append((n, ti, tj, seg))
        t += seg
    return runs


@njit(**_SERIAL)
def _worker_blocks(w, nw, tb, T):
    """(t0, nt) of the blocks of worker w: blocks w, w + nw, ... of tb tiles (the last may be
    shorter) out of T."""
    return [(t0, min(tb, T - t0)) for t0 in range(w * tb, T, nw * tb)]


@njit(**_SERIAL)
def _tiles_in_block(x, L, m, ph, pw, th, tw, t0, nt, out):
    """out[u*a + v, c, t - t0] = V[u*a + v, c, t] of tiles_in(x, L, m, ph, pw, th, tw), for
    t0 <= t < t0 + nt; out (a*a, C, nt)."""
    _, C, H, W = x.shape
    a, r = L.shape
    off = 0
    for n, ti, tj, seg in _tile_row_segments(t0, nt, th, tw):
        cols = (seg - 1) * m + r
        col0 = tj * m - pw                            # image column of the run's first read
        k0, k1 = max(0, -col0), min(cols, W - col0)   # the part of [0, cols) inside the image
        rows = np.zeros((r, cols), dtype=x.dtype)     # the run's r input rows, zero-padded
        d = np.empty((r, r, seg), dtype=x.dtype)      # d[i, j, k]: tile k, row i, column j
        t1 = np.empty((r, a, seg), dtype=x.dtype)
        res = np.empty((a, a, seg), dtype=x.dtype)
        for c in range(C):
            for i in range(r):
                row = ti * m + i - ph
                if 0 <= row < H and k0 < k1:
                    rows[i, k0:k1] = x[n, c, row, col0 + k0:col0 + k1]
                else:
                    rows[i] = 0
                for j in range(r):
                    for k in range(seg):
                        d[i, j, k] = rows[i, k * m + j]
            _lmul_swap(L, d, t1)      # t1[j, u, k] = sum_i L[u, i] d[i, j, k]
            _lmul_swap(L, t1, res)    # res[u, v, k] = sum_j L[v, j] t1[j, u, k]
            for u in range(a):
                for v in range(a):
                    out[u * a + v, c, off:off + seg] = res[u, v]
        off += seg


@njit(**_SERIAL)
def _tiles_out_block(mb, R, th, tw, t0, nt, bias, has_bias, y):
    """y[n, o, ti*m + i, tj*m + j] = sum_{u,v} R[i,u] R[j,v] mb[u*a + v, o, t - t0] (+ bias[o]),
    cropped to y's (oh, ow), for the tiles t0 <= t < t0 + nt; mb (a*a, O, nt)."""
    m, a = R.shape
    _, O, oh, ow = y.shape
    off = 0
    for n, ti, tj, seg in _tile_row_segments(t0, nt, th, tw):
        src = np.empty((a, a, seg), dtype=mb.dtype)
        t1 = np.empty((a, m, seg), dtype=mb.dtype)
        res = np.empty((m, m, seg), dtype=mb.dtype)
        for o in range(O):
            for u in range(a):
                for v in range(a):
                    src[u, v] = mb[u * a + v, o, off:off + seg]
            _lmul_swap(R, src, t1)    # t1[v, i, k] = sum_u R[i, u] src[u, v, k]
            _lmul_swap(R, t1, res)    # res[i, j, k] = sum_v R[j, v] t1[v, i, k]
            b = bias[o] if has_bias else 0
            for i in range(m):
                row = ti * m + i
                if row >= oh:
                    break
                for k in range(seg):
                    for j in range(m):
                        col = (tj + k) * m + j
                        if col < ow:
                            y[n, o, row, col] = res[i, j, k] + b
        off += seg


@njit(**_SERIAL)
def _v_block(vfull, aa, C, t0, nt):
    """The block of tiles [t0, t0 + nt) of the stored V: a view (a*a, C, nt) at a*a*C*t0."""
    return vfull[aa * C * t0:aa * C * (t0 + nt)].reshape((aa, C, nt))


@njit(**_JIT)
def _conv(x, U, bias, has_bias, BT, AT, ph, pw, th, tw, tb, nw, y, vfull, keep):
    m = AT.shape[0]
    aa, O, C = U.shape
    for w in prange(nw):
        for t0, nt in _worker_blocks(w, nw, tb, x.shape[0] * th * tw):
            vb = _v_block(vfull, aa, C, t0, nt) if keep else np.empty((aa, C, nt), dtype=x.dtype)
            mb = np.empty((aa, O, nt), dtype=x.dtype)
            _tiles_in_block(x, BT, m, ph, pw, th, tw, t0, nt, vb)
            for xi in range(aa):  # M[xi] (O, nt) = U[xi] (O, C) @ Vb[xi] (C, nt)
                np.dot(U[xi], vb[xi], mb[xi])
            _tiles_out_block(mb, AT, th, tw, t0, nt, bias, has_bias, y)


@njit(**_JIT)
def _filter_grad(x, dy, BT, A, ph, pw, th, tw, tb, acc, vfull, stored):
    m = A.shape[1]
    nw, aa, O, C = acc.shape
    for w in prange(nw):
        part = np.empty((O, C), dtype=x.dtype)
        for t0, nt in _worker_blocks(w, nw, tb, x.shape[0] * th * tw):
            dmb = np.empty((aa, O, nt), dtype=x.dtype)
            if stored:
                vb = _v_block(vfull, aa, C, t0, nt)
            else:
                vb = np.empty((aa, C, nt), dtype=x.dtype)
                _tiles_in_block(x, BT, m, ph, pw, th, tw, t0, nt, vb)
            _tiles_in_block(dy, A, m, 0, 0, th, tw, t0, nt, dmb)
            for xi in range(aa):  # dU[xi] (O, C) += dMb[xi] (O, nt) @ Vb[xi]^T (nt, C)
                np.dot(dmb[xi], vb[xi].T, part)
                acc[w, xi] += part


@njit(**_JIT)
def _tiles_in_planes(x, L, m, ph, pw, th, tw, out):
    """out (a*a, C, T) = tiles_in(x, L, m, ph, pw, th, tw), one (n, c) plane per task: it reads
    the plane in order and writes a*a contiguous runs of th*tw tiles."""
    n_img, C = x.shape[:2]
    per = th * tw
    for p in prange(n_img * C):
        n, c = p // C, p % C
        _tiles_in_block(x[n:n + 1, c:c + 1], L, m, ph, pw, th, tw, 0, per,
                        out[:, c:c + 1, n * per:(n + 1) * per])


@njit(**_JIT)
def _tiles_out_planes(M, R, th, tw, bias, has_bias, y):
    """y (+ bias) = tiles_out(M (a*a, O, T), R), one (n, o) plane of y per task."""
    n_img, O = y.shape[:2]
    per = th * tw
    for p in prange(n_img * O):
        n, o = p // O, p % O
        _tiles_out_block(M[:, o:o + 1, n * per:(n + 1) * per], R, th, tw, 0, per, bias[o:o + 1],
                         has_bias, y[n:n + 1, o:o + 1])


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


def _stored_v(V, dtype, size):
    """The stored V checked to be a 1-D C-contiguous ``dtype`` array of a*a*C*T values; None:
    an empty placeholder (the kernels then use their own block buffers)."""
    if V is None:
        return np.empty(0, dtype=dtype)
    V = _array(V, "V", 1)
    if V.dtype != dtype or V.shape[0] != size:
        raise ValueError(f"V must be {dtype} with a*a*C*T = {size} entries, got {V.dtype} {V.shape}")
    return V


def _grid(x, BT, AT, ph, pw, tb):
    """Checks shared by both kernels; returns ``(oh, ow, th, tw, T, tb, nw)``, tb <= T, nw the
    number of workers. Ints lie in [0 or 1, INDEX_MAX] (fastconv._validate), so no index
    product wraps int64."""
    n, c, h, w = x.shape
    a, m = BT.shape[0], AT.shape[0]
    if BT.shape[1] != a or AT.shape[1] != a or m >= a:
        raise ValueError(f"BT must be a x a and A^T m x a with m < a, got {BT.shape} and {AT.shape}")
    ph, pw = check_index(ph, "ph", 0), check_index(pw, "pw", 0)
    tb = check_index(tb, "tb", 1)
    oh, ow = h + 2 * ph - (a - m), w + 2 * pw - (a - m)
    if oh < 1 or ow < 1:
        raise ValueError(f"the padded input ({h + 2 * ph}x{w + 2 * pw}) is smaller than the kernel")
    th, tw = -(-oh // m), -(-ow // m)
    T = check_index(n * th * tw, "the number of tiles", 0)
    check_index(oh * ow, "the output size oh*ow", 1)
    tb = max(1, min(tb, T))
    work = a * a * (c + 1) * T
    threads = 1 if work < _kernels.get_grain_size() else _kernels.get_num_threads()
    return ph, pw, oh, ow, th, tw, T, tb, max(1, min(threads, -(-T // tb)))


def winograd_conv(x, U, bias, BT, AT, ph, pw, tb, V=None):
    """x (N, C, H, W), U (a*a, O, C), bias (O,) or None -> y (N, O, H+2ph-2, W+2pw-2);
    see fastconv.winograd.winograd_conv. tb: tiles per block. V (a*a*C*T,) or None: receives
    the input transform in block layout (fastconv.winograd.stored_v_blocks)."""
    x = _array(x, "x", 4)
    U = _array(U, "U", 3)
    BT, AT = _matrix(BT, "BT", x.dtype), _matrix(AT, "AT", x.dtype)
    ph, pw, oh, ow, th, tw, T, tb, nw = _grid(x, BT, AT, ph, pw, tb)
    a, (n, c) = BT.shape[0], x.shape[:2]
    if U.dtype != x.dtype or U.shape[0] != a * a or U.shape[2] != c or U.shape[1] < 1:
        raise ValueError(f"U must be {x.dtype} of shape ({a * a}, O >= 1, {c}), got {U.dtype} {U.shape}")
    o = U.shape[1]
    has_bias = bias is not None
    if has_bias and (_array(bias, "bias", 1).dtype != x.dtype or bias.shape[0] != o):
        raise ValueError(f"bias must be {x.dtype} with {o} entries")
    vfull = _stored_v(V, x.dtype, a * a * c * T)
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    if T == 0 or c == 0:
        y[...] = bias[:, None, None] if has_bias else 0
        return y
    with _blas.single_threaded():
        _conv(x, U, bias if has_bias else np.zeros(o, x.dtype), has_bias, BT, AT, ph, pw, th, tw,
              tb, nw, y, vfull, V is not None)
    return y


def winograd_filter_grad(x, dy, BT, A, ph, pw, tb, V=None):
    """x (N, C, H, W), dy (N, O, oh, ow) -> dU (a*a, O, C); see
    fastconv.winograd.winograd_filter_grad. Each worker sums its blocks into its own dU; the
    workers' sums are added at the end. V: the forward's stored input transform (same tb),
    read instead of transforming x again; None: recomputed."""
    x, dy = _array(x, "x", 4), _array(dy, "dy", 4)
    BT, A = _matrix(BT, "BT", x.dtype), _matrix(A, "A", x.dtype)
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have dtype {x.dtype}, got {dy.dtype}")
    ph, pw, oh, ow, th, tw, T, tb, nw = _grid(x, BT, np.ascontiguousarray(A.T), ph, pw, tb)
    a, (n, c), o = BT.shape[0], x.shape[:2], dy.shape[1]
    if dy.shape != (n, o, oh, ow) or o < 1:
        raise ValueError(f"dy must have shape ({n}, O >= 1, {oh}, {ow}), got {dy.shape}")
    vfull = _stored_v(V, x.dtype, a * a * c * T)
    if T == 0 or c == 0:
        return np.zeros((a * a, o, c), dtype=x.dtype)
    acc = np.zeros((nw, a * a, o, c), dtype=x.dtype)
    with _blas.single_threaded():
        _filter_grad(x, dy, BT, A, ph, pw, th, tw, tb, acc, vfull, V is not None)
    return acc[0] if nw == 1 else acc.sum(axis=0)


def _tiling(m, th, tw):
    if not 1 <= check_index(m, "m", 1) <= _AMAX:
        raise ValueError(f"m must be in [1, {_AMAX}], got {m}")
    return m, check_index(th, "th", 1), check_index(tw, "tw", 1)


def winograd_tiles_in(x, L, m, ph, pw, th, tw):
    """x (N, C, H, W), L (a, r) -> V (a*a, C, N*th*tw); see fastconv.winograd.winograd_tiles_in
    (the batched algorithm's input transform)."""
    x = _array(x, "x", 4)
    L = _matrix(L, "L", x.dtype)
    m, th, tw = _tiling(m, th, tw)
    ph, pw = check_index(ph, "ph", 0), check_index(pw, "pw", 0)
    n, c = x.shape[:2]
    T = check_index(n * th * tw, "the number of tiles", 0)
    out = np.empty((L.shape[0] ** 2, c, T), dtype=x.dtype)
    if out.size:
        _kernels._launch(_tiles_in_planes, out.size, x, L, m, ph, pw, th, tw, out)
    return out


def winograd_tiles_out(M, R, n, oh, ow, th, tw, bias=None):
    """M (a*a, O, n*th*tw), R (m, a), bias (O,) or None -> y (n, O, oh, ow); see
    fastconv.winograd.winograd_tiles_out (the batched algorithm's output transform). The
    th x tw grid of m x m tiles must cover exactly the oh x ow output."""
    M = _array(M, "M", 3)
    R = _matrix(R, "R", M.dtype)
    m, a = R.shape
    _, th, tw = _tiling(m, th, tw)
    n, oh, ow = check_index(n, "n", 1), check_index(oh, "oh", 1), check_index(ow, "ow", 1)
    if not ((th - 1) * m < oh <= th * m and (tw - 1) * m < ow <= tw * m):
        raise ValueError(f"a {th}x{tw} grid of {m}x{m} tiles does not cover exactly an {oh}x{ow} output")
    if M.shape[0] != a * a or M.shape[2] != n * th * tw:
        raise ValueError(f"M must have shape ({a * a}, O, {n * th * tw}) for n={n}, th={th}, "
                         f"tw={tw}, got {M.shape}")
    o = M.shape[1]
    has_bias = bias is not None
    if has_bias and (_array(bias, "bias", 1).dtype != M.dtype or bias.shape[0] != o):
        raise ValueError(f"bias must be {M.dtype} with {o} entries")
    y = np.empty((n, o, oh, ow), dtype=M.dtype)
    if y.size:
        _kernels._launch(_tiles_out_planes, M.size, M, R, th, tw, bias if has_bias else np.zeros(o, M.dtype),
                         has_bias, y)
    return y


def winograd_filter_in(w, G):
    """w (O, C, r, r), G (a, r) -> U (a*a, O, C) with U = G g G^T per filter."""
    w = _array(w, "w", 4)
    G = _matrix(G, "G", w.dtype)
    a, r = G.shape
    if w.shape[2:] != (r, r):
        raise ValueError(f"w must have {r}x{r} filters for a G with {r} columns, got {w.shape[2:]}")
    out = np.empty(w.shape[:2] + (a, a), dtype=w.dtype)
    _kernels._launch(_sandwich_all, out.size, w, G, out)
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
    _kernels._launch(_sandwich_all, out.size, g, GT, out)
    return out
