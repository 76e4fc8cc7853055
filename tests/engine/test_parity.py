"""Parity of every fastconv layer, loss, optimiser and schedule with PyTorch (or with its
definition where torch has no twin: Dropout, Upsample/Downsample).

One helper does every layer comparison (``conftest.check_layer_vs_torch``); each layer family
is a hypothesis strategy of *specs* (plain dicts, so a failure prints a readable reproducer)
and a builder turning a spec into ``(fastconv layer, torch module, input)``.

Layers whose forward/backward run backend kernels (convolutions, pooling, resampling) run
once per backend (``backend`` fixture); the pure-NumPy layers (activations, Linear, Flatten,
BatchNorm, Dropout, losses) do not touch the backend and run once.

Ranges (from the issue): batch 1-4, channels 1-16, kernel 1-9, stride 1-9, padding 0-4,
dilation 1-3, widths from the smallest legal one to 300. For 2-D one axis may be long (up
to 300) and the other short, capped so that each example's im2col stays small.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from engine_helpers import (DTYPE_IDS, DTYPES, LAYOUTS, assert_close, assert_dtype, check_layer_vs_torch,
                            fuzz, geometry, param, with_layout)

torch = pytest.importorskip("torch")

SEEDS = st.integers(0, 2**32 - 1)


def _input(spec, shape):
    rng = np.random.default_rng(spec["seed"])
    values = spec.get("values", "uniform")
    if values == "ties":
        return rng.integers(-2, 3, size=shape).astype(np.float64)  # many equal values per window
    x = rng.uniform(-1, 1, size=shape)
    if values == "neginf":  # windows made only of -inf: torch routes their gradient to the first pixel
        x[rng.random(shape) < 0.6] = -np.inf
    return x


# ----------------------------------------------------------------------------- specs
@st.composite
def conv_spec(draw, layer):
    nd = 2 if layer.endswith("2d") else 1
    kind = "tconv" if "Transpose" in layer else "conv"
    cin, cout = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    n, axes, sizes = draw(geometry(nd, kind, max(cin, cout)))
    spec = dict(layer=layer, n=n, cin=cin, cout=cout, size=tuple(sizes),
                kernel_size=param(axes, "k", nd), stride=param(axes, "s", nd),
                padding=param(axes, "p", nd), dilation=param(axes, "d", nd),
                bias=draw(st.booleans()), seed=draw(SEEDS), layout=draw(st.sampled_from(LAYOUTS)))
    if kind == "tconv":
        spec["output_padding"] = param(axes, "op", nd)
    return spec


def build_conv(spec, dtype):
    kwargs = dict(stride=spec["stride"], padding=spec["padding"], dilation=spec["dilation"],
                  bias=spec["bias"])
    for optional in ("output_padding", "groups"):  # transposed convs; test_grouped_conv.py
        if optional in spec:
            kwargs[optional] = spec[optional]
    fc.manual_seed(spec["seed"])
    fl = getattr(fc.nn, spec["layer"])(spec["cin"], spec["cout"], spec["kernel_size"], dtype=dtype, **kwargs)
    tl = getattr(torch.nn, spec["layer"])(spec["cin"], spec["cout"], spec["kernel_size"], **kwargs)
    return fl, tl, _input(spec, (spec["n"], spec["cin"]) + spec["size"])


@st.composite
def pool_spec(draw, layer):
    nd = 2 if layer.endswith("2d") else 1
    c = draw(st.integers(1, 16))
    n, axes, sizes = draw(geometry(nd, "pool", c))
    stride = draw(st.one_of(st.none(), st.just(param(axes, "s", nd))))
    return dict(layer=layer, n=n, c=c, size=tuple(sizes), kernel_size=param(axes, "k", nd),
                stride=stride, padding=param(axes, "p", nd),
                values=draw(st.sampled_from(["uniform", "ties", "neginf"])),
                seed=draw(SEEDS), layout=draw(st.sampled_from(LAYOUTS)))


TORCH_POOL = {"MaxPool1d": "MaxPool1d", "MaxPool2d": "MaxPool2d", "MeanPool1d": "AvgPool1d",
              "MeanPool2d": "AvgPool2d"}


def build_pool(spec, dtype):
    args = (spec["kernel_size"], spec["stride"], spec["padding"])
    fl = getattr(fc.nn, spec["layer"])(*args)
    tl = getattr(torch.nn, TORCH_POOL[spec["layer"]])(*args)  # AvgPool: count_include_pad=True
    return fl, tl, _input(spec, (spec["n"], spec["c"]) + spec["size"])


CONV_LAYERS = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]
POOL_LAYERS = ["MaxPool1d", "MaxPool2d", "MeanPool1d", "MeanPool2d"]


def run_spec(spec, dtype):
    build = build_conv if spec["layer"] in CONV_LAYERS else build_pool
    fl, tl, x = build(spec, dtype)
    check_layer_vs_torch(fl, tl, x, dtype, layout=spec["layout"], seed=spec["seed"])


# ----------------------------------------------------------------------------- kernel layers
KERNEL_LAYERS = [(layer, conv_spec) for layer in CONV_LAYERS] + [(layer, pool_spec) for layer in POOL_LAYERS]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layer, spec", KERNEL_LAYERS, ids=[layer for layer, _ in KERNEL_LAYERS])
@fuzz(10)
@given(data=st.data())
def test_kernel_layer_parity(backend, layer, spec, dtype, data):
    """Convolutions and pools against torch on fuzzed shapes, layouts and parameters."""
    run_spec(data.draw(spec(layer), label="spec"), dtype)


def _c(layer, n, cin, cout, size, k, s=1, p=0, d=1, op=None, bias=True, layout="c"):
    spec = dict(layer=layer, n=n, cin=cin, cout=cout, size=size, kernel_size=k, stride=s, padding=p,
                dilation=d, bias=bias, seed=len(size) * 1000 + n, layout=layout)
    if op is not None:
        spec["output_padding"] = op
    return spec


def _p(layer, n, c, size, k, s=None, p=0, values="uniform", layout="c"):
    return dict(layer=layer, n=n, c=c, size=size, kernel_size=k, stride=s, padding=p, values=values,
                seed=7, layout=layout)


# Hand-picked awkward configurations (always run, whatever hypothesis draws).
AWKWARD = [
    _c("Conv1d", 1, 1, 1, (1,), 1),                           # everything 1
    _c("Conv1d", 2, 3, 4, (10,), 3, s=4),                     # stride > kernel, not dividing
    _c("Conv1d", 1, 2, 3, (7,), 9, p=1),                      # kernel wider than input, padded
    _c("Conv1d", 3, 5, 2, (300,), 9, s=9, p=4, d=3, layout="strided"),
    _c("Conv1d", 1, 16, 16, (25,), 9, d=3),                   # width-1 output, batch 1
    _c("Conv1d", 2, 2, 2, (11,), 3, s=2, p=4, d=1, bias=False, layout="f"),  # padding > kernel
    _c("Conv2d", 1, 3, 2, (5, 1), (3, 1), s=(1, 1), p=(1, 0)),  # width-1 input and output
    _c("Conv2d", 2, 3, 4, (9, 13), (3, 2), s=(2, 5), p=(1, 2), d=(2, 3), layout="transposed"),
    _c("Conv2d", 1, 1, 1, (6, 6), 6),                         # a single 1x1 output
    _c("Conv2d", 2, 2, 3, (1, 40), (1, 4), s=(1, 7)),         # 1-D style
    _c("Conv2d", 1, 4, 2, (8, 8), 1, s=3, layout="reversed"),  # 1x1 kernel, stride 3
    _c("ConvTranspose1d", 1, 1, 1, (1,), 1),
    _c("ConvTranspose1d", 2, 3, 2, (5,), 3, s=4, p=1, op=3),  # output_padding = stride - 1
    _c("ConvTranspose1d", 2, 2, 3, (4,), 2, s=1, p=0, d=3, op=2),  # output_padding < dilation only
    _c("ConvTranspose1d", 1, 2, 2, (6,), 2, s=3, p=4, op=1),  # padding > d(k-1): crops
    _c("ConvTranspose2d", 2, 3, 2, (4, 5), (3, 2), s=(2, 3), p=(1, 0), op=(1, 2), d=(1, 2)),
    _c("ConvTranspose2d", 1, 2, 3, (1, 1), 3, s=2, p=1),      # 1x1 input
    _p("MaxPool1d", 1, 1, (1,), 1),
    _p("MaxPool1d", 2, 3, (10,), 3, s=4, p=1, values="ties"),     # stride > kernel, padding
    _p("MaxPool1d", 1, 2, (9,), 9, s=1, p=4, layout="f"),      # padding = k // 2 (all windows touch it)
    _p("MaxPool2d", 2, 2, (5, 1), (3, 1), s=(2, 1), p=(1, 0), values="ties"),
    _p("MaxPool2d", 1, 3, (7, 9), 3, s=1, p=1, values="ties", layout="transposed"),  # overlapping ties
    _p("MaxPool1d", 2, 2, (12,), 2, s=2, values="neginf"),      # all--inf windows
    _p("MaxPool2d", 1, 2, (6, 7), 3, s=2, p=1, values="neginf"),
    _p("MeanPool1d", 2, 3, (10,), 3, s=4, p=1),
    _p("MeanPool2d", 1, 2, (7, 9), (3, 2), s=(2, 3), p=(1, 1), layout="strided"),
    _p("MeanPool2d", 2, 1, (4, 4), 4),                        # single output
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("spec", AWKWARD, ids=lambda s: f"{s['layer']}-{s['size']}-k{s['kernel_size']}")
def test_awkward_configurations(backend, spec, dtype):
    run_spec(dict(spec), dtype)


# ----------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layer", ["Upsample1d", "Upsample2d", "Downsample1d", "Downsample2d"])
@fuzz(8)
@given(data=st.data())
def test_resample_definition(backend, layer, dtype, data):
    """Upsample: y[..., ::k] = x, zeros elsewhere; Downsample: y = x[..., ::k]; backward = adjoint.
    Exact equality: resampling only moves values."""
    nd = 2 if layer.endswith("2d") else 1
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 16))
    if nd == 1:
        size = (data.draw(st.integers(1, 300)),)
        factor = data.draw(st.integers(1, 9))
        f = (factor,)
    else:
        size = (data.draw(st.integers(1, 12)), data.draw(st.integers(1, 60)))
        f = (data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9)))
        factor = data.draw(st.sampled_from([f, f[0]]))
        f = (factor, factor) if isinstance(factor, int) else f
    layout = data.draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(data.draw(SEEDS))
    x = rng.uniform(-1, 1, (n, c) + size).astype(dtype)
    sl = (Ellipsis,) + tuple(slice(None, None, k) for k in f)
    module = getattr(fc.nn, layer)(factor)
    y = module(with_layout(x, layout))
    if layer.startswith("Up"):
        expected = np.zeros((n, c) + tuple(k * (s - 1) + 1 for k, s in zip(f, size)), dtype)
        expected[sl] = x
    else:
        expected = x[sl]
    assert_dtype(y, dtype, "output")
    assert y.shape == expected.shape
    assert np.array_equal(y, expected)
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    dx = module.backward(with_layout(dy, layout))
    if layer.startswith("Up"):
        expected_dx = dy[sl]
    else:
        expected_dx = np.zeros_like(x)
        expected_dx[sl] = dy
    assert_dtype(dx, dtype, "input gradient")
    assert dx.shape == x.shape
    assert np.array_equal(dx, expected_dx)
    # adjoint identity <Ax, dy> == <x, A^T dy>
    assert abs(float(np.vdot(y.astype(np.float64), dy)) - float(np.vdot(x.astype(np.float64), dx))) < 1e-9


# ----------------------------------------------------------------------------- pure-NumPy layers
@st.composite
def feature_shape(draw, min_dims=1, max_dims=4):
    return tuple(draw(st.lists(st.integers(1, 6), min_size=min_dims, max_size=max_dims)))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(15)
@given(n=st.integers(1, 4), extra=feature_shape(0, 2), fin=st.integers(1, 16),
       fout=st.integers(1, 16), bias=st.booleans(), seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_linear(dtype, n, extra, fin, fout, bias, seed, layout):
    fc.manual_seed(seed)
    fl = fc.nn.Linear(fin, fout, bias=bias, dtype=dtype)
    tl = torch.nn.Linear(fin, fout, bias=bias)
    x = np.random.default_rng(seed).uniform(-1, 1, (n,) + extra + (fin,))
    check_layer_vs_torch(fl, tl, x, dtype, layout=layout, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(10)
@given(shape=feature_shape(1, 4), data=st.data(), seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_flatten(dtype, shape, data, seed, layout):
    shape = (data.draw(st.integers(1, 4)),) + shape
    start = data.draw(st.integers(0, len(shape) - 1), label="start_dim")
    x = np.random.default_rng(seed).uniform(-1, 1, shape)
    check_layer_vs_torch(fc.nn.Flatten(start), torch.nn.Flatten(start), x, dtype, layout=layout, seed=seed)


ACTIVATIONS = {
    "ReLU": (lambda a: fc.nn.ReLU(), lambda a: torch.nn.ReLU()),
    "LeakyReLU": (lambda a: fc.nn.LeakyReLU(a), lambda a: torch.nn.LeakyReLU(a)),
    "Sigmoid": (lambda a: fc.nn.Sigmoid(), lambda a: torch.nn.Sigmoid()),
    "Tanh": (lambda a: fc.nn.Tanh(), lambda a: torch.nn.Tanh()),
    "GELU": (lambda a: fc.nn.GELU(), lambda a: torch.nn.GELU()),
    "SiLU": (lambda a: fc.nn.SiLU(), lambda a: torch.nn.SiLU()),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(ACTIVATIONS) + ["Softmax"])
@fuzz(10)
@given(shape=feature_shape(1, 4), scale=st.sampled_from([1.0, 5.0, 40.0]), data=st.data(),
       seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_activation(dtype, name, shape, scale, data, seed, layout):
    """Element-wise activations and Softmax over any dim; scale 40 reaches the saturated tails."""
    if name == "Softmax":
        dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
        fl, tl = fc.nn.Softmax(dim), torch.nn.Softmax(dim)
    else:
        slope = data.draw(st.sampled_from([0.01, 0.0, 0.3, 1.5, -0.2]), label="slope")
        make_fc, make_torch = ACTIVATIONS[name]
        fl, tl = make_fc(slope), make_torch(slope)
    x = np.random.default_rng(seed).uniform(-scale, scale, shape)
    check_layer_vs_torch(fl, tl, x, dtype, layout=layout, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layer", ["BatchNorm1d", "BatchNorm2d"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@fuzz(10)
@given(data=st.data(), seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_batchnorm(dtype, layer, train, data, seed, layout):
    """Output, gradients (x, weight, bias) and running statistics after the forward."""
    c = data.draw(st.integers(1, 16), label="C")
    if layer == "BatchNorm1d":
        shape = data.draw(st.sampled_from([(c,), (c, 1), (c, 7), (c, 33)]), label="shape")
    else:
        shape = (c, data.draw(st.integers(1, 6)), data.draw(st.integers(1, 9)))
    n_min = 2 if train and math.prod(shape[1:]) == 1 else 1  # training needs > 1 value per channel
    n = data.draw(st.integers(n_min, 4), label="N")
    momentum = data.draw(st.sampled_from([0.1, 0.5, 1.0]), label="momentum")
    affine = data.draw(st.booleans(), label="affine")
    track = data.draw(st.booleans(), label="track_running_stats")
    if not track and train is False and n == 1 and math.prod(shape[1:]) == 1:
        n = 2  # batch statistics in eval need > 1 value too (torch raises)
    rng = np.random.default_rng(seed)
    fl = getattr(fc.nn, layer)(c, momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
    tl = getattr(torch.nn, layer)(c, momentum=momentum, affine=affine, track_running_stats=track)
    if affine:
        fl.weight.data[...] = rng.uniform(0.5, 2, c)
        fl.bias.data[...] = rng.uniform(-1, 1, c)
    if track:
        fl.running_mean[...] = rng.uniform(-1, 1, c)
        fl.running_var[...] = rng.uniform(0.5, 2, c)
    x = rng.uniform(-2, 3, (n,) + shape)
    # Give every channel a standard deviation in [0.5, 2]: with a tiny batch variance the
    # backward is a cancellation of terms ~1/std (ill-conditioned in float32 by nature).
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    std = x.std(axis=axes).reshape(bshape)
    if x.size > c:
        x = x.mean(axis=axes).reshape(bshape) + (x - x.mean(axis=axes).reshape(bshape)) / np.where(
            std > 0, std, 1) * rng.uniform(0.5, 2, bshape)
    check_layer_vs_torch(fl, tl, x, dtype, layout=layout, seed=seed, train=train)


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("target_kind", ["labels", "probabilities", "one-hot"])
@fuzz(15)
@given(n=st.integers(1, 8), k=st.integers(1, 16), smoothing=st.sampled_from([0.0, 0.1, 0.37, 1.0]),
       scale=st.sampled_from([1.0, 30.0]), seed=SEEDS)
def test_cross_entropy(dtype, target_kind, n, k, smoothing, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.uniform(-scale, scale, (n, k))).astype(dtype)
    labels = rng.integers(0, k, n)
    if target_kind == "labels":
        target, target_t = labels, torch.from_numpy(labels)
    else:
        probs = np.eye(k)[labels] if target_kind == "one-hot" else rng.dirichlet(np.ones(k), n)
        target, target_t = probs.astype(dtype), torch.from_numpy(probs.astype(dtype).astype(np.float64))
    loss_fn = fc.nn.CrossEntropyLoss(label_smoothing=smoothing)
    loss = loss_fn(logits, target)
    lt = torch.from_numpy(logits.astype(np.float64)).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(lt, target_t, label_smoothing=smoothing)
    ref.backward()
    assert isinstance(loss, float)
    assert_close(np.array(loss), ref, dtype, "loss")
    grad = loss_fn.backward()
    assert_dtype(grad, dtype, "dlogits")
    assert_close(grad, lt.grad, dtype, "dlogits")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(10)
@given(shape=feature_shape(1, 4), seed=SEEDS)
def test_mse(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.uniform(-3, 3, shape).astype(dtype), rng.uniform(-3, 3, shape).astype(dtype)
    loss_fn = fc.nn.MSELoss()
    loss = loss_fn(pred, target)
    pt = torch.from_numpy(pred.astype(np.float64)).requires_grad_(True)
    ref = torch.nn.functional.mse_loss(pt, torch.from_numpy(target.astype(np.float64)))
    ref.backward()
    assert_close(np.array(loss), ref, dtype, "loss")
    grad = loss_fn.backward()
    assert_dtype(grad, dtype, "dpred")
    assert_close(grad, pt.grad, dtype, "dpred")


# ----------------------------------------------------------------------------- dropout
def _nonzero(rng, shape, dtype):
    return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layer", ["Dropout", "Dropout2d"])
@fuzz(8)
@given(p=st.sampled_from([0.0, 0.1, 0.5, 0.9]), seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_dropout_definition(dtype, layer, p, seed, layout):
    """Eval: identity. Train: ~p zeroed (whole channels for Dropout2d), kept values scaled
    by 1/(1-p); backward multiplies by the same mask. The mask fraction is checked within
    6 binomial standard deviations (a false alarm has probability ~1e-9)."""
    rng = np.random.default_rng(seed)
    shape = (8, 250, 2, 3) if layer == "Dropout2d" else (4, 25, 60)
    x = _nonzero(rng, shape, dtype)
    dy = rng.uniform(-1, 1, shape).astype(dtype)
    module = getattr(fc.nn, layer)(p)
    fc.manual_seed(seed)

    module.eval()
    y = module(with_layout(x, layout))
    assert np.array_equal(y, x) and np.array_equal(module.backward(dy), dy)

    module.train()
    y = module(with_layout(x, layout))
    assert_dtype(y, dtype, "output")
    keep = y != 0
    if layer == "Dropout2d":  # one decision per (n, c)
        per_channel = keep.reshape(shape[0] * shape[1], -1)
        assert (per_channel.all(axis=1) | ~per_channel.any(axis=1)).all(), "Dropout2d must drop whole channels"
        trials, dropped = per_channel.shape[0], int((~per_channel[:, 0]).sum())
    else:
        trials, dropped = keep.size, int((~keep).sum())
    sigma = math.sqrt(trials * p * (1 - p))
    assert abs(dropped - trials * p) <= 6 * sigma + (0 if p else 0.5), \
        f"dropped {dropped} of {trials}, expected ~{trials * p:.0f}"
    scale = 1.0 / (1.0 - p)
    assert_close(y[keep], x[keep].astype(np.float64) * scale, dtype, "kept values")
    dx = module.backward(with_layout(dy, layout))
    assert_dtype(dx, dtype, "input gradient")
    assert (dx[~keep] == 0).all(), "backward must zero the dropped positions"
    assert_close(dx[keep], dy[keep].astype(np.float64) * scale, dtype, "backward scaling")
    if 0 < p:
        y2 = module(x)
        assert not np.array_equal(y2 != 0, keep), "two training forwards drew the same mask"
        fc.manual_seed(seed)
        y3 = module(x)
        assert np.array_equal(y3, y), "fc.manual_seed must make the mask reproducible"


# ----------------------------------------------------------------------------- optimisers
def _run_optimizers(fc_cls, torch_cls, kwargs, shapes, seed, steps=5):
    rng = np.random.default_rng(seed)
    data = [rng.uniform(-1, 1, s) for s in shapes]
    fc_params = [fc.nn.Parameter(d) for d in data]
    t_params = [torch.tensor(d, requires_grad=True) for d in data]
    fc_opt = fc_cls(fc_params, **kwargs)
    t_opt = torch_cls(t_params, foreach=False, **kwargs)
    for step in range(steps):
        for fp, tp in zip(fc_params, t_params):
            g = rng.uniform(-1, 1, fp.shape)
            fp.grad[...] = g
            tp.grad = torch.from_numpy(g.copy())
        fc_opt.step()
        t_opt.step()
        for i, (fp, tp) in enumerate(zip(fc_params, t_params)):
            assert_close(fp.data, tp, np.float64, f"param {i} after step {step + 1}")


SHAPES = st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=3)


@fuzz(20)
@given(lr=st.sampled_from([0.1, 0.01, 1.0]), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       nesterov=st.booleans(), weight_decay=st.sampled_from([0.0, 1e-4, 0.1]), shapes=SHAPES, seed=SEEDS)
def test_sgd(lr, momentum, nesterov, weight_decay, shapes, seed):
    nesterov = nesterov and momentum > 0
    _run_optimizers(fc.optim.SGD, torch.optim.SGD,
                    dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay), shapes, seed)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@fuzz(20)
@given(lr=st.sampled_from([1e-3, 0.1]), betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]),
       eps=st.sampled_from([1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 0.01, 0.3]), shapes=SHAPES,
       seed=SEEDS)
def test_adam(name, lr, betas, eps, weight_decay, shapes, seed):
    _run_optimizers(getattr(fc.optim, name), getattr(torch.optim, name),
                    dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), shapes, seed)


def _schedules(fc_sched_cls, torch_sched_cls, kwargs, epochs):
    fc_opt = fc.optim.SGD([fc.nn.Parameter(np.zeros(2))], lr=0.1)
    t_opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    fc_s, t_s = fc_sched_cls(fc_opt, **kwargs), torch_sched_cls(t_opt, **kwargs)
    for epoch in range(epochs + 1):
        expected = t_s.get_last_lr()[0]
        assert abs(fc_opt.lr - expected) <= 1e-12 * max(1.0, abs(expected)), \
            f"epoch {epoch}: lr {fc_opt.lr!r}, torch {expected!r}"
        fc_s.step()
        t_opt.step()
        t_s.step()


@fuzz(15)
@given(step_size=st.integers(1, 5), gamma=st.sampled_from([0.1, 0.5, 0.9]), epochs=st.integers(1, 30))
def test_step_lr(step_size, gamma, epochs):
    _schedules(fc.optim.StepLR, torch.optim.lr_scheduler.StepLR, dict(step_size=step_size, gamma=gamma), epochs)


@fuzz(15)
@given(t_max=st.integers(1, 40), eta_min=st.sampled_from([0.0, 1e-3, 0.05]))
def test_cosine_lr(t_max, eta_min):
    """Over [0, T_max] (after T_max torch's recursive form keeps oscillating; fastconv holds eta_min)."""
    _schedules(fc.optim.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR,
               dict(T_max=t_max, eta_min=eta_min), t_max)


def test_cosine_warmup_definition():
    opt = fc.optim.SGD([fc.nn.Parameter(np.zeros(1))], lr=1.0)
    sched = fc.optim.CosineAnnealingLR(opt, T_max=10, warmup=4)
    seen = [opt.lr]
    for _ in range(12):
        sched.step()
        seen.append(opt.lr)
    assert seen[:4] == [0.25, 0.5, 0.75, 1.0]
    expected = [(1 + math.cos(math.pi * t / 6)) / 2 for t in range(0, 7)]
    assert np.allclose(seen[4:11], expected, rtol=0, atol=1e-15)
    assert seen[11] == seen[12] == 0.0
