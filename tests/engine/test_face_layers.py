"""Parity with PyTorch of the layers the face backbones need: PReLU, global average pooling,
the Residual and Gate (squeeze-excitation multiply) containers and L2 normalisation.

Same helper and tolerances as ``test_parity.py`` (float64 max|diff| <= 1e-12, float32 relative
<= 1e-5); shapes drawn by hypothesis; every test runs under every backend (the containers hold
convolutions, which run backend kernels).
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv as fc
from engine_helpers import DTYPE_IDS, DTYPES, LAYOUTS, assert_close, check_layer_vs_torch, fuzz

torch = pytest.importorskip("torch")
tnn = torch.nn

SEEDS = st.integers(0, 2**32 - 1)


def _x(seed, shape, zero_rows=False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=shape)
    if zero_rows:  # a row of exact zeros (||x|| < eps) and one tiny row
        x[0] = 0
        if shape[0] > 1:
            x[1] *= 1e-14
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(12)
@given(n=st.integers(1, 4), c=st.integers(1, 16), spatial=st.lists(st.integers(1, 9), max_size=2),
       shared=st.booleans(), seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_prelu_parity(backend, dtype, n, c, spatial, shared, seed, layout):
    k = 1 if shared else c
    fl = fc.nn.PReLU(k, dtype=dtype)
    fl.weight.data[...] = np.random.default_rng(seed).uniform(-0.5, 0.5, k)  # distinct slopes
    check_layer_vs_torch(fl, tnn.PReLU(k), _x(seed, (n, c, *spatial)), dtype, layout=layout, seed=seed)


@pytest.mark.parametrize("cls", ["GlobalAvgPool2d", "AdaptiveAvgPool2d"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(10)
@given(n=st.integers(1, 4), c=st.integers(1, 16), h=st.integers(1, 40), w=st.integers(1, 40),
       seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_global_avg_pool_parity(backend, cls, dtype, n, c, h, w, seed, layout):
    fl = getattr(fc.nn, cls)()
    check_layer_vs_torch(fl, tnn.AdaptiveAvgPool2d(1), _x(seed, (n, c, h, w)), dtype, layout=layout, seed=seed)


class _TorchResidual(tnn.Module):
    def __init__(self, main, shortcut):
        super().__init__()
        self.main, self.shortcut = main, shortcut

    def forward(self, x):
        return self.main(x) + self.shortcut(x)


class _TorchGate(tnn.Module):
    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def forward(self, x):
        return x * self.gate(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(8)
@given(n=st.integers(2, 4), cin=st.integers(1, 12), cout=st.integers(1, 12), hw=st.integers(2, 14),
       stride=st.integers(1, 2), identity=st.booleans(), seed=SEEDS, train=st.booleans())
def test_residual_parity(backend, dtype, n, cin, cout, hw, stride, identity, seed, train):
    if identity:
        cout, stride = cin, 1
    side = (hw - 1) // stride + 1
    # A training-mode BatchNorm over fewer than 8 values per channel is ill-conditioned in float32:
    # its input gradient is a cancellation scaled by 1/std (exactly 0 for 2 values), so float32
    # rounding alone exceeds 1e-5 against float64 torch (seen: n=2, hw=2, stride 2 -> 2 values).
    assume(identity or not train or n * side * side >= 8)
    fc.manual_seed(seed)
    main = fc.nn.Sequential(fc.nn.BatchNorm2d(cin, dtype=dtype), fc.nn.Conv2d(cin, cout, 3, stride, 1, dtype=dtype),
                            fc.nn.PReLU(cout, dtype=dtype))
    t_main = tnn.Sequential(tnn.BatchNorm2d(cin), tnn.Conv2d(cin, cout, 3, stride, 1), tnn.PReLU(cout))
    if identity:
        fl, tl = fc.nn.Residual(main), _TorchResidual(t_main, tnn.Identity())
    else:
        short = fc.nn.Sequential(fc.nn.Conv2d(cin, cout, 1, stride, bias=False, dtype=dtype),
                                 fc.nn.BatchNorm2d(cout, dtype=dtype))
        # Keep the BatchNorm after the 1x1 conv well-conditioned: a near-zero weight (likely with
        # cin=1) leaves it normalising a variance below eps, its gradients grow like 1/sqrt(eps)
        # (~120 seen) and float64 rounding alone passes 1e-12 absolute on them.
        w = short[0].weight.data
        w[...] = np.where(w < 0, -1, 1) * np.maximum(np.abs(w), 0.25)
        fl = fc.nn.Residual(main, short)
        tl = _TorchResidual(t_main, tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)))
    check_layer_vs_torch(fl, tl, _x(seed, (n, cin, hw, hw)), dtype, seed=seed, train=train)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(8)
@given(n=st.integers(1, 4), c=st.integers(1, 16), hidden=st.integers(1, 8), h=st.integers(1, 12),
       w=st.integers(1, 12), seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_squeeze_excitation_gate_parity(backend, dtype, n, c, hidden, h, w, seed, layout):
    fc.manual_seed(seed)
    gate = fc.nn.Sequential(fc.nn.AdaptiveAvgPool2d(1), fc.nn.Conv2d(c, hidden, 1, dtype=dtype),
                            fc.nn.PReLU(hidden, dtype=dtype), fc.nn.Conv2d(hidden, c, 1, dtype=dtype),
                            fc.nn.Sigmoid())
    t_gate = tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Conv2d(c, hidden, 1), tnn.PReLU(hidden),
                            tnn.Conv2d(hidden, c, 1), tnn.Sigmoid())
    check_layer_vs_torch(fc.nn.Gate(gate), _TorchGate(t_gate), _x(seed, (n, c, h, w)), dtype,
                         layout=layout, seed=seed)


def test_gate_broadcasts_a_scalar_per_sample(backend):
    """A (N, 1, 1, 1) gate (one multiplier per sample) routes the summed gradient to the gate."""
    rng = np.random.default_rng(3)
    gate = fc.nn.Sequential(fc.nn.GlobalAvgPool2d(), fc.nn.Conv2d(5, 1, 1), fc.nn.Tanh())
    t_gate = tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Conv2d(5, 1, 1), tnn.Tanh())
    check_layer_vs_torch(fc.nn.Gate(gate), _TorchGate(t_gate), rng.uniform(-1, 1, (3, 5, 4, 6)), np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@fuzz(12)
@given(shape=st.lists(st.integers(1, 9), min_size=2, max_size=4), dim=st.integers(0, 3),
       zero_rows=st.booleans(), seed=SEEDS, layout=st.sampled_from(LAYOUTS))
def test_normalize_parity(backend, dtype, shape, dim, zero_rows, seed, layout):
    dim = dim % len(shape)
    x = _x(seed, tuple(shape), zero_rows)
    check_layer_vs_torch(fc.nn.L2Normalize(dim), lambda t: torch.nn.functional.normalize(t, dim=dim), x,
                         dtype, layout=layout, seed=seed)
    y = fc.nn.functional.normalize(x.astype(dtype), dim=dim)
    assert_close(y, torch.nn.functional.normalize(torch.from_numpy(x.astype(dtype)).double(), dim=dim), dtype,
                 "functional.normalize")


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="PReLU\\(4\\) expects"):
        fc.nn.PReLU(4)(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="num_parameters"):
        fc.nn.PReLU(0)
    with pytest.raises(ValueError, match="output_size 1"):
        fc.nn.AdaptiveAvgPool2d(7)
    with pytest.raises(ValueError, match="expects \\(N, C, H, W\\)"):
        fc.nn.GlobalAvgPool2d()(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="must match to be summed"):
        fc.nn.Residual(fc.nn.Conv2d(3, 4, 1))(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="does not broadcast"):
        fc.nn.Gate(fc.nn.Conv2d(3, 2, 1))(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="dim 2 out of range"):
        fc.nn.functional.normalize(np.zeros((2, 3)), dim=2)
    with pytest.raises(RuntimeError, match="before forward"):
        fc.nn.PReLU().backward(np.zeros(3))
