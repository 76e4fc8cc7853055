# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython twins of the Winograd kernels of ``fastconv.winograd`` (docs/KERNELS.md).

Same six functions and signatures as the reference: the two filter transforms, the two
fused, cache-blocked convolution kernels, and the two tile transforms over the whole batch
(``winograd_tiles_in`` / ``winograd_tiles_out``, one (n, c) plane per OpenMP task: the batched
algorithm, whose GEMMs between them ``fastconv.conv_winograd`` runs). The tiles (``t = (n*th + ti)*tw + tj``) are cut into
blocks of ``tb`` consecutive tiles; OpenMP workers (``prange``) take blocks in turn, and for
each block a worker

* transforms the block's input tiles into its own buffer ``Vb (a*a, C, tb)`` (tiles contiguous:
  the layout BLAS reads),
* runs the a*a GEMMs of the block with BLAS (scipy's sgemm/dgemm, single-threaded inside the
  loop: see ``fastconv._blas``),
* and transforms the products straight into y (+ bias), or, for the weight gradient, adds
  ``dMb Vb^T`` into its own accumulator (summed over workers at the end).

Inside a block, tiles of one tile row are transformed ``FC_LANES`` at a time with the tile as the
innermost (vectorised) loop; zero matrix entries are skipped, and the standard B^T, A^T and A of
F(2x2)/F(4x4) run as straight-line code. Every index is checked against the array shapes
first (reads outside the image are the zero padding), so no argument reads or writes out of
bounds. BLAS pointers come from the ``scipy.linalg.cython_blas`` capsules at first use, so the
build needs no scipy (scipy is a runtime dependency).
"""
import numpy as np

from fastconv import _blas
from fastconv.kernels import cython_kernels as _kernels

cimport openmp
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
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
    /* The separable 2-D transform X -> L X L^T of a block of tiles: the 1-D transform F
       (fc_bt6, fc_apply, ...; trailing arguments passed on) over each of the NROWS rows of IN
       into T1, then over each of the NCOLS columns of T1 into RES. */
    #define FC_TWO_PASS(F, IN, T1, RES, NROWS, NCOLS, ...)                                \
        for (int i_ = 0; i_ < (NROWS); i_++) F(&IN[i_][0], 1, &T1[i_][0], 1, ##__VA_ARGS__); \
        for (int v_ = 0; v_ < (NCOLS); v_++)                                                \
            F(&T1[0][v_], FC_AMAX, &RES[0][v_], FC_AMAX, ##__VA_ARGS__);
    /* RES = L IN L^T for the matrix kind KIND (FC_K_*: the straight-line formulas) or any
       L (Lrows x Lcols, row-major; kind FC_K_ANY). */
    #define FC_K_ANY 0
    #define FC_K_BT6 1  /* B^T of F(4x4), 6x6 */
    #define FC_K_A64 2  /* A of F(4x4), 6x4: the dy transform of the weight gradient */
    #define FC_K_BT4 3  /* B^T of F(2x2), 4x4 */
    #define FC_K_AT6 4  /* A^T of F(4x4), 4x6 */
    #define FC_K_AT4 5  /* A^T of F(2x2), 2x4 */
    #define FC_SEPARABLE(SUF, KIND, IN, T1, RES, L, LROWS, LCOLS)                         \
        switch (KIND) {                                                                     \
        case FC_K_BT6: FC_TWO_PASS(fc_bt6_##SUF, IN, T1, RES, 6, 6) break;                  \
        case FC_K_A64: FC_TWO_PASS(fc_a64_##SUF, IN, T1, RES, 4, 6) break;                  \
        case FC_K_BT4: FC_TWO_PASS(fc_bt4_##SUF, IN, T1, RES, 4, 4) break;                  \
        case FC_K_AT6: FC_TWO_PASS(fc_at6_##SUF, IN, T1, RES, 6, 4) break;                  \
        case FC_K_AT4: FC_TWO_PASS(fc_at4_##SUF, IN, T1, RES, 4, 2) break;                  \
        default: FC_TWO_PASS(fc_apply_##SUF, IN, T1, RES, LCOLS, LROWS, L, LROWS, LCOLS)    \
        }
    /* Tiles tj < tw of one tile row of the tile transform V = L d L^T (L: a x r, row-major).
       plane: one (H, W) image; the tile tj reads rows row0 + i and columns tj*m + col0 + j,
       i, j < r (zero outside); out[(u*a + v)*xs + tj] receives V[u][v] of tile tj. */
    #define FC_TILES_IN(NAME, T, VT, SUF)                                                 \
    static inline __attribute__((always_inline)) void NAME##_body(                          \
            const T* plane, Py_ssize_t H, Py_ssize_t W, const T* L, int a, int r, int m,    \
            Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t tw, T* out, Py_ssize_t xs,         \
            int kind) {                                                                     \
        VT d[FC_AMAX][FC_AMAX], t1[FC_AMAX][FC_AMAX], res[FC_AMAX][FC_AMAX];                \
        T seg[FC_LANES * FC_AMAX + FC_AMAX];   /* one input row, zero-padded */             \
        for (Py_ssize_t tj0 = 0; tj0 < tw; tj0 += FC_LANES) {                               \
            int nl = (tw - tj0 < FC_LANES) ? (int)(tw - tj0) : FC_LANES;                    \
            Py_ssize_t cf0 = tj0 * m + col0, span = (Py_ssize_t)(nl - 1) * m + r;           \
            Py_ssize_t full = (Py_ssize_t)(FC_LANES - 1) * m + r; /* zeros past span */     \
            Py_ssize_t k0 = cf0 < 0 ? (-cf0 < span ? -cf0 : span) : 0; /* valid: [k0, k1) */ \
            Py_ssize_t k1 = W - cf0 < span ? W - cf0 : span;                                \
            for (int i = 0; i < r; i++) {                                                   \
                Py_ssize_t row = row0 + i;                                                  \
                if (row < 0 || row >= H || k1 <= k0) {                                      \
                    for (Py_ssize_t k = 0; k < full; k++) seg[k] = 0;                       \
                } else {                                                                    \
                    const T* src = plane + row * W + cf0;                                   \
                    for (Py_ssize_t k = 0; k < k0; k++) seg[k] = 0;                         \
                    for (Py_ssize_t k = k0; k < k1; k++) seg[k] = src[k];                   \
                    for (Py_ssize_t k = k1; k < full; k++) seg[k] = 0;                      \
                }                                                                           \
                for (int j = 0; j < r; j++) {  /* built in registers: no store forwarding */ \
                    const T* q = seg + j;                                                   \
                    d[i][j] = (VT){q[0], q[m], q[2 * m], q[3 * m], q[4 * m], q[5 * m],      \
                                   q[6 * m], q[7 * m]};                                     \
                }                                                                           \
            }                                                                               \
            FC_SEPARABLE(SUF, kind, d, t1, res, L, a, r)                                    \
            for (int u = 0; u < a; u++)                                                     \
                for (int v = 0; v < a; v++) {                                               \
                    T* o = out + (Py_ssize_t)(u * a + v) * xs + tj0;                        \
                    if (nl == FC_LANES) memcpy(o, &res[u][v], sizeof(VT));                  \
                    else for (int l = 0; l < nl; l++) o[l] = res[u][v][l];                  \
                }                                                                           \
        }                                                                                   \
    }                                                                                       \
    /* the sizes of F(2x2) and F(4x4) get their own fully unrolled copies; kind (FC_K_*)   \
       is checked by the caller */                                                          \
    FC_SIMD static void NAME(const T* plane, Py_ssize_t H, Py_ssize_t W, const T* L,        \
                             int a, int r, int m, Py_ssize_t row0, Py_ssize_t col0,         \
                             Py_ssize_t tw, T* out, Py_ssize_t xs, int kind) {              \
        if (kind == FC_K_BT6)                                                               \
            NAME##_body(plane, H, W, L, 6, 6, 4, row0, col0, tw, out, xs, FC_K_BT6);        \
        else if (kind == FC_K_BT4)                                                          \
            NAME##_body(plane, H, W, L, 4, 4, 2, row0, col0, tw, out, xs, FC_K_BT4);        \
        else if (kind == FC_K_A64)                                                          \
            NAME##_body(plane, H, W, L, 6, 4, 4, row0, col0, tw, out, xs, FC_K_A64);        \
        else if (a == 6 && r == 4 && m == 4)                                                \
            NAME##_body(plane, H, W, L, 6, 4, 4, row0, col0, tw, out, xs, FC_K_ANY);        \
        else if (a == 4 && r == 2 && m == 2)                                                \
            NAME##_body(plane, H, W, L, 4, 2, 2, row0, col0, tw, out, xs, FC_K_ANY);        \
        else                                                                                \
            NAME##_body(plane, H, W, L, a, r, m, row0, col0, tw, out, xs, FC_K_ANY);        \
    }
    /* Tiles tj < tw of one tile row of the output transform Y = R M R^T + bias (R: m x a),
       cropped: M[(u*a + v)*xs + tj] is position (u, v) of tile tj; tile tj writes rows
       row0 + i (< oh) and columns tj*m + j (< ow) of the plane y (row stride ys). */
    #define FC_TILES_OUT(NAME, T, VT, SUF)                                                \
    static inline __attribute__((always_inline)) void NAME##_body(                          \
            const T* M, Py_ssize_t xs, const T* R, int a, int m, Py_ssize_t tw, T* y,       \
            Py_ssize_t ys, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t row0, T bias, int kind) { \
        VT mv[FC_AMAX][FC_AMAX], t1[FC_AMAX][FC_AMAX], res[FC_AMAX][FC_AMAX];               \
        T seg[FC_LANES * FC_AMAX];              /* one output row of the block */           \
        for (Py_ssize_t tj0 = 0; tj0 < tw; tj0 += FC_LANES) {                               \
            int nl = (tw - tj0 < FC_LANES) ? (int)(tw - tj0) : FC_LANES;                    \
            for (int u = 0; u < a; u++)                                                     \
                for (int v = 0; v < a; v++) {                                               \
                    const T* s = M + (Py_ssize_t)(u * a + v) * xs + tj0;                    \
                    if (nl == FC_LANES) memcpy(&mv[u][v], s, sizeof(VT));                   \
                    else for (int l = 0; l < FC_LANES; l++) mv[u][v][l] = l < nl ? s[l] : 0; \
                }                                                                           \
            FC_SEPARABLE(SUF, kind, mv, t1, res, R, m, a)                                   \
            Py_ssize_t c0 = tj0 * m;                                                        \
            Py_ssize_t n_out = ow - c0 < (Py_ssize_t)nl * m ? ow - c0 : (Py_ssize_t)nl * m; \
            for (int i = 0; i < m; i++) {                                                   \
                Py_ssize_t row = row0 + i;                                                  \
                if (row >= oh) break;                                                       \
                for (int j = 0; j < m; j++)                                                 \
                    for (int l = 0; l < nl; l++) seg[l * m + j] = res[i][j][l];             \
                T* dst = y + row * ys + c0;                                                 \
                for (Py_ssize_t k = 0; k < n_out; k++) dst[k] = seg[k] + bias;              \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    FC_SIMD static void NAME(const T* M, Py_ssize_t xs, const T* R, int a, int m,           \
                             Py_ssize_t tw, T* y, Py_ssize_t ys, Py_ssize_t oh,             \
                             Py_ssize_t ow, Py_ssize_t row0, T bias, int kind) {            \
        if (kind == FC_K_AT6)                                                               \
            NAME##_body(M, xs, R, 6, 4, tw, y, ys, oh, ow, row0, bias, FC_K_AT6);           \
        else if (kind == FC_K_AT4)                                                          \
            NAME##_body(M, xs, R, 4, 2, tw, y, ys, oh, ow, row0, bias, FC_K_AT4);           \
        else if (a == 6 && m == 4)                                                          \
            NAME##_body(M, xs, R, 6, 4, tw, y, ys, oh, ow, row0, bias, FC_K_ANY);           \
        else if (a == 4 && m == 2)                                                          \
            NAME##_body(M, xs, R, 4, 2, tw, y, ys, oh, ow, row0, bias, FC_K_ANY);           \
        else                                                                                \
            NAME##_body(M, xs, R, a, m, tw, y, ys, oh, ow, row0, bias, FC_K_ANY);           \
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
    int FC_K_ANY, FC_K_BT6, FC_K_A64, FC_K_BT4, FC_K_AT6, FC_K_AT4
    void fc_tiles_in_f(const float* plane, Py_ssize_t H, Py_ssize_t W, const float* L, int a,
                       int r, int m, Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t tw,
                       float* out, Py_ssize_t xs, int kind) noexcept nogil
    void fc_tiles_in_d(const double* plane, Py_ssize_t H, Py_ssize_t W, const double* L, int a,
                       int r, int m, Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t tw,
                       double* out, Py_ssize_t xs, int kind) noexcept nogil
    void fc_tiles_out_f(const float* M, Py_ssize_t xs, const float* R, int a, int m,
                        Py_ssize_t tw, float* y, Py_ssize_t ys, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t row0, float bias, int kind) noexcept nogil
    void fc_tiles_out_d(const double* M, Py_ssize_t xs, const double* R, int a, int m,
                        Py_ssize_t tw, double* y, Py_ssize_t ys, Py_ssize_t oh, Py_ssize_t ow,
                        Py_ssize_t row0, double bias, int kind) noexcept nogil
    void fc_sandwich_f(const float* g, Py_ssize_t g_k, Py_ssize_t g_row, Py_ssize_t g_col,
                       const float* P, int q, int p, float* out, Py_ssize_t o_k, Py_ssize_t o_e,
                       int nb) noexcept nogil
    void fc_sandwich_d(const double* g, Py_ssize_t g_k, Py_ssize_t g_row, Py_ssize_t g_col,
                       const double* P, int q, int p, double* out, Py_ssize_t o_k, Py_ssize_t o_e,
                       int nb) noexcept nogil

# The grain size and thread count are cython_kernels' (fc.set_grain_size, fc.set_num_threads):
# below ``grain`` elements touched a kernel runs on one thread, as ATen's parallel_for does.
get_num_threads = _kernels.get_num_threads


cdef inline int _threads(Py_ssize_t work, Py_ssize_t grain) noexcept nogil:
    if work < grain:
        return 1
    return openmp.omp_get_max_threads()


# ----------------------------------------------------------------------------- BLAS
ctypedef void (*sgemm_ptr)(char*, char*, int*, int*, int*, float*, float*, int*, float*, int*,
                           float*, float*, int*) noexcept nogil
ctypedef void (*dgemm_ptr)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*,
                           double*, double*, int*) noexcept nogil
cdef sgemm_ptr _sgemm = NULL
cdef dgemm_ptr _dgemm = NULL


cdef _load_blas():
    """scipy's Fortran-order sgemm/dgemm, from the ``scipy.linalg.cython_blas`` capsules."""
    global _sgemm, _dgemm
    if _sgemm != NULL:
        return
    capi = _blas.cython_blas_capi()
    _dgemm = <dgemm_ptr>PyCapsule_GetPointer(capi["dgemm"], PyCapsule_GetName(capi["dgemm"]))
    _sgemm = <sgemm_ptr>PyCapsule_GetPointer(capi["sgemm"], PyCapsule_GetName(capi["sgemm"]))


cdef inline void _gemm(char ta, char tb, int m, int n, int k, const floating* A, int lda,
                       const floating* B, int ldb, floating beta, floating* C, int ldc) noexcept nogil:
    """Column-major ``C (m, n) = op(A) op(B) + beta C``, op = transpose where ``'T'``."""
    cdef floating one = 1
    if floating is float:
        _sgemm(&ta, &tb, &m, &n, &k, &one, <float*>A, &lda, <float*>B, &ldb, &beta, C, &ldc)
    else:
        _dgemm(&ta, &tb, &m, &n, &k, &one, <double*>A, &lda, <double*>B, &ldb, &beta, C, &ldc)


# ----------------------------------------------------------------------------- one block of tiles
cdef inline Py_ssize_t _run(Py_ssize_t t, Py_ssize_t end, Py_ssize_t th, Py_ssize_t tw,
                            Py_ssize_t* n, Py_ssize_t* ti, Py_ssize_t* tj) noexcept nogil:
    """Tile t -> (n, ti, tj); returns how many tiles from t on, before ``end``, share its row."""
    n[0] = t // (th * tw)
    ti[0] = (t - n[0] * th * tw) // tw
    tj[0] = t - (n[0] * th + ti[0]) * tw
    return tw - tj[0] if tw - tj[0] < end - t else end - t


cdef inline void _tiles_in_block(const floating[:, :, :, ::1] x, const floating* L, int a, int r,
                                 int m, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t th, Py_ssize_t tw,
                                 Py_ssize_t t0, Py_ssize_t nt, floating* out, Py_ssize_t ld,
                                 int kind) noexcept nogil:
    """Tiles t0 <= t < t0 + nt of ``tiles_in(x, L, m, ph, pw, th, tw)``:
    out[(u*a + v)*C*ld + c*ld + t - t0] = V[u*a + v, c, t]."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t t = t0, n, ti, tj, seg, c
    while t < t0 + nt:
        seg = _run(t, t0 + nt, th, tw, &n, &ti, &tj)
        for c in range(C):
            if floating is float:
                fc_tiles_in_f(&x[n, c, 0, 0], H, W, L, a, r, m, ti * m - ph, tj * m - pw, seg,
                              out + c * ld + (t - t0), C * ld, kind)
            else:
                fc_tiles_in_d(&x[n, c, 0, 0], H, W, L, a, r, m, ti * m - ph, tj * m - pw, seg,
                              out + c * ld + (t - t0), C * ld, kind)
        t += seg


cdef inline void _tiles_out_block(const floating* M, Py_ssize_t ld, const floating* R, int a, int m,
                                  Py_ssize_t th, Py_ssize_t tw, Py_ssize_t t0, Py_ssize_t nt,
                                  floating[:, :, :, ::1] y, const floating[::1] bias,
                                  int has_bias, int kind) noexcept nogil:
    """Tiles t0 <= t < t0 + nt of ``tiles_out``: M[(u*a + v)*O*ld + o*ld + t - t0] -> y (+ bias)."""
    cdef Py_ssize_t O = y.shape[1], oh = y.shape[2], ow = y.shape[3]
    cdef Py_ssize_t t = t0, n, ti, tj, seg, o
    cdef floating b
    while t < t0 + nt:
        seg = _run(t, t0 + nt, th, tw, &n, &ti, &tj)
        for o in range(O):
            b = bias[o] if has_bias else 0
            if floating is float:
                fc_tiles_out_f(M + o * ld + (t - t0), O * ld, R, a, m, seg, &y[n, o, 0, tj * m], ow,
                               oh, ow - tj * m, ti * m, b, kind)
            else:
                fc_tiles_out_d(M + o * ld + (t - t0), O * ld, R, a, m, seg, &y[n, o, 0, tj * m], ow,
                               oh, ow - tj * m, ti * m, b, kind)
        t += seg


# ----------------------------------------------------------------------------- the block loop
cdef void _block_loop(int grad, const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                      const floating[:, :, ::1] U, const floating[::1] bias, int has_bias,
                      const floating* BT, const floating* R, int a, int m, Py_ssize_t ph,
                      Py_ssize_t pw, Py_ssize_t th, Py_ssize_t tw, Py_ssize_t T, Py_ssize_t tb,
                      Py_ssize_t nblocks, int nw, floating[:, :, :, ::1] vb,
                      floating[:, :, :, ::1] pb, floating[:, :, :, ::1] y,
                      floating[:, :, :, ::1] acc, int kin, int kr, floating* vfull) noexcept nogil:
    """Worker w runs blocks w, w + nw, ... of tb tiles: Vb = tiles_in(x, BT) into vb[w], then
    grad == 0 (winograd_conv): Mb[xi] = U[xi] @ Vb[xi] into pb[w], y (+ bias) = tiles_out(Mb, R);
    grad == 1 (winograd_filter_grad): dMb = tiles_in(dy, R = A) into pb[w],
    acc[w, xi] += dMb[xi] @ Vb[xi]^T. A block of nt tiles packs its buffers with stride nt.
    vfull (NULL: none): the stored V, block t0 at vfull + a*a*C*t0; the forward writes Vb there
    instead of vb[w], the weight gradient reads Vb from there instead of transforming x."""
    cdef Py_ssize_t C = x.shape[1], O = pb.shape[2], blk, t0, nt
    cdef int w, xi
    cdef floating* vp
    for w in prange(nw, schedule="static", chunksize=1, num_threads=nw):
        blk = w
        while blk < nblocks:
            t0 = blk * tb
            nt = tb if T - t0 > tb else T - t0
            vp = &vb[w, 0, 0, 0] if vfull == NULL else vfull + a * a * C * t0
            if not grad or vfull == NULL:
                _tiles_in_block(x, BT, a, a, m, ph, pw, th, tw, t0, nt, vp, nt, kin)
            if grad:
                _tiles_in_block(dy, R, a, m, m, 0, 0, th, tw, t0, nt, &pb[w, 0, 0, 0], nt, kr)
                for xi in range(a * a):  # dU[xi] (O, C) += dMb[xi] (O, nt) @ Vb[xi]^T (nt, C)
                    _gemm(c'T', c'N', C, O, nt, vp + xi * C * nt, nt,
                          &pb[w, 0, 0, 0] + xi * O * nt, nt, <floating>1, &acc[w, xi, 0, 0], C)
            else:
                for xi in range(a * a):  # M[xi] (O, nt) = U[xi] (O, C) @ Vb[xi] (C, nt)
                    _gemm(c'N', c'N', nt, O, C, vp + xi * C * nt, nt, &U[xi, 0, 0], C,
                          <floating>0, &pb[w, 0, 0, 0] + xi * O * nt, nt)
                _tiles_out_block(&pb[w, 0, 0, 0], nt, R, a, m, th, tw, t0, nt, y, bias, has_bias, kr)
            blk = blk + nw


# ----------------------------------------------------------------------------- whole-batch transforms
cdef void _tiles_in_planes(const floating[:, :, :, ::1] x, const floating* L, int a, int r, int m,
                           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t th, Py_ssize_t tw,
                           floating* V, int kind, int nthreads) noexcept nogil:
    """V (a*a, C, T) = tiles_in(x, L, m, ph, pw, th, tw), one (n, c) plane per task: it reads
    the plane in order and writes a*a contiguous runs of th*tw tiles."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3], T = x.shape[0] * th * tw
    cdef Py_ssize_t p, n, c, ti
    for p in prange(x.shape[0] * C, schedule="static", num_threads=nthreads):
        n = p // C
        c = p - n * C
        for ti in range(th):
            if floating is float:
                fc_tiles_in_f(&x[n, c, 0, 0], H, W, L, a, r, m, ti * m - ph, -pw, tw,
                              V + c * T + (n * th + ti) * tw, C * T, kind)
            else:
                fc_tiles_in_d(&x[n, c, 0, 0], H, W, L, a, r, m, ti * m - ph, -pw, tw,
                              V + c * T + (n * th + ti) * tw, C * T, kind)


cdef void _tiles_out_planes(const floating* M, const floating* R, int a, int m, Py_ssize_t th,
                           Py_ssize_t tw, floating[:, :, :, ::1] y, const floating[::1] bias,
                           int has_bias, int kind, int nthreads) noexcept nogil:
    """y (+ bias) = tiles_out(M (a*a, O, T), R), one (n, o) plane of y per task: it reads a*a
    contiguous runs of th*tw tiles and writes the plane in order."""
    cdef Py_ssize_t O = y.shape[1], oh = y.shape[2], ow = y.shape[3], T = y.shape[0] * th * tw
    cdef Py_ssize_t p, n, o, ti
    cdef floating b
    for p in prange(y.shape[0] * O, schedule="static", num_threads=nthreads):
        n = p // O
        o = p - n * O
        b = bias[o] if has_bias else 0
        for ti in range(th):
            if floating is float:
                fc_tiles_out_f(M + o * T + (n * th + ti) * tw, O * T, R, a, m, tw, &y[n, o, 0, 0],
                               ow, oh, ow, ti * m, b, kind)
            else:
                fc_tiles_out_d(M + o * T + (n * th + ti) * tw, O * T, R, a, m, tw, &y[n, o, 0, 0],
                               ow, oh, ow, ti * m, b, kind)

# ----------------------------------------------------------------------------- checks
_STANDARD = {}


cdef int _kind(L, Py_ssize_t m):
    """The FC_K_* code of ``L`` when it is exactly one of the standard matrices of F(2x2) /
    F(4x4) in its dtype and the tile stride is that matrix's m (the C code then runs the
    straight-line formulas, which assume both), else FC_K_ANY."""
    key = L.dtype.str
    if key not in _STANDARD:
        from fastconv import winograd as wino
        (at4, _, bt4), (at2, _, bt2) = wino.matrices(4, L.dtype), wino.matrices(2, L.dtype)
        _STANDARD[key] = [(FC_K_BT6, 4, bt4), (FC_K_A64, 4, np.ascontiguousarray(at4.T)),
                          (FC_K_BT4, 2, bt2), (FC_K_AT6, 4, at4), (FC_K_AT4, 2, at2)]
    for kind, stride, mat in _STANDARD[key]:
        if m == stride and L.shape == mat.shape and np.array_equal(L, mat):
            return kind
    return FC_K_ANY


cdef _check_matrix(str name, Py_ssize_t rows, Py_ssize_t cols):
    if rows < 1 or cols < 1 or rows > FC_AMAX or cols > FC_AMAX:
        raise ValueError(f"{name} must be between 1x1 and {FC_AMAX}x{FC_AMAX}, got {rows}x{cols}")


# Every int argument lies in [0 or 1, _INDEX_MAX] (fastconv._validate.INDEX_MAX), so that no
# index sum or product of two of them wraps; array sizes are multiplied as Python ints.
cdef Py_ssize_t _INDEX_MAX = 2**31 - 1


cdef _check_int(str name, Py_ssize_t v, Py_ssize_t lo):
    if not lo <= v <= _INDEX_MAX:
        raise ValueError(f"{name} must be in [{lo}, {_INDEX_MAX}], got {v}")


cdef tuple _grid(Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, BT, R, Py_ssize_t ph, Py_ssize_t pw,
                 Py_ssize_t tb, Py_ssize_t channels):
    """Checks shared by both kernels; returns ``(a, m, oh, ow, th, tw, T, tb, nblocks, nw)``:
    tb <= T, nw workers (threads, 1 below the grain size, at most nblocks)."""
    cdef Py_ssize_t a = BT.shape[0], m = R.shape[0]
    _check_matrix("BT", a, BT.shape[1])
    _check_matrix("A^T", m, R.shape[1])
    if BT.shape[1] != a or R.shape[1] != a or m >= a:
        raise ValueError(f"BT must be a x a and A^T m x a with m < a, got {tuple(BT.shape)[:2]} "
                         f"and {tuple(R.shape)[:2]}")
    _check_int("ph", ph, 0)
    _check_int("pw", pw, 0)
    _check_int("tb", tb, 1)
    oh, ow = int(H) + 2 * int(ph) - (a - m), int(W) + 2 * int(pw) - (a - m)
    if oh < 1 or ow < 1:
        raise ValueError(f"the padded input ({H + 2 * ph}x{W + 2 * pw}) is smaller than the kernel")
    th, tw = -(-oh // m), -(-ow // m)
    T = int(N) * th * tw
    _check_int("the number of tiles", T, 0)
    _check_int("the output size oh*ow", oh * ow, 1)
    tb = max(1, min(tb, T))
    nblocks = -(-int(T) // int(tb))
    work = min(int(a) * int(a) * int(channels) * T, 2**62)
    nw = max(1, min(_threads(work, _kernels.get_grain_size()), nblocks))
    return a, m, oh, ow, th, tw, T, tb, nblocks, nw


def _block_buffers(nw, a, rows_in, rows_out, tb, dtype):
    """Each worker's block buffers: inputs (nw, a*a, rows_in, tb), products (nw, a*a, rows_out, tb);
    a block of nt tiles uses the first a*a*rows*nt elements of its worker's slice."""
    return np.empty((nw, a * a, rows_in, tb), dtype=dtype), np.empty((nw, a * a, rows_out, tb), dtype=dtype)


cdef floating* _stored_v(floating[::1] V, Py_ssize_t size) except? NULL:
    """Pointer to the stored V (NULL for None) after checking it holds a*a*C*T values."""
    if V is None:
        return NULL
    if V.shape[0] != size:
        raise ValueError(f"V must have a*a*C*T = {size} entries, got {V.shape[0]}")
    return &V[0] if size > 0 else NULL


# ----------------------------------------------------------------------------- the contract
def winograd_conv(const floating[:, :, :, ::1] x, const floating[:, :, ::1] U,
                  const floating[::1] bias, const floating[:, ::1] BT, const floating[:, ::1] AT,
                  Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t tb, floating[::1] V=None):
    """x (N, C, H, W), U (a*a, O, C), bias (O,) or None -> y (N, O, H+2ph-2, W+2pw-2);
    see fastconv.winograd.winograd_conv. tb: tiles per block. V (a*a*C*T,) or None: receives
    the input transform in block layout (fastconv.winograd.stored_v_blocks)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], O = U.shape[1]
    cdef Py_ssize_t a, m, oh, ow, th, tw, T, nblocks
    cdef int nw
    a, m, oh, ow, th, tw, T, tb, nblocks, nw = _grid(N, x.shape[2], x.shape[3], BT, AT, ph, pw, tb, C + O)
    if U.shape[0] != a * a or U.shape[2] != C or O < 1:
        raise ValueError(f"U must have shape ({a * a}, O >= 1, {C}), got {tuple(U.shape)[:3]}")
    cdef int has_bias = bias is not None
    if has_bias and bias.shape[0] != O:
        raise ValueError(f"bias must have {O} entries, got {bias.shape[0]}")
    dtype = np.float32 if floating is float else np.float64
    cdef floating* vfull = _stored_v(V, a * a * C * T)
    out = np.empty((N, O, oh, ow), dtype=dtype)
    if T == 0 or C == 0:
        out[...] = np.asarray(bias)[:, None, None] if has_bias else 0
        return out
    cdef floating[:, :, :, ::1] y = out
    cdef floating[:, :, :, ::1] vb, mb
    vb, mb = _block_buffers(nw, a, C, O, tb, dtype)
    cdef floating[:, :, :, ::1] no_acc = None
    cdef int kin = _kind(np.asarray(BT), m), kout = _kind(np.asarray(AT), m)
    _load_blas()
    with _blas.single_threaded(), nogil:  # x stands in for the unused dy
        _block_loop(0, x, x, U, bias, has_bias, &BT[0, 0], &AT[0, 0], a, m, ph, pw, th, tw, T, tb,
                    nblocks, nw, vb, mb, y, no_acc, kin, kout, vfull)
    return out


def winograd_filter_grad(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                         const floating[:, ::1] BT, const floating[:, ::1] A, Py_ssize_t ph,
                         Py_ssize_t pw, Py_ssize_t tb, floating[::1] V=None):
    """x (N, C, H, W), dy (N, O, oh, ow) -> dU (a*a, O, C); see
    fastconv.winograd.winograd_filter_grad. Each worker sums its blocks into its own dU; the
    workers' sums are added at the end (so the result depends on tb and the thread count only
    through rounding). V: the forward's stored input transform (same tb), read instead of
    transforming x again; None: recomputed."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], O = dy.shape[1]
    cdef Py_ssize_t a, m, oh, ow, th, tw, T, nblocks
    cdef int nw
    if A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError("A must be at least 1x1")
    a, m, oh, ow, th, tw, T, tb, nblocks, nw = _grid(N, x.shape[2], x.shape[3], BT, np.asarray(A).T,
                                                     ph, pw, tb, C + O)
    if dy.shape[0] != N or dy.shape[2] != oh or dy.shape[3] != ow or O < 1:
        raise ValueError(f"dy must have shape ({N}, O >= 1, {oh}, {ow}), got {tuple(dy.shape)[:4]}")
    dtype = np.float32 if floating is float else np.float64
    cdef floating* vfull = _stored_v(V, a * a * C * T)
    if T == 0 or C == 0:
        return np.zeros((a * a, O, C), dtype=dtype)
    acc_arr = np.zeros((nw, a * a, O, C), dtype=dtype)
    cdef floating[:, :, :, ::1] acc = acc_arr
    cdef floating[:, :, :, ::1] vb, dmb
    vb, dmb = _block_buffers(nw, a, C, O, tb, dtype)
    cdef floating[:, :, :, ::1] no_y = None
    cdef const floating[:, :, ::1] no_u = None
    cdef const floating[::1] no_bias = None
    cdef int kin = _kind(np.asarray(BT), m), kdy = _kind(np.asarray(A), m)
    _load_blas()
    with _blas.single_threaded(), nogil:
        _block_loop(1, x, dy, no_u, no_bias, 0, &BT[0, 0], &A[0, 0], a, m, ph, pw, th, tw, T, tb,
                    nblocks, nw, vb, dmb, no_y, acc, kin, kdy, vfull)
    return acc_arr[0] if nw == 1 else acc_arr.sum(axis=0)


cdef _check_tiling(Py_ssize_t m, Py_ssize_t th, Py_ssize_t tw):
    if not 1 <= m <= FC_AMAX:
        raise ValueError(f"m must be in [1, {FC_AMAX}], got {m}")
    _check_int("th", th, 1)
    _check_int("tw", tw, 1)


def winograd_tiles_in(const floating[:, :, :, ::1] x, const floating[:, ::1] L, Py_ssize_t m,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t th, Py_ssize_t tw):
    """x (N, C, H, W), L (a, r) -> V (a*a, C, N*th*tw); see fastconv.winograd.winograd_tiles_in
    (the batched algorithm's input transform). One (n, c) plane per OpenMP task."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], a = L.shape[0], r = L.shape[1]
    _check_matrix("L", a, r)
    _check_tiling(m, th, tw)
    _check_int("ph", ph, 0)
    _check_int("pw", pw, 0)
    T = int(N) * th * tw
    _check_int("the number of tiles", T, 0)
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((a * a, C, T), dtype=dtype)
    if T == 0 or C == 0:
        return out
    cdef floating[:, :, ::1] V = out
    cdef int kind = _kind(np.asarray(L), m)
    cdef int nthreads = _threads(min(a * a * C * T, 2**62), _kernels.get_grain_size())
    with nogil:
        _tiles_in_planes(x, &L[0, 0], a, r, m, ph, pw, th, tw, &V[0, 0, 0], kind, nthreads)
    return out


def winograd_tiles_out(const floating[:, :, ::1] M, const floating[:, ::1] R, Py_ssize_t n,
                       Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t th, Py_ssize_t tw,
                       const floating[::1] bias=None):
    """M (a*a, O, n*th*tw), R (m, a), bias (O,) or None -> y (n, O, oh, ow); see
    fastconv.winograd.winograd_tiles_out (the batched algorithm's output transform). The
    th x tw grid of m x m tiles must cover exactly the oh x ow output. One (n, o) plane per task."""
    cdef Py_ssize_t m = R.shape[0], a = R.shape[1], O = M.shape[1]
    _check_matrix("R", m, a)
    _check_tiling(m, th, tw)
    _check_int("n", n, 1)
    _check_int("oh", oh, 1)
    _check_int("ow", ow, 1)
    if not ((th - 1) * m < oh <= th * m and (tw - 1) * m < ow <= tw * m):
        raise ValueError(f"a {th}x{tw} grid of {m}x{m} tiles does not cover exactly an {oh}x{ow} output")
    if M.shape[0] != a * a or M.shape[2] != int(n) * th * tw:
        raise ValueError(f"M must have shape ({a * a}, O, {int(n) * th * tw}) for n={n}, th={th}, "
                         f"tw={tw}, got {tuple(M.shape)[:3]}")
    cdef int has_bias = bias is not None
    if has_bias and bias.shape[0] != O:
        raise ValueError(f"bias must have {O} entries, got {bias.shape[0]}")
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((n, O, oh, ow), dtype=dtype)
    if O == 0:
        return out
    cdef floating[:, :, :, ::1] y = out
    cdef int kind = _kind(np.asarray(R), m)
    cdef int nthreads = _threads(min(M.shape[0] * O * M.shape[2], 2**62), _kernels.get_grain_size())
    with nogil:
        _tiles_out_planes(&M[0, 0, 0], &R[0, 0], a, m, th, tw, y, bias, has_bias, kind, nthreads)
    return out


cdef void _sandwich_filters(const floating* src, Py_ssize_t src_o, Py_ssize_t src_c, Py_ssize_t g_k,
                            Py_ssize_t g_row, Py_ssize_t g_col, const floating* P, int q, int p,
                            floating* dst, Py_ssize_t dst_o, Py_ssize_t dst_c, Py_ssize_t o_k,
                            Py_ssize_t o_e, Py_ssize_t O, Py_ssize_t C, int nthreads) noexcept nogil:
    """For every filter (o, c): its (q x q) result P g P^T, with g the (p x p) matrix at
    src + o*src_o + c*src_c (strides g_row, g_col), written at dst + o*dst_o + c*dst_c (element
    stride o_e); in runs of up to 16 filters along c (g_k / o_k: the stride between them),
    parallel over o. The filter transform and its gradient differ only in these strides."""
    cdef Py_ssize_t o, c
    cdef int nb
    for o in prange(O, schedule="static", num_threads=nthreads):
        for c in range(0, C, 16):
            nb = 16 if C - c >= 16 else C - c
            if floating is float:
                fc_sandwich_f(src + o * src_o + c * src_c, g_k, g_row, g_col, P, q, p,
                              dst + o * dst_o + c * dst_c, o_k, o_e, nb)
            else:
                fc_sandwich_d(src + o * src_o + c * src_c, g_k, g_row, g_col, P, q, p,
                              dst + o * dst_o + c * dst_c, o_k, o_e, nb)


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
    if O and C:
        _sandwich_filters(&w[0, 0, 0, 0], C * r * r, r * r, r * r, r, 1, &G[0, 0], a, r,
                          &U[0, 0, 0], C, 1, 1, O * C, O, C, _threads(a * a * O * C, grain))
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
    if O and C:
        _sandwich_filters(&dU[0, 0, 0], C, 1, 1, a * O * C, O * C, &GT[0, 0], r, a,
                          &dW[0, 0, 0, 0], C * r * r, r * r, r * r, 1, O, C, _threads(a * a * O * C, grain))
    return out
