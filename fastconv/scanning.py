"""Scanning MLPs as CNNs (the CMU 11-785 exercise).

An MLP that reads a window of ``window`` time steps of a (C, T) signal and slides over it with
stride ``stride`` is a 1-D CNN. Conventions (as 11-785):

* MLP weights are stored ``(in, out)``: a layer computes ``h = v @ W (+ b)``; ReLU between
  layers, none after the last.
* A window ``x[:, t0:t0+window]`` (C, window) is flattened **time-major**: it is transposed to
  (window, C) and flattened, so MLP input index ``i = t * C + c`` (time step t of the window,
  channel c). Hidden layers of the distributed MLP are flattened the same way: ``j * c_i + o``
  for position j and unit o.

Simple scanning MLP: ``W1 (window*C, h1)`` becomes ``Conv1d(C, h1, window, stride)`` with
``weight[o, c, t] = W1[t*C + c, o]`` (i.e. ``W1.reshape(window, C, h1).transpose(2, 1, 0)``);
the later layers ``W (h, h')`` become 1x1 convs ``weight[o, c, 0] = W[c, o]``.

Distributed scanning MLP: layer i has one shared block ``B_i (k_i*c_{i-1}, c_i)`` applied at
positions ``0, s_i, 2 s_i, ...`` of the layer below; the full MLP matrix ``(n_{i-1}c_{i-1},
n_i c_i)`` repeats it (weight tying), and the CNN is ``Conv1d(c_{i-1}, c_i, k_i, s_i)`` per layer.
The scan stride of the whole CNN is ``prod(s_i)``; the window is ``n_0``.

Built-in example (:data:`EXAMPLE`): 24 channels, window 8, stride 4, MLP 192 -> 8 -> 16 -> 4.
"""
import math

import numpy as np

from . import nn

EXAMPLE = {
    "in_channels": 24, "time_steps": 128, "window": 8, "stride": 4,
    "mlp_sizes": (8 * 24, 8, 16, 4),  # simple: Conv1d(24,8,8,4) -> Conv1d(8,16,1,1) -> Conv1d(16,4,1,1)
    "dist_channels": (2, 8, 4), "dist_kernels": (2, 2, 2), "dist_strides": (2, 2, 1),
}


def _matrices(weights, name="weights"):
    ws = [np.asarray(w) for w in weights]
    if not ws:
        raise ValueError(f"{name} must hold at least one (in, out) matrix")
    for i, w in enumerate(ws):
        if w.ndim != 2:
            raise ValueError(f"{name}[{i}] must be a 2-D (in, out) matrix, got shape {w.shape}")
        if w.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}[{i}] must be float32 or float64, got {w.dtype}")
    return ws


def _biases(biases, outs):
    if biases is None:
        return None
    bs = [np.asarray(b) for b in biases]
    if len(bs) != len(outs):
        raise ValueError(f"expected {len(outs)} biases, got {len(bs)}")
    for i, (b, o) in enumerate(zip(bs, outs)):
        if b.shape != (o,):
            raise ValueError(f"biases[{i}] must have shape ({o},), got {b.shape}")
    return bs


# ----------------------------------------------------------------------------- reference
def scan_mlp(x, weights, window, stride, biases=None):
    """Run the MLP on every window: x (N, C, T) -> (N, out, T_out), T_out = (T - window)//stride + 1.

    weights: (in, out) matrices, the first with ``in = window * C`` (time-major window).
    """
    ws = _matrices(weights)
    bs = _biases(biases, [w.shape[1] for w in ws])
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (N, C, T), got shape {x.shape}")
    n, c, t = x.shape
    if ws[0].shape[0] != window * c:
        raise ValueError(f"first weight must have window*C = {window * c} rows, got {ws[0].shape[0]}")
    if t < window:
        raise ValueError(f"x has {t} time steps, fewer than the window {window}")
    outs = []
    for t0 in range(0, t - window + 1, stride):
        h = x[:, :, t0:t0 + window].transpose(0, 2, 1).reshape(n, window * c)
        for i, w in enumerate(ws):
            h = h @ w + (0 if bs is None else bs[i])
            if i < len(ws) - 1:
                h = np.maximum(h, 0)
        outs.append(h)
    return np.stack(outs, axis=2)


# ----------------------------------------------------------------------------- weight maps
def mlp_to_conv_weight(w, in_channels, kernel_size):
    """(kernel_size*in_channels, out) MLP matrix -> (out, in_channels, kernel_size) conv weight."""
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] != kernel_size * in_channels:
        raise ValueError(f"expected a ({kernel_size * in_channels}, out) matrix, got shape {w.shape}")
    return w.reshape(kernel_size, in_channels, w.shape[1]).transpose(2, 1, 0)


def conv_to_mlp_weight(w):
    """(out, in_channels, k) conv weight (or its gradient) -> (k*in_channels, out) MLP matrix."""
    w = np.asarray(w)
    if w.ndim != 3:
        raise ValueError(f"expected a (out, in_channels, k) conv weight, got shape {w.shape}")
    o, c, k = w.shape
    return w.transpose(2, 1, 0).reshape(k * c, o)


def _conv(w, b, in_channels, kernel_size, stride):
    w = mlp_to_conv_weight(w, in_channels, kernel_size)
    conv = nn.Conv1d(in_channels, w.shape[0], kernel_size, stride, bias=b is not None, dtype=w.dtype)
    conv.weight.data[...] = w
    if b is not None:
        conv.bias.data[...] = b
    return conv


def _stack(convs):
    layers = []
    for i, conv in enumerate(convs):
        layers.append(conv)
        if i < len(convs) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- simple
def simple_scanning_cnn(weights, in_channels=24, stride=4, biases=None):
    """Scanning MLP ``weights`` [(window*C, h1), (h1, h2), ...] -> Sequential of
    Conv1d(C, h1, window, stride), ReLU, Conv1d(h1, h2, 1, 1), ...; (N, C, T) -> (N, out, T_out)."""
    ws = _matrices(weights)
    bs = _biases(biases, [w.shape[1] for w in ws])
    if ws[0].shape[0] % in_channels:
        raise ValueError(f"first weight rows ({ws[0].shape[0]}) must be window * in_channels ({in_channels})")
    window = ws[0].shape[0] // in_channels
    convs, c = [], in_channels
    for i, w in enumerate(ws):
        k, s = (window, stride) if i == 0 else (1, 1)
        if w.shape[0] != k * c:
            raise ValueError(f"weights[{i}] must have {k * c} rows, got shape {w.shape}")
        convs.append(_conv(w, None if bs is None else bs[i], c, k, s))
        c = w.shape[1]
    return _stack(convs)


# ----------------------------------------------------------------------------- distributed
def distributed_positions(kernels, strides):
    """Positions n_i each layer has inside one MLP window (n_0 = window, n_last = 1)."""
    n = [1]
    for k, s in zip(reversed(kernels), reversed(strides)):
        n.insert(0, (n[0] - 1) * s + k)
    return n


def tied_full_weights(blocks, in_channels, kernels, strides, fill=0.0):
    """Shared blocks B_i (k_i*c_{i-1}, c_i) -> the full MLP matrices (n_{i-1}c_{i-1}, n_i c_i).

    Copy j of block i sits at rows ``(j*s_i + t)*c_{i-1} + c`` and columns ``j*c_i + o``. Entries
    outside every copy are ``fill``: 0.0 gives the MLP to run with :func:`scan_mlp`; NaN gives the
    11-785 "NaN-padded" form, where using any untied entry would poison the output.
    """
    bs = _matrices(blocks, "blocks")
    n = distributed_positions(kernels, strides)
    full, c = [], in_channels
    for i, (b, k, s) in enumerate(zip(bs, kernels, strides)):
        if b.shape[0] != k * c:
            raise ValueError(f"blocks[{i}] must have k*c_in = {k * c} rows, got shape {b.shape}")
        o = b.shape[1]
        w = np.full((n[i] * c, n[i + 1] * o), fill, dtype=b.dtype)
        for j in range(n[i + 1]):
            w[j * s * c:(j * s + k) * c, j * o:(j + 1) * o] = b
        full.append(w)
        c = o
    return full


def tied_block_grad(full_grad, layer, in_channels, channels, kernels, strides):
    """Gradient of the shared block of ``layer`` from the full-matrix gradient: the sum over its
    n_{i+1} tied copies -> (k_i*c_{i-1}, c_i)."""
    n = distributed_positions(kernels, strides)
    c = in_channels if layer == 0 else channels[layer - 1]
    o, k, s = channels[layer], kernels[layer], strides[layer]
    g = np.asarray(full_grad)
    return sum(g[j * s * c:(j * s + k) * c, j * o:(j + 1) * o] for j in range(n[layer + 1]))


def distributed_scanning_cnn(weights, in_channels=24, channels=(2, 8, 4), kernels=(2, 2, 2),
                             strides=(2, 2, 1), biases=None):
    """Full (tied or NaN-padded) MLP matrices -> Sequential of Conv1d(c_{i-1}, c_i, k_i, s_i)
    with ReLUs between; (N, C, T) -> (N, c_last, T_out). The shared block of layer i is the
    top-left ``(k_i*c_{i-1}, c_i)`` slice; ``biases``, if given, are the per-block (c_i,) biases."""
    ws = _matrices(weights)
    if not len(ws) == len(channels) == len(kernels) == len(strides):
        raise ValueError(f"need one weight, channel count, kernel and stride per layer, got "
                         f"{len(ws)}, {len(channels)}, {len(kernels)}, {len(strides)}")
    bs = _biases(biases, list(channels))
    n = distributed_positions(kernels, strides)
    convs, c = [], in_channels
    for i, (w, o, k, s) in enumerate(zip(ws, channels, kernels, strides)):
        if w.shape != (n[i] * c, n[i + 1] * o):
            raise ValueError(f"weights[{i}] must be the full ({n[i] * c}, {n[i + 1] * o}) matrix, "
                             f"got shape {w.shape}")
        block = w[:k * c, :o]
        if not np.all(np.isfinite(block)):
            raise ValueError(f"weights[{i}]: the shared block [:{k * c}, :{o}] holds NaN/inf")
        convs.append(_conv(block, None if bs is None else bs[i], c, k, s))
        c = o
    return _stack(convs)


def scan_stride(strides):
    """Scan stride of a distributed CNN: the product of its layer strides."""
    return math.prod(strides)
