"""Numba backend of the kernel contract (docs/KERNELS.md).

Every public function has exactly the signature of its twin in ``fastconv/reference.py``:
it checks its arguments with ``fastconv._validate`` (arrays, ints in [0 or 1, 2**31 - 1],
windows that fit, element counts; so that no call, however wrong, can read or write outside
an array), allocates the output in the input dtype and runs a ``@njit(parallel=True)``
kernel. The kernels split their work with ``prange`` over independent pieces of the output
(rows of ``cols``; bands of rows of one (n, c) plane; whole planes for the max pool
backward), so no two threads ever write the same element and the result does not depend on
the thread count.

Results are bit-identical to the reference: every sum adds its terms in the reference's
order, in the array dtype, and no float32 computation is promoted to float64 (scalars are
passed in the array dtype); the claim and its reasons: docs/KERNELS.md, "Exactness".

Compiled kernels are cached on disk (``cache=True``, in ``kernels/__pycache__`` when it
is writable, else Numba's user-wide cache), so only the very first process pays the JIT
compile (~15-40 s for everything on a 2-core machine; a warm start loads in < 1 s).
"""
import numba
import numpy as np
from numba import njit, prange

from fastconv._validate import as_float_array, check_index, check_size, check_window_fits

NAME = "numba"

_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True)
# Inner loops index with unsigned ints: Numba then skips its negative-index wraparound
# branch, which otherwise blocks vectorisation (~2-5x slower copies). Every such index is
# non-negative by construction (the valid q-ranges are clamped first).
_U = numba.types.uintp


def set_num_threads(n):
    """Use ``n`` threads in the kernels (capped at ``numba.config.NUMBA_NUM_THREADS``)."""
    n = check_index(n, "n", 1)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads():
    """Number of threads the kernels use now."""
    return numba.get_num_threads()


# ============================================================================ kernels
# Work split: every array is seen as (P, rows, cols) with P = N*C planes; a task is a band
# of consecutive rows of one plane (``bands`` per plane, chosen by the wrapper so that there
# are a few tasks per thread even for N*C = 1). Each task writes only its own output rows,
# so threads never write the same element, and the result does not depend on the split.
# Integer divisions (slow) happen once per task and kernel offset, never per row/element.


@njit(inline="always")
def _q_range(off, stride, width, count):
    """Indices q in [lo, hi) of [0, count) with ``q*stride + off`` inside [0, width)."""
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    last = width - 1 - off  # q*stride <= last
    hi = 0
    if last >= 0:
        hi = last // stride + 1
    if hi > count:
        hi = count
    if lo > hi:
        lo = hi
    return lo, hi


@njit(inline="always")
def _band(t, bands, rows):
    """Task t -> (plane, first row, end row)."""
    pl = t // bands
    b = t - pl * bands
    return pl, b * rows // bands, (b + 1) * rows // bands


@njit(inline="always")
def _zeroed_band(t, bands, dst):
    """Task t of dst (P, rows, cols) -> (plane, first row, end row), that band set to 0."""
    pl, r0, r1 = _band(t, bands, dst.shape[1])
    plane = dst[pl]
    for r in range(r0, r1):
        row = plane[r]
        for k in range(row.shape[0]):
            row[_U(k)] = 0
    return pl, r0, r1


@njit(inline="always")
def _scatter_add(row, src, base, lo, hi, off, stride):
    """row[q*stride + off] += src[base + q] for q in [lo, hi)."""
    if stride == 1:
        for q in range(lo, hi):
            row[_U(q + off)] += src[_U(base + q)]
    else:
        for q in range(lo, hi):
            row[_U(q * stride + off)] += src[_U(base + q)]


@njit(inline="always")
def _gather_add(row, src, lo, hi, off, stride):
    """row[q] += src[q*stride + off] for q in [lo, hi)."""
    if stride == 1:
        for q in range(lo, hi):
            row[_U(q)] += src[_U(q + off)]
    else:
        for q in range(lo, hi):
            row[_U(q)] += src[_U(q * stride + off)]


@njit(**_JIT)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    # x: (P, H, W); cols: (P, kh*kw, oh*ow). One task per row of cols (long: oh*ow).
    planes, h_, w_ = x.shape
    kk = kh * kw
    for t in prange(planes * kk):
        pl = t // kk
        ij = t - pl * kk
        i = ij // kw
        j = ij - i * kw
        off = j * dw - pw
        lo, hi = _q_range(off, sw, w_, ow)
        plo, phi = _q_range(i * dh - ph, sh, h_, oh)  # output rows whose input row exists
        dst = cols[pl, ij]
        xp = x[pl]
        for k in range(plo * ow):
            dst[_U(k)] = 0
        for p in range(plo, phi):
            src = xp[p * sh + i * dh - ph]
            base = p * ow
            for q in range(lo):
                dst[_U(base + q)] = 0
            if sw == 1:
                for q in range(lo, hi):
                    dst[_U(base + q)] = src[_U(q + off)]
            else:
                for q in range(lo, hi):
                    dst[_U(base + q)] = src[_U(q * sw + off)]
            for q in range(hi, ow):
                dst[_U(base + q)] = 0
        for k in range(phi * ow, oh * ow):
            dst[_U(k)] = 0


@njit(**_JIT)
def _col2im(cols, x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, bands):
    # cols: (P, kh*kw, oh*ow); x: (P, H, W). Scatter restricted to the task's band of x
    # rows, loops (i, j, p, q): a pixel receives at most one term per (i, j), so its terms
    # are added in (i, j) order starting from 0 -- the reference's order.
    planes, h_, w_ = x.shape
    for t in prange(planes * bands):
        pl, y0, y1 = _zeroed_band(t, bands, x)
        xp = x[pl]
        cp = cols[pl]
        for i in range(kh):
            roff = i * dh - ph - y0  # band row = p*sh + roff
            plo, phi = _q_range(roff, sh, y1 - y0, oh)
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _q_range(off, sw, w_, ow)
                src = cp[i * kw + j]
                for p in range(plo, phi):
                    _scatter_add(xp[y0 + p * sh + roff], src, p * ow, lo, hi, off, sw)


@njit(**_JIT)
def _maxpool_fwd(x, y, idx, kh, kw, sh, sw, ph, pw, ninf, bands):
    # x: (P, H, W); y, idx: (P, oh, ow). Each window is scanned row by row over its unpadded
    # pixels (the -inf padding never wins under ``v > best or isnan(v)``); with no winner
    # (all -inf) idx stays at max(top, 0)*W + max(left, 0), as the reference and torch.
    planes, h_, w_ = x.shape
    oh = y.shape[1]
    ow = y.shape[2]
    for t in prange(planes * bands):
        pl, p0, p1 = _band(t, bands, oh)
        xp = x[pl]
        yp = y[pl]
        ip = idx[pl]
        if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
            # 2x2 stride 2, unpadded: each window read once, in scan order; the first element
            # always stands (-inf does not win, but the argmax starts at that pixel).
            for p in range(p0, p1):
                r0, r1 = xp[2 * p], xp[2 * p + 1]
                yr, ir = yp[p], ip[p]
                k0 = 2 * p * w_
                for q in range(ow):
                    best, bi = r0[_U(2 * q)], k0 + 2 * q
                    v = r0[_U(2 * q + 1)]
                    if v > best or v != v:
                        best, bi = v, k0 + 2 * q + 1
                    v = r1[_U(2 * q)]
                    if v > best or v != v:
                        best, bi = v, k0 + w_ + 2 * q
                    v = r1[_U(2 * q + 1)]
                    if v > best or v != v:
                        best, bi = v, k0 + w_ + 2 * q + 1
                    yr[_U(q)] = best
                    ir[_U(q)] = bi
        elif sw == 1:
            # Unit stride: sweep whole output rows per kernel offset (i, j) -- same scan order
            # per window, and the inner loop over q vectorises (~5x faster than per window).
            for p in range(p0, p1):
                hs = max(p * sh - ph, 0)
                yr = yp[p]
                ir = ip[p]
                for q in range(ow):
                    yr[_U(q)] = ninf
                    ir[_U(q)] = hs * w_ + max(q - pw, 0)
            for i in range(kh):
                plo, phi = _q_range(i - ph, sh, h_, oh)
                plo = max(plo, p0)
                phi = min(phi, p1)
                for j in range(kw):
                    off = j - pw
                    lo, hi = _q_range(off, 1, w_, ow)
                    for p in range(plo, phi):
                        hh = p * sh + i - ph
                        yr = yp[p]
                        ir = ip[p]
                        src = xp[hh]
                        base = hh * w_ + off
                        for q in range(lo, hi):
                            v = src[_U(q + off)]
                            if v > yr[_U(q)] or v != v:
                                yr[_U(q)] = v
                                ir[_U(q)] = base + q
        else:
            # Strided: one window at a time (strided row sweeps do not vectorise).
            for p in range(p0, p1):
                h0 = p * sh - ph
                hs = max(h0, 0)
                he = min(h0 + kh, h_)
                yr = yp[p]
                ir = ip[p]
                for q in range(ow):
                    w0 = q * sw - pw
                    ws = max(w0, 0)
                    we = min(w0 + kw, w_)
                    best = ninf
                    bi = hs * w_ + ws
                    for hh in range(hs, he):
                        src = xp[hh]
                        for ww in range(ws, we):
                            v = src[_U(ww)]
                            if v > best or v != v:
                                best = v
                                bi = hh * w_ + ww
                    yr[_U(q)] = best
                    ir[_U(q)] = bi


@njit(**_JIT)
def _maxpool_bwd(dy, idx, dx):
    # dy, idx: (P, oh*ow); dx: (P, h*w). One plane per task (windows may overlap, so rows
    # cannot be split), row-major (p, q) order as np.add.at. Returns the number of
    # out-of-range indices (skipped, the wrapper raises).
    planes, m = dy.shape
    size = dx.shape[1]
    bad = 0
    for t in prange(planes):
        dst = dx[t]
        for k in range(size):
            dst[_U(k)] = 0
        g = dy[t]
        ix = idx[t]
        for k in range(m):
            a = ix[_U(k)]
            if a >= 0 and a < size:
                dst[_U(a)] += g[_U(k)]
            else:
                bad += 1
    return bad


@njit(**_JIT)
def _avgpool_fwd(x, y, kh, kw, sh, sw, ph, pw, div, bands):
    # x: (P, H, W); y: (P, oh, ow). Terms added in (i, j) order from 0 in the array dtype,
    # then divided by dtype(kh*kw): the reference's arithmetic (its padded zeros add nothing).
    planes, h_, w_ = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for t in prange(planes * bands):
        pl, p0, p1 = _zeroed_band(t, bands, y)
        xp, yp = x[pl], y[pl]
        for i in range(kh):
            plo, phi = _q_range(i - ph, sh, h_, oh)  # output rows whose input row exists
            for j in range(kw):
                lo, hi = _q_range(j - pw, sw, w_, ow)
                for p in range(max(plo, p0), min(phi, p1)):
                    _gather_add(yp[p], xp[p * sh + i - ph], lo, hi, j - pw, sw)
        for p in range(p0, p1):
            row = yp[p]
            for q in range(ow):
                row[_U(q)] = row[_U(q)] / div


@njit(**_JIT)
def _avgpool_bwd(dy, dx, kh, kw, sh, sw, ph, pw, div, bands):
    # dy: (P, oh, ow); dx: (P, H, W). As col2im: each pixel gets its dy/(kh*kw) terms in
    # (i, j) order starting from 0, like the reference. The shares dy/(kh*kw) of the dy rows
    # the band needs are computed once per task (kh*kw fewer divisions).
    planes, h_, w_ = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for t in prange(planes * bands):
        pl, y0, y1 = _zeroed_band(t, bands, dx)
        xp = dx[pl]
        pmin, _ = _q_range((kh - 1) - ph - y0, sh, y1 - y0, oh)
        _, pmax = _q_range(-ph - y0, sh, y1 - y0, oh)
        if pmax <= pmin:
            continue
        share = np.empty((pmax - pmin, ow), dy.dtype)
        for p in range(pmin, pmax):
            g = dy[pl, p]
            srow = share[p - pmin]
            for q in range(ow):
                srow[_U(q)] = g[_U(q)] / div
        for i in range(kh):
            roff = i - ph - y0
            plo, phi = _q_range(roff, sh, y1 - y0, oh)
            for j in range(kw):
                off = j - pw
                lo, hi = _q_range(off, sw, w_, ow)
                for p in range(plo, phi):
                    _scatter_add(xp[y0 + p * sh + roff], share[p - pmin], 0, lo, hi, off, sw)


@njit(**_JIT)
def _gather(src, dst, fh, fw, bands):
    # dst[pl, a, b] = src[pl, a*fh, b*fw]; dst: (P, ceil(H/fh), ceil(W/fw)).
    planes, h_, w_ = dst.shape
    for t in prange(planes * bands):
        pl, a0, a1 = _band(t, bands, h_)
        for a in range(a0, a1):
            d = dst[pl, a]
            s = src[pl, a * fh]
            if fw == 1:
                for b in range(w_):
                    d[_U(b)] = s[_U(b)]
            else:
                for b in range(w_):
                    d[_U(b)] = s[_U(b * fw)]


@njit(**_JIT)
def _scatter(src, dst, fh, fw, bands):
    # dst (pre-zeroed by the wrapper, np.zeros) gets dst[pl, a*fh, b*fw] = src[pl, a, b];
    # src: (P, ceil(H/fh), ceil(W/fw)). Tasks are bands of source rows.
    planes, h_, w_ = dst.shape
    nb = min(src.shape[2], (w_ - 1) // fw + 1)  # source columns/rows that land inside dst
    na = min(src.shape[1], (h_ - 1) // fh + 1)
    for t in prange(planes * bands):
        pl, a0, a1 = _band(t, bands, na)
        for a in range(a0, a1):
            d = dst[pl, a * fh]
            s = src[pl, a]
            if fw == 1:
                for b in range(nb):
                    d[_U(b)] = s[_U(b)]
            else:
                for b in range(nb):
                    d[_U(b * fw)] = s[_U(b)]


# ============================================================================ wrappers
def _array(x, name, ndim=4):
    return as_float_array(x, name, ndim, "(N, C, H, W)" if ndim == 4 else "(N, rows, cols)", empty_ok=True)


def _ints(values, names, minimum):
    """Every index product of the kernels stays inside int64 (see fastconv._validate)."""
    return [check_index(v, name, minimum) for v, name in zip(values, names)]


_TASKS_PER_THREAD = 4
# Below this many element operations a kernel runs on the calling thread only: waking the
# worker threads costs more than the work (and, on an oversubscribed machine, a whole
# scheduler time slice: measured 6 us serial vs 8-20 ms with 2 threads for a tiny pool).
_SERIAL_BELOW = 1 << 15


def set_grain_size(n=None):
    """Kernels doing fewer than ``n`` element operations run on one thread (0: always parallel;
    None: the default, 2**15)."""
    global _SERIAL_BELOW
    if n is None:
        n = 1 << 15
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"grain size must be an int >= 0, got {n!r}")
    _SERIAL_BELOW = n


def get_grain_size():
    """The current grain size (element operations below which a kernel runs on one thread)."""
    return _SERIAL_BELOW


def _launch(kernel, work, *args):
    """Run ``kernel(*args)``; serially when ``work`` (element operations) is small."""
    nt = numba.get_num_threads()
    if nt > 1 and work < _SERIAL_BELOW:
        numba.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(nt)
    return kernel(*args)


def _bands(planes, rows):
    """Row bands per plane: enough tasks (a few per thread) when there are few planes."""
    want = _TASKS_PER_THREAD * numba.get_num_threads()
    return max(1, min(rows, -(-want // planes)))


def im2col2d(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """x: (N, C, H, W) -> cols: (N, C*kh*kw, oh*ow); see docs/KERNELS.md."""
    x = _array(x, "x")
    kh, kw, sh, sw, dh, dw, oh, ow = _ints((kh, kw, sh, sw, dh, dw, oh, ow),
                                           ("kh", "kw", "sh", "sw", "dh", "dw", "oh", "ow"), 1)
    ph, pw = _ints((ph, pw), ("ph", "pw"), 0)
    n, c, h, w = x.shape
    check_window_fits(h, kh, sh, ph, dh, oh, "im2col2d (height)")
    check_window_fits(w, kw, sw, pw, dw, ow, "im2col2d (width)")
    check_size("im2col2d cols", n, c, kh, kw, oh, ow)
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    if cols.size:
        _launch(_im2col, cols.size, x.reshape(n * c, h, w), cols.reshape(n * c, kh * kw, oh * ow),
                kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return cols


def col2im2d(cols, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """cols: (N, C*kh*kw, oh*ow) -> x: (N, C, h, w), the adjoint of im2col2d."""
    cols = _array(cols, "cols", 3)
    kh, kw, sh, sw, dh, dw, oh, ow = _ints((kh, kw, sh, sw, dh, dw, oh, ow),
                                           ("kh", "kw", "sh", "sw", "dh", "dw", "oh", "ow"), 1)
    c, h, w, ph, pw = _ints((c, h, w, ph, pw), ("c", "h", "w", "ph", "pw"), 0)
    n = cols.shape[0]
    if cols.shape != (n, c * kh * kw, oh * ow):
        raise ValueError(f"cols must have shape {(n, c * kh * kw, oh * ow)}, got {cols.shape}")
    check_window_fits(h, kh, sh, ph, dh, oh, "col2im2d (height)")
    check_window_fits(w, kw, sw, pw, dw, ow, "col2im2d (width)")
    x = np.empty((n, c, h, w), dtype=cols.dtype)
    if x.size:
        _launch(_col2im, cols.size + x.size, cols.reshape(n * c, kh * kw, oh * ow),
                x.reshape(n * c, h, w), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, _bands(n * c, h))
    return x


def _pool_args(x, kh, kw, sh, sw, ph, pw, oh, ow):
    x = _array(x, "x")
    kh, kw, sh, sw, oh, ow = _ints((kh, kw, sh, sw, oh, ow), ("kh", "kw", "sh", "sw", "oh", "ow"), 1)
    ph, pw = _ints((ph, pw), ("ph", "pw"), 0)
    check_window_fits(x.shape[2], kh, sh, ph, 1, oh, "pool (height)")
    check_window_fits(x.shape[3], kw, sw, pw, 1, ow, "pool (width)")
    return x, kh, kw, sh, sw, ph, pw, oh, ow


def maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """x: (N, C, H, W) -> (y, idx int64), both (N, C, oh, ow); idx = h*W + w of the winner."""
    x, kh, kw, sh, sw, ph, pw, oh, ow = _pool_args(x, kh, kw, sh, sw, ph, pw, oh, ow)
    n, c, h, w = x.shape
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    idx = np.empty((n, c, oh, ow), dtype=np.int64)
    if y.size:
        _launch(_maxpool_fwd, y.size * kh * kw, x.reshape(n * c, h, w), y.reshape(n * c, oh, ow),
                idx.reshape(n * c, oh, ow), kh, kw, sh, sw, ph, pw, x.dtype.type(-np.inf),
                _bands(n * c, oh))
    return y, idx


def maxpool2d_backward(dy, idx, h, w):
    """dy, idx: (N, C, oh, ow) -> dx: (N, C, h, w) with dx.flat[idx] += dy per (n, c)."""
    dy = _array(dy, "dy")
    h, w = _ints((h, w), ("h", "w"), 0)
    if not isinstance(idx, np.ndarray) or idx.shape != dy.shape:
        raise ValueError(f"idx must be an ndarray of shape {dy.shape}, got "
                         f"{getattr(idx, 'shape', type(idx).__name__)}")
    if idx.dtype != np.int64:
        raise TypeError(f"idx must have dtype int64, got {idx.dtype}")
    idx = np.ascontiguousarray(idx)
    n, c, oh, ow = dy.shape
    dx = np.empty((n, c, h, w), dtype=dy.dtype)
    if dx.size:
        bad = _launch(_maxpool_bwd, dx.size + dy.size, dy.reshape(n * c, oh * ow),
                      idx.reshape(n * c, oh * ow), dx.reshape(n * c, h * w))
        if bad:
            raise ValueError(f"idx has {bad} entries outside [0, {h * w})")
    elif dy.size:
        raise ValueError(f"idx has entries but the input plane ({h}, {w}) is empty")
    return dx


def avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """x: (N, C, H, W) -> y: (N, C, oh, ow), window sums of the zero-padded x / (kh*kw)."""
    x, kh, kw, sh, sw, ph, pw, oh, ow = _pool_args(x, kh, kw, sh, sw, ph, pw, oh, ow)
    n, c, h, w = x.shape
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    if y.size:
        _launch(_avgpool_fwd, y.size * kh * kw, x.reshape(n * c, h, w), y.reshape(n * c, oh, ow),
                kh, kw, sh, sw, ph, pw, x.dtype.type(kh * kw), _bands(n * c, oh))
    return y


def avgpool2d_backward(dy, h, w, kh, kw, sh, sw, ph, pw):
    """dy: (N, C, oh, ow) -> dx: (N, C, h, w), each dy/(kh*kw) added to its window's pixels."""
    dy = _array(dy, "dy")
    kh, kw, sh, sw = _ints((kh, kw, sh, sw), ("kh", "kw", "sh", "sw"), 1)
    h, w, ph, pw = _ints((h, w, ph, pw), ("h", "w", "ph", "pw"), 0)
    n, c, oh, ow = dy.shape
    if oh and ow:
        check_window_fits(h, kh, sh, ph, 1, oh, "avgpool2d_backward (height)")
        check_window_fits(w, kw, sw, pw, 1, ow, "avgpool2d_backward (width)")
    dx = np.empty((n, c, h, w), dtype=dy.dtype)
    if dx.size:
        _launch(_avgpool_bwd, dy.size * kh * kw + dx.size, dy.reshape(n * c, oh, ow),
                dx.reshape(n * c, h, w), kh, kw, sh, sw, ph, pw, dy.dtype.type(kh * kw),
                _bands(n * c, h))
    return dx


def _gather4(src, n, c, h, w, fh, fw):
    dst = np.empty((n, c, h, w), dtype=src.dtype)
    if dst.size:
        _launch(_gather, dst.size, src.reshape(n * c, src.shape[2], src.shape[3]),
                dst.reshape(n * c, h, w), fh, fw, _bands(n * c, h))
    return dst


def _scatter4(src, n, c, h, w, fh, fw):
    dst = np.zeros((n, c, h, w), dtype=src.dtype)  # calloc: usually cheaper than writing zeros
    if dst.size and src.size:
        _launch(_scatter, src.size, src.reshape(n * c, src.shape[2], src.shape[3]),
                dst.reshape(n * c, h, w), fh, fw, _bands(n * c, src.shape[2]))
    return dst


def upsample2d_forward(x, fh, fw):
    """Zero insertion: x: (N, C, H, W) -> y: (N, C, fh(H-1)+1, fw(W-1)+1), y[..., ::fh, ::fw] = x."""
    x = _array(x, "x")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    n, c, h, w = x.shape
    if h < 1 or w < 1:
        raise ValueError(f"x must have H, W >= 1, got shape {x.shape}")
    oh, ow = fh * (h - 1) + 1, fw * (w - 1) + 1
    check_size("upsample2d_forward output", n, c, oh, ow)
    return _scatter4(x, n, c, oh, ow, fh, fw)


def upsample2d_backward(dy, fh, fw):
    """dy: (N, C, H', W') -> dx = dy[..., ::fh, ::fw] (contiguous)."""
    dy = _array(dy, "dy")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    n, c, h, w = dy.shape
    return _gather4(dy, n, c, -(-h // fh), -(-w // fw), fh, fw)


def downsample2d_forward(x, fh, fw):
    """x: (N, C, H, W) -> x[..., ::fh, ::fw]: (N, C, ceil(H/fh), ceil(W/fw)) (contiguous)."""
    x = _array(x, "x")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    n, c, h, w = x.shape
    return _gather4(x, n, c, -(-h // fh), -(-w // fw), fh, fw)


def downsample2d_backward(dy, h, w, fh, fw):
    """dy: (N, C, ceil(h/fh), ceil(w/fw)) -> dx: zeros (N, C, h, w) with dx[..., ::fh, ::fw] = dy."""
    dy = _array(dy, "dy")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    h, w = _ints((h, w), ("h", "w"), 0)
    n, c = dy.shape[:2]
    if dy.shape[2:] != (-(-h // fh), -(-w // fw)):
        raise ValueError(f"dy must have spatial shape {(-(-h // fh), -(-w // fw))} for h={h}, w={w}, "
                         f"fh={fh}, fw={fw}; got {dy.shape[2:]}")
    return _scatter4(dy, n, c, h, w, fh, fw)


# ============================================================================ batch norm, ReLU
# x, dy: (N, C, L). Sums run per (n, c) row in float64 with 4 interleaved partial sums (lane
# k takes l = k mod 4, lanes added at the end of the row), then over n in order: a fixed
# order, the same for every thread count.
@njit(inline="always")
def _row_sums(v, shift):
    """(sum_l (v[l] - shift), sum_l (v[l] - shift)^2) of one row, in float64."""
    a0 = a1 = a2 = a3 = 0.0
    b0 = b1 = b2 = b3 = 0.0
    n = v.shape[0]
    l = 0
    while l + 4 <= n:
        d0 = np.float64(v[_U(l)]) - shift
        d1 = np.float64(v[_U(l + 1)]) - shift
        d2 = np.float64(v[_U(l + 2)]) - shift
        d3 = np.float64(v[_U(l + 3)]) - shift
        a0 += d0
        a1 += d1
        a2 += d2
        a3 += d3
        b0 += d0 * d0
        b1 += d1 * d1
        b2 += d2 * d2
        b3 += d3 * d3
        l += 4
    while l < n:
        d0 = np.float64(v[_U(l)]) - shift
        a0 += d0
        b0 += d0 * d0
        l += 1
    return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)


@njit(**_JIT)
def _bn_stats(x, mean, var):
    n_, c_, l_ = x.shape
    count = np.float64(n_) * np.float64(l_)
    for c in prange(c_):
        s = 0.0
        for n in range(n_):
            s += _row_sums(x[n, c], 0.0)[0]
        m = s / count
        ss = 0.0
        for n in range(n_):
            ss += _row_sums(x[n, c], m)[1]
        mean[c] = m
        var[c] = ss / count


@njit(**_JIT)
def _bn_forward(x, mean, inv_std, weight, bias, y):
    n_, c_, l_ = x.shape
    for t in prange(n_ * c_):
        n = t // c_
        c = t - n * c_
        m, s, w, b = mean[c], inv_std[c], weight[c], bias[c]
        src, dst = x[n, c], y[n, c]
        for l in range(l_):
            dst[_U(l)] = ((src[_U(l)] - m) * s) * w + b


@njit(**_JIT)
def _bn_backward(dy, x, mean, inv_std, weight, dx, dw, db, ab):
    n_, c_, l_ = x.shape
    count = np.float64(n_) * np.float64(l_)
    for c in prange(c_):
        m, s = mean[c], inv_std[c]
        a0 = a1 = a2 = a3 = 0.0
        b0 = b1 = b2 = b3 = 0.0
        for n in range(n_):
            g, xr = dy[n, c], x[n, c]
            l = 0
            while l + 4 <= l_:
                a0 += g[_U(l)]
                a1 += g[_U(l + 1)]
                a2 += g[_U(l + 2)]
                a3 += g[_U(l + 3)]
                b0 += np.float64(g[_U(l)]) * np.float64((xr[_U(l)] - m) * s)
                b1 += np.float64(g[_U(l + 1)]) * np.float64((xr[_U(l + 1)] - m) * s)
                b2 += np.float64(g[_U(l + 2)]) * np.float64((xr[_U(l + 2)] - m) * s)
                b3 += np.float64(g[_U(l + 3)]) * np.float64((xr[_U(l + 3)] - m) * s)
                l += 4
            while l < l_:
                a0 += g[_U(l)]
                b0 += np.float64(g[_U(l)]) * np.float64((xr[_U(l)] - m) * s)
                l += 1
        sdy = (a0 + a1) + (a2 + a3)
        sdx = (b0 + b1) + (b2 + b3)
        db[c] = sdy
        dw[c] = sdx
        ab[c, 0] = sdy / count
        ab[c, 1] = sdx / count
    for t in prange(n_ * c_):
        n = t // c_
        c = t - n * c_
        m, s = mean[c], inv_std[c]
        k = s * weight[c]
        a, b = ab[c, 0], ab[c, 1]  # ab has the data dtype: rounded once from float64
        g, xr, dst = dy[n, c], x[n, c], dx[n, c]
        for l in range(l_):
            xh = (xr[_U(l)] - m) * s
            dst[_U(l)] = k * ((g[_U(l)] - a) - xh * b)


@njit(**_JIT)
def _relu_fwd(x, y, zero):
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = zero if v <= 0 else v  # NaN fails v <= 0 and stays; -0.0 -> +0.0


@njit(**_JIT)
def _relu_bwd(dy, y, dx, one, zero):
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] * (one if y[i] > 0 else zero)


def _channel_vectors(c, dtype, **named):
    """Each keyword: a C-contiguous (c,) array of ``dtype`` (the data's), else TypeError/ValueError."""
    out = []
    for name, v in named.items():
        v = as_float_array(v, name, 1, f"({c},)", empty_ok=True)
        if v.dtype != dtype:
            raise TypeError(f"{name} must have the data dtype {dtype}, got {v.dtype}")
        if v.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},) (one value per channel), got {v.shape}")
        out.append(v)
    return out


def _bn_input(x, name="x"):
    x = as_float_array(x, name, 3, "(N, C, L)", empty_ok=True)
    if x.shape[0] * x.shape[2] == 0:
        raise ValueError(f"batch norm needs N*L >= 1 values per channel, got {name} shape {x.shape}")
    return x


def batchnorm_stats(x):
    """x: (N, C, L) -> (mean (C,), var (C,)), biased; sums in float64 (docs/KERNELS.md)."""
    x = _bn_input(x)
    mean = np.empty(x.shape[1], x.dtype)
    var = np.empty(x.shape[1], x.dtype)
    if x.shape[1]:
        _launch(_bn_stats, 2 * x.size, x, mean, var)
    return mean, var


def batchnorm_forward(x, mean, inv_std, weight, bias):
    """x: (N, C, L) -> y = ((x - mean) * inv_std) * weight + bias per channel (bit-identical)."""
    x = as_float_array(x, "x", 3, "(N, C, L)", empty_ok=True)
    vectors = _channel_vectors(x.shape[1], x.dtype, mean=mean, inv_std=inv_std, weight=weight, bias=bias)
    y = np.empty_like(x)
    if y.size:
        _launch(_bn_forward, x.size, x, *vectors, y)
    return y


def batchnorm_backward(dy, x, mean, inv_std, weight):
    """dy, x: (N, C, L) -> (dx, dweight (C,), dbias (C,)) with batch statistics; sums in float64."""
    x = _bn_input(x)
    dy = as_float_array(dy, "dy", 3, "(N, C, L)", empty_ok=True)
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise ValueError(f"dy ({dy.shape}, {dy.dtype}) must match x ({x.shape}, {x.dtype})")
    vectors = _channel_vectors(x.shape[1], x.dtype, mean=mean, inv_std=inv_std, weight=weight)
    dx = np.empty_like(x)
    dw = np.empty(x.shape[1], x.dtype)
    db = np.empty(x.shape[1], x.dtype)
    if x.shape[1]:
        _launch(_bn_backward, 3 * x.size, dy, x, *vectors, dx, dw, db, np.empty((x.shape[1], 2), x.dtype))
    return dx, dw, db


def _flat(a, name):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    return as_float_array(a.reshape(-1), name, 1, "(any shape)", empty_ok=True)


def relu_forward(x):
    """x (any shape) -> max(x, 0), as np.maximum (bit-identical to the reference)."""
    flat = _flat(x, "x")
    y = np.empty_like(flat)
    if y.size:
        _launch(_relu_fwd, y.size, flat, y, flat.dtype.type(0))
    return y.reshape(x.shape)


def relu_backward(dy, y):
    """dy, y (one shape) -> dy * (y > 0) (bit-identical to the reference)."""
    g, yf = _flat(dy, "dy"), _flat(y, "y")
    if dy.shape != y.shape or g.dtype != yf.dtype:
        raise ValueError(f"dy ({dy.shape}, {g.dtype}) must match y ({y.shape}, {yf.dtype})")
    dx = np.empty_like(g)
    if dx.size:
        _launch(_relu_bwd, dx.size, g, yf, dx, g.dtype.type(1), g.dtype.type(0))
    return dx.reshape(dy.shape)
