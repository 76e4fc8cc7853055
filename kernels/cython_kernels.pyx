# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend: compiled twins of ``fastconv.reference`` (see docs/KERNELS.md).

Every public function has the contract's signature, allocates its output with the
input's dtype (float32 or float64, through the fused type ``floating``) and runs a
``nogil`` loop, parallel with OpenMP over the flattened (batch, channel) planes (im2col:
over the rows of ``cols``). Integer arguments are range-checked (every int in [0 or 1,
2**31 - 1], buffer sizes multiplied with an overflow check) and checked against the array
shapes before any loop runs, so no argument can make a loop read or write out of bounds.

Results are bit-identical to the reference: every sum adds its terms in the reference's
order, in the input dtype (the claim and its reasons: docs/KERNELS.md, "Exactness").
"""
import numpy as np

cimport openmp
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.math cimport INFINITY
from libc.string cimport memcpy, memset

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

NAME = "cython"

ctypedef fused floating:
    float
    double

cdef extern from *:
    """
    /* One row of max-pool candidates for kernel offset (i, j): for q in [q0, q1),
       v = src[q*sw] replaces y[q] (and idx[q] = k0 + q*sw) when v > y[q] or v is NaN.
       The select is done on the bits, without a branch: on real data the comparison is
       unpredictable and a branch (or the conditional store gcc makes of a ternary)
       mispredicts. NaN handling relies on IEEE compares: never build with -ffast-math. */
    #include <stdint.h>
    #include <string.h>
    #define FC_MAX_STEP(T, UT, SW)                                                    \
        {                                                                             \
            T v = src[q * (SW)], b = y[q];                                            \
            int win = (v > b) | (v != v);                                             \
            UT vi, bi, m = (UT)0 - (UT)win;                                           \
            int64_t mk = -(int64_t)win;                                               \
            memcpy(&vi, &v, sizeof(T));                                               \
            memcpy(&bi, &b, sizeof(T));                                               \
            vi = (vi & m) | (bi & ~m);                                                \
            memcpy(&y[q], &vi, sizeof(T));                                            \
            idx[q] = ((k0 + q * (SW)) & mk) | (idx[q] & ~mk);                         \
        }
    #define FC_MAX_ROW(NAME, T, UT)                                                   \
    static inline void NAME(const T* src, Py_ssize_t sw, T* y, int64_t* idx,          \
                            int64_t k0, Py_ssize_t q0, Py_ssize_t q1) {               \
        Py_ssize_t q;                                                                 \
        if (sw == 1) { for (q = q0; q < q1; q++) FC_MAX_STEP(T, UT, 1) }              \
        else if (sw == 2) { for (q = q0; q < q1; q++) FC_MAX_STEP(T, UT, 2) }         \
        else { for (q = q0; q < q1; q++) FC_MAX_STEP(T, UT, sw) }                     \
    }
    FC_MAX_ROW(fc_max_row_f, float, uint32_t)
    FC_MAX_ROW(fc_max_row_d, double, uint64_t)
    """
    void fc_max_row_f(const float* src, Py_ssize_t sw, float* y, int64_t* idx, int64_t k0,
                      Py_ssize_t q0, Py_ssize_t q1) noexcept nogil
    void fc_max_row_d(const double* src, Py_ssize_t sw, double* y, int64_t* idx, int64_t k0,
                      Py_ssize_t q0, Py_ssize_t q1) noexcept nogil

# Below this many output elements a kernel runs on one thread: starting the team costs more.
cdef Py_ssize_t _PARALLEL_MIN = 1 << 16


def set_grain_size(n=None):
    """Kernels touching fewer than ``n`` elements run on one thread (0: always parallel;
    None: the default, 1 << 16)."""
    global _PARALLEL_MIN
    if n is None:
        n = 1 << 16
    if n < 0:
        raise ValueError(f"grain size must be >= 0, got {n}")
    _PARALLEL_MIN = n


def get_grain_size():
    """The current grain size (elements below which a kernel runs on one thread)."""
    return _PARALLEL_MIN


def set_num_threads(int n):
    """Number of OpenMP threads the kernels use from now on (this calling thread)."""
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    openmp.omp_set_num_threads(n)


def get_num_threads():
    """Number of OpenMP threads a parallel kernel would use now."""
    return openmp.omp_get_max_threads()


cdef inline int _threads(Py_ssize_t work) noexcept nogil:
    if work < _PARALLEL_MIN:
        return 1
    return openmp.omp_get_max_threads()


# ----------------------------------------------------------------------------- checks
# The guard of direct calls (the layer API checks the same first, in fastconv._validate):
# every int argument lies in [0 or 1, _INDEX_MAX] (fastconv._validate.INDEX_MAX), so that a
# product or sum of two of them cannot wrap Py_ssize_t, and buffer sizes are multiplied with
# _mul, which raises instead of wrapping. Ints past Py_ssize_t raise OverflowError on entry.
cdef Py_ssize_t _INDEX_MAX = 2147483647


cdef int _check_int(str what, Py_ssize_t v, Py_ssize_t lo) except -1:
    if v < lo or v > _INDEX_MAX:
        raise ValueError(f"{what} must be in [{lo}, {_INDEX_MAX}], got {v}")
    return 0


cdef Py_ssize_t _mul(Py_ssize_t a, Py_ssize_t b) except -1:
    """a*b for a, b >= 0; ValueError where Py_ssize_t would wrap."""
    if b != 0 and a > PY_SSIZE_T_MAX // b:
        raise ValueError(f"a buffer of {a} x {b} elements is past the index limit 2**63 - 1")
    return a * b


cdef inline Py_ssize_t _work(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """a*b saturated at PY_SSIZE_T_MAX: a work estimate for the thread count only."""
    if b != 0 and a > PY_SSIZE_T_MAX // b:
        return PY_SSIZE_T_MAX
    return a * b


cdef _check_grid(Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw,
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                 Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow):
    """Every int in range, and the (oh, ow) grid of windows fits the padded (h, w) input."""
    _check_int("h", h, 0)
    _check_int("w", w, 0)
    _check_int("kh", kh, 1)
    _check_int("kw", kw, 1)
    _check_int("sh", sh, 1)
    _check_int("sw", sw, 1)
    _check_int("ph", ph, 0)
    _check_int("pw", pw, 0)
    _check_int("dh", dh, 1)
    _check_int("dw", dw, 1)
    _check_int("oh", oh, 1)
    _check_int("ow", ow, 1)
    if (oh - 1) * sh + (kh - 1) * dh + 1 > h + 2 * ph:
        raise ValueError(f"output height {oh} needs more rows than the padded input has "
                         f"(H={h}, kh={kh}, sh={sh}, ph={ph}, dh={dh})")
    if (ow - 1) * sw + (kw - 1) * dw + 1 > w + 2 * pw:
        raise ValueError(f"output width {ow} needs more columns than the padded input has "
                         f"(W={w}, kw={kw}, sw={sw}, pw={pw}, dw={dw})")


cdef inline void _valid_range(Py_ssize_t off, Py_ssize_t s, Py_ssize_t size, Py_ssize_t n,
                              Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Outputs q in [lo, hi) with 0 <= q*s + off < size, clipped to [0, n)."""
    cdef Py_ssize_t a, b
    if off >= 0:
        a = 0
    else:
        a = (-off + s - 1) // s
    if size - 1 - off < 0:
        b = 0
    else:
        b = (size - 1 - off) // s + 1
    if a > n:
        a = n
    if b > n:
        b = n
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b


cdef inline void _gather(floating* d, const floating* s, Py_ssize_t n,
                         Py_ssize_t stride) noexcept nogil:
    """d[c] = s[c*stride] for c < n. Stride 1 is a memcpy, 2 a constant-stride loop gcc
    vectorises; others are unrolled by 4 (the plain strided loop ran at a third of numpy's
    speed on float64)."""
    cdef Py_ssize_t c = 0
    if stride == 1:
        memcpy(d, s, n * sizeof(floating))
    elif stride == 2:
        for c in range(n):
            d[c] = s[2 * c]
    else:
        while c + 4 <= n:
            d[c] = s[c * stride]
            d[c + 1] = s[(c + 1) * stride]
            d[c + 2] = s[(c + 2) * stride]
            d[c + 3] = s[(c + 3) * stride]
            c += 4
        while c < n:
            d[c] = s[c * stride]
            c += 1


cdef inline void _scatter(floating* d, const floating* s, Py_ssize_t n,
                          Py_ssize_t stride) noexcept nogil:
    """d[c*stride] = s[c] for c < n, unrolled like _gather."""
    cdef Py_ssize_t c = 0
    if stride == 2:
        for c in range(n):
            d[2 * c] = s[c]
    else:
        while c + 4 <= n:
            d[c * stride] = s[c]
            d[(c + 1) * stride] = s[c + 1]
            d[(c + 2) * stride] = s[c + 2]
            d[(c + 3) * stride] = s[c + 3]
            c += 4
        while c < n:
            d[c * stride] = s[c]
            c += 1


# ----------------------------------------------------------------------------- im2col
cdef void _im2col(const floating* x, floating* cols, Py_ssize_t N, Py_ssize_t C,
                  Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                  Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t L = oh * ow
    cdef Py_ssize_t nrows = N * C * kh * kw
    cdef Py_ssize_t r
    for r in prange(nrows, nogil=True, schedule="static", num_threads=_threads(nrows * L)):
        _im2col_row(x, cols, r, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


cdef inline void _im2col_row(const floating* x, floating* cols, Py_ssize_t r, Py_ssize_t C,
                             Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                             Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
                             Py_ssize_t ow) noexcept nogil:
    """Row r = (n*C + c)*kh*kw + i*kw + j of cols: one kernel offset, all outputs."""
    cdef Py_ssize_t j = r % kw
    cdef Py_ssize_t i = (r // kw) % kh
    cdef Py_ssize_t nc = r // (kh * kw)
    cdef const floating* plane = x + nc * H * W
    cdef floating* dst = cols + r * oh * ow
    cdef const floating* src
    cdef Py_ssize_t p, q, hi, q0, q1
    cdef Py_ssize_t woff = j * dw - pw
    _valid_range(woff, sw, W, ow, &q0, &q1)
    for p in range(oh):
        hi = p * sh + i * dh - ph
        if hi < 0 or hi >= H or q1 == q0:
            memset(dst, 0, ow * sizeof(floating))
        else:
            for q in range(q0):
                dst[q] = 0
            src = plane + hi * W + woff
            _gather(dst + q0, src + q0 * sw, q1 - q0, sw)
            for q in range(q1, ow):
                dst[q] = 0
        dst += ow


def im2col2d(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
             Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
             Py_ssize_t oh, Py_ssize_t ow):
    """x (N, C, H, W) -> cols (N, C*kh*kw, oh*ow); see fastconv.reference.im2col2d."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    _check_grid(H, W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    cdef Py_ssize_t rows = _mul(_mul(C, kh), kw), L = _mul(oh, ow)
    _mul(_mul(N, rows), L)
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, rows, L), dtype=dtype)
    cdef floating[:, :, ::1] cols = out
    if out.size == 0 or x.size == 0:
        if out.size:
            out.fill(0)
        return out
    with nogil:
        _im2col(&x[0, 0, 0, 0], &cols[0, 0, 0], N, C, H, W, kh, kw, sh, sw, ph, pw,
                dh, dw, oh, ow)
    return out


# ----------------------------------------------------------------------------- col2im
cdef void _col2im(const floating* cols, floating* x, Py_ssize_t N, Py_ssize_t C,
                  Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                  Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t nc
    cdef Py_ssize_t work = N * C * kh * kw * oh * ow
    for nc in prange(N * C, nogil=True, schedule="static", num_threads=_threads(work)):
        _col2im_plane(cols + nc * kh * kw * oh * ow, x + nc * H * W, H, W, kh, kw,
                      sh, sw, ph, pw, dh, dw, oh, ow)


cdef inline void _col2im_plane(const floating* src, floating* plane, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                               Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """Adds the kh*kw rows of one (n, c) into its zeroed plane, in (i, j) order as the reference."""
    cdef Py_ssize_t i, j, p, q, hi, q0, q1, woff
    cdef floating* dst
    cdef const floating* row
    for i in range(kh):
        for j in range(kw):
            woff = j * dw - pw
            _valid_range(woff, sw, W, ow, &q0, &q1)
            row = src + (i * kw + j) * oh * ow
            if q1 > q0:
                for p in range(oh):
                    hi = p * sh + i * dh - ph
                    if hi >= 0 and hi < H:
                        dst = plane + hi * W + woff
                        if sw == 1:
                            for q in range(q0, q1):
                                dst[q] += row[p * ow + q]
                        else:
                            for q in range(q0, q1):
                                dst[q * sw] += row[p * ow + q]


def col2im2d(const floating[:, :, ::1] cols, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
             Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow):
    """cols (N, c*kh*kw, oh*ow) -> x (N, c, h, w), summing overlaps; see fastconv.reference.col2im2d."""
    _check_int("c", c, 0)
    _check_grid(h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    cdef Py_ssize_t N = cols.shape[0]
    cdef Py_ssize_t rows = _mul(_mul(c, kh), kw), L = _mul(oh, ow)
    if cols.shape[1] != rows or cols.shape[2] != L:
        raise ValueError(f"cols has shape {(cols.shape[0], cols.shape[1], cols.shape[2])}, expected "
                         f"({N}, {rows}, {L}) for c={c}, kernel {kh}x{kw}, "
                         f"output grid {oh}x{ow}")
    dtype = np.float32 if floating is float else np.float64
    out = np.zeros((N, c, h, w), dtype=dtype)
    cdef floating[:, :, :, ::1] x = out
    if out.size == 0 or cols.shape[0] * cols.shape[1] * cols.shape[2] == 0:
        return out
    with nogil:
        _col2im(&cols[0, 0, 0], &x[0, 0, 0, 0], N, c, h, w, kh, kw, sh, sw, ph, pw,
                dh, dw, oh, ow)
    return out


# ----------------------------------------------------------------------------- max pool
cdef void _maxpool_fwd(const floating* x, floating* y, int64_t* idx, Py_ssize_t NC,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t nc
    for nc in prange(NC, nogil=True, schedule="static",
                     num_threads=_threads(_work(NC * oh * ow, kh * kw))):
        _maxpool_fwd_plane(x + nc * H * W, y + nc * oh * ow, idx + nc * oh * ow,
                           H, W, kh, kw, sh, sw, ph, pw, oh, ow)


cdef inline void _maxpool_fwd_plane(const floating* x, floating* y, int64_t* idx,
                                    Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                                    Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """One plane. Like the reference, visits kernel offsets (i, j) in order for all outputs at
    once, so each window is scanned row by row; the padding (-inf) is skipped: it never wins."""
    cdef Py_ssize_t i, j, p, q, hi, q0, q1, woff, r0, c0
    # Before any element wins, the argmax is the window's first unpadded pixel (as torch and
    # the reference): an all -inf window still routes its gradient inside the window.
    for p in range(oh):
        r0 = p * sh - ph
        if r0 < 0:
            r0 = 0
        for q in range(ow):
            c0 = q * sw - pw
            if c0 < 0:
                c0 = 0
            y[p * ow + q] = -INFINITY
            idx[p * ow + q] = r0 * W + c0
    for i in range(kh):
        for j in range(kw):
            woff = j - pw
            _valid_range(woff, sw, W, ow, &q0, &q1)
            if q1 == q0:
                continue
            for p in range(oh):
                hi = p * sh + i - ph
                if hi < 0 or hi >= H:
                    continue
                if floating is float:
                    fc_max_row_f(x + hi * W + woff, sw, y + p * ow, idx + p * ow,
                                 hi * W + woff, q0, q1)
                else:
                    fc_max_row_d(x + hi * W + woff, sw, y + p * ow, idx + p * ow,
                                 hi * W + woff, q0, q1)


def maxpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t oh, Py_ssize_t ow):
    """x (N, C, H, W) -> (y (N, C, oh, ow), idx int64); see fastconv.reference.maxpool2d_forward."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    _check_grid(H, W, kh, kw, sh, sw, ph, pw, 1, 1, oh, ow)
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((N, C, oh, ow), dtype=dtype)
    idx_arr = np.empty((N, C, oh, ow), dtype=np.int64)
    cdef floating[:, :, :, ::1] y = y_arr
    cdef int64_t[:, :, :, ::1] idx = idx_arr
    if y_arr.size == 0:
        return y_arr, idx_arr
    if x.shape[2] * x.shape[3] == 0:  # every window is padding only
        y_arr.fill(-np.inf)
        idx_arr[...] = (np.maximum(np.arange(oh) * sh - ph, 0)[:, None] * W
                        + np.maximum(np.arange(ow) * sw - pw, 0)[None, :])
        return y_arr, idx_arr
    with nogil:
        _maxpool_fwd(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &idx[0, 0, 0, 0], N * C, H, W,
                     kh, kw, sh, sw, ph, pw, oh, ow)
    return y_arr, idx_arr


cdef int _maxpool_bwd(const floating* dy, const int64_t* idx, floating* dx, Py_ssize_t NC,
                      Py_ssize_t L, Py_ssize_t HW) noexcept nogil:
    """Returns the number of (n, c) planes that had an index outside [0, HW)."""
    cdef Py_ssize_t nc
    cdef int bad = 0
    for nc in prange(NC, nogil=True, schedule="static", num_threads=_threads(NC * L)):
        bad += _maxpool_bwd_plane(dy + nc * L, idx + nc * L, dx + nc * HW, L, HW)
    return bad


cdef inline int _maxpool_bwd_plane(const floating* dy, const int64_t* idx, floating* dx,
                                   Py_ssize_t L, Py_ssize_t HW) noexcept nogil:
    cdef Py_ssize_t k
    cdef int64_t t
    cdef int bad = 0
    for k in range(L):
        t = idx[k]
        if t < 0 or t >= HW:
            bad = 1
        else:
            dx[t] += dy[k]
    return bad


def maxpool2d_backward(const floating[:, :, :, ::1] dy, const int64_t[:, :, :, ::1] idx,
                       Py_ssize_t h, Py_ssize_t w):
    """dy, idx (N, C, oh, ow) -> dx (N, C, h, w); see fastconv.reference.maxpool2d_backward."""
    _check_int("h", h, 0)
    _check_int("w", w, 0)
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1]
    cdef tuple ishape = (idx.shape[0], idx.shape[1], idx.shape[2], idx.shape[3])
    cdef tuple gshape = (dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3])
    if ishape != gshape:
        raise ValueError(f"idx has shape {ishape}, dy has {gshape}")
    dtype = np.float32 if floating is float else np.float64
    out = np.zeros((N, C, h, w), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = out
    cdef Py_ssize_t L = dy.shape[2] * dy.shape[3]
    cdef int bad = 0
    if N * C * L == 0:
        return out
    if h * w == 0:
        raise ValueError(f"idx points into an empty {h}x{w} input")
    with nogil:
        bad = _maxpool_bwd(&dy[0, 0, 0, 0], &idx[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, L, h * w)
    if bad:
        raise ValueError(f"idx has entries outside [0, h*w) = [0, {h * w})")
    return out


# ----------------------------------------------------------------------------- avg pool
cdef void _avgpool_fwd(const floating* x, floating* y, Py_ssize_t NC, Py_ssize_t H,
                       Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh,
                       Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t nc
    for nc in prange(NC, nogil=True, schedule="static",
                     num_threads=_threads(_work(NC * oh * ow, kh * kw))):
        _avgpool_fwd_plane(x + nc * H * W, y + nc * oh * ow, H, W, kh, kw, sh, sw, ph, pw,
                           oh, ow)


cdef inline void _avgpool_fwd_plane(const floating* x, floating* y, Py_ssize_t H, Py_ssize_t W,
                                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh,
                                    Py_ssize_t ow) noexcept nogil:
    """One plane: sums in kernel-offset (i, j) order from +0 as the reference (its padding
    adds +0.0, which changes no sum that starts at +0), then divides by kh*kw."""
    cdef Py_ssize_t i, j, p, q, hi, q0, q1, woff, L = oh * ow
    cdef floating area = <floating>(kh * kw)
    cdef floating* yrow
    cdef const floating* src
    for q in range(L):
        y[q] = 0
    for i in range(kh):
        for j in range(kw):
            woff = j - pw
            _valid_range(woff, sw, W, ow, &q0, &q1)
            if q1 == q0:
                continue
            for p in range(oh):
                hi = p * sh + i - ph
                if hi < 0 or hi >= H:
                    continue
                src = x + hi * W + woff
                yrow = y + p * ow
                if sw == 1:
                    for q in range(q0, q1):
                        yrow[q] = yrow[q] + src[q]
                elif sw == 2:
                    for q in range(q0, q1):
                        yrow[q] = yrow[q] + src[2 * q]
                else:
                    for q in range(q0, q1):
                        yrow[q] = yrow[q] + src[q * sw]
    for q in range(L):
        y[q] = y[q] / area


def avgpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t oh, Py_ssize_t ow):
    """x (N, C, H, W) -> y (N, C, oh, ow); see fastconv.reference.avgpool2d_forward."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    _check_grid(H, W, kh, kw, sh, sw, ph, pw, 1, 1, oh, ow)
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, oh, ow), dtype=dtype)
    cdef floating[:, :, :, ::1] y = out
    if out.size == 0:
        return out
    if H * W == 0:
        out.fill(0)
        return out
    with nogil:
        _avgpool_fwd(&x[0, 0, 0, 0], &y[0, 0, 0, 0], N * C, H, W, kh, kw, sh, sw, ph, pw,
                     oh, ow)
    return out


cdef void _avgpool_bwd(const floating* dy, floating* dx, Py_ssize_t NC, Py_ssize_t H,
                       Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh,
                       Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t nc
    for nc in prange(NC, nogil=True, schedule="static",
                     num_threads=_threads(_work(NC * oh * ow, kh * kw))):
        _avgpool_bwd_plane(dy + nc * oh * ow, dx + nc * H * W, H, W, kh, kw, sh, sw, ph, pw,
                           oh, ow)


cdef inline void _avgpool_bwd_plane(const floating* dy, floating* dx, Py_ssize_t H, Py_ssize_t W,
                                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh,
                                    Py_ssize_t ow) noexcept nogil:
    """Adds dy/(kh*kw) to each window pixel; per pixel the shares arrive in (i, j) order."""
    cdef Py_ssize_t i, j, p, q, hi, q0, q1, woff
    cdef floating area = <floating>(kh * kw)
    cdef floating* dst
    cdef const floating* g
    for i in range(kh):
        for j in range(kw):
            woff = j - pw
            _valid_range(woff, sw, W, ow, &q0, &q1)
            if q1 > q0:
                for p in range(oh):
                    hi = p * sh + i - ph
                    if hi >= 0 and hi < H:
                        dst = dx + hi * W + woff
                        g = dy + p * ow
                        for q in range(q0, q1):
                            dst[q * sw] += g[q] / area


def avgpool2d_backward(const floating[:, :, :, ::1] dy, Py_ssize_t h, Py_ssize_t w,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw):
    """dy (N, C, oh, ow) -> dx (N, C, h, w); see fastconv.reference.avgpool2d_backward."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    _check_grid(h, w, kh, kw, sh, sw, ph, pw, 1, 1, oh, ow)
    dtype = np.float32 if floating is float else np.float64
    out = np.zeros((N, C, h, w), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = out
    if out.size == 0:
        return out
    with nogil:
        _avgpool_bwd(&dy[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, h, w, kh, kw, sh, sw, ph, pw,
                     oh, ow)
    return out


# ----------------------------------------------------------------------------- resampling
cdef void _strided_copy(const floating* src, floating* dst, Py_ssize_t NC,
                        Py_ssize_t sH, Py_ssize_t sW, Py_ssize_t dH, Py_ssize_t dW,
                        Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t s_rs, Py_ssize_t s_cs,
                        Py_ssize_t d_rs, Py_ssize_t d_cs) noexcept nogil:
    """dst_plane[r*d_rs, c*d_cs] = src_plane[r*s_rs, c*s_cs] for r < rows, c < cols, every plane.
    One of s_cs, d_cs must be 1 (a gather or a scatter, never both)."""
    cdef Py_ssize_t nc
    cdef int nt = _threads(NC * rows * cols)
    if nt == 1:
        for nc in range(NC):
            _strided_copy_plane(src + nc * sH * sW, dst + nc * dH * dW, sW, dW, rows, cols,
                                s_rs, s_cs, d_rs, d_cs)
    else:
        for nc in prange(NC, nogil=True, schedule="static", num_threads=nt):
            _strided_copy_plane(src + nc * sH * sW, dst + nc * dH * dW, sW, dW, rows, cols,
                                s_rs, s_cs, d_rs, d_cs)


cdef inline void _strided_copy_plane(const floating* src, floating* dst, Py_ssize_t sW,
                                     Py_ssize_t dW, Py_ssize_t rows, Py_ssize_t cols,
                                     Py_ssize_t s_rs, Py_ssize_t s_cs, Py_ssize_t d_rs,
                                     Py_ssize_t d_cs) noexcept nogil:
    cdef Py_ssize_t r, c
    cdef const floating* s
    cdef floating* d
    for r in range(rows):
        s = src + r * s_rs * sW
        d = dst + r * d_rs * dW
        if d_cs == 1:
            _gather(d, s, cols, s_cs)
        else:
            _scatter(d, s, cols, d_cs)


def upsample2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t fh, Py_ssize_t fw):
    """x (N, C, H, W) -> y (N, C, fh*(H-1)+1, fw*(W-1)+1), zeros between the samples."""
    _check_int("fh", fh, 1)
    _check_int("fw", fw, 1)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    _check_int("H", H, 1)
    _check_int("W", W, 1)
    cdef Py_ssize_t Ho = fh * (H - 1) + 1, Wo = fw * (W - 1) + 1
    dtype = np.float32 if floating is float else np.float64
    out = np.zeros((N, C, Ho, Wo), dtype=dtype)
    cdef floating[:, :, :, ::1] y = out
    if out.size == 0:
        return out
    with nogil:
        _strided_copy(&x[0, 0, 0, 0], &y[0, 0, 0, 0], N * C, H, W, Ho, Wo, H, W, 1, 1, fh, fw)
    return out


def upsample2d_backward(const floating[:, :, :, ::1] dy, Py_ssize_t fh, Py_ssize_t fw):
    """dy (N, C, H', W') -> dx = dy[..., ::fh, ::fw] (a new contiguous array)."""
    _check_int("fh", fh, 1)
    _check_int("fw", fw, 1)
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], Hi = dy.shape[2], Wi = dy.shape[3]
    cdef Py_ssize_t H = (Hi + fh - 1) // fh, W = (Wi + fw - 1) // fw
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, H, W), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = out
    if out.size == 0:
        return out
    with nogil:
        _strided_copy(&dy[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, Hi, Wi, H, W, H, W, fh, fw, 1, 1)
    return out


def downsample2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t fh, Py_ssize_t fw):
    """x (N, C, H, W) -> y = x[..., ::fh, ::fw], shape (N, C, ceil(H/fh), ceil(W/fw))."""
    _check_int("fh", fh, 1)
    _check_int("fw", fw, 1)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = (H + fh - 1) // fh, Wo = (W + fw - 1) // fw
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, Ho, Wo), dtype=dtype)
    cdef floating[:, :, :, ::1] y = out
    if out.size == 0:
        return out
    with nogil:
        _strided_copy(&x[0, 0, 0, 0], &y[0, 0, 0, 0], N * C, H, W, Ho, Wo, Ho, Wo, fh, fw, 1, 1)
    return out


def downsample2d_backward(const floating[:, :, :, ::1] dy, Py_ssize_t h, Py_ssize_t w,
                          Py_ssize_t fh, Py_ssize_t fw):
    """dy (N, C, ceil(h/fh), ceil(w/fw)) -> dx zeros (N, C, h, w) with dx[..., ::fh, ::fw] = dy."""
    _check_int("fh", fh, 1)
    _check_int("fw", fw, 1)
    _check_int("h", h, 0)
    _check_int("w", w, 0)
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], Hi = dy.shape[2], Wi = dy.shape[3]
    if Hi != (h + fh - 1) // fh or Wi != (w + fw - 1) // fw:
        raise ValueError(f"dy has spatial shape ({Hi}, {Wi}), expected "
                         f"({(h + fh - 1) // fh}, {(w + fw - 1) // fw}) for h={h}, w={w}, "
                         f"fh={fh}, fw={fw}")
    dtype = np.float32 if floating is float else np.float64
    out = np.zeros((N, C, h, w), dtype=dtype)
    cdef floating[:, :, :, ::1] dx = out
    if out.size == 0 or Hi * Wi == 0:
        return out
    with nogil:
        _strided_copy(&dy[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, Hi, Wi, h, w, Hi, Wi, 1, 1, fh, fw)
    return out
