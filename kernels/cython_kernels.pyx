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
    /* v = V replaces BEST (and BI = K) when v > BEST or v is NaN; BEST, BI are lvalues. */
    #define FC_TAKE(T, UT, V, K, BEST, BI)                                            \
        {                                                                             \
            T v_ = (V), b_ = (BEST);                                                  \
            int w_ = (v_ > b_) | (v_ != v_);                                          \
            UT vi_, bb_, m_ = (UT)0 - (UT)w_;                                         \
            int64_t mk_ = -(int64_t)w_;                                               \
            memcpy(&vi_, &v_, sizeof(T));                                             \
            memcpy(&bb_, &b_, sizeof(T));                                             \
            vi_ = (vi_ & m_) | (bb_ & ~m_);                                           \
            memcpy(&(BEST), &vi_, sizeof(T));                                         \
            (BI) = ((K) & mk_) | ((BI) & ~mk_);                                       \
        }
    #define FC_MAX_STEP(T, UT, SW) FC_TAKE(T, UT, src[q * (SW)], k0 + q * (SW), y[q], idx[q])
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
    /* The 2x2 stride-2 unpadded max pool of one plane (oh = H/2, ow = W/2 rounded down):
       each window read once, in the scan order (0,0), (0,1), (1,0), (1,1) with the same rule.
       The first element always stands (-inf does not win, but idx starts at that pixel). */
    #define FC_MAX2X2(NAME, T, UT)                                                    \
    static inline void NAME(const T* x, Py_ssize_t W, T* y, int64_t* idx,             \
                            Py_ssize_t oh, Py_ssize_t ow) {                           \
        Py_ssize_t p, q;                                                              \
        for (p = 0; p < oh; p++) {                                                    \
            const T* r0 = x + 2 * p * W;                                              \
            const T* r1 = r0 + W;                                                     \
            int64_t k0 = 2 * p * W;                                                   \
            for (q = 0; q < ow; q++) {                                                \
                T best = r0[2 * q];                                                   \
                int64_t bi = k0 + 2 * q;                                              \
                FC_TAKE(T, UT, r0[2 * q + 1], k0 + 2 * q + 1, best, bi)               \
                FC_TAKE(T, UT, r1[2 * q], k0 + W + 2 * q, best, bi)                   \
                FC_TAKE(T, UT, r1[2 * q + 1], k0 + W + 2 * q + 1, best, bi)           \
                y[p * ow + q] = best;                                                 \
                idx[p * ow + q] = bi;                                                 \
            }                                                                         \
        }                                                                             \
    }
    FC_MAX2X2(fc_max2x2_f, float, uint32_t)
    FC_MAX2X2(fc_max2x2_d, double, uint64_t)
    """
    void fc_max_row_f(const float* src, Py_ssize_t sw, float* y, int64_t* idx, int64_t k0,
                      Py_ssize_t q0, Py_ssize_t q1) noexcept nogil
    void fc_max_row_d(const double* src, Py_ssize_t sw, double* y, int64_t* idx, int64_t k0,
                      Py_ssize_t q0, Py_ssize_t q1) noexcept nogil
    void fc_max2x2_f(const float* x, Py_ssize_t W, float* y, int64_t* idx, Py_ssize_t oh,
                     Py_ssize_t ow) noexcept nogil
    void fc_max2x2_d(const double* x, Py_ssize_t W, double* y, int64_t* idx, Py_ssize_t oh,
                     Py_ssize_t ow) noexcept nogil

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


cdef int _check_axis(str side, Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p,
                     Py_ssize_t d, Py_ssize_t o, str what) except -1:
    """One axis (``side`` "h" or "w"): every int in range, and the ``o`` windows fit the
    padded input: ``(o - 1) s + (k - 1) d + 1 <= size + 2p``."""
    _check_int(side, size, 0)
    _check_int("k" + side, k, 1)
    _check_int("s" + side, s, 1)
    _check_int("p" + side, p, 0)
    _check_int("d" + side, d, 1)
    _check_int("o" + side, o, 1)
    if (o - 1) * s + (k - 1) * d + 1 > size + 2 * p:
        raise ValueError(f"output {what} {o} needs more {'rows' if side == 'h' else 'columns'} than "
                         f"the padded input has ({side.upper()}={size}, k{side}={k}, s{side}={s}, "
                         f"p{side}={p}, d{side}={d})")
    return 0


cdef _check_grid(Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw,
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                 Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow):
    """Every int in range, and the (oh, ow) grid of windows fits the padded (h, w) input."""
    _check_axis("h", h, kh, sh, ph, dh, oh, "height")
    _check_axis("w", w, kw, sw, pw, dw, ow, "width")


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
    cdef Py_ssize_t p, q, r0, c0
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        if floating is float:
            fc_max2x2_f(x, W, y, idx, oh, ow)
        else:
            fc_max2x2_d(x, W, y, idx, oh, ow)
        return
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
    _pool_fwd_walk(x, y, idx, H, W, kh, kw, sh, sw, ph, pw, oh, ow, True)


cdef inline void _pool_fwd_walk(const floating* x, floating* y, int64_t* idx, Py_ssize_t H,
                                Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh,
                                Py_ssize_t ow, bint is_max) noexcept nogil:
    """The pooling forward of one plane, y initialised by the caller: for every kernel offset
    (i, j) in order, every output row p whose input row exists takes its valid columns
    [q0, q1) into y (max with argmax ``idx``, or the running sum; the padding is skipped)."""
    cdef Py_ssize_t i, j, p, q, hi, q0, q1, woff
    cdef floating* yrow
    cdef const floating* src
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
                if is_max:
                    if floating is float:
                        fc_max_row_f(src, sw, yrow, idx + p * ow, hi * W + woff, q0, q1)
                    else:
                        fc_max_row_d(src, sw, yrow, idx + p * ow, hi * W + woff, q0, q1)
                elif sw == 1:
                    for q in range(q0, q1):
                        yrow[q] = yrow[q] + src[q]
                elif sw == 2:
                    for q in range(q0, q1):
                        yrow[q] = yrow[q] + src[2 * q]
                else:
                    for q in range(q0, q1):
                        yrow[q] = yrow[q] + src[q * sw]


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
    """Zeroes the plane (in the thread that fills it: cache-warm, no page-fault stall of a
    calloc'ed buffer), then adds each dy to its argmax in row-major (p, q) order."""
    cdef Py_ssize_t k
    cdef int64_t t
    cdef int bad = 0
    memset(dx, 0, HW * sizeof(floating))
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
    out = np.empty((N, C, h, w), dtype=dtype)  # zeroed plane by plane in _maxpool_bwd_plane
    cdef floating[:, :, :, ::1] dx = out
    cdef Py_ssize_t L = dy.shape[2] * dy.shape[3]
    cdef int bad = 0
    if N * C * L == 0:  # no gradient to route: all zeros
        out.fill(0)
        return out
    if h * w == 0:
        raise ValueError(f"idx points into an empty {h}x{w} input")
    with nogil:
        bad = _maxpool_bwd(&dy[0, 0, 0, 0], &idx[0, 0, 0, 0], &dx[0, 0, 0, 0], N * C, L, h * w)
    if bad:
        raise ValueError(f"idx has entries outside [0, h*w) = [0, {h * w})")
    return out


# ----------------------------------------------------------------------------- avg pool
cdef void _avgpool(const floating* src, floating* dst, Py_ssize_t NC, Py_ssize_t H,
                   Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                   Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh,
                   Py_ssize_t ow, bint forward) noexcept nogil:
    """Every (n, c) plane: forward src = x (H, W) -> dst = y (oh, ow); backward src = dy
    (oh, ow) -> dst = dx (H, W), zeroed by the caller."""
    cdef Py_ssize_t nc
    for nc in prange(NC, nogil=True, schedule="static",
                     num_threads=_threads(_work(NC * oh * ow, kh * kw))):
        if forward:
            _avgpool_fwd_plane(src + nc * H * W, dst + nc * oh * ow, H, W, kh, kw, sh, sw,
                               ph, pw, oh, ow)
        else:
            _avgpool_bwd_plane(src + nc * oh * ow, dst + nc * H * W, H, W, kh, kw, sh, sw,
                               ph, pw, oh, ow)


cdef inline void _avgpool_fwd_plane(const floating* x, floating* y, Py_ssize_t H, Py_ssize_t W,
                                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh,
                                    Py_ssize_t ow) noexcept nogil:
    """One plane: sums in kernel-offset (i, j) order from +0 as the reference (its padding
    adds +0.0, which changes no sum that starts at +0), then divides by kh*kw."""
    cdef Py_ssize_t q, L = oh * ow
    cdef floating area = <floating>(kh * kw)
    for q in range(L):
        y[q] = 0
    _pool_fwd_walk(x, y, NULL, H, W, kh, kw, sh, sw, ph, pw, oh, ow, False)
    for q in range(L):
        y[q] = y[q] / area


cdef object _avgpool_call(const floating[:, :, :, ::1] src, Py_ssize_t h, Py_ssize_t w,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                          Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow,
                          bint forward):
    """Checks, allocates and runs one direction of the average pool: forward src = x
    (N, C, h, w) -> y (N, C, oh, ow); backward src = dy (N, C, oh, ow) -> dx (N, C, h, w)."""
    cdef Py_ssize_t N = src.shape[0], C = src.shape[1]
    _check_grid(h, w, kh, kw, sh, sw, ph, pw, 1, 1, oh, ow)
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, oh, ow), dtype=dtype) if forward else np.zeros((N, C, h, w), dtype=dtype)
    if out.size == 0:
        return out
    if h * w == 0:  # forward: every window is padding only
        out.fill(0)
        return out
    cdef floating[:, :, :, ::1] dst = out
    with nogil:
        _avgpool(&src[0, 0, 0, 0], &dst[0, 0, 0, 0], N * C, h, w, kh, kw, sh, sw, ph, pw,
                 oh, ow, forward)
    return out


def avgpool2d_forward(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t oh, Py_ssize_t ow):
    """x (N, C, H, W) -> y (N, C, oh, ow); see fastconv.reference.avgpool2d_forward."""
    return _avgpool_call(x, x.shape[2], x.shape[3], kh, kw, sh, sw, ph, pw, oh, ow, True)


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
    return _avgpool_call(dy, h, w, kh, kw, sh, sw, ph, pw, dy.shape[2], dy.shape[3], False)


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
    """dy (N, C, H', W') -> dx = dy[..., ::fh, ::fw] (a new contiguous array): the same
    subsampling as downsample2d_forward."""
    return downsample2d_forward(dy, fh, fw)


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


# ----------------------------------------------------------------------------- batch norm
# x, dy: (N, C, L). Sums run per (n, c) row of L in float64 with interleaved partial sums
# (lane k takes the elements l with l mod lanes = k, 8 lanes for the mean, 4 for the others;
# the lanes are added pairwise at the end of the row), then over n in order: a fixed order,
# so the result does not depend on the thread count.
cdef inline double _row_sum(const floating* v, Py_ssize_t L, double shift) noexcept nogil:
    """sum_l (v[l] - shift) in float64."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t l = 0
    while l + 8 <= L:
        a0 += v[l] - shift
        a1 += v[l + 1] - shift
        a2 += v[l + 2] - shift
        a3 += v[l + 3] - shift
        a4 += v[l + 4] - shift
        a5 += v[l + 5] - shift
        a6 += v[l + 6] - shift
        a7 += v[l + 7] - shift
        l += 8
    while l < L:
        a0 += v[l] - shift
        l += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline double _row_sum_sq(const floating* v, Py_ssize_t L, double shift) noexcept nogil:
    """sum_l (v[l] - shift)^2 in float64."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, d0, d1, d2, d3
    cdef Py_ssize_t l = 0
    while l + 4 <= L:
        d0 = v[l] - shift
        d1 = v[l + 1] - shift
        d2 = v[l + 2] - shift
        d3 = v[l + 3] - shift
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        l += 4
    while l < L:
        d0 = v[l] - shift
        a0 += d0 * d0
        l += 1
    return (a0 + a1) + (a2 + a3)


cdef inline void _row_sums_dy(const floating* dy, const floating* x, Py_ssize_t L, floating m,
                              floating s, double* sum_dy, double* sum_dy_xhat) noexcept nogil:
    """Adds sum_l dy and sum_l dy * xhat (xhat = (x - m) * s in the data dtype) in float64."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef Py_ssize_t l = 0
    while l + 4 <= L:
        a0 += dy[l]
        a1 += dy[l + 1]
        a2 += dy[l + 2]
        a3 += dy[l + 3]
        b0 += <double>dy[l] * <double>((x[l] - m) * s)
        b1 += <double>dy[l + 1] * <double>((x[l + 1] - m) * s)
        b2 += <double>dy[l + 2] * <double>((x[l + 2] - m) * s)
        b3 += <double>dy[l + 3] * <double>((x[l + 3] - m) * s)
        l += 4
    while l < L:
        a0 += dy[l]
        b0 += <double>dy[l] * <double>((x[l] - m) * s)
        l += 1
    sum_dy[0] += (a0 + a1) + (a2 + a3)
    sum_dy_xhat[0] += (b0 + b1) + (b2 + b3)


cdef int _check_channel_vectors(Py_ssize_t C, tuple named) except -1:
    for name, length in named:
        if length != C:
            raise ValueError(f"{name} must have shape ({C},) (one value per channel), got ({length},)")
    return 0


def batchnorm_stats(const floating[:, :, ::1] x):
    """x (N, C, L) -> (mean (C,), var (C,)), biased; see fastconv.reference.batchnorm_stats."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c, n
    if N * L == 0:
        raise ValueError(f"batchnorm_stats needs N*L >= 1 values per channel, got x shape "
                         f"({N}, {C}, {L})")
    dtype = np.float32 if floating is float else np.float64
    mean_arr, var_arr = np.empty(C, dtype=dtype), np.empty(C, dtype=dtype)
    cdef floating[::1] mean = mean_arr, var = var_arr
    cdef double count = <double>N * <double>L, s, m
    if C == 0:
        return mean_arr, var_arr
    with nogil:
        for c in prange(C, schedule="static", num_threads=_threads(_work(N * C, L))):
            s = 0
            for n in range(N):
                s = s + _row_sum(&x[n, c, 0], L, 0.0)
            m = s / count
            s = 0
            for n in range(N):
                s = s + _row_sum_sq(&x[n, c, 0], L, m)
            mean[c] = <floating>m
            var[c] = <floating>(s / count)
    return mean_arr, var_arr


def batchnorm_forward(const floating[:, :, ::1] x, const floating[::1] mean,
                      const floating[::1] inv_std, const floating[::1] weight,
                      const floating[::1] bias):
    """x (N, C, L) -> y (N, C, L); see fastconv.reference.batchnorm_forward (bit-identical)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], nc, c, l
    _check_channel_vectors(C, (("mean", mean.shape[0]), ("inv_std", inv_std.shape[0]),
                               ("weight", weight.shape[0]), ("bias", bias.shape[0])))
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, L), dtype=dtype)
    cdef floating[:, :, ::1] y = out
    cdef const floating* src
    cdef floating* dst
    cdef floating m, s, w, b
    if out.size == 0:
        return out
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=_threads(_work(N * C, L))):
            c = nc % C
            m = mean[c]
            s = inv_std[c]
            w = weight[c]
            b = bias[c]
            src = &x[0, 0, 0] + nc * L
            dst = &y[0, 0, 0] + nc * L
            for l in range(L):
                dst[l] = ((src[l] - m) * s) * w + b
    return out


def batchnorm_backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                       const floating[::1] mean, const floating[::1] inv_std,
                       const floating[::1] weight):
    """dy, x (N, C, L) -> (dx (N, C, L), dweight (C,), dbias (C,)) with batch statistics;
    see fastconv.reference.batchnorm_backward (sums in float64, see docs/KERNELS.md)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], nc, c, n, l
    if (dy.shape[0], dy.shape[1], dy.shape[2]) != (N, C, L):
        raise ValueError(f"dy has shape {(dy.shape[0], dy.shape[1], dy.shape[2])}, x has {(N, C, L)}")
    _check_channel_vectors(C, (("mean", mean.shape[0]), ("inv_std", inv_std.shape[0]),
                               ("weight", weight.shape[0])))
    if N * L == 0:
        raise ValueError(f"batchnorm_backward needs N*L >= 1 values per channel, got x shape "
                         f"({N}, {C}, {L})")
    dtype = np.float32 if floating is float else np.float64
    dx_arr = np.empty((N, C, L), dtype=dtype)
    dw_arr, db_arr = np.empty(C, dtype=dtype), np.empty(C, dtype=dtype)
    ab_arr = np.empty((C, 2), dtype=np.float64)  # per channel: dbias / M, dweight / M
    cdef floating[:, :, ::1] dx = dx_arr
    cdef floating[::1] dw = dw_arr, db = db_arr
    cdef double[:, ::1] ab = ab_arr
    cdef double count = <double>N * <double>L, sdy, sdx
    cdef floating m, s, k, a, b, xh
    cdef const floating* g
    cdef const floating* xr
    cdef floating* dst
    if C == 0:
        return dx_arr, dw_arr, db_arr
    with nogil:
        for c in prange(C, schedule="static", num_threads=_threads(_work(N * C, L))):
            sdy = 0
            sdx = 0
            for n in range(N):
                _row_sums_dy(&dy[n, c, 0], &x[n, c, 0], L, mean[c], inv_std[c], &sdy, &sdx)
            db[c] = <floating>sdy
            dw[c] = <floating>sdx
            ab[c, 0] = sdy / count
            ab[c, 1] = sdx / count
        for nc in prange(N * C, schedule="static", num_threads=_threads(_work(N * C, L))):
            c = nc % C
            m = mean[c]
            s = inv_std[c]
            k = s * weight[c]
            a = <floating>ab[c, 0]
            b = <floating>ab[c, 1]
            g = &dy[0, 0, 0] + nc * L
            xr = &x[0, 0, 0] + nc * L
            dst = &dx[0, 0, 0] + nc * L
            for l in range(L):
                xh = (xr[l] - m) * s
                dst[l] = k * ((g[l] - a) - xh * b)
    return dx_arr, dw_arr, db_arr


# ----------------------------------------------------------------------------- ReLU
def _relu_forward_flat(const floating[::1] x):
    cdef Py_ssize_t n = x.shape[0], i
    dtype = np.float32 if floating is float else np.float64
    out = np.empty(n, dtype=dtype)
    cdef floating[::1] y = out
    cdef floating v
    if n:
        with nogil:
            for i in prange(n, schedule="static", num_threads=_threads(n)):
                v = x[i]
                y[i] = 0 if v <= 0 else v  # NaN fails v <= 0 and stays; -0.0 -> +0.0
    return out


def _relu_backward_flat(const floating[::1] dy, const floating[::1] y):
    cdef Py_ssize_t n = dy.shape[0], i
    dtype = np.float32 if floating is float else np.float64
    out = np.empty(n, dtype=dtype)
    cdef floating[::1] dx = out
    if n:
        with nogil:
            for i in prange(n, schedule="static", num_threads=_threads(n)):
                dx[i] = dy[i] * (<floating>1 if y[i] > 0 else <floating>0)
    return out


def relu_forward(x):
    """x (any shape) -> max(x, 0); see fastconv.reference.relu_forward (bit-identical)."""
    x = np.ascontiguousarray(x)
    return _relu_forward_flat(x.reshape(-1)).reshape(x.shape)


def relu_backward(dy, y):
    """dy, y (one shape) -> dy * (y > 0); see fastconv.reference.relu_backward (bit-identical)."""
    dy, y = np.ascontiguousarray(dy), np.ascontiguousarray(y)
    if dy.shape != y.shape:
        raise ValueError(f"dy has shape {dy.shape}, y has {y.shape}")
    return _relu_backward_flat(dy.reshape(-1), y.reshape(-1)).reshape(dy.shape)
