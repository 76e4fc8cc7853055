"""Each backend's ten kernel functions (docs/KERNELS.md) against ``fastconv.reference``,
called directly with legal arguments (the layer API's job is validation; see test_bad_input).

Bit-exact where the contract only moves or selects values: im2col2d, maxpool2d_forward
(values *and* argmax, including ties and NaN), up/downsample forward and backward.
Within tolerance (engine_helpers.assert_close: float64 1e-12 absolute, float32 1e-5
relative) where the contract sums and does not fix the order: col2im2d, maxpool2d_backward
(overlapping windows accumulate), avgpool2d forward/backward.
Every kernel must also return a new C-contiguous array of the input dtype, with the
contract's shape, and leave its inputs untouched.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv.reference as ref
from engine_helpers import DTYPE_IDS, DTYPES, assert_close, conv_out, fuzz, geometry, param
from fastconv import _backend

SEEDS = st.integers(0, 2**32 - 1)


@pytest.fixture
def kernels(backend):
    return _backend.backend_module(backend)


def call(fn, *args):
    """Run a kernel; check it neither wrote to nor returned a view of its array arguments."""
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    copies = [a.copy() for a in arrays]
    out = fn(*args)
    for a, c in zip(arrays, copies):
        assert np.array_equal(a, c, equal_nan=True), f"{fn.__name__} wrote to an input"
    for o in (out if isinstance(out, tuple) else (out,)):
        assert isinstance(o, np.ndarray), f"{fn.__name__} returned {type(o).__name__}"
        assert o.flags.c_contiguous, f"{fn.__name__} returned a non-C-contiguous array"
        for a in arrays:
            assert not np.shares_memory(o, a), f"{fn.__name__} returned a view of an input"
    return out


def same(actual, expected, what):
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if not np.array_equal(actual, expected, equal_nan=True):
        bad = np.argwhere(~((actual == expected) | (np.isnan(actual) & np.isnan(expected))))
        i = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} entries differ (must be bit-exact); first at {i}: "
                             f"got {actual[i]!r}, expected {expected[i]!r}")


def close(actual, expected, dtype, what):
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert_close(actual, expected, dtype, what)


@st.composite
def grid(draw, kind, c_max=8):
    """(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow): a legal 2-D geometry, or the 1-D
    form (H = 1, kh = 1, sh = 1, ph = 0, dh = 1) one time in four."""
    c = draw(st.integers(1, c_max))
    n, axes, (h, w) = draw(geometry(2, kind, c))
    if draw(st.integers(0, 3)) == 0:
        axes[0] = dict(k=1, s=1, p=0, d=1, op=0, min=1)
        h = 1
    kh, kw = param(axes, "k", 2)
    sh, sw = param(axes, "s", 2)
    ph, pw = param(axes, "p", 2)
    dh, dw = param(axes, "d", 2)
    oh, ow = conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw)
    assert oh >= 1 and ow >= 1
    return n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow


def values(rng, shape, dtype, mode="uniform"):
    if mode == "ties":
        a = rng.integers(-2, 3, shape).astype(dtype)
    else:
        a = rng.uniform(-1, 1, shape).astype(dtype)
    if mode == "nan" and a.size:
        a.flat[rng.integers(0, a.size, max(1, a.size // 7))] = np.nan
    if mode == "neginf":  # many windows made only of -inf
        a[rng.random(shape) < 0.6] = -np.inf
    return a


# ----------------------------------------------------------------------------- im2col / col2im
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(g=grid("conv"), seed=SEEDS)
def test_im2col_col2im(kernels, dtype, g, seed):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = g
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), dtype)
    geo = (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    expected = ref.im2col2d(x, *geo)
    assert expected.shape == (n, c * kh * kw, oh * ow)
    same(call(kernels.im2col2d, x, *geo), expected, "im2col2d")
    cols = values(rng, expected.shape, dtype)
    close(call(kernels.col2im2d, cols, c, h, w, *geo), ref.col2im2d(cols, c, h, w, *geo), dtype, "col2im2d")


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(g=grid("pool"), mode=st.sampled_from(["uniform", "ties", "nan", "neginf"]), seed=SEEDS)
def test_maxpool(kernels, dtype, g, mode, seed):
    n, c, h, w, kh, kw, sh, sw, ph, pw, _, _, oh, ow = g
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), dtype, mode)
    geo = (kh, kw, sh, sw, ph, pw, oh, ow)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *geo)
    y, idx = call(kernels.maxpool2d_forward, x, *geo)
    same(y, y_ref, "maxpool2d_forward values")
    same(idx, idx_ref, "maxpool2d_forward argmax")
    dy = values(rng, y_ref.shape, dtype)
    close(call(kernels.maxpool2d_backward, dy, idx_ref, h, w), ref.maxpool2d_backward(dy, idx_ref, h, w),
          dtype, "maxpool2d_backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(g=grid("pool"), seed=SEEDS)
def test_avgpool(kernels, dtype, g, seed):
    n, c, h, w, kh, kw, sh, sw, ph, pw, _, _, oh, ow = g
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), dtype)
    geo = (kh, kw, sh, sw, ph, pw, oh, ow)
    y_ref = ref.avgpool2d_forward(x, *geo)
    close(call(kernels.avgpool2d_forward, x, *geo), y_ref, dtype, "avgpool2d_forward")
    dy = values(rng, y_ref.shape, dtype)
    close(call(kernels.avgpool2d_backward, dy, h, w, *geo[:6]), ref.avgpool2d_backward(dy, h, w, *geo[:6]),
          dtype, "avgpool2d_backward")


# ----------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(n=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 12), w=st.integers(1, 80),
       fh=st.integers(1, 9), fw=st.integers(1, 9), seed=SEEDS)
def test_resampling(kernels, dtype, n, c, h, w, fh, fw, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), dtype)
    up = ref.upsample2d_forward(x, fh, fw)
    assert up.shape == (n, c, fh * (h - 1) + 1, fw * (w - 1) + 1)
    same(call(kernels.upsample2d_forward, x, fh, fw), up, "upsample2d_forward")
    dy = values(rng, up.shape, dtype)
    same(call(kernels.upsample2d_backward, dy, fh, fw), ref.upsample2d_backward(dy, fh, fw), "upsample2d_backward")
    down = ref.downsample2d_forward(x, fh, fw)
    assert down.shape == (n, c, -(-h // fh), -(-w // fw))
    same(call(kernels.downsample2d_forward, x, fh, fw), down, "downsample2d_forward")
    dy = values(rng, down.shape, dtype)
    same(call(kernels.downsample2d_backward, dy, h, w, fh, fw), ref.downsample2d_backward(dy, h, w, fh, fw),
         "downsample2d_backward")


# ----------------------------------------------------------------------------- fixed edge cases
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_maxpool_all_nan_and_padding_only_edges(kernels, dtype):
    """A window of NaNs picks its last NaN (torch: a later NaN wins); a window of -inf keeps its
    first unpadded pixel (torch); padding never wins over real values."""
    x = np.full((1, 1, 3, 3), np.nan, dtype)
    geo = (3, 3, 1, 1, 1, 1, 3, 3)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *geo)
    y, idx = kernels.maxpool2d_forward(x, *geo)
    same(y, y_ref, "values")
    same(idx, idx_ref, "argmax")
    x = np.array([[[[1.0, -np.inf, -np.inf, -np.inf, 2.0, -np.inf]]]], dtype)
    y, idx = kernels.maxpool2d_forward(x, 1, 2, 1, 2, 0, 0, 1, 3)
    assert idx.tolist() == [[[[0, 2, 4]]]], f"argmax {idx.tolist()}, torch gives [0, 2, 4]"
    x = -np.arange(1, 17, dtype=dtype).reshape(1, 1, 4, 4)  # all negative: padding (-inf) must lose
    geo = (3, 3, 2, 2, 1, 1, 2, 2)
    y, idx = kernels.maxpool2d_forward(x, *geo)
    same(y, ref.maxpool2d_forward(x, *geo)[0], "values")
    assert (y > -np.inf).all()
