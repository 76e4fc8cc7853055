"""Quick sanity check of the Cython backend against fastconv.reference (a few fixed shapes).

The full property-based parity suite across backends lives elsewhere; this one only makes
sure the compiled module is built, loads, and agrees with the reference on awkward shapes.
"""
import numpy as np
import pytest

from fastconv import reference as ref

K = pytest.importorskip(
    "fastconv.kernels.cython_kernels", reason="Cython extension not built (pip install -e .)"
)

DTYPES = [np.float32, np.float64]

# (N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw)
CONV_CASES = [
    (1, 1, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1),  # same padding, batch 1
    (2, 3, 7, 6, 2, 3, 4, 5, 0, 1, 1, 1),  # stride > kernel
    (2, 2, 11, 10, 3, 2, 1, 2, 2, 0, 3, 3),  # dilation 3, padding on one side
    (1, 2, 6, 1, 3, 1, 2, 1, 1, 0, 1, 1),  # width-1 input and output
    (3, 2, 4, 9, 4, 3, 1, 3, 2, 2, 1, 2),  # padding > stride, wide kernel
    (2, 4, 40, 36, 3, 3, 1, 1, 1, 1, 1, 1),  # big enough to run on several threads
]

# (N, C, H, W, kh, kw, sh, sw, ph, pw)
POOL_CASES = [
    (1, 1, 4, 4, 2, 2, 2, 2, 0, 0),
    (2, 3, 7, 5, 3, 3, 2, 2, 1, 1),
    (1, 2, 5, 1, 3, 1, 1, 1, 1, 0),  # width-1
    (2, 2, 9, 8, 2, 3, 3, 4, 1, 1),  # stride > kernel
    (2, 8, 34, 30, 3, 3, 1, 1, 1, 1),  # overlapping windows, several threads
]


def out_size(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def assert_same(got, want):
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def assert_close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_module_identity():
    assert K.NAME == "cython"
    K.set_num_threads(2)
    with pytest.raises(ValueError):
        K.set_num_threads(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im(case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw = case
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    args = (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    x_before = x.copy()
    assert_same(K.im2col2d(x, *args), ref.im2col2d(x, *args))
    np.testing.assert_array_equal(x, x_before)  # never writes to its input
    cols = rng.standard_normal((n, c * kh * kw, oh * ow)).astype(dtype)
    assert_close(K.col2im2d(cols, c, h, w, *args), ref.col2im2d(cols, c, h, w, *args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pools(case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw = case
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    rng = np.random.default_rng(sum(case))
    x = np.round(rng.standard_normal((n, c, h, w)) * 2).astype(dtype)  # rounding makes ties
    x.flat[::7] = np.nan
    x.flat[3::11] = -np.inf
    args = (kh, kw, sh, sw, ph, pw, oh, ow)
    y, idx = K.maxpool2d_forward(x, *args)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *args)
    assert_same(y, y_ref)
    assert_same(idx, idx_ref)
    dy = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    assert_close(K.maxpool2d_backward(dy, idx_ref, h, w), ref.maxpool2d_backward(dy, idx_ref, h, w))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    assert_close(K.avgpool2d_forward(x, *args), ref.avgpool2d_forward(x, *args))
    pool = (kh, kw, sh, sw, ph, pw)
    assert_close(K.avgpool2d_backward(dy, h, w, *pool), ref.avgpool2d_backward(dy, h, w, *pool))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,fh,fw", [((1, 1, 1, 1), 2, 3), ((2, 3, 5, 4), 2, 3), ((1, 2, 7, 1), 3, 1)])
def test_resampling(shape, fh, fw, dtype):
    rng = np.random.default_rng(fh * 10 + fw)
    x = rng.standard_normal(shape).astype(dtype)
    assert_same(K.upsample2d_forward(x, fh, fw), ref.upsample2d_forward(x, fh, fw))
    assert_same(K.upsample2d_backward(x, fh, fw), ref.upsample2d_backward(x, fh, fw))
    d = K.downsample2d_forward(x, fh, fw)
    assert_same(d, ref.downsample2d_forward(x, fh, fw))
    h, w = shape[2:]
    assert_same(K.downsample2d_backward(d, h, w, fh, fw), ref.downsample2d_backward(d, h, w, fh, fw))


def test_inconsistent_arguments_raise_instead_of_overrunning():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError):
        K.im2col2d(x, 3, 3, 1, 1, 0, 0, 1, 1, 3, 2)  # grid of 3 rows does not fit
    with pytest.raises(ValueError):
        K.col2im2d(np.zeros((1, 9, 4)), 1, 4, 4, 3, 3, 1, 1, 0, 0, 1, 1, 2, 3)
    with pytest.raises(ValueError):
        K.maxpool2d_backward(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 16, np.int64), 4, 4)
    with pytest.raises(ValueError):
        K.maxpool2d_backward(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), -1, np.int64), 4, 4)
    with pytest.raises(ValueError):
        K.downsample2d_backward(np.zeros((1, 1, 2, 2)), 4, 5, 2, 2)
    with pytest.raises(ValueError):
        K.avgpool2d_forward(x, 0, 2, 1, 1, 0, 0, 3, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_all_minus_inf_windows_route_inside_the_window(dtype):
    x = np.full((1, 2, 5, 6), -np.inf, dtype=dtype)
    x[0, 1, 4, 5] = 1.0
    args = (3, 2, 2, 2, 1, 1, 3, 4)
    y, idx = K.maxpool2d_forward(x, *args)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *args)
    assert_same(y, y_ref)
    assert_same(idx, idx_ref)
    dy = np.ones(y.shape, dtype=dtype)
    assert_same(K.maxpool2d_backward(dy, idx, 5, 6), ref.maxpool2d_backward(dy, idx_ref, 5, 6))
