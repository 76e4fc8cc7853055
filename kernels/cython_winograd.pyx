# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython twins of the Winograd transforms of ``fastconv.winograd`` (docs/KERNELS.md).

Same four functions and signatures as the reference. The tile loops are C (below), run
``nogil`` under OpenMP (``prange``) over rows of tiles (one (n, c, tile-row) per task) or over
output channels for the small filter transforms. Inside a task, tiles are processed
``FC_LANES`` at a time with the tile index as the innermost (vectorised) loop, and the result
of each of the a*a positions is stored as a contiguous run of tiles, so the GEMM operands
come out in the (a*a, channels, tiles) layout BLAS reads. Zero matrix entries are skipped.

Every index a loop computes is checked against the array shapes first (reads outside the
image are the zero padding), so no argument can read or write out of bounds. Results equal
the reference up to rounding (the order of the sums differs).
"""
import numpy as np

from fastconv.kernels import cython_kernels as _kernels

cimport openmp
from cython.parallel cimport prange

NAME = "cython"

ctypedef fused floating:
    float
    double

cdef extern from *:
    """
    #include <string.h>
    #define FC_LANES 8
    #define FC_AMAX 8
    /* The tile loops are compiled twice, for AVX2 and for the baseline, and the loader picks
       the one the CPU runs (gcc function multi-versioning); elsewhere the baseline only.
       Short copies stay inline loops (gcc would turn them into memcpy/memmove calls). */
    #if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
    #define FC_SIMD __attribute__((target_clones("avx2", "default"),                  \
                                   optimize("no-tree-loop-distribute-patterns")))
    #else
    #define FC_SIMD
    #endif
    /* FC_LANES tiles at once: one GCC vector per transform entry (the tile is the lane). */
    typedef float fc_vf __attribute__((vector_size(FC_LANES * sizeof(float))));
    typedef double fc_vd __attribute__((vector_size(FC_LANES * sizeof(double))));
    /* The standard matrices as straight-line code (kind 4: F(4x4) B^T / A^T, kind 2: F(2x2)),
       with the shared sub-expressions of Lavin's formulas; the same sums as L @ v up to rounding.
       in[k*is] -> out[k*os]. */
    #define FC_SPECIAL(SUF, VT, T)                                                        \
    static inline __attribute__((always_inline)) void fc_bt6_##SUF(const VT* in, int is,    \
                                                                   VT* out, int os) {       \
        VT d0 = in[0], d1 = in[is], d2 = in[2 * is], d3 = in[3 * is], d4 = in[4 * is],      \
           d5 = in[5 * is];                                                                 \
        VT a1 = d4 - d2 * (T)4, a2 = d3 - d1 * (T)4, b1 = d4 - d2, b2 = (d3 - d1) * (T)2;   \
        out[0] = d0 * (T)4 - d2 * (T)5 + d4;                                                \
        out[os] = a1 + a2;                                                                  \
        out[2 * os] = a1 - a2;                                                              \
        out[3 * os] = b1 + b2;                                                              \
        out[4 * os] = b1 - b2;                                                              \
        out[5 * os] = d1 * (T)4 - d3 * (T)5 + d5;                                           \
    }                                                                                       \
    static inline __attribute__((always_inline)) void fc_a64_##SUF(const VT* in, int is,    \
                                                                   VT* out, int os) {       \
        VT d0 = in[0], d1 = in[is], d2 = in[2 * is], d3 = in[3 * is];                       \
        VT s02 = d0 + d2, s13 = d1 + d3, p = d0 + d2 * (T)4, q = d1 * (T)2 + d3 * (T)8;     \
        out[0] = d0;                                                                        \
        out[os] = s02 + s13;                                                                \
        out[2 * os] = s02 - s13;                                                            \
        out[3 * os] = p + q;                                                                \
        out[4 * os] = p - q;                                                                \
        out[5 * os] = d3;                                                                   \
    }                                                                                       \
    static inline __attribute__((always_inline)) void fc_bt4_##SUF(const VT* in, int is,    \
                                                                   VT* out, int os) {       \
        VT d0 = in[0], d1 = in[is], d2 = in[2 * is], d3 = in[3 * is];                       \
        out[0] = d0 - d2;                                                                   \
        out[os] = d1 + d2;                                                                  \
        out[2 * os] = d2 - d1;                                                              \
        out[3 * os] = d1 - d3;                                                              \
    }                                                                                       \
    static inline __attribute__((always_inline)) void fc_at6_##SUF(const VT* in, int is,    \
                                                                   VT* out, int os) {       \
        VT s12 = in[is] + in[2 * is], d12 = in[is] - in[2 * is];                            \
        VT s34 = in[3 * is] + in[4 * is], d34 = in[3 * is] - in[4 * is];                    \
        out[0] = in[0] + s12 + s34;                                                         \
        out[os] = d12 + d34 * (T)2;                                                         \
        out[2 * os] = s12 + s34 * (T)4;                                                     \
        out[3 * os] = d12 + d34 * (T)8 + in[5 * is];                                        \
    }                                                                                       \
    static inline __attribute__((always_inline)) void fc_at4_##SUF(const VT* in, int is,    \
                                                                   VT* out, int os) {       \
        out[0] = in[0] + in[is] + in[2 * is];                                               \
        out[os] = in[is] - in[2 * is] - in[3 * is];                                         \
    }
    /* The separable 2-D transform X -> L X L^T of a block of tiles: the 1-D transform F
       (fc_bt6, fc_apply, ...; trailing arguments passed on) over each of the NROWS rows of IN
       into T1, then over each of the NCOLS columns of T1 into RES. */
    #define FC_TWO_PASS(F, IN, T1, RES, NROWS, NCOLS, ...)                                \
        for (int i_ = 0; i_ < (NROWS); i_++) F(&IN[i_][0], 1, &T1[i_][0], 1, ##__VA_ARGS__); \
        for (int v_ = 0; v_ < (NCOLS); v_++)                                                \
            F(&T1[0][v_], FC_AMAX, &RES[0][v_], FC_AMAX, ##__VA_ARGS__);
    /* Any matrix L (rows x cols, row-major): out[k*os] = sum_j L[k*cols + j] in[j*is];
       zero entries are skipped. */
    #define FC_APPLY(SUF, VT, T)                                                          \
    static inline __attribute__((always_inline)) void fc_apply_##SUF(                      \
            const VT* in, int is, VT* out, int os, const T* L, int rows, int cols) {        \
        for (int k = 0; k < rows; k++) {                                                    \
            VT acc = in[0] * L[k * cols];                                                   \
            for (int j = 1; j < cols; j++) {                                                \
                T cf = L[k * cols + j];                                                     \
                if (cf != 0) acc += in[j * is] * cf;                                        \
            }                                                                               \
            out[k * os] = acc;                                                              \
        }                                                                                   \
    }
    /* One row of tiles of the tile transform V = L d L^T (L: a x r, row-major).
       plane: one (H, W) image; the tile tj reads rows row0 + i and columns tj*m + col0 + j,
       i, j < r (zero outside); out[(u*a + v)*xs + tj] receives V[u][v] of tile tj. */
    #define FC_TILES_IN(NAME, T, VT, SUF)                                                 \
    static inline __attribute__((always_inline)) void NAME##_body(                          \
            const T* plane, Py_ssize_t H, Py_ssize_t W, const T* L, int a, int r, int m,    \
            Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t tw, T* out, Py_ssize_t xs,         \
            int kind) {                                                                     \
        VT d[FC_AMAX][FC_AMAX], t1[FC_AMAX][FC_AMAX], res[FC_AMAX][FC_AMAX];                \
        T seg[FC_LANES * FC_AMAX + FC_AMAX];   /* one input row, zero-padded */             \
        memset(d, 0, sizeof(d));                                                            \
        for (Py_ssize_t tj0 = 0; tj0 < tw; tj0 += FC_LANES) {                               \
            int nl = (tw - tj0 < FC_LANES) ? (int)(tw - tj0) : FC_LANES;                    \
            Py_ssize_t cf0 = tj0 * m + col0, span = (Py_ssize_t)(nl - 1) * m + r;           \
            Py_ssize_t k0 = cf0 < 0 ? (-cf0 < span ? -cf0 : span) : 0; /* valid: [k0, k1) */ \
            Py_ssize_t k1 = W - cf0 < span ? W - cf0 : span;                                \
            for (int i = 0; i < r; i++) {                                                   \
                Py_ssize_t row = row0 + i;                                                  \
                if (row < 0 || row >= H || k1 <= k0) {                                      \
                    for (Py_ssize_t k = 0; k < span; k++) seg[k] = 0;                       \
                } else {                                                                    \
                    const T* src = plane + row * W + cf0;                                   \
                    for (Py_ssize_t k = 0; k < k0; k++) seg[k] = 0;                         \
                    for (Py_ssize_t k = k0; k < k1; k++) seg[k] = src[k];                   \
                    for (Py_ssize_t k = k1; k < span; k++) seg[k] = 0;                      \
                }                                                                           \
                for (int j = 0; j < r; j++)                                                 \
                    for (int l = 0; l < nl; l++) d[i][j][l] = seg[l * m + j];               \
            }                                                                               \
            if (kind == 4) {                                                                \
                FC_TWO_PASS(fc_bt6_##SUF, d, t1, res, 6, 6) \
            } else if (kind == 40) {                                                        \
                FC_TWO_PASS(fc_a64_##SUF, d, t1, res, 4, 6) \
            } else if (kind == 2) {                                                         \
                FC_TWO_PASS(fc_bt4_##SUF, d, t1, res, 4, 4) \
            } else {                                                                        \
                FC_TWO_PASS(fc_apply_##SUF, d, t1, res, r, a, L, a, r) \
            }                                                                               \
            for (int u = 0; u < a; u++)                                                     \
                for (int v = 0; v < a; v++) {                                               \
                    T* o = out + (Py_ssize_t)(u * a + v) * xs + tj0;                        \
                    if (nl == FC_LANES) memcpy(o, &res[u][v], sizeof(VT));                  \
                    else for (int l = 0; l < nl; l++) o[l] = res[u][v][l];                  \
                }                                                                           \
        }                                                                                   \
    }                                                                                       \
    /* the sizes of F(2x2) and F(4x4) get their own fully unrolled copies */               \
    /* kind 4 / 2: L is the B^T of F(4x4) / F(2x2), 40: the A of F(4x4) (dy transform);   \
       checked by the caller. 0: any L */                                                   \
    FC_SIMD static void NAME(const T* plane, Py_ssize_t H, Py_ssize_t W, const T* L,        \
                             int a, int r, int m, Py_ssize_t row0, Py_ssize_t col0,         \
                             Py_ssize_t tw, T* out, Py_ssize_t xs, int kind) {              \
        if (kind == 4)                                                                      \
            NAME##_body(plane, H, W, L, 6, 6, 4, row0, col0, tw, out, xs, 4);               \
        else if (kind == 2)                                                                 \
            NAME##_body(plane, H, W, L, 4, 4, 2, row0, col0, tw, out, xs, 2);               \
        else if (kind == 40)                                                                \
            NAME##_body(plane, H, W, L, 6, 4, 4, row0, col0, tw, out, xs, 40);              \
        else if (a == 6 && r == 4 && m == 4)                                                \
            NAME##_body(plane, H, W, L, 6, 4, 4, row0, col0, tw, out, xs, 0);               \
        else if (a == 4 && r == 2 && m == 2)                                                \
            NAME##_body(plane, H, W, L, 4, 2, 2, row0, col0, tw, out, xs, 0);               \
        else                                                                                \
            NAME##_body(plane, H, W, L, a, r, m, row0, col0, tw, out, xs, 0);               \
    }
    /* One row of tiles of the output transform Y = R M R^T (R: m x a), cropped:
       M[(u*a + v)*xs + tj] is position (u, v) of tile tj; tile tj writes rows row0 + i
       (< oh) and columns tj*m + j (< ow) of the (oh, ow) plane y. */
    #define FC_TILES_OUT(NAME, T, VT, SUF)                                                \
    static inline __attribute__((always_inline)) void NAME##_body(                          \
            const T* M, Py_ssize_t xs, const T* R, int a, int m, Py_ssize_t tw, T* y,       \
            Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t row0, int kind) {                      \
        VT mv[FC_AMAX][FC_AMAX], t1[FC_AMAX][FC_AMAX], res[FC_AMAX][FC_AMAX];               \
        T seg[FC_LANES * FC_AMAX];              /* one output row of the block */           \
        memset(mv, 0, sizeof(mv));                                                          \
        for (Py_ssize_t tj0 = 0; tj0 < tw; tj0 += FC_LANES) {                               \
            int nl = (tw - tj0 < FC_LANES) ? (int)(tw - tj0) : FC_LANES;                    \
            for (int u = 0; u < a; u++)                                                     \
                for (int v = 0; v < a; v++) {                                               \
                    const T* s = M + (Py_ssize_t)(u * a + v) * xs + tj0;                    \
                    if (nl == FC_LANES) memcpy(&mv[u][v], s, sizeof(VT));                   \
                    else for (int l = 0; l < nl; l++) mv[u][v][l] = s[l];                   \
                }                                                                           \
            if (kind == 4) {                                                                \
                FC_TWO_PASS(fc_at6_##SUF, mv, t1, res, 6, 4) \
            } else if (kind == 2) {                                                         \
                FC_TWO_PASS(fc_at4_##SUF, mv, t1, res, 4, 2) \
            } else {                                                                        \
                FC_TWO_PASS(fc_apply_##SUF, mv, t1, res, a, m, R, m, a) \
            }                                                                               \
            Py_ssize_t c0 = tj0 * m;                                                        \
            Py_ssize_t n_out = ow - c0 < (Py_ssize_t)nl * m ? ow - c0 : (Py_ssize_t)nl * m; \
            for (int i = 0; i < m; i++) {                                                   \
                Py_ssize_t row = row0 + i;                                                  \
                if (row >= oh) break;                                                       \
                for (int j = 0; j < m; j++)                                                 \
                    for (int l = 0; l < nl; l++) seg[l * m + j] = res[i][j][l];             \
                T* dst = y + row * ow + c0;                                                 \
                for (Py_ssize_t k = 0; k < n_out; k++) dst[k] = seg[k];                     \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    /* kind 4 / 2: R is the A^T of F(4x4) / F(2x2) (checked by the caller), 0: any R */   \
    FC_SIMD static void NAME(const T* M, Py_ssize_t xs, const T* R, int a, int m,           \
                             Py_ssize_t tw, T* y, Py_ssize_t oh, Py_ssize_t ow,             \
                             Py_ssize_t row0, int kind) {                                   \
        if (kind == 4) NAME##_body(M, xs, R, 6, 4, tw, y, oh, ow, row0, 4);                 \
        else if (kind == 2) NAME##_body(M, xs, R, 4, 2, tw, y, oh, ow, row0, 2);            \
        else if (a == 6 && m == 4) NAME##_body(M, xs, R, 6, 4, tw, y, oh, ow, row0, 0);     \
        else if (a == 4 && m == 2) NAME##_body(M, xs, R, 4, 2, tw, y, oh, ow, row0, 0);     \
        else NAME##_body(M, xs, R, a, m, tw, y, oh, ow, row0, 0);                           \
    }
    /* For nb <= 16 filters k at once (the innermost, vectorised loop):
       out[k*o_k + (u*q + v)*o_e] = sum_{i,j} P[u*p + i] P[v*p + j] g[k*g_k + i*g_row + j*g_col],
       P (q, p). U = G g G^T (p = 3, q = a) and dW = G^T dU G (p = a, q = 3); a block of
       consecutive filters keeps the (a*a, O, C) side's accesses contiguous runs. */
    #define FC_SANDWICH(NAME, T)                                                          \
    FC_SIMD static void NAME(const T* g, Py_ssize_t g_k, Py_ssize_t g_row, Py_ssize_t g_col, \
                             const T* P, int q, int p, T* out, Py_ssize_t o_k,              \
                             Py_ssize_t o_e, int nb) {                                      \
        T t[FC_AMAX][FC_AMAX][16], acc[16];                                                 \
        for (int u = 0; u < q; u++)                                                         \
            for (int j = 0; j < p; j++) {                                                   \
                for (int k = 0; k < nb; k++) t[u][j][k] = 0;                                \
                for (int i = 0; i < p; i++) {                                               \
                    T cf = P[u * p + i];                                                    \
                    const T* s = g + i * g_row + j * g_col;                                 \
                    for (int k = 0; k < nb; k++) t[u][j][k] += cf * s[k * g_k];             \
                }                                                                           \
            }                                                                               \
        for (int u = 0; u < q; u++)                                                         \
            for (int v = 0; v < q; v++) {                                                   \
                for (int k = 0; k < nb; k++) acc[k] = 0;                                    \
                for (int j = 0; j < p; j++) {                                               \
                    T cf = P[v * p + j];                                                    \
                    for (int k = 0; k < nb; k++) acc[k] += cf * t[u][j][k];                 \
                }                                                                           \
                T* o = out + (Py_ssize_t)(u * q + v) * o_e;                                 \
                for (int k = 0; k < nb; k++) o[k * o_k] = acc[k];                           \
            }                                                                               \
    }
    FC_SPECIAL(f, fc_vf, float)
    FC_SPECIAL(d, fc_vd, double)
    FC_APPLY(f, fc_vf, float)
    FC_APPLY(d, fc_vd, double)
    FC_TILES_IN(fc_tiles_in_f, float, fc_vf, f)
    FC_TILES_IN(fc_tiles_in_d, double, fc_vd, d)
    FC_TILES_OUT(fc_tiles_out_f, float, fc_vf, f)
    FC_TILES_OUT(fc_tiles_out_d, double, fc_vd, d)
    FC_SANDWICH(fc_sandwich_f, float)
    FC_SANDWICH(fc_sandwich_d, double)
    """
    int FC_AMAX
    void fc_tiles_in_f(const float* plane, Py_ssize_t H, Py_ssize_t W, const float* L, int a,
                       int r, int m, Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t tw,
                       float* out, Py_ssize_t xs, int kind) noexcept nogil
    void fc_tiles_in_d(const double* plane, Py_ssize_t H, Py_ssize_t W, const double* L, int a,
                       int r, int m, Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t tw,
                       double* out, Py_ssize_t xs, int kind) noexcept nogil
    void fc_tiles_out_f(const float* M, Py_ssize_t xs, const float* R, int a, int m,
                        Py_ssize_t tw, float* y, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t row0, int kind) noexcept nogil
    void fc_tiles_out_d(const double* M, Py_ssize_t xs, const double* R, int a, int m,
                        Py_ssize_t tw, double* y, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t row0, int kind) noexcept nogil
    void fc_sandwich_f(const float* g, Py_ssize_t g_k, Py_ssize_t g_row, Py_ssize_t g_col,
                       const float* P, int q, int p, float* out, Py_ssize_t o_k, Py_ssize_t o_e,
                       int nb) noexcept nogil
    void fc_sandwich_d(const double* g, Py_ssize_t g_k, Py_ssize_t g_row, Py_ssize_t g_col,
                       const double* P, int q, int p, double* out, Py_ssize_t o_k, Py_ssize_t o_e,
                       int nb) noexcept nogil

# The grain size and thread count are cython_kernels' (fc.set_grain_size, fc.set_num_threads):
# below ``grain`` elements touched a transform runs on one thread, as ATen's parallel_for does.
get_num_threads = _kernels.get_num_threads


cdef inline int _threads(Py_ssize_t work, Py_ssize_t grain) noexcept nogil:
    if work < grain:
        return 1
    return openmp.omp_get_max_threads()


_STANDARD = {}


cdef int _kind(L, str which):
    """4 or 2 when ``L`` is exactly the ``which`` matrix ("BT" or "AT") of F(4x4) / F(2x2) in its
    dtype, 40 when a tile-in ``L`` is the A of F(4x4) (the C code then runs the straight-line
    formulas), else 0 (any matrix)."""
    key = (which, L.dtype.str)
    if key not in _STANDARD:
        from fastconv import winograd as wino
        _STANDARD[key] = [(m, wino.matrices(m, L.dtype)[0 if which == "AT" else 2]) for m in (4, 2)]
        if which == "BT":
            _STANDARD[key].append((40, np.ascontiguousarray(wino.matrices(4, L.dtype)[0].T)))
    for m, mat in _STANDARD[key]:
        if L.shape == mat.shape and np.array_equal(L, mat):
            return m
    return 0


cdef _check_matrix(str name, Py_ssize_t rows, Py_ssize_t cols):
    if rows < 1 or cols < 1 or rows > FC_AMAX or cols > FC_AMAX:
        raise ValueError(f"{name} must be between 1x1 and {FC_AMAX}x{FC_AMAX}, got {rows}x{cols}")


# Every int argument lies in [0 or 1, _INDEX_MAX] (fastconv._validate.INDEX_MAX), so that no
# index sum or product of two of them wraps; array sizes are multiplied as Python ints.
cdef Py_ssize_t _INDEX_MAX = 2**31 - 1


cdef _check_tiles(Py_ssize_t m, Py_ssize_t th, Py_ssize_t tw):
    if m < 1 or th < 1 or tw < 1:
        raise ValueError(f"m, th and tw must be >= 1, got m={m}, th={th}, tw={tw}")
    if m > _INDEX_MAX or th > _INDEX_MAX or tw > _INDEX_MAX:
        raise ValueError(f"m, th and tw must be <= {_INDEX_MAX}, got m={m}, th={th}, tw={tw}")


cdef _check_padding(Py_ssize_t ph, Py_ssize_t pw):
    if not (0 <= ph <= _INDEX_MAX and 0 <= pw <= _INDEX_MAX):
        raise ValueError(f"ph and pw must be in [0, {_INDEX_MAX}], got ph={ph}, pw={pw}")


def winograd_tiles_in(const floating[:, :, :, ::1] x, const floating[:, ::1] L, Py_ssize_t m,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t th, Py_ssize_t tw):
    """x (N, C, H, W), L (a, r) -> V (a*a, C, N*th*tw); see fastconv.winograd.winograd_tiles_in."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t a = L.shape[0], r = L.shape[1]
    _check_matrix("L", a, r)
    _check_tiles(m, th, tw)
    _check_padding(ph, pw)
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t grain = _kernels.get_grain_size()
    out = np.empty((a * a, C, int(N) * int(th) * int(tw)), dtype=dtype)
    cdef floating[:, :, ::1] V = out
    cdef Py_ssize_t T = N * th * tw, task, n, c, ti
    cdef int kind = _kind(np.asarray(L), "BT")
    if out.size == 0:
        return out
    for task in prange(N * C * th, nogil=True, schedule="static",
                       num_threads=_threads(a * a * C * T, grain)):
        ti = task % th
        c = (task // th) % C
        n = task // (th * C)
        if floating is float:
            fc_tiles_in_f(&x[n, c, 0, 0], H, W, &L[0, 0], a, r, m, ti * m - ph, -pw, tw,
                          &V[0, c, (n * th + ti) * tw], C * T, kind)
        else:
            fc_tiles_in_d(&x[n, c, 0, 0], H, W, &L[0, 0], a, r, m, ti * m - ph, -pw, tw,
                          &V[0, c, (n * th + ti) * tw], C * T, kind)
    return out


def winograd_tiles_out(const floating[:, :, ::1] M, const floating[:, ::1] R, Py_ssize_t n,
                       Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t th, Py_ssize_t tw):
    """M (a*a, O, n*th*tw), R (m, a) -> y (n, O, oh, ow); see fastconv.winograd.winograd_tiles_out."""
    cdef Py_ssize_t m = R.shape[0], a = R.shape[1], O = M.shape[1]
    _check_matrix("R", m, a)
    _check_tiles(m, th, tw)
    if n < 1 or n > _INDEX_MAX or M.shape[0] != a * a or M.shape[2] != int(n) * int(th) * int(tw):
        raise ValueError(f"M must have shape ({a * a}, O, {n * th * tw}) for n={n}, th={th}, "
                         f"tw={tw}, got {tuple(M.shape)[:3]}")
    if not ((th - 1) * m < oh <= th * m and (tw - 1) * m < ow <= tw * m):
        raise ValueError(f"a {th}x{tw} grid of {m}x{m} tiles does not cover exactly an "
                         f"{oh}x{ow} output")
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t grain = _kernels.get_grain_size()
    out = np.empty((n, O, oh, ow), dtype=dtype)
    cdef floating[:, :, :, ::1] y = out
    cdef Py_ssize_t T = n * th * tw, task, b, o, ti
    cdef int kind = _kind(np.asarray(R), "AT")
    for task in prange(n * O * th, nogil=True, schedule="static",
                       num_threads=_threads(a * a * O * T, grain)):
        ti = task % th
        o = (task // th) % O
        b = task // (th * O)
        if floating is float:
            fc_tiles_out_f(&M[0, o, (b * th + ti) * tw], O * T, &R[0, 0], a, m, tw,
                           &y[b, o, 0, 0], oh, ow, ti * m, kind)
        else:
            fc_tiles_out_d(&M[0, o, (b * th + ti) * tw], O * T, &R[0, 0], a, m, tw,
                           &y[b, o, 0, 0], oh, ow, ti * m, kind)
    return out


def winograd_filter_in(const floating[:, :, :, ::1] w, const floating[:, ::1] G):
    """w (O, C, r, r), G (a, r) -> U (a*a, O, C) with U = G g G^T per filter."""
    cdef Py_ssize_t O = w.shape[0], C = w.shape[1], a = G.shape[0], r = G.shape[1]
    _check_matrix("G", a, r)
    if w.shape[2] != r or w.shape[3] != r:
        raise ValueError(f"w must have {r}x{r} filters for a G with {r} columns, got "
                         f"{w.shape[2]}x{w.shape[3]}")
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t grain = _kernels.get_grain_size()
    out = np.empty((a * a, O, C), dtype=dtype)
    cdef floating[:, :, ::1] U = out
    cdef Py_ssize_t o, c
    cdef int nb
    for o in prange(O, nogil=True, schedule="static", num_threads=_threads(a * a * O * C, grain)):
        for c in range(0, C, 16):
            nb = 16 if C - c >= 16 else C - c
            if floating is float:
                fc_sandwich_f(&w[o, c, 0, 0], r * r, r, 1, &G[0, 0], a, r, &U[0, o, c], 1, O * C, nb)
            else:
                fc_sandwich_d(&w[o, c, 0, 0], r * r, r, 1, &G[0, 0], a, r, &U[0, o, c], 1, O * C, nb)
    return out


def winograd_filter_out(const floating[:, :, ::1] dU, const floating[:, ::1] GT):
    """dU (a*a, O, C), GT (r, a) -> dW (O, C, r, r) with dW = G^T dU G per filter."""
    cdef Py_ssize_t r = GT.shape[0], a = GT.shape[1], O = dU.shape[1], C = dU.shape[2]
    _check_matrix("GT", r, a)
    if dU.shape[0] != a * a:
        raise ValueError(f"dU must have {a * a} positions for a GT with {a} columns, got {dU.shape[0]}")
    dtype = np.float32 if floating is float else np.float64
    cdef Py_ssize_t grain = _kernels.get_grain_size()
    out = np.empty((O, C, r, r), dtype=dtype)
    cdef floating[:, :, :, ::1] dW = out
    cdef Py_ssize_t o, c
    cdef int nb
    for o in prange(O, nogil=True, schedule="static", num_threads=_threads(a * a * O * C, grain)):
        for c in range(0, C, 16):
            nb = 16 if C - c >= 16 else C - c
            if floating is float:
                fc_sandwich_f(&dU[0, o, c], 1, a * O * C, O * C, &GT[0, 0], r, a, &dW[o, c, 0, 0],
                              r * r, 1, nb)
            else:
                fc_sandwich_d(&dU[0, o, c], 1, a * O * C, O * C, &GT[0, 0], r, a, &dW[o, c, 0, 0],
                              r * r, 1, nb)
    return out
