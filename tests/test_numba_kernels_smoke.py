"""Quick sanity check of the Numba backend against the NumPy reference (docs/KERNELS.md).

The full cross-backend parity suite lives elsewhere; this one runs a handful of fixed shapes
(padding, stride > kernel, dilation 3, width-1 outputs, batch 1) in float32 and float64 and
asserts bit-identical results (the Numba kernels keep the reference's summation order).
"""
import numpy as np
import pytest

pytest.importorskip("numba")
nk = pytest.importorskip("fastconv.kernels.numba_kernels")
ref = pytest.importorskip("fastconv.reference")

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _always_parallel(monkeypatch):
    """Small calls normally run on one thread; force the multi-threaded, banded split."""
    monkeypatch.setattr(nk, "_SERIAL_BELOW", 0)

# N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw
CONV_CASES = [
    (2, 3, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1),    # "same" 3x3
    (1, 2, 8, 5, 2, 3, 3, 4, 0, 1, 1, 1),    # stride > kernel, batch 1
    (2, 1, 11, 12, 3, 2, 2, 1, 2, 3, 3, 3),  # dilation 3, padding > kernel span / 2
    (1, 4, 5, 1, 3, 1, 1, 1, 1, 0, 1, 1),    # width-1 input and output
    (3, 2, 1, 9, 1, 4, 1, 5, 0, 2, 1, 2),    # 1-D style (H = 1)
    (1, 1, 6, 6, 6, 6, 1, 1, 0, 0, 1, 1),    # a single 1x1 output
]

# N, C, H, W, kh, kw, sh, sw, ph, pw
POOL_CASES = [
    (2, 3, 8, 8, 2, 2, 2, 2, 0, 0),
    (1, 2, 7, 9, 3, 3, 2, 2, 1, 1),          # overlapping windows + padding
    (2, 1, 9, 10, 2, 3, 4, 5, 1, 1),         # stride > kernel
    (1, 3, 5, 1, 3, 1, 1, 1, 1, 0),          # width-1 output
    (1, 1, 4, 4, 3, 3, 1, 1, 2, 2),          # corner windows holding a single pixel
]


def _out(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _same(a, b):
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im(case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw = case
    rng = np.random.default_rng(sum(case))
    oh, ow = _out(h, kh, sh, ph, dh), _out(w, kw, sw, pw, dw)
    args = (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x_before = x.copy()
    _same(nk.im2col2d(x, *args), ref.im2col2d(x, *args))
    np.testing.assert_array_equal(x, x_before)  # inputs are never written
    cols = rng.standard_normal((n, c * kh * kw, oh * ow)).astype(dtype)
    _same(nk.col2im2d(cols, c, h, w, *args), ref.col2im2d(cols, c, h, w, *args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling(case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw = case
    rng = np.random.default_rng(sum(case))
    oh, ow = _out(h, kh, sh, ph), _out(w, kw, sw, pw)
    geom = (kh, kw, sh, sw, ph, pw, oh, ow)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x[..., ::2, :] = np.round(x[..., ::2, :])  # ties decide the argmax by scan order
    x.flat[0] = np.nan
    x.flat[-1] = -np.inf
    y, idx = nk.maxpool2d_forward(x, *geom)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *geom)
    _same(y, y_ref)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx_ref)
    # all -inf: no element ever wins, the argmax stays at each window's first unpadded pixel
    y_inf, idx_inf = nk.maxpool2d_forward(np.full_like(x, -np.inf), *geom)
    y_inf_ref, idx_inf_ref = ref.maxpool2d_forward(np.full_like(x, -np.inf), *geom)
    _same(y_inf, y_inf_ref)
    np.testing.assert_array_equal(idx_inf, idx_inf_ref)
    dy = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    _same(nk.maxpool2d_backward(dy, idx_ref, h, w), ref.maxpool2d_backward(dy, idx_ref, h, w))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    _same(nk.avgpool2d_forward(x, *geom), ref.avgpool2d_forward(x, *geom))
    _same(nk.avgpool2d_backward(dy, h, w, *geom[:6]), ref.avgpool2d_backward(dy, h, w, *geom[:6]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 4), (1, 2, 6, 1)])
@pytest.mark.parametrize("factor", [(1, 1), (2, 3), (3, 1), (4, 5)])
def test_resampling(shape, factor, dtype):
    fh, fw = factor
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    h, w = shape[2:]
    _same(nk.upsample2d_forward(x, fh, fw), ref.upsample2d_forward(x, fh, fw))
    up = ref.upsample2d_forward(x, fh, fw)
    _same(nk.upsample2d_backward(up, fh, fw), ref.upsample2d_backward(up, fh, fw))
    _same(nk.downsample2d_forward(x, fh, fw), ref.downsample2d_forward(x, fh, fw))
    d = ref.downsample2d_forward(x, fh, fw)
    _same(nk.downsample2d_backward(d, h, w, fh, fw), ref.downsample2d_backward(d, h, w, fh, fw))


def test_inconsistent_shapes_raise():
    x = np.zeros((1, 2, 5, 5))
    with pytest.raises(ValueError):  # a 6-wide output grid does not fit a 5-wide input
        nk.im2col2d(x, 3, 3, 1, 1, 0, 0, 1, 1, 3, 6)
    with pytest.raises(ValueError):  # cols has the wrong number of rows for c=3
        nk.col2im2d(np.zeros((1, 18, 9)), 3, 5, 5, 3, 3, 1, 1, 0, 0, 1, 1, 3, 3)
    with pytest.raises(ValueError):  # an argmax outside the 5x5 plane
        nk.maxpool2d_backward(np.ones((1, 1, 1, 1)), np.array([[[[25]]]]), 5, 5)
    with pytest.raises(ValueError):
        nk.downsample2d_backward(np.zeros((1, 1, 2, 2)), 5, 5, 2, 2)
    with pytest.raises(ValueError):  # huge params would overflow the kernels' int64 indices
        nk.im2col2d(x, 1, 1, 2**62, 1, 2**62, 0, 1, 1, 2, 5)


def test_thread_count_does_not_change_results():
    """Large enough to run in parallel, with one plane so that rows are split into bands."""
    import numba

    rng = np.random.default_rng(1)
    h, w, oh, ow = 130, 70, 64, 34  # 3x3 kernel, stride 2, padding 0
    cols = rng.standard_normal((1, 9, oh * ow))
    x = rng.standard_normal((1, 1, h, w))
    dy = rng.standard_normal((1, 1, oh, ow))
    before = numba.get_num_threads()
    results = []
    try:
        for n in (1, 10**6):  # 10**6 is capped at numba.config.NUMBA_NUM_THREADS, not an error
            nk.set_num_threads(n)
            results.append((nk.col2im2d(cols, 1, h, w, 3, 3, 2, 2, 0, 0, 1, 1, oh, ow),
                            nk.im2col2d(x, 3, 3, 2, 2, 0, 0, 1, 1, oh, ow),
                            nk.avgpool2d_backward(dy, h, w, 3, 3, 2, 2, 0, 0),
                            nk.maxpool2d_forward(x, 3, 3, 2, 2, 0, 0, oh, ow)[1]))
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        numba.set_num_threads(before)
    for one, many in zip(*results):
        np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(results[0][0], ref.col2im2d(cols, 1, h, w, 3, 3, 2, 2, 0, 0, 1, 1, oh, ow))
    np.testing.assert_array_equal(results[0][2], ref.avgpool2d_backward(dy, h, w, 3, 3, 2, 2, 0, 0))
    assert nk.NAME == "numba"
