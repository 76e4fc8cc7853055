"""Each compiled backend against fastconv.reference on fixed awkward shapes (docs/KERNELS.md).

The hypothesis-fuzzed suite is tests/engine/test_kernels_direct.py; these hand-picked cases pin
the corners: padding, stride > kernel, dilation 3, width-1 outputs, batch 1, ties, NaN, -inf,
shapes big enough to run on several threads, and inconsistent arguments that must raise
instead of overrunning memory. im2col, pooling forward and resampling are bit-exact; sums
(col2im, pooling backward) agree to 1e-12 (float64) / 1e-5 (float32).
"""
import numpy as np
import pytest

from fastconv import _backend
from fastconv import reference as ref

DTYPES = [np.float32, np.float64]

# N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw
CONV_CASES = [
    (2, 3, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1),      # "same" 3x3
    (1, 2, 8, 5, 2, 3, 3, 4, 0, 1, 1, 1),      # stride > kernel, batch 1
    (2, 1, 11, 12, 3, 2, 2, 1, 2, 3, 3, 3),    # dilation 3, padding > kernel span / 2
    (1, 4, 5, 1, 3, 1, 1, 1, 1, 0, 1, 1),      # width-1 input and output
    (3, 2, 1, 9, 1, 4, 1, 5, 0, 2, 1, 2),      # 1-D style (H = 1)
    (1, 1, 6, 6, 6, 6, 1, 1, 0, 0, 1, 1),      # a single 1x1 output
    (3, 2, 4, 9, 4, 3, 1, 3, 2, 2, 1, 2),      # padding > stride, wide kernel
    (2, 4, 40, 36, 3, 3, 1, 1, 1, 1, 1, 1),    # big enough to run on several threads
]

# N, C, H, W, kh, kw, sh, sw, ph, pw
POOL_CASES = [
    (2, 3, 8, 8, 2, 2, 2, 2, 0, 0),
    (1, 2, 7, 9, 3, 3, 2, 2, 1, 1),            # overlapping windows + padding
    (2, 1, 9, 10, 2, 3, 4, 5, 1, 1),           # stride > kernel
    (1, 3, 5, 1, 3, 1, 1, 1, 1, 0),            # width-1 output
    (1, 1, 4, 4, 3, 3, 1, 1, 1, 1),            # corner windows
    (2, 8, 34, 30, 3, 3, 1, 1, 1, 1),          # overlapping windows, several threads
]


@pytest.fixture(params=["numba", "cython"])
def kernels(request, monkeypatch):
    """A compiled backend module; Numba's small-call serial path is disabled to test the split."""
    try:
        module = _backend.backend_module(request.param)
    except ImportError as exc:
        pytest.skip(str(exc))
    if hasattr(module, "_SERIAL_BELOW"):
        monkeypatch.setattr(module, "_SERIAL_BELOW", 0)
    return module


def _out(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _same(got, want):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def _close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im(kernels, case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw = case
    rng = np.random.default_rng(sum(case))
    oh, ow = _out(h, kh, sh, ph, dh), _out(w, kw, sw, pw, dw)
    args = (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x_before = x.copy()
    _same(kernels.im2col2d(x, *args), ref.im2col2d(x, *args))
    np.testing.assert_array_equal(x, x_before)  # inputs are never written
    cols = rng.standard_normal((n, c * kh * kw, oh * ow)).astype(dtype)
    _close(kernels.col2im2d(cols, c, h, w, *args), ref.col2im2d(cols, c, h, w, *args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling(kernels, case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw = case
    rng = np.random.default_rng(sum(case))
    oh, ow = _out(h, kh, sh, ph), _out(w, kw, sw, pw)
    geom = (kh, kw, sh, sw, ph, pw, oh, ow)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x[..., ::2, :] = np.round(x[..., ::2, :])  # ties decide the argmax by scan order
    x.flat[0] = np.nan
    x.flat[-1] = -np.inf
    y, idx = kernels.maxpool2d_forward(x, *geom)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *geom)
    _same(y, y_ref)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx_ref)
    dy = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    _close(kernels.maxpool2d_backward(dy, idx_ref, h, w), ref.maxpool2d_backward(dy, idx_ref, h, w))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    _close(kernels.avgpool2d_forward(x, *geom), ref.avgpool2d_forward(x, *geom))
    _close(kernels.avgpool2d_backward(dy, h, w, *geom[:6]), ref.avgpool2d_backward(dy, h, w, *geom[:6]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_all_minus_inf_windows_route_inside_the_window(kernels, dtype):
    x = np.full((1, 2, 5, 6), -np.inf, dtype=dtype)
    x[0, 1, 4, 5] = 1.0
    args = (3, 2, 2, 2, 1, 1, 3, 4)
    y, idx = kernels.maxpool2d_forward(x, *args)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *args)
    _same(y, y_ref)
    _same(idx, idx_ref)
    dy = np.ones(y.shape, dtype=dtype)
    _same(kernels.maxpool2d_backward(dy, idx, 5, 6), ref.maxpool2d_backward(dy, idx_ref, 5, 6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 4), (1, 2, 6, 1), (1, 1, 1, 1)])
@pytest.mark.parametrize("factor", [(1, 1), (2, 3), (3, 1), (4, 5)])
def test_resampling(kernels, shape, factor, dtype):
    fh, fw = factor
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    h, w = shape[2:]
    _same(kernels.upsample2d_forward(x, fh, fw), ref.upsample2d_forward(x, fh, fw))
    up = ref.upsample2d_forward(x, fh, fw)
    _same(kernels.upsample2d_backward(up, fh, fw), ref.upsample2d_backward(up, fh, fw))
    _same(kernels.downsample2d_forward(x, fh, fw), ref.downsample2d_forward(x, fh, fw))
    d = ref.downsample2d_forward(x, fh, fw)
    _same(kernels.downsample2d_backward(d, h, w, fh, fw), ref.downsample2d_backward(d, h, w, fh, fw))


def test_inconsistent_arguments_raise_instead_of_overrunning(kernels):
    x = np.zeros((1, 2, 5, 5))
    with pytest.raises(ValueError):  # a 6-wide output grid does not fit a 5-wide input
        kernels.im2col2d(x, 3, 3, 1, 1, 0, 0, 1, 1, 3, 6)
    with pytest.raises(ValueError):  # cols has the wrong number of rows for c=3
        kernels.col2im2d(np.zeros((1, 18, 9)), 3, 5, 5, 3, 3, 1, 1, 0, 0, 1, 1, 3, 3)
    with pytest.raises(ValueError):  # an argmax outside the 5x5 plane
        kernels.maxpool2d_backward(np.ones((1, 1, 1, 1)), np.array([[[[25]]]]), 5, 5)
    with pytest.raises(ValueError):
        kernels.maxpool2d_backward(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), -1, np.int64), 5, 5)
    with pytest.raises(ValueError):  # dy does not fit the stored input size
        kernels.downsample2d_backward(np.zeros((1, 1, 2, 2)), 5, 5, 2, 2)
    with pytest.raises(ValueError):  # a zero kernel
        kernels.avgpool2d_forward(x, 0, 2, 1, 1, 0, 0, 3, 3)


def test_thread_count_does_not_change_results(kernels):
    """One plane large enough to run in parallel, so rows are split into bands."""
    rng = np.random.default_rng(1)
    h, w, oh, ow = 130, 70, 64, 34  # 3x3 kernel, stride 2, padding 0
    cols = rng.standard_normal((1, 9, oh * ow))
    x = rng.standard_normal((1, 1, h, w))
    dy = rng.standard_normal((1, 1, oh, ow))
    before = kernels.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            kernels.set_num_threads(n)
            results.append((kernels.col2im2d(cols, 1, h, w, 3, 3, 2, 2, 0, 0, 1, 1, oh, ow),
                            kernels.im2col2d(x, 3, 3, 2, 2, 0, 0, 1, 1, oh, ow),
                            kernels.avgpool2d_backward(dy, h, w, 3, 3, 2, 2, 0, 0),
                            kernels.maxpool2d_forward(x, 3, 3, 2, 2, 0, 0, oh, ow)[1]))
    finally:
        kernels.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
    with pytest.raises(ValueError):
        kernels.set_num_threads(0)
