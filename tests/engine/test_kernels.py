"""Each compiled backend's kernel functions (docs/KERNELS.md) against ``fastconv.reference``,
called directly: hypothesis-fuzzed legal geometries, then fixed awkward cases (padding, stride
> kernel, dilation 3, width-1 outputs, ties, NaN, -inf, planes big enough to be split across
threads), then the direct-call guard (inconsistent arguments raise instead of overrunning).

The claim checked is the contract's: every kernel output is bit-identical to the reference
(``assert_bitwise_equal``). im2col, up/downsampling and the max pool forward only move or select
values; col2im, the max pool backward and the average pool forward/backward add each output's
terms in the reference's order (kernel offset i, then j, from +0; the max pool backward in
row-major (p, q) order), in the input dtype, without FMA contraction.
The batch-norm and ReLU kernels are checked the same way, except for the per-channel sums of
``batchnorm_stats`` and ``batchnorm_backward`` (float64 partial sums in a fixed order, not
NumPy's pairwise order): those are held to the parity tolerance (``assert_close``), and the
normalisation itself (``batchnorm_forward``) and ReLU are bit-identical.
Every kernel must also return a new C-contiguous array of the input dtype, with the contract's
shape, and leave its inputs untouched.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv.reference as ref
from engine_helpers import (BACKENDS, DTYPE_IDS, DTYPES, assert_bitwise_equal, assert_close, conv_out, fuzz,
                            geometry, param)
from fastconv import _backend

SEEDS = st.integers(0, 2**32 - 1)
COMPILED = [name for name in BACKENDS if name != "reference"]


@pytest.fixture(params=COMPILED)
def kernels(request, monkeypatch):
    """A compiled backend module. Numba's small-call serial path is switched off, so even small
    calls split their work into bands (the serial path is the same kernel on one thread)."""
    module = _backend.backend_module(request.param)
    if hasattr(module, "_SERIAL_BELOW"):
        monkeypatch.setattr(module, "_SERIAL_BELOW", 0)
    return module


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


def check(kernels, name, *args):
    """``kernels.name(*args)`` is bit-identical to ``reference.name(*args)``; returns the result."""
    got = call(getattr(kernels, name), *args)
    expected = getattr(ref, name)(*args)
    for i, (a, b) in enumerate(zip(got if isinstance(got, tuple) else (got,),
                                   expected if isinstance(expected, tuple) else (expected,))):
        assert_bitwise_equal(a, b, f"{name} output {i}")
    return got


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


# ----------------------------------------------------------------------------- fuzzed
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(g=grid("conv"), seed=SEEDS)
def test_im2col_col2im(kernels, dtype, g, seed):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = g
    rng = np.random.default_rng(seed)
    geo = (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    cols = check(kernels, "im2col2d", values(rng, (n, c, h, w), dtype), *geo)
    assert cols.shape == (n, c * kh * kw, oh * ow)
    check(kernels, "col2im2d", values(rng, cols.shape, dtype), c, h, w, *geo)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(40)
@given(g=grid("pool"), mode=st.sampled_from(["uniform", "ties", "nan", "neginf"]), seed=SEEDS)
def test_pooling(kernels, dtype, g, mode, seed):
    n, c, h, w, kh, kw, sh, sw, ph, pw, _, _, oh, ow = g
    rng = np.random.default_rng(seed)
    geo = (kh, kw, sh, sw, ph, pw)
    x = values(rng, (n, c, h, w), dtype, mode)
    y, idx = check(kernels, "maxpool2d_forward", x, *geo, oh, ow)
    dy = values(rng, y.shape, dtype)
    check(kernels, "maxpool2d_backward", dy, idx, h, w)
    check(kernels, "avgpool2d_forward", x, *geo, oh, ow)
    check(kernels, "avgpool2d_backward", dy, h, w, *geo)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(n=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 12), w=st.integers(1, 80),
       fh=st.integers(1, 9), fw=st.integers(1, 9), seed=SEEDS)
def test_resampling(kernels, dtype, n, c, h, w, fh, fw, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), dtype)
    up = check(kernels, "upsample2d_forward", x, fh, fw)
    assert up.shape == (n, c, fh * (h - 1) + 1, fw * (w - 1) + 1)
    check(kernels, "upsample2d_backward", values(rng, up.shape, dtype), fh, fw)
    down = check(kernels, "downsample2d_forward", x, fh, fw)
    assert down.shape == (n, c, -(-h // fh), -(-w // fw))
    check(kernels, "downsample2d_backward", values(rng, down.shape, dtype), h, w, fh, fw)


# ----------------------------------------------------------------------------- fixed cases
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
    (2, 3, 9, 11, 2, 2, 2, 2, 0, 0),           # the 2x2/2 fast path, odd sides (last row/column unused)
    (1, 2, 7, 9, 3, 3, 2, 2, 1, 1),            # overlapping windows + padding
    (2, 1, 9, 10, 2, 3, 4, 5, 1, 1),           # stride > kernel
    (1, 3, 5, 1, 3, 1, 1, 1, 1, 0),            # width-1 output
    (1, 1, 4, 4, 3, 3, 1, 1, 1, 1),            # corner windows
    (2, 8, 34, 30, 3, 3, 1, 1, 1, 1),          # overlapping windows, several threads
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im_fixed(kernels, case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw = case
    rng = np.random.default_rng(sum(case))
    geo = (kh, kw, sh, sw, ph, pw, dh, dw, conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw))
    cols = check(kernels, "im2col2d", rng.standard_normal((n, c, h, w)).astype(dtype), *geo)
    check(kernels, "col2im2d", rng.standard_normal(cols.shape).astype(dtype), c, h, w, *geo)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_fixed(kernels, case, dtype):
    n, c, h, w, kh, kw, sh, sw, ph, pw = case
    rng = np.random.default_rng(sum(case))
    geo = (kh, kw, sh, sw, ph, pw, conv_out(h, kh, sh, ph, 1), conv_out(w, kw, sw, pw, 1))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    x[..., ::2, :] = np.round(x[..., ::2, :])  # ties decide the argmax by scan order
    x.flat[0] = np.nan
    x.flat[-1] = -np.inf
    y, idx = check(kernels, "maxpool2d_forward", x, *geo)
    dy = rng.standard_normal(y.shape).astype(dtype)
    check(kernels, "maxpool2d_backward", dy, idx, h, w)
    check(kernels, "avgpool2d_forward", rng.standard_normal((n, c, h, w)).astype(dtype), *geo)
    check(kernels, "avgpool2d_backward", dy, h, w, *geo[:6])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_maxpool_nan_and_minus_inf_windows(kernels, dtype):
    """A window of NaNs picks its last NaN (torch: a later NaN wins); a window of -inf keeps its
    first unpadded pixel (torch), so its gradient stays inside it; padding never wins."""
    check(kernels, "maxpool2d_forward", np.full((1, 1, 3, 3), np.nan, dtype), 3, 3, 1, 1, 1, 1, 3, 3)
    x = np.array([[[[1.0, -np.inf, -np.inf, -np.inf, 2.0, -np.inf]]]], dtype)
    _, idx = check(kernels, "maxpool2d_forward", x, 1, 2, 1, 2, 0, 0, 1, 3)
    assert idx.tolist() == [[[[0, 2, 4]]]], f"argmax {idx.tolist()}, torch gives [0, 2, 4]"
    x = -np.arange(1, 17, dtype=dtype).reshape(1, 1, 4, 4)  # all negative: padding (-inf) must lose
    y, _ = check(kernels, "maxpool2d_forward", x, 3, 3, 2, 2, 1, 1, 2, 2)
    assert (y > -np.inf).all()
    x = np.full((1, 2, 5, 6), -np.inf, dtype=dtype)
    x[0, 1, 4, 5] = 1.0
    y, idx = check(kernels, "maxpool2d_forward", x, 3, 2, 2, 2, 1, 1, 3, 4)
    check(kernels, "maxpool2d_backward", np.ones(y.shape, dtype=dtype), idx, 5, 6)
    # The 2x2/2 unpadded fast path: NaN windows, -inf windows, a NaN after a larger value.
    x = np.array([[[[np.nan, np.nan, -np.inf, -np.inf, 1.0, np.nan],
                    [np.nan, np.nan, -np.inf, -np.inf, 2.0, 0.0]]]], dtype)
    _, idx = check(kernels, "maxpool2d_forward", x, 2, 2, 2, 2, 0, 0, 1, 3)
    assert idx.tolist() == [[[[7, 2, 5]]]], f"argmax {idx.tolist()}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 4), (1, 2, 6, 1), (1, 1, 1, 1)])
@pytest.mark.parametrize("factor", [(1, 1), (2, 3), (3, 1), (4, 5)])
def test_resampling_fixed(kernels, shape, factor, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    up = check(kernels, "upsample2d_forward", x, *factor)
    check(kernels, "upsample2d_backward", up, *factor)
    down = check(kernels, "downsample2d_forward", x, *factor)
    check(kernels, "downsample2d_backward", down, *shape[2:], *factor)


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
        assert_bitwise_equal(one, two, "1 thread vs 2 threads")
    with pytest.raises(ValueError):
        kernels.set_num_threads(0)


# ----------------------------------------------------------------------------- batch norm, ReLU
def bn_operands(rng, n, c, length, dtype, offset):
    """x (N, C, L) with a per-channel offset (the variance sum must not cancel it badly),
    dy, and per-channel vectors mean, inv_std (from the reference), weight, bias."""
    x = (rng.standard_normal((n, c, length)) + offset * rng.standard_normal((1, c, 1))).astype(dtype)
    mean, var = ref.batchnorm_stats(x)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    return x, rng.standard_normal(x.shape).astype(dtype), mean, inv_std, weight, bias


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(n=st.integers(1, 5), c=st.integers(1, 7), length=st.integers(1, 300),
       offset=st.sampled_from([0.0, 3.0, 100.0]), seed=SEEDS)
def test_batchnorm(kernels, dtype, n, c, length, offset, seed):
    x, dy, mean, inv_std, weight, bias = bn_operands(np.random.default_rng(seed), n, c, length, dtype, offset)
    for got, want, what in zip(call(kernels.batchnorm_stats, x), ref.batchnorm_stats(x), ("mean", "var")):
        assert got.dtype == dtype and got.shape == (c,)
        assert_close(got, want, dtype, what)
    check(kernels, "batchnorm_forward", x, mean, inv_std, weight, bias)
    got = call(kernels.batchnorm_backward, dy, x, mean, inv_std, weight)
    for a, b, what in zip(got, ref.batchnorm_backward(dy, x, mean, inv_std, weight), ("dx", "dweight", "dbias")):
        assert a.dtype == dtype
        assert_close(a, b, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(25)
@given(shape=st.lists(st.integers(0, 40), min_size=1, max_size=4), seed=SEEDS)
def test_relu(kernels, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, tuple(shape), dtype, "nan")
    if x.size:
        x.flat[::5] = -0.0
    y = check(kernels, "relu_forward", x)
    dy = values(rng, x.shape, dtype, "nan")
    check(kernels, "relu_backward", dy, y)


def test_batchnorm_relu_thread_count_does_not_change_results(kernels):
    rng = np.random.default_rng(2)
    x, dy, mean, inv_std, weight, bias = bn_operands(rng, 8, 3, 40000, np.float32, 3.0)
    before = kernels.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            kernels.set_num_threads(n)
            results.append(kernels.batchnorm_stats(x) + kernels.batchnorm_backward(dy, x, mean, inv_std, weight)
                           + (kernels.relu_forward(dy), kernels.relu_backward(x, dy)))
    finally:
        kernels.set_num_threads(before)
    for one, two in zip(*results):
        assert_bitwise_equal(one, two, "1 thread vs 2 threads")


def test_batchnorm_relu_inconsistent_arguments_raise(kernels):
    x = np.zeros((2, 3, 4))
    v = np.ones(3)
    with pytest.raises(ValueError):  # a per-channel vector of the wrong length
        kernels.batchnorm_forward(x, v, v, np.ones(2), v)
    with pytest.raises(ValueError):
        kernels.batchnorm_backward(np.zeros((2, 3, 5)), x, v, v, v)
    with pytest.raises(ValueError):  # no values per channel
        kernels.batchnorm_stats(np.zeros((0, 3, 4)))
    with pytest.raises(ValueError):
        kernels.relu_backward(np.zeros(4), np.zeros(5))
    with pytest.raises((TypeError, ValueError)):  # one dtype per call
        kernels.batchnorm_forward(x, v.astype(np.float32), v, v, v)
    with pytest.raises((TypeError, ValueError)):
        kernels.relu_forward(np.zeros(3, np.int64))


# ----------------------------------------------------------------------------- the guard
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


@pytest.mark.parametrize("call, match", [
    (lambda k: k.upsample2d_forward(np.ones((1, 1, 1, 4)), 1, 6148914691236517206), r"fw must be"),
    (lambda k: k.im2col2d(np.zeros((1, 1, 1, 1)), 1, 1, 1, 3 * 2**61, 0, 2**62 - 1, 1, 1, 1, 2), r"sw must be"),
    (lambda k: k.im2col2d(np.zeros((1, 1, 1, 1)), 2**31 - 1, 2**31 - 1, 1, 1, 2**30, 2**30, 1, 1, 3, 3),
     r"elements|is more than|must be"),
    (lambda k: k.col2im2d(np.zeros((1, 1, 1)), 2**31, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1), r"c must be"),
    (lambda k: k.downsample2d_backward(np.zeros((1, 1, 1, 1)), 2**40, 1, 2**31 - 1, 1), r"h must be"),
])
def test_index_limits_guard_direct_calls(kernels, call, match):
    """The issue-9 reproducers and two buffer-size overflows, called on the kernels directly."""
    with pytest.raises(ValueError, match=match):
        call(kernels)
