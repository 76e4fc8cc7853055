"""Numba backend of the kernel contract (docs/KERNELS.md).

Every public function has exactly the signature of its twin in ``fastconv/reference.py``:
it checks the shapes with a few integer comparisons (so that no call, however wrong, can
read or write outside an array), allocates the output in the input dtype and runs a
``@njit(parallel=True)`` kernel. The kernels split their work with ``prange`` over
independent output rows (flattened batch * channel * row), so no two threads ever write
the same element and the result does not depend on the thread count.

Floating-point parity with the reference:
- im2col, up/downsampling and the max pool are copies/selections: bit-identical.
- col2im and the average pool backward add the contributions to each pixel in kernel-offset
  order (i, then j), starting from zero, exactly as the reference: bit-identical.
- the average pool forward sums the window in (i, j) order in the input dtype and divides
  by ``dtype(kh*kw)``, as the reference: bit-identical (skipping the padded zeros changes
  nothing, a running sum started at +0.0 is never -0.0).
- the max pool backward accumulates in row-major (p, q) order, the order of ``np.add.at``.
No float32 computation is promoted to float64 (scalars are passed in the array dtype).

Compiled kernels are cached on disk (``cache=True``, in ``kernels/__pycache__`` when it
is writable), so only the very first process pays the JIT compile.
"""
import operator

import numba
import numpy as np
from numba import njit, prange

NAME = "numba"

_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def set_num_threads(n):
    """Use ``n`` threads in the kernels (capped at ``numba.config.NUMBA_NUM_THREADS``)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads():
    """Number of threads the kernels use now."""
    return numba.get_num_threads()


# ============================================================================ kernels
@njit(inline="always")
def _q_range(off, stride, width, ow):
    """Outputs q in [lo, hi) whose column ``q*stride + off`` lies inside [0, width)."""
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    last = width - 1 - off  # q*stride <= last
    hi = 0
    if last >= 0:
        hi = last // stride + 1
    if hi > ow:
        hi = ow
    if lo > hi:
        lo = hi
    return lo, hi


@njit(**_JIT)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    n_, c_, h_, w_ = x.shape
    kk = kh * kw
    rows = c_ * kk
    for t in prange(n_ * rows):
        n = t // rows
        r = t - n * rows
        c = r // kk
        ij = r - c * kk
        i = ij // kw
        j = ij - i * kw
        off = j * dw - pw
        lo, hi = _q_range(off, sw, w_, ow)
        dst = cols[n, r]
        for p in range(oh):
            hh = p * sh + i * dh - ph
            base = p * ow
            if hh < 0 or hh >= h_:
                for q in range(ow):
                    dst[base + q] = 0
            else:
                src = x[n, c, hh]
                for q in range(lo):
                    dst[base + q] = 0
                if sw == 1:
                    for q in range(lo, hi):
                        dst[base + q] = src[q + off]
                else:
                    for q in range(lo, hi):
                        dst[base + q] = src[q * sw + off]
                for q in range(hi, ow):
                    dst[base + q] = 0


@njit(**_JIT)
def _col2im(cols, x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    # Gather form, one output row (n, c, y) per task: for pixel (y, x) the contributions
    # come from kernel offsets (i, j) in increasing order, each at most once -> the
    # reference's summation order.
    n_, c_, h_, w_ = x.shape
    kk = kh * kw
    per_n = c_ * h_
    for t in prange(n_ * per_n):
        n = t // per_n
        rem = t - n * per_n
        c = rem // h_
        y = rem - c * h_
        dst = x[n, c, y]
        for xx in range(w_):
            dst[xx] = 0
        for i in range(kh):
            hp = y + ph - i * dh  # = p * sh
            if hp < 0:
                break
            p = hp // sh
            if p * sh != hp or p >= oh:
                continue
            base = p * ow
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _q_range(off, sw, w_, ow)
                src = cols[n, c * kk + i * kw + j]
                if sw == 1:
                    for q in range(lo, hi):
                        dst[q + off] += src[base + q]
                else:
                    for q in range(lo, hi):
                        dst[q * sw + off] += src[base + q]


@njit(**_JIT)
def _maxpool_fwd(x, y, idx, kh, kw, sh, sw, ph, pw, ninf):
    # Window scanned row by row over its unpadded pixels (padding is -inf and never wins
    # under ``v > best or isnan(v)``); no winner leaves idx = 0, as the reference.
    n_, c_, h_, w_ = x.shape
    oh = y.shape[2]
    ow = y.shape[3]
    per_n = c_ * oh
    for t in prange(n_ * per_n):
        n = t // per_n
        rem = t - n * per_n
        c = rem // oh
        p = rem - c * oh
        h0 = p * sh - ph
        hs = max(h0, 0)
        he = min(h0 + kh, h_)
        yr = y[n, c, p]
        ir = idx[n, c, p]
        for q in range(ow):
            w0 = q * sw - pw
            ws = max(w0, 0)
            we = min(w0 + kw, w_)
            best = ninf
            bi = 0
            for hh in range(hs, he):
                src = x[n, c, hh]
                for ww in range(ws, we):
                    v = src[ww]
                    if v > best or v != v:
                        best = v
                        bi = hh * w_ + ww
            yr[q] = best
            ir[q] = bi


@njit(**_JIT)
def _maxpool_bwd(dy, idx, dx):
    # dy, idx: (N*C, oh*ow); dx: (N*C, h*w). One (n, c) plane per task, row-major order.
    # Returns the number of out-of-range indices (skipped).
    planes, m = dy.shape
    size = dx.shape[1]
    bad = 0
    for t in prange(planes):
        dst = dx[t]
        for k in range(size):
            dst[k] = 0
        g = dy[t]
        ix = idx[t]
        for k in range(m):
            a = ix[k]
            if a >= 0 and a < size:
                dst[a] += g[k]
            else:
                bad += 1
    return bad


@njit(**_JIT)
def _avgpool_fwd(x, y, kh, kw, sh, sw, ph, pw, div):
    n_, c_, h_, w_ = x.shape
    oh = y.shape[2]
    ow = y.shape[3]
    per_n = c_ * oh
    for t in prange(n_ * per_n):
        n = t // per_n
        rem = t - n * per_n
        c = rem // oh
        p = rem - c * oh
        dst = y[n, c, p]
        for q in range(ow):
            dst[q] = 0
        for i in range(kh):
            hh = p * sh + i - ph
            if hh < 0 or hh >= h_:
                continue
            src = x[n, c, hh]
            for j in range(kw):
                off = j - pw
                lo, hi = _q_range(off, sw, w_, ow)
                if sw == 1:
                    for q in range(lo, hi):
                        dst[q] += src[q + off]
                else:
                    for q in range(lo, hi):
                        dst[q] += src[q * sw + off]
        for q in range(ow):
            dst[q] = dst[q] / div


@njit(**_JIT)
def _avgpool_bwd(dy, dx, kh, kw, sh, sw, ph, pw, div):
    # Gather form over rows of dx; per pixel, offsets (i, j) in increasing order.
    n_, c_, h_, w_ = dx.shape
    oh = dy.shape[2]
    ow = dy.shape[3]
    per_n = c_ * h_
    for t in prange(n_ * per_n):
        n = t // per_n
        rem = t - n * per_n
        c = rem // h_
        y = rem - c * h_
        dst = dx[n, c, y]
        for xx in range(w_):
            dst[xx] = 0
        for i in range(kh):
            hp = y + ph - i
            if hp < 0:
                break
            p = hp // sh
            if p * sh != hp or p >= oh:
                continue
            g = dy[n, c, p]
            for j in range(kw):
                off = j - pw
                lo, hi = _q_range(off, sw, w_, ow)
                if sw == 1:
                    for q in range(lo, hi):
                        dst[q + off] += g[q] / div
                else:
                    for q in range(lo, hi):
                        dst[q * sw + off] += g[q] / div


@njit(**_JIT)
def _gather(src, dst, fh, fw):
    # dst[n, c, a, b] = src[n, c, a*fh, b*fw]; dst sized ceil(src/f).
    n_, c_, h_, w_ = dst.shape
    per_n = c_ * h_
    for t in prange(n_ * per_n):
        n = t // per_n
        rem = t - n * per_n
        c = rem // h_
        a = rem - c * h_
        d = dst[n, c, a]
        s = src[n, c, a * fh]
        for b in range(w_):
            d[b] = s[b * fw]


@njit(**_JIT)
def _scatter(src, dst, fh, fw):
    # dst = zeros; dst[n, c, a*fh, b*fw] = src[n, c, a, b]; src sized ceil(dst/f).
    n_, c_, h_, w_ = dst.shape
    nb = min(src.shape[3], (w_ - 1) // fw + 1)  # columns of src that land inside dst
    per_n = c_ * h_
    for t in prange(n_ * per_n):
        n = t // per_n
        rem = t - n * per_n
        c = rem // h_
        yy = rem - c * h_
        d = dst[n, c, yy]
        for b in range(w_):
            d[b] = 0
        a = yy // fh
        if a * fh == yy and a < src.shape[2]:
            s = src[n, c, a]
            for b in range(nb):
                d[b * fw] = s[b]


# ============================================================================ wrappers
def _array(x, name, ndim=4):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    return np.ascontiguousarray(x)


def _ints(values, names, minimum):
    out = []
    for v, name in zip(values, names):
        v = operator.index(v)
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")
        out.append(v)
    return out


def _fits(size, k, s, p, d, o, what):
    """The windows of an ``o``-long output grid must fit the padded input."""
    if (o - 1) * s + d * (k - 1) + 1 > size + 2 * p:
        raise ValueError(f"{what}: output size {o} (kernel {k}, stride {s}, dilation {d}) does not "
                         f"fit the input size {size} with padding {p}")


def im2col2d(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """x: (N, C, H, W) -> cols: (N, C*kh*kw, oh*ow); see docs/KERNELS.md."""
    x = _array(x, "x")
    kh, kw, sh, sw, dh, dw, oh, ow = _ints((kh, kw, sh, sw, dh, dw, oh, ow),
                                           ("kh", "kw", "sh", "sw", "dh", "dw", "oh", "ow"), 1)
    ph, pw = _ints((ph, pw), ("ph", "pw"), 0)
    n, c, h, w = x.shape
    _fits(h, kh, sh, ph, dh, oh, "im2col2d (height)")
    _fits(w, kw, sw, pw, dw, ow, "im2col2d (width)")
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    if cols.size:
        _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
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
    _fits(h, kh, sh, ph, dh, oh, "col2im2d (height)")
    _fits(w, kw, sw, pw, dw, ow, "col2im2d (width)")
    x = np.empty((n, c, h, w), dtype=cols.dtype)
    if x.size:
        _col2im(cols, x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return x


def _pool_args(x, kh, kw, sh, sw, ph, pw, oh, ow):
    x = _array(x, "x")
    kh, kw, sh, sw, oh, ow = _ints((kh, kw, sh, sw, oh, ow), ("kh", "kw", "sh", "sw", "oh", "ow"), 1)
    ph, pw = _ints((ph, pw), ("ph", "pw"), 0)
    _fits(x.shape[2], kh, sh, ph, 1, oh, "pool (height)")
    _fits(x.shape[3], kw, sw, pw, 1, ow, "pool (width)")
    return x, kh, kw, sh, sw, ph, pw, oh, ow


def maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """x: (N, C, H, W) -> (y, idx int64), both (N, C, oh, ow); idx = h*W + w of the winner."""
    x, kh, kw, sh, sw, ph, pw, oh, ow = _pool_args(x, kh, kw, sh, sw, ph, pw, oh, ow)
    n, c = x.shape[:2]
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    idx = np.empty((n, c, oh, ow), dtype=np.int64)
    if y.size:
        _maxpool_fwd(x, y, idx, kh, kw, sh, sw, ph, pw, x.dtype.type(-np.inf))
    return y, idx


def maxpool2d_backward(dy, idx, h, w):
    """dy, idx: (N, C, oh, ow) -> dx: (N, C, h, w) with dx.flat[idx] += dy per (n, c)."""
    dy = _array(dy, "dy")
    h, w = _ints((h, w), ("h", "w"), 0)
    if not isinstance(idx, np.ndarray) or idx.shape != dy.shape:
        raise ValueError(f"idx must be an ndarray of shape {dy.shape}, got "
                         f"{getattr(idx, 'shape', type(idx).__name__)}")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    n, c, oh, ow = dy.shape
    dx = np.empty((n, c, h, w), dtype=dy.dtype)
    if dx.size:
        bad = _maxpool_bwd(dy.reshape(n * c, oh * ow), idx.reshape(n * c, oh * ow),
                           dx.reshape(n * c, h * w))
        if bad:
            raise ValueError(f"idx has {bad} entries outside [0, {h * w})")
    elif dy.size and idx.size:
        raise ValueError(f"idx has entries but the input plane ({h}, {w}) is empty")
    return dx


def avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """x: (N, C, H, W) -> y: (N, C, oh, ow), window sums of the zero-padded x / (kh*kw)."""
    x, kh, kw, sh, sw, ph, pw, oh, ow = _pool_args(x, kh, kw, sh, sw, ph, pw, oh, ow)
    n, c = x.shape[:2]
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    if y.size:
        _avgpool_fwd(x, y, kh, kw, sh, sw, ph, pw, x.dtype.type(kh * kw))
    return y


def avgpool2d_backward(dy, h, w, kh, kw, sh, sw, ph, pw):
    """dy: (N, C, oh, ow) -> dx: (N, C, h, w), each dy/(kh*kw) added to its window's pixels."""
    dy = _array(dy, "dy")
    kh, kw, sh, sw = _ints((kh, kw, sh, sw), ("kh", "kw", "sh", "sw"), 1)
    h, w, ph, pw = _ints((h, w, ph, pw), ("h", "w", "ph", "pw"), 0)
    n, c, oh, ow = dy.shape
    if oh and ow:
        _fits(h, kh, sh, ph, 1, oh, "avgpool2d_backward (height)")
        _fits(w, kw, sw, pw, 1, ow, "avgpool2d_backward (width)")
    dx = np.empty((n, c, h, w), dtype=dy.dtype)
    if dx.size:
        _avgpool_bwd(dy, dx, kh, kw, sh, sw, ph, pw, dy.dtype.type(kh * kw))
    return dx


def upsample2d_forward(x, fh, fw):
    """Zero insertion: x: (N, C, H, W) -> y: (N, C, fh(H-1)+1, fw(W-1)+1), y[..., ::fh, ::fw] = x."""
    x = _array(x, "x")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    n, c, h, w = x.shape
    if h < 1 or w < 1:
        raise ValueError(f"x must have H, W >= 1, got shape {x.shape}")
    y = np.empty((n, c, fh * (h - 1) + 1, fw * (w - 1) + 1), dtype=x.dtype)
    if y.size:
        _scatter(x, y, fh, fw)
    return y


def upsample2d_backward(dy, fh, fw):
    """dy: (N, C, H', W') -> dx = dy[..., ::fh, ::fw] (contiguous)."""
    dy = _array(dy, "dy")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    n, c, h, w = dy.shape
    dx = np.empty((n, c, -(-h // fh), -(-w // fw)), dtype=dy.dtype)
    if dx.size:
        _gather(dy, dx, fh, fw)
    return dx


def downsample2d_forward(x, fh, fw):
    """x: (N, C, H, W) -> x[..., ::fh, ::fw]: (N, C, ceil(H/fh), ceil(W/fw)) (contiguous)."""
    x = _array(x, "x")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    n, c, h, w = x.shape
    y = np.empty((n, c, -(-h // fh), -(-w // fw)), dtype=x.dtype)
    if y.size:
        _gather(x, y, fh, fw)
    return y


def downsample2d_backward(dy, h, w, fh, fw):
    """dy: (N, C, ceil(h/fh), ceil(w/fw)) -> dx: zeros (N, C, h, w) with dx[..., ::fh, ::fw] = dy."""
    dy = _array(dy, "dy")
    fh, fw = _ints((fh, fw), ("fh", "fw"), 1)
    h, w = _ints((h, w), ("h", "w"), 0)
    n, c = dy.shape[:2]
    if dy.shape[2:] != (-(-h // fh), -(-w // fw)):
        raise ValueError(f"dy must have spatial shape {(-(-h // fh), -(-w // fw))} for h={h}, w={w}, "
                         f"fh={fh}, fw={fw}; got {dy.shape[2:]}")
    dx = np.empty((n, c, h, w), dtype=dy.dtype)
    if dx.size:
        _scatter(dy, dx, fh, fw)
    return dx
