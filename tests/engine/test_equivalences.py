"""Stride is resampling: identities between layers, forward and backward, on every backend.

* Conv(stride=s)            == Downsample(s) o Conv(stride=1)          (same weights)
* ConvTranspose(stride=s)   == Conv(stride=1, flipped and channel-transposed kernel)
                               o zero-pad/crop by d(k-1) - p (plus output_padding on the right)
                               o Upsample(s)
* Pool(stride=s)            == Downsample(s) o Pool(stride=1)           (max and mean)

Backward runs the chains in reverse (the adjoint of padding is cropping and vice versa) and
must give the same input gradient and weight/bias gradients. Tolerances as in
``engine_helpers.assert_close`` (the two sides sum in different orders).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from engine_helpers import DTYPE_IDS, DTYPES, assert_close, fuzz, geometry, param

SEEDS = st.integers(0, 2**32 - 1)


def pad_crop(a, amounts):
    """Zero-pad (amount > 0) or crop (amount < 0) the trailing axes by (left, right) amounts.

    The adjoint of ``pad_crop(., amounts)`` is ``pad_crop(., negated amounts)``.
    """
    nd = len(amounts)
    lead = a.ndim - nd
    a = np.pad(a, [(0, 0)] * lead + [(max(lo, 0), max(hi, 0)) for lo, hi in amounts])
    index = [slice(None)] * lead + [slice(max(-lo, 0), a.shape[lead + i] - max(-hi, 0))
                                    for i, (lo, hi) in enumerate(amounts)]
    return np.ascontiguousarray(a[tuple(index)])


def _draw_conv(data, nd, kind, dtype):
    """Channels, legal axes (``engine_helpers.geometry``), bias or not, an input x and a generator."""
    cin, cout = data.draw(st.integers(1, 8), label="cin"), data.draw(st.integers(1, 8), label="cout")
    n, axes, sizes = data.draw(geometry(nd, kind, max(cin, cout)), label="geometry")
    bias = data.draw(st.booleans(), label="bias")
    rng = np.random.default_rng(data.draw(SEEDS, label="seed"))
    x = rng.uniform(-1, 1, (n, cin) + tuple(sizes)).astype(dtype)
    return cin, cout, axes, bias, x, rng


def _layers(nd):
    return ((fc.nn.Conv1d, fc.nn.ConvTranspose1d, fc.nn.Upsample1d, fc.nn.Downsample1d) if nd == 1 else
            (fc.nn.Conv2d, fc.nn.ConvTranspose2d, fc.nn.Upsample2d, fc.nn.Downsample2d))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("nd", [1, 2], ids=["1d", "2d"])
@fuzz(8)
@given(data=st.data())
def test_strided_conv_is_conv_then_downsample(backend, nd, dtype, data):
    cin, cout, axes, bias, x, rng = _draw_conv(data, nd, "conv", dtype)
    k, s, p, d = (param(axes, key, nd) for key in "kspd")
    conv_cls, _, _, down_cls = _layers(nd)
    strided = conv_cls(cin, cout, k, stride=s, padding=p, dilation=d, bias=bias, dtype=dtype)
    dense = conv_cls(cin, cout, k, stride=1, padding=p, dilation=d, bias=bias, dtype=dtype)
    dense.weight.data[...] = strided.weight.data
    if bias:
        dense.bias.data[...] = strided.bias.data
    down = down_cls(s)

    y = strided(x)
    y_chain = down(dense(x))
    assert_close(y, y_chain, dtype, "forward")
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    assert_close(strided.backward(dy), dense.backward(down.backward(dy)), dtype, "input gradient")
    assert_close(strided.weight.grad, dense.weight.grad, dtype, "weight gradient")
    if bias:
        assert_close(strided.bias.grad, dense.bias.grad, dtype, "bias gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("nd", [1, 2], ids=["1d", "2d"])
@fuzz(8)
@given(data=st.data())
def test_transposed_conv_is_upsample_pad_conv(backend, nd, dtype, data):
    cin, cout, axes, bias, x, rng = _draw_conv(data, nd, "tconv", dtype)
    k, s, p, d, op = (param(axes, key, nd) for key in ("k", "s", "p", "d", "op"))
    conv_cls, tconv_cls, up_cls, _ = _layers(nd)
    tconv = tconv_cls(cin, cout, k, stride=s, padding=p, output_padding=op, dilation=d, bias=bias,
                      dtype=dtype)
    conv = conv_cls(cin, cout, k, stride=1, padding=0, dilation=d, bias=bias, dtype=dtype)
    flip = (slice(None), slice(None)) + (slice(None, None, -1),) * nd
    # conv weight (O=cout, C=cin, *k) = transposed-conv weight (cin, cout, *k), channels swapped, flipped
    conv_w = np.swapaxes(tconv.weight.data, 0, 1)[flip]
    assert conv.weight.data.shape == conv_w.shape
    conv.weight.data[...] = conv_w
    if bias:
        conv.bias.data[...] = tconv.bias.data
    up = up_cls(s)
    amounts = [(a["d"] * (a["k"] - 1) - a["p"], a["d"] * (a["k"] - 1) - a["p"] + a["op"]) for a in axes]

    y = tconv(x)
    y_chain = conv(pad_crop(up(x), amounts))
    assert_close(y, y_chain, dtype, "forward")
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    dx_chain = up.backward(pad_crop(conv.backward(dy), [(-lo, -hi) for lo, hi in amounts]))
    assert_close(tconv.backward(dy), dx_chain, dtype, "input gradient")
    assert_close(tconv.weight.grad, np.swapaxes(conv.weight.grad[flip], 0, 1), dtype, "weight gradient")
    if bias:
        assert_close(tconv.bias.grad, conv.bias.grad, dtype, "bias gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["Max", "Mean"])
@pytest.mark.parametrize("nd", [1, 2], ids=["1d", "2d"])
@fuzz(6)
@given(data=st.data())
def test_strided_pool_is_pool_then_downsample(backend, nd, kind, dtype, data):
    c = data.draw(st.integers(1, 8), label="C")
    n, axes, sizes = data.draw(geometry(nd, "pool", c), label="geometry")
    k, s, p = (param(axes, key, nd) for key in "ksp")
    ties = data.draw(st.booleans(), label="ties")
    rng = np.random.default_rng(data.draw(SEEDS, label="seed"))
    pool_cls = getattr(fc.nn, f"{kind}Pool{nd}d")
    down = (fc.nn.Downsample1d if nd == 1 else fc.nn.Downsample2d)(s)
    strided, dense = pool_cls(k, s, p), pool_cls(k, 1, p)
    shape = (n, c) + tuple(sizes)
    x = (rng.integers(-2, 3, shape) if ties else rng.uniform(-1, 1, shape)).astype(dtype)

    y = strided(x)
    assert_close(y, down(dense(x)), dtype, "forward")
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    assert_close(strided.backward(dy), dense.backward(down.backward(dy)), dtype, "input gradient")


def test_pad_crop_adjoint():
    """The helper itself: <pad_crop(a), b> == <a, pad_crop*(b)>."""
    rng = np.random.default_rng(0)
    for amounts in ([(2, 3)], [(-1, 2)], [(0, -2), (3, -1)]):
        a = rng.standard_normal((2, 3, 7) if len(amounts) == 1 else (2, 3, 6, 7))
        pa = pad_crop(a, amounts)
        b = rng.standard_normal(pa.shape)
        back = pad_crop(b, [(-lo, -hi) for lo, hi in amounts])
        assert back.shape == a.shape
        assert abs(np.vdot(pa, b) - np.vdot(a, back)) < 1e-12
