"""Wrong calls raise a clear ValueError/TypeError/RuntimeError naming what was expected and
what came, on every backend; never a crash, never a silently wrong result.

The last test fuzzes random legal *and* illegal shapes/parameters: on each backend the
outcome must equal the reference backend's (same result within tolerance, or the same clean
exception), and the reference's exceptions must be ValueError/TypeError.
"""
import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import fastconv as fc
from engine_helpers import assert_close, fuzz

F64 = np.float64


def x4(n=2, c=3, h=8, w=8, dtype=F64):
    return np.random.default_rng(0).uniform(-1, 1, (n, c, h, w)).astype(dtype)


def x3(n=2, c=3, w=8, dtype=F64):
    return np.random.default_rng(0).uniform(-1, 1, (n, c, w)).astype(dtype)


# (id, callable, exception, match): each callable builds a layer and/or calls it.
CASES = [
    # mismatched channels
    ("conv2d-channels", lambda: fc.nn.Conv2d(3, 4, 3)(x4(c=5)), ValueError, r"5 channels.*expects 3"),
    ("conv1d-channels", lambda: fc.nn.Conv1d(3, 4, 3)(x3(c=2)), ValueError, r"2 channels.*expects 3"),
    ("tconv2d-channels", lambda: fc.nn.ConvTranspose2d(3, 4, 3)(x4(c=4)), ValueError, r"4 channels.*expects 3"),
    ("batchnorm-channels", lambda: fc.nn.BatchNorm2d(4)(x4(c=3)), ValueError, r"expected 4 channels, got 3"),
    ("linear-features", lambda: fc.nn.Linear(5, 2)(np.zeros((2, 4))), ValueError, r"\(\.\.\., 5\).*\(2, 4\)"),
    # too small for the kernel
    ("conv1d-too-small", lambda: fc.nn.Conv1d(3, 4, 5)(x3(w=3)), ValueError, r"input size 3.*kernel span 5"),
    ("conv2d-dilated-too-small", lambda: fc.nn.Conv2d(3, 4, 3, dilation=3)(x4(h=6)), ValueError,
     r"input size 6.*kernel span 7"),
    ("conv2d-height-too-small", lambda: fc.nn.Conv2d(3, 4, (5, 1))(x4(h=4)), ValueError, r"height"),
    ("maxpool-too-small", lambda: fc.nn.MaxPool2d(4)(x4(h=3)), ValueError, r"input size 3.*kernel span 4"),
    ("meanpool1d-too-small", lambda: fc.nn.MeanPool1d(9)(x3(w=8)), ValueError, r"input size 8"),
    # wrong ndim
    ("conv2d-3d-input", lambda: fc.nn.Conv2d(3, 4, 3)(x3()), ValueError, r"4-D \(N, C, H, W\).*\(2, 3, 8\)"),
    ("conv1d-4d-input", lambda: fc.nn.Conv1d(3, 4, 3)(x4()), ValueError, r"3-D \(N, C, W\)"),
    ("maxpool2d-3d-input", lambda: fc.nn.MaxPool2d(2)(x3()), ValueError, r"4-D"),
    ("upsample1d-2d-input", lambda: fc.nn.Upsample1d(2)(np.zeros((3, 4))), ValueError, r"3-D"),
    ("downsample2d-5d-input", lambda: fc.nn.Downsample2d(2)(np.zeros((1, 1, 2, 2, 2))), ValueError, r"4-D"),
    ("batchnorm2d-3d", lambda: fc.nn.BatchNorm2d(3)(x3()), ValueError, r"\(N, C, H, W\)"),
    ("empty-input", lambda: fc.nn.Conv1d(3, 4, 1)(np.zeros((0, 3, 5))), ValueError, r"empty"),
    # not an array / integer dtype / dtype mismatch
    ("list-input", lambda: fc.nn.Conv1d(1, 1, 1)([[[1.0]]]), TypeError, r"numpy.ndarray.*list"),
    ("int-input-conv", lambda: fc.nn.Conv2d(3, 4, 3)(np.ones((1, 3, 5, 5), np.int64)), TypeError,
     r"float32 or float64, got int64"),
    ("int-input-pool", lambda: fc.nn.MaxPool1d(2)(np.ones((1, 3, 5), np.int32)), TypeError, r"got int32"),
    ("int-input-relu", lambda: fc.nn.ReLU()(np.ones((2, 3), np.int64)), TypeError, r"got int64"),
    ("float16-input", lambda: fc.nn.Upsample2d(2)(np.ones((1, 1, 2, 2), np.float16)), TypeError, r"float16"),
    ("dtype-mismatch-conv", lambda: fc.nn.Conv2d(3, 4, 3, dtype=np.float64)(x4(dtype=np.float32)), TypeError,
     r"float32.*weight.*float64"),
    ("dtype-mismatch-tconv", lambda: fc.nn.ConvTranspose1d(3, 4, 3, dtype=np.float32)(x3()), TypeError,
     r"float64.*float32"),
    ("dtype-mismatch-linear", lambda: fc.nn.Linear(8, 2, dtype=np.float32)(np.zeros((2, 8))), TypeError,
     r"float64.*float32"),
    ("int-layer-dtype", lambda: fc.nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError, r"float32 or float64"),
    ("int-batchnorm-dtype", lambda: fc.nn.BatchNorm2d(3, dtype=np.int64), TypeError,
     r"^dtype must be float32 or float64, got int64$"),
    ("f16-batchnorm-dtype", lambda: fc.nn.BatchNorm1d(3, dtype=np.float16), TypeError, r"got float16$"),
    ("int-linear-dtype", lambda: fc.nn.Linear(3, 4, dtype=int), TypeError,
     r"^dtype must be float32 or float64, got int64$"),
    ("bogus-dtype", lambda: fc.nn.Linear(3, 4, dtype="nope"), TypeError, r"got 'nope'$"),
    ("dtype-mismatch-batchnorm-no-affine",
     lambda: fc.nn.BatchNorm2d(3, affine=False, dtype=np.float32)(x4()), TypeError,
     r"float64.*running_mean.*float32"),
    # bad stride / kernel / padding / dilation / channels / factor
    ("conv-stride-0", lambda: fc.nn.Conv2d(3, 4, 3, stride=0), ValueError, r"stride must be >= 1, got 0"),
    ("conv-stride-negative", lambda: fc.nn.Conv1d(3, 4, 3, stride=-2), ValueError, r"stride must be >= 1, got -2"),
    ("conv-stride-tuple", lambda: fc.nn.Conv2d(3, 4, 3, stride=(1, 0)), ValueError, r"stride must be >= 1"),
    ("conv-stride-float", lambda: fc.nn.Conv2d(3, 4, 3, stride=1.5), TypeError, r"stride must be an int"),
    ("conv-stride-bool", lambda: fc.nn.Conv2d(3, 4, 3, stride=True), TypeError, r"stride must be an int"),
    ("conv-stride-wrong-len", lambda: fc.nn.Conv2d(3, 4, 3, stride=(1, 2, 3)), TypeError, r"tuple of 2 ints"),
    ("conv-kernel-0", lambda: fc.nn.Conv2d(3, 4, 0), ValueError, r"kernel_size must be >= 1, got 0"),
    ("conv1d-kernel-0", lambda: fc.nn.Conv1d(3, 4, 0), ValueError, r"kernel_size must be >= 1"),
    ("pool-kernel-0", lambda: fc.nn.MaxPool2d(0), ValueError, r"kernel_size must be >= 1"),
    ("pool-stride-0", lambda: fc.nn.MeanPool1d(2, stride=0), ValueError, r"stride must be >= 1"),
    ("conv-padding-negative", lambda: fc.nn.Conv2d(3, 4, 3, padding=-1), ValueError, r"padding must be >= 0"),
    ("conv-dilation-0", lambda: fc.nn.Conv1d(3, 4, 3, dilation=0), ValueError, r"dilation must be >= 1"),
    ("conv-channels-0", lambda: fc.nn.Conv2d(0, 4, 3), ValueError, r"in_channels must be >= 1, got 0"),
    ("conv-channels-float", lambda: fc.nn.Conv2d(3.0, 4, 3), TypeError, r"in_channels must be an int"),
    ("upsample-factor-0", lambda: fc.nn.Upsample2d(0), ValueError, r"factor must be >= 1"),
    ("downsample-factor-negative", lambda: fc.nn.Downsample1d(-3), ValueError, r"factor must be >= 1"),
    ("dropout-p-1", lambda: fc.nn.Dropout(1.0), ValueError, r"\[0, 1\), got 1.0"),
    # padding too large for pooling, output too small for transposed conv
    ("maxpool-padding-too-large", lambda: fc.nn.MaxPool2d(2, padding=2)(x4()), ValueError,
     r"padding must be at most half the kernel size"),
    ("meanpool1d-padding-too-large", lambda: fc.nn.MeanPool1d(3, padding=2)(x3()), ValueError,
     r"at most half"),
    ("tconv-output-padding", lambda: fc.nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=2)(x3()),
     ValueError, r"output_padding must be smaller than stride or dilation"),
    ("tconv2d-output-padding", lambda: fc.nn.ConvTranspose2d(3, 4, 3, stride=(2, 3), output_padding=(1, 3))(x4()),
     ValueError, r"output_padding must be smaller"),
    ("tconv-negative-output", lambda: fc.nn.ConvTranspose1d(3, 4, 1, padding=3)(x3(w=2)), ValueError,
     r"output would be"),
    # losses
    ("ce-label-range", lambda: fc.nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     r"\[0, 3\).*\[0, 3\]"),
    ("ce-float-labels", lambda: fc.nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError,
     r"integer class labels"),
    ("ce-target-shape", lambda: fc.nn.CrossEntropyLoss()(np.zeros((2, 3)), np.zeros((2, 4))), ValueError,
     r"got shape \(2, 4\)"),
    ("ce-logits-ndim", lambda: fc.nn.CrossEntropyLoss()(np.zeros((2, 3, 1)), np.array([0, 1])), ValueError,
     r"\(N, K\)"),
    ("ce-smoothing", lambda: fc.nn.CrossEntropyLoss(label_smoothing=1.5), ValueError, r"\[0, 1\]"),
    ("mse-shape", lambda: fc.nn.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2))), ValueError, r"\(3, 2\).*\(2, 3\)"),
    # optimisers / schedules
    ("sgd-empty", lambda: fc.optim.SGD([], lr=0.1), ValueError, r"empty parameter list"),
    ("sgd-lr", lambda: fc.optim.SGD([fc.nn.Parameter(np.zeros(1))], lr=-1), ValueError, r"lr must be >= 0"),
    ("sgd-nesterov", lambda: fc.optim.SGD([fc.nn.Parameter(np.zeros(1))], lr=0.1, nesterov=True), ValueError,
     r"nesterov"),
    ("steplr-0", lambda: fc.optim.StepLR(fc.optim.SGD([fc.nn.Parameter(np.zeros(1))], lr=0.1), 0), ValueError,
     r"step_size must be >= 1"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises(backend, case):
    _, call, exc, match = case
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- backward misuse
def _kernel_layers():
    return [
        ("Conv1d", lambda: fc.nn.Conv1d(3, 2, 3), x3),
        ("Conv2d", lambda: fc.nn.Conv2d(3, 2, 3), x4),
        ("ConvTranspose1d", lambda: fc.nn.ConvTranspose1d(3, 2, 3, stride=2), x3),
        ("ConvTranspose2d", lambda: fc.nn.ConvTranspose2d(3, 2, 3, stride=2), x4),
        ("MaxPool1d", lambda: fc.nn.MaxPool1d(2), x3),
        ("MaxPool2d", lambda: fc.nn.MaxPool2d(2), x4),
        ("MeanPool1d", lambda: fc.nn.MeanPool1d(3, 2, 1), x3),
        ("MeanPool2d", lambda: fc.nn.MeanPool2d(2), x4),
        ("Upsample1d", lambda: fc.nn.Upsample1d(3), x3),
        ("Upsample2d", lambda: fc.nn.Upsample2d(2), x4),
        ("Downsample1d", lambda: fc.nn.Downsample1d(3), x3),
        ("Downsample2d", lambda: fc.nn.Downsample2d(2), x4),
        ("Linear", lambda: fc.nn.Linear(8, 2), x3),
        ("ReLU", lambda: fc.nn.ReLU(), x3),
        ("GELU", lambda: fc.nn.GELU(), x3),
        ("Softmax", lambda: fc.nn.Softmax(1), x3),
        ("BatchNorm2d", lambda: fc.nn.BatchNorm2d(3), x4),
        ("Dropout", lambda: fc.nn.Dropout(0.5), x3),
        ("Sequential", lambda: fc.nn.Sequential(fc.nn.Conv1d(3, 2, 3), fc.nn.ReLU()), x3),
    ]


LAYERS = _kernel_layers()


@pytest.mark.parametrize("make,make_x", [(m, f) for _, m, f in LAYERS], ids=[n for n, _, _ in LAYERS])
def test_backward_before_forward(backend, make, make_x):
    layer = make()
    y_shape = make()(make_x()).shape
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(np.zeros(y_shape))


@pytest.mark.parametrize("make,make_x", [(m, f) for _, m, f in LAYERS], ids=[n for n, _, _ in LAYERS])
def test_backward_wrong_dy(backend, make, make_x):
    layer = make()
    y = layer(make_x())
    bad_shape = y.shape[:-1] + (y.shape[-1] + 1,)
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape .* got " + re_shape(bad_shape)):
        layer.backward(np.zeros(bad_shape, y.dtype))
    with pytest.raises(ValueError, match=r"shape"):
        layer.backward(np.zeros(y.shape[:-1], y.dtype))
    with pytest.raises(TypeError, match=r"numpy.ndarray"):
        layer.backward(y.tolist())


LAYERS_F32 = [("Flatten", lambda: fc.nn.Flatten(), x4)] + LAYERS


@pytest.mark.parametrize("make,make_x", [(m, f) for _, m, f in LAYERS_F32], ids=[n for n, _, _ in LAYERS_F32])
@pytest.mark.parametrize("forward, other", [(np.float64, np.float32), (np.float32, np.float64),
                                            (np.float64, np.int64)], ids=["f64-f32", "f32-f64", "f64-int"])
def test_backward_wrong_dy_dtype(backend, make, make_x, forward, other):
    """Every layer: a dy of another dtype than the forward's is a TypeError, never a silent cast."""
    layer = make()
    for m in layer.modules():  # parameters and buffers in the forward dtype
        for p in m._parameters.values():
            p.data, p.grad = p.data.astype(forward), p.grad.astype(forward)
        for name, b in list(m._buffers.items()):
            m.register_buffer(name, b.astype(forward))
    y = layer(make_x(dtype=forward))
    assert y.dtype == forward
    with pytest.raises(TypeError, match=rf"dy must have the forward dtype {np.dtype(forward)}, "
                                        rf"got {np.dtype(other)}"):
        layer.backward(np.zeros(y.shape, other))


def test_loss_backward_before_forward():
    with pytest.raises(RuntimeError, match="before forward"):
        fc.nn.CrossEntropyLoss().backward()
    with pytest.raises(RuntimeError, match="before forward"):
        fc.nn.MSELoss().backward()


def re_shape(shape):
    return "\\" + str(tuple(shape)).replace(")", "\\)")


# ----------------------------------------------------------------------------- fuzz
LAYER_KINDS = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d",
               "MeanPool1d", "MeanPool2d", "Upsample1d", "Upsample2d", "Downsample1d", "Downsample2d"]


def _mostly(legal, *illegal):
    """Usually a legal value; one draw in ten is one of the illegal ones."""
    return st.integers(0, 9).flatmap(lambda r: st.sampled_from(illegal) if r == 0 else legal)


@st.composite
def wild_call(draw):
    """A layer kind, constructor arguments and an input: legal or not (each part is legal nine
    times in ten, so about half the calls are legal), within small sizes."""
    kind = draw(st.sampled_from(LAYER_KINDS))
    nd = 2 if kind.endswith("2d") else 1

    def per_axis(strategy):
        return draw(st.one_of(strategy, st.tuples(*[strategy] * nd))) if nd == 2 else draw(strategy)

    kernel = _mostly(st.integers(1, 5), 0, -1)
    stride = _mostly(st.integers(1, 4), 0, -2, 1.5)
    dtype = draw(_mostly(st.sampled_from(["float64", "float32"]), "int64", "float16"))
    if kind.startswith("Conv"):
        cin, cout = draw(_mostly(st.integers(1, 4), 0)), draw(st.integers(1, 4))
        kwargs = dict(stride=per_axis(stride), padding=per_axis(_mostly(st.integers(0, 3), -1)),
                      dilation=per_axis(_mostly(st.integers(1, 3), 0)))
        if "Transpose" in kind:
            kwargs["output_padding"] = per_axis(_mostly(st.integers(0, 2), -1))
        kwargs["dtype"] = draw(_mostly(st.just(dtype if dtype in ("float32", "float64") else "float64"),
                                       "float64", "float32"))
        args = (cin, cout, per_axis(kernel))
    elif "Pool" in kind:
        cin = draw(st.integers(1, 4))
        args = (per_axis(kernel), draw(st.one_of(st.none(), st.just(per_axis(stride)))),
                per_axis(_mostly(st.integers(0, 2), -1, 3)))
        kwargs = {}
    else:
        cin = draw(st.integers(1, 4))
        args, kwargs = (per_axis(_mostly(st.integers(1, 4), 0, -1)),), {}
    ndim = draw(_mostly(st.just(nd + 2), nd + 1, nd + 3))
    channels = draw(_mostly(st.just(max(cin, 1)), cin + 1))
    size = _mostly(st.integers(1, 12), 0)
    shape = (draw(_mostly(st.integers(1, 3), 0)), channels) + tuple(draw(size) for _ in range(ndim - 2))
    return kind, args, kwargs, shape[:ndim], dtype


def _outcome(kind, args, kwargs, x, dy_seed, layer=None):
    """('ok', layer, y, dx) or ('error', type, message). Any other exception propagates."""
    try:
        if layer is None:
            layer = getattr(fc.nn, kind)(*args, **kwargs)
        layer.zero_grad()
        y = layer(x)
        dy = np.random.default_rng(dy_seed).uniform(-1, 1, y.shape).astype(y.dtype)
        dx = layer.backward(dy)
        return ("ok", layer, y, dx, [p.grad.copy() for p in layer.parameters()])
    except (ValueError, TypeError) as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return ("error", type(exc), str(exc))


@fuzz(40)
@given(call=wild_call(), seed=st.integers(0, 2**32 - 1))
def test_wild_calls_match_reference(backend, call, seed):
    kind, args, kwargs, shape, dtype = call
    x = np.random.default_rng(seed).uniform(-2, 2, shape).astype(dtype)
    with fc.use_backend("reference"):
        expected = _outcome(kind, args, kwargs, x, seed)
    event(f"reference: {expected[0]}" + (f" {expected[1].__name__}" if expected[0] == "error" else ""))
    layer = expected[1] if expected[0] == "ok" else None  # same weights for both runs
    got = _outcome(kind, args, kwargs, x, seed, layer)
    assert got[0] == expected[0], f"{backend}: {got[:1] + got[2:] if got[0] == 'error' else 'ok'} " \
                                  f"but reference: {expected[2:] if expected[0] == 'error' else 'ok'}"
    if got[0] == "error":
        assert got[1:] == expected[1:]
    else:
        pairs = [(got[2], expected[2], "forward"), (got[3], expected[3], "input gradient")]
        pairs += [(a, b, f"parameter gradient {i}") for i, (a, b) in enumerate(zip(got[4], expected[4]))]
        for a, b, what in pairs:
            assert a.dtype == b.dtype and a.shape == b.shape, what
            assert_close(a, b, a.dtype, what)


# ----------------------------------------------------------------------------- one place
def test_layers_store_validated_nd_tuples():
    """Geometry is normalised once, at construction, into the tuples functional receives."""
    assert fc.nn.Conv1d(2, 3, 4, stride=2).stride == (2,)
    conv = fc.nn.ConvTranspose2d(2, 3, (3, 1), stride=(2, 1), padding=1, output_padding=(1, 0))
    assert (conv.kernel_size, conv.stride, conv.padding, conv.output_padding) == ((3, 1), (2, 1), (1, 1), (1, 0))
    pool = fc.nn.MaxPool2d(np.int64(3), padding=(1, 0))
    assert (pool.kernel_size, pool.stride, pool.padding) == ((3, 3), (3, 3), (1, 0))
    assert all(type(v) is int for v in pool.kernel_size)
    assert fc.nn.MeanPool1d(3, 2).stride == (2,)
    assert fc.nn.Upsample2d((2, 3)).factor == (2, 3) and fc.nn.Downsample1d(4).factor == (4,)


def test_nn_modules_validate_through_validate_only():
    """No layer module imports another layer module for its checks: helpers live in _validate."""
    import ast
    import pathlib

    nn_dir = pathlib.Path(fc.nn.__file__).parent
    for path in sorted(nn_dir.glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        siblings = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
        assert siblings <= {"module"}, f"{path.name} imports {sorted(siblings - {'module'})}"
