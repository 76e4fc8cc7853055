"""Scanning MLP -> CNN conversion: the CNN equals the MLP run window by window, forward and
backward, float64 to 1e-12 (``assert_close``), under every available backend (conftest's ``backend`` fixture).
Reference gradients: PyTorch autograd on the window-by-window MLP."""
import numpy as np
import pytest

import fastconv as fc
from engine_helpers import assert_close
from fastconv import scanning as S

torch = pytest.importorskip("torch")

F64 = np.float64
E = S.EXAMPLE
C, T, WINDOW, STRIDE = E["in_channels"], E["time_steps"], E["window"], E["stride"]
CH, KS, SS = E["dist_channels"], E["dist_kernels"], E["dist_strides"]


def _torch_scan(x, ws, window, stride):
    """Window-by-window MLP in torch: x (N, C, T), ws (in, out) tensors -> (N, out, T_out)."""
    n, c, t = x.shape
    outs = []
    for t0 in range(0, t - window + 1, stride):
        h = x[:, :, t0:t0 + window].permute(0, 2, 1).reshape(n, window * c)
        for i, w in enumerate(ws):
            h = h @ w
            if i < len(ws) - 1:
                h = torch.relu(h)
        outs.append(h)
    return torch.stack(outs, dim=2)


def _torch_grads(x, ws, window, stride, dy):
    xt = torch.tensor(x, requires_grad=True)
    wt = [torch.tensor(w, requires_grad=True) for w in ws]
    y = _torch_scan(xt, wt, window, stride)
    (y * torch.tensor(dy)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), [w.grad.numpy() for w in wt]


def _check_against_mlp(cnn, x, ws, rng):
    """The CNN's output equals the window-by-window MLP's (torch and ``scan_mlp``) and its input
    gradient torch's; returns (y, torch's MLP weight gradients) for the weight checks."""
    y = cnn(x)
    dy = rng.standard_normal(y.shape)
    y_ref, dx_ref, dw_ref = _torch_grads(x, ws, WINDOW, STRIDE, dy)
    assert_close(y, y_ref, F64, "CNN vs torch scan")
    assert_close(y, S.scan_mlp(x, ws, WINDOW, STRIDE), F64, "CNN vs scan_mlp")
    cnn.zero_grad()
    assert_close(cnn.backward(dy), dx_ref, F64, "input gradient")
    return y, dw_ref


def _convs(seq):
    return [m for m in seq if isinstance(m, fc.nn.Conv1d)]


def test_example_shapes():
    sizes = E["mlp_sizes"]
    ws = [np.zeros((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    convs = _convs(S.simple_scanning_cnn(ws))
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == \
        [(24, 8, 8, 4), (8, 16, 1, 1), (16, 4, 1, 1)]
    full = S.tied_full_weights([np.zeros((k * c, o)) for k, c, o in zip(KS, (C,) + CH[:-1], CH)], C, KS, SS)
    assert [w.shape for w in full] == [(192, 8), (8, 16), (16, 4)]  # the same MLP shape
    convs = _convs(S.distributed_scanning_cnn(full))
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == \
        [(24, 2, 2, 2), (2, 8, 2, 2), (8, 4, 2, 1)]
    assert S.distributed_positions(KS, SS)[0] == WINDOW and S.scan_stride(SS) == STRIDE


def test_flattening_is_time_major():
    # An MLP whose only weight reads input index t*C + c must see x[c, t] of its window.
    t, c = 3, 5
    w = np.zeros((WINDOW * C, 1))
    w[t * C + c, 0] = 1.0
    x = np.random.default_rng(0).standard_normal((1, C, T))
    y = S.scan_mlp(x, [w], WINDOW, STRIDE)
    np.testing.assert_array_equal(y[0, 0], x[0, c, t:T - WINDOW + 1 + t:STRIDE][:y.shape[2]])
    conv = _convs(S.simple_scanning_cnn([w]))[0]
    assert conv.weight.data[0, c, t] == 1.0 and conv.weight.data.sum() == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_simple_scanning(backend, seed, batch):
    rng = np.random.default_rng(seed)
    sizes = E["mlp_sizes"]
    ws = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    x = rng.standard_normal((batch, C, T))
    cnn = S.simple_scanning_cnn(ws, C, STRIDE)
    _, dw_ref = _check_against_mlp(cnn, x, ws, rng)
    for conv, g in zip(_convs(cnn), dw_ref):
        assert_close(S.conv_to_mlp_weight(conv.weight.grad), g, F64, "weight gradient")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_distributed_scanning(backend, seed, batch):
    rng = np.random.default_rng(seed)
    ins = (C,) + CH[:-1]
    blocks = [rng.standard_normal((k * c, o)) / np.sqrt(k * c) for k, c, o in zip(KS, ins, CH)]
    full = S.tied_full_weights(blocks, C, KS, SS)
    nan_padded = S.tied_full_weights(blocks, C, KS, SS, fill=np.nan)
    x = rng.standard_normal((batch, C, T))
    cnn = S.distributed_scanning_cnn(nan_padded, C, CH, KS, SS)
    for conv, b, c, k in zip(_convs(cnn), blocks, ins, KS):
        np.testing.assert_array_equal(conv.weight.data, S.mlp_to_conv_weight(b, c, k))
    y, dfull_ref = _check_against_mlp(cnn, x, full, rng)
    assert np.all(np.isfinite(y))  # no NaN from the padding leaked in
    for i, conv in enumerate(_convs(cnn)):
        tied = S.tied_block_grad(dfull_ref[i], i, C, CH, KS, SS)  # sum over the shared copies
        assert_close(S.conv_to_mlp_weight(conv.weight.grad), tied, F64, "tied weight gradient")


def test_biases_are_converted():
    rng = np.random.default_rng(3)
    sizes = E["mlp_sizes"]
    ws = [rng.standard_normal((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(b) for b in sizes[1:]]
    x = rng.standard_normal((2, C, T))
    assert_close(S.simple_scanning_cnn(ws, biases=bs)(x), S.scan_mlp(x, ws, WINDOW, STRIDE, biases=bs), F64,
                 "with biases")


def test_bad_input_raises():
    with pytest.raises(ValueError, match="rows"):
        S.simple_scanning_cnn([np.zeros((100, 8))], in_channels=24)
    with pytest.raises(ValueError, match="2-D"):
        S.simple_scanning_cnn([np.zeros(192)])
    with pytest.raises(TypeError, match="float32 or float64"):
        S.simple_scanning_cnn([np.zeros((192, 8), dtype=np.int64)])
    full = S.tied_full_weights([np.ones((48, 2)), np.ones((4, 8)), np.ones((16, 4))], C, KS, SS)
    with pytest.raises(ValueError, match=r"full \(8, 16\)"):
        S.distributed_scanning_cnn([full[0], np.ones((4, 8)), full[2]])
    full[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        S.distributed_scanning_cnn(full)
    with pytest.raises(ValueError, match=r"\(N, C, T\)"):
        S.scan_mlp(np.zeros((24, 128)), full, WINDOW, STRIDE)
