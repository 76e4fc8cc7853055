"""Inference-only preparation of a fastconv IResNet: BatchNorm folded away, no backward caches,
the batch run through the whole network in chunks, a convolution algorithm per layer.

``prepare(net)`` takes an eval-mode ``fastconv.face.engine_models.IResNet`` and returns a
:class:`PreparedIResNet` computing the same ``(B, 3, S, S) -> (B, D)`` map (to rounding):

* BN after a conv (``conv -> BN``): ``w' = w s``, ``b' = (b - mean) s + beta``, per output channel,
  with ``s = gamma / sqrt(var + eps)``;
* BN before a conv (the IR block's ``BN -> conv3x3``, zero padding): the scale goes into the
  weights per *input* channel, ``w' = w s``; the shift ``t = beta - mean s`` becomes a bias map
  ``conv(t 1_{H x W})`` of shape (O, oh, ow) (constant inside, different at the zero-padded border),
  computed once per input size;
* BN -> Flatten -> Linear -> BN1d: one Linear, ``W' = s2 W diag(s1)``, ``b' = s2 (W t1 + b - mean2) + beta2``.

The folding is done in float64 and cast to the model's dtype once. Each convolution runs one of
:data:`ALGOS`: ``fastconv.conv_algo``'s im2col (one GEMM per image), Winograd F(2x2) or F(4x4)
fused, Winograd F(4x4) batched (3x3 stride 1 only), or ``"im2col_batch"``, im2col with *one* GEMM over the whole chunk (better
for small output maps, where per-image GEMMs are thin). ``"auto"`` (the default) times the
forward alone of every applicable one on the first input of each geometry (input and weight
shapes, stride, padding, dtype, backend; best of 3, process CPU time with one thread, wall time
with more) and keeps the fastest for the process: the right choice differs by backend, layer
width and map size. A named algorithm runs where it applies, im2col elsewhere. ``chunk`` images
go through the whole network at a time (by default as many as fit their stem output in
:data:`CHUNK_BYTES`), so that a layer's column buffer and activations stay cache-sized instead of
batch-sized (batch elements are independent in eval mode).
"""
import time

import numpy as np

from .. import _backend, conv_algo, nn
from .. import functional as F
from ..conv_winograd import FilterCache
from ..nn.module import no_grad
from .engine_models import IResNet

__all__ = ["prepare", "PreparedIResNet", "ALGOS", "applicable", "fold_bn_after", "fold_bn_before", "DEFAULT_ALGO",
           "CHUNK_BYTES"]

DEFAULT_ALGO = "auto"  # for 3x3 stride-1 convolutions; the rest always run im2col
CHUNK_BYTES = 32 << 20  # default chunk: the images whose stem output fills about this much (L3-sized)
MAX_CHUNK = 64
_chosen = {}  # (x shape, w shape, stride, padding, dtype, backend) -> {"algo", "times_ms"}: "auto" decisions


def forward_choices():
    """A copy of every "auto" decision of this process: key -> {"algo", "times_ms"}."""
    return {k: dict(v) for k, v in _chosen.items()}


def _bn_affine(bn):
    """Eval-mode BatchNorm as ``y = s x + t`` per channel, in float64: (s (C,), t (C,))."""
    if bn.training:
        raise ValueError("BatchNorm folding needs eval mode (running statistics); call net.eval() first")
    var = np.asarray(bn.running_var, np.float64)
    mean = np.asarray(bn.running_mean, np.float64)
    gamma = bn.weight.data.astype(np.float64) if bn.affine else np.ones_like(var)
    beta = bn.bias.data.astype(np.float64) if bn.affine else np.zeros_like(var)
    s = gamma / np.sqrt(var + bn.eps)
    return s, beta - mean * s


def fold_bn_after(weight, bias, bn):
    """``bn(conv(x; weight, bias))`` as one conv (or linear): -> (weight', bias') in float64.

    weight: (O, ...); bias: (O,) or None. ``w' = s w`` (per output row), ``b' = s (b - mean) + beta``.
    """
    s, t = _bn_affine(bn)
    w = np.asarray(weight, np.float64)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return w * s.reshape((-1,) + (1,) * (w.ndim - 1)), s * b + t


def fold_bn_before(weight, bn):
    """``conv(bn(x); weight)`` = ``conv(x; w') + conv(t 1; weight)``: -> (w', t) in float64.

    weight: (O, C, kh, kw); ``w' = w s`` per input channel; ``t`` (C,): the shift that the caller
    turns into a bias map (zero padding sees 0, not ``t``, so it is not a per-channel constant).
    """
    s, t = _bn_affine(bn)
    w = np.asarray(weight, np.float64)
    return w * s.reshape(1, -1, 1, 1), t


ALGOS = conv_algo.ALGOS + ("im2col_batch",)


def applicable(kernel_size, stride):
    """The algorithms of :data:`ALGOS` that can run a conv of this kernel and stride (dilation 1)."""
    return conv_algo.applicable(kernel_size, stride, (1, 1)) + ["im2col_batch"]


def _canonical(algo, kernel_size, stride):
    """``algo`` as this layer runs it: "auto", or one of ALGOS (im2col where a Winograd one cannot)."""
    if algo in ("auto", "im2col_batch"):
        return algo
    name = conv_algo.check_layer_algo(algo, (3, 3), (1, 1), (1, 1))  # validates the name
    return name if name in applicable(kernel_size, stride) else "im2col"


def _im2col_one_gemm(x, weight, bias, stride, padding):
    """im2col + *one* GEMM over the batch, for small output maps (where N GEMMs of width oh*ow
    would be matrix-vector products): x (N, C, H, W), weight (O, C, kh, kw) -> (N, O, oh, ow).

    ``y[n] = W2 @ cols[n]`` computed as ``W2 @ [cols[0] | ... | cols[N-1]]`` (K, N*L)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = _backend.backend_module().im2col2d(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, 1, 1, oh, ow)
    k = c * kh * kw
    y = weight.reshape(o, k) @ cols.transpose(1, 0, 2).reshape(k, n * oh * ow)  # (O, N*L)
    if bias is not None:
        y += bias[:, None]
    return np.ascontiguousarray(y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3))


class PreparedConv2d(nn.Module):
    """y = conv(x; weight, stride, padding) + bias (+ bias map), inference only (keeps no cache).

    x: (N, C, H, W) -> (N, O, oh, ow), ``oh = floor((H + 2p - kh)/s) + 1``. ``bias``: (O,) or None;
    ``shift``/``shift_weight``: a BN shift t (C,) folded through the zero padding, added as
    ``conv(t 1_{H x W}; shift_weight)`` (O, oh, ow), computed in float64 once per (H, W).
    """

    def __init__(self, weight, bias, stride, padding, dtype, algo="im2col", shift=None, shift_weight=None):
        super().__init__()
        self.weight = np.ascontiguousarray(weight, dtype)
        self.bias = None if bias is None else np.asarray(bias, dtype)
        self.stride, self.padding = tuple(stride), tuple(padding)
        self.kernel_size = self.weight.shape[2:]
        self.algo = _canonical(algo, self.kernel_size, self.stride)
        self._shift = None if shift is None else (np.asarray(shift, np.float64),
                                                  np.asarray(shift_weight, np.float64))
        self._maps = {}
        self._filter_cache = FilterCache()

    def _bias_map(self, h, w):
        key = (h, w)
        if key not in self._maps:
            t, shift_weight = self._shift
            image = np.broadcast_to(t.reshape(1, -1, 1, 1), (1, t.size, h, w))
            bias = None if self.bias is None else self.bias.astype(np.float64)
            ymap, _ = F.conv_forward(np.ascontiguousarray(image), shift_weight, bias, self.stride, self.padding)
            self._maps[key] = ymap[0].astype(self.weight.dtype)
        return self._maps[key]

    def _conv(self, x, algo):
        bias = self.bias if self._shift is None else None
        if algo == "im2col_batch":
            return _im2col_one_gemm(x, self.weight, bias, self.stride, self.padding)
        return conv_algo.conv2d_forward(x, self.weight, bias, self.stride, self.padding, 1, algo,
                                        self._filter_cache)[0]

    def _choose(self, x):
        """The fastest forward of the applicable algorithms for this input (memoised per process)."""
        key = (x.shape, self.weight.shape, self.stride, self.padding, x.dtype.str, _backend.get_backend())
        if key not in _chosen:
            times = {}
            # one thread: CPU time of this process (other jobs on the machine barely move it)
            clock = time.process_time if conv_algo._threads(key[-1]) == 1 else time.perf_counter
            for algo in applicable(self.kernel_size, self.stride):
                best = float("inf")
                for i in range(4):  # a warm-up, then best of 3
                    t = clock()
                    self._conv(x, algo)
                    if i:
                        best = min(best, clock() - t)
                times[algo] = 1e3 * best
            _chosen[key] = {"algo": min(times, key=times.get), "times_ms": times}
        return _chosen[key]["algo"]

    def forward(self, x):
        y = self._conv(x, self._choose(x) if self.algo == "auto" else self.algo)
        if self._shift is not None:
            y += self._bias_map(*x.shape[2:])
        return y

    def extra_repr(self):
        o, c, kh, kw = self.weight.shape
        return (f"{c}, {o}, kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}, "
                f"algo={self.algo!r}, bias_map={self._shift is not None}")


class PreparedPReLU(nn.Module):
    """PReLU in place on its input (which the caller owns): x (N, C, *) -> ``max(x, 0) + a_c min(x, 0)``."""

    def __init__(self, prelu, dtype):
        super().__init__()
        self.slope = prelu.weight.data.astype(dtype)

    def forward(self, x):
        a = self.slope.reshape((1, -1) + (1,) * (x.ndim - 2)) if self.slope.size > 1 else self.slope[0]
        negative = np.minimum(x, 0)
        np.maximum(x, 0, out=x)
        negative *= a
        x += negative  # exact: each element is x + 0 or 0 + a x
        return x


class PreparedLinear(nn.Module):
    """y = x W^T + b; x: (N, in) -> (N, out), no cache."""

    def __init__(self, weight, bias, dtype):
        super().__init__()
        self.weight = np.ascontiguousarray(weight, dtype)
        self.bias = np.asarray(bias, dtype)

    def forward(self, x):
        y = x @ self.weight.T
        y += self.bias
        return y


class PreparedBlock(nn.Module):
    """IR block with BN folded: ``prelu(conv1'(x)) -> conv2' (-> SE)`` + shortcut (conv' or identity)."""

    def __init__(self, block, dtype, algo):
        super().__init__()
        w1, t1 = fold_bn_before(block.conv1.weight.data, block.bn1)
        w1, b1 = fold_bn_after(w1, None, block.bn2)
        shift_w, _ = fold_bn_after(block.conv1.weight.data, None, block.bn2)
        self.conv1 = PreparedConv2d(w1, b1, block.conv1.stride, block.conv1.padding, dtype,
                                    algo, shift=t1, shift_weight=shift_w)
        self.prelu = PreparedPReLU(block.prelu, dtype)
        w2, b2 = fold_bn_after(block.conv2.weight.data, None, block.bn3)
        self.conv2 = PreparedConv2d(w2, b2, block.conv2.stride, block.conv2.padding, dtype,
                                    algo)
        self.se = None if isinstance(block.se, nn.Identity) else block.se
        self.downsample = None
        if block.downsample is not None:
            conv, bn = block.downsample[0], block.downsample[1]
            wd, bd = fold_bn_after(conv.weight.data, None, bn)
            self.downsample = nn.Sequential(PreparedConv2d(wd, bd, conv.stride, conv.padding, dtype, algo))

    def forward(self, x):
        y = self.conv2(self.prelu(self.conv1(x)))
        if self.se is not None:
            y = self.se(y)
        y += x if self.downsample is None else self.downsample(x)
        return y


class PreparedIResNet(nn.Module):
    """An eval-mode IResNet prepared for inference: (B, 3, S, S) -> (B, D), ``chunk`` images at a time."""

    def __init__(self, net, algo=DEFAULT_ALGO, chunk=None):
        super().__init__()
        if not isinstance(net, IResNet):
            raise TypeError(f"prepare takes a fastconv.face.engine_models.IResNet, got {type(net).__name__}")
        dtype = net.conv1.weight.dtype
        if chunk is None:
            stem_side = -(-net.input_size // net.conv1.stride[0])
            per_image = net.conv1.out_channels * stem_side ** 2 * dtype.itemsize
            chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // per_image))
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
        self.input_size, self.chunk, self.dtype = net.input_size, chunk, dtype
        w, b = fold_bn_after(net.conv1.weight.data, None, net.bn1)
        self.conv1 = PreparedConv2d(w, b, net.conv1.stride, net.conv1.padding, dtype, algo)
        self.prelu = PreparedPReLU(net.prelu, dtype)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, nn.Sequential(*(PreparedBlock(blk, dtype, algo) for blk in getattr(net, name))))
        s, t = _bn_affine(net.bn2)  # bn2 -> (dropout: identity) -> flatten -> fc -> features
        area = net.feature_side ** 2
        wfc = net.fc.weight.data.astype(np.float64)
        bfc = net.fc.bias.data.astype(np.float64) + wfc @ np.repeat(t, area)
        wfc, bfc = fold_bn_after(wfc * np.repeat(s, area), bfc, net.features)
        self.fc = PreparedLinear(wfc, bfc, dtype)
        self.eval()

    def _forward_chunk(self, x):
        x = self.prelu(self.conv1(x))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return self.fc(x.reshape(x.shape[0], -1))

    def forward(self, x):
        want = (3, self.input_size, self.input_size)
        if not isinstance(x, np.ndarray) or x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected input (B, 3, {self.input_size}, {self.input_size}), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.dtype != self.dtype:
            raise TypeError(f"expected {self.dtype} input, got {x.dtype}")
        x = np.ascontiguousarray(x)
        with no_grad():
            return np.concatenate([self._forward_chunk(x[i:i + self.chunk])
                                   for i in range(0, x.shape[0], self.chunk)])


def prepare(net, algo=DEFAULT_ALGO, chunk=None):
    """An eval-mode fastconv IResNet -> :class:`PreparedIResNet` (same embeddings to rounding).

    ``algo``: "auto" (measured per layer geometry), or one of :data:`ALGOS` (or the aliases
    "winograd", "winograd_batched") for every convolution it applies to, im2col for the others;
    ``chunk``: images per pass through the network (None: as many as fit their stem output in ``CHUNK_BYTES``, at most ``MAX_CHUNK``).
    """
    return PreparedIResNet(net, algo, chunk)
