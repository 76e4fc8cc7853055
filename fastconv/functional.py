"""Convolution, pooling and resampling as forward/backward function pairs.

Each ``*_forward`` validates its arguments, runs the current backend's kernels
(``docs/KERNELS.md``) plus NumPy GEMMs, and returns ``(y, cache)``; the matching
``*_backward(dy, cache)`` returns the input gradient (and the parameter gradients).
The backend chosen at forward time also runs the backward. 1-D operations are the
2-D ones with a height of 1.

Geometry arguments (kernel_size, stride, padding, dilation, output_padding, factor) are an
int or an ``nd``-tuple, as the layers store them; ``_validate.pair`` checks them and turns
them into the ``(h, w)`` pair the kernels take.

Sizes: ``out = floor((in + 2p - d(k-1) - 1)/s) + 1`` (conv, pooling with d = 1);
transposed conv: ``out = (in - 1)s - 2p + d(k-1) + output_padding + 1``.
"""
from types import SimpleNamespace

import numpy as np

from . import _backend, _blas
from ._validate import (as_float_array, check_grad, check_grid_side, check_size, conv_output_size,
                        pair, same_dtype)


def _grad(dy, cache):
    return np.ascontiguousarray(check_grad(dy, cache.out_shape, cache.dtype))


def _spatial(x, spatial_dims, name):
    layout = "(N, C, W)" if spatial_dims == 1 else "(N, C, H, W)"
    x = as_float_array(x, name, 2 + spatial_dims, layout)
    return x if spatial_dims == 2 else x[:, :, None, :]


def _to_nd(y, spatial_dims):
    return y if spatial_dims == 2 else y[:, :, 0, :]


# ----------------------------------------------------------------------------- convolution
# Groups: channels split into ``g`` contiguous blocks, block i of the output sees block i of the
# input only. im2col/col2im rows are channel-major, so a grouped layer runs the same kernels and
# replaces each GEMM by ``g`` block GEMMs (one batched np.matmul); ``g = 1`` is the plain GEMM.
def _group_mm(a, b, groups):
    """a: (g*P, Q), b: (N, g*Q, L) -> (N, g*P, L); block i: a_i @ b_i."""
    if groups == 1:
        return np.matmul(a, b)
    n, _, length = b.shape
    p, q = a.shape[0] // groups, a.shape[1]
    return np.matmul(a.reshape(groups, p, q), b.reshape(n, groups, q, length)).reshape(n, groups * p, length)


def _group_mm_t(a, b, groups):
    """a: (g*Q, P), b: (N, g*Q, L) -> (N, g*P, L); block i: a_i^T @ b_i."""
    if groups == 1:
        return np.matmul(a.T, b)
    n, _, length = b.shape
    q, p = a.shape[0] // groups, a.shape[1]
    at = a.reshape(groups, q, p).transpose(0, 2, 1)
    return np.matmul(at, b.reshape(n, groups, q, length)).reshape(n, groups * p, length)


def _group_outer(a, b, groups):
    """a: (N, g*P, L), b: (N, g*Q, L) -> (g*P, Q); block i: sum_n a_ni @ b_ni^T."""
    if groups == 1:
        return np.matmul(a, b.transpose(0, 2, 1)).sum(axis=0)
    n, gp, length = a.shape
    p, q = gp // groups, b.shape[1] // groups
    out = np.matmul(a.reshape(n, groups, p, length), b.reshape(n, groups, q, length).transpose(0, 1, 3, 2))
    return out.sum(axis=0).reshape(groups * p, q)


def _check_groups(groups, **channels):
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    for name, value in channels.items():
        if value % groups:
            raise ValueError(f"{name} ({value}) must be divisible by groups ({groups})")
    return int(groups)


def _conv_operands(x, weight, bias, in_axis, layout, groups=1):
    """Validate conv operands; 1-D ones get a height of 1. Weight ``in_axis`` holds the input
    channels (1 for conv: C/groups of them; 0 for transposed conv: all C), the other of axes 0/1
    the output ones (all O for conv, O/groups for transposed conv)."""
    nd = np.ndim(weight) - 2
    if nd not in (1, 2):
        raise ValueError(f"weight must be 3-D or 4-D {layout}, got shape {np.shape(weight)}")
    x = _spatial(x, nd, "input")
    w = as_float_array(weight, "weight", nd + 2, layout)
    w = w if nd == 2 else w[:, :, None, :]
    same_dtype(x, w, "input", "weight")
    expected = w.shape[in_axis] * (groups if in_axis == 1 else 1)
    if x.shape[1] != expected:
        raise ValueError(f"input has {x.shape[1]} channels but the layer expects {expected} "
                         f"(input shape {x.shape[:2] + x.shape[2 + (nd == 1):]})")
    out_channels = w.shape[1 - in_axis] * (groups if in_axis == 0 else 1)
    _check_groups(groups, input_channels=x.shape[1], output_channels=out_channels)
    if bias is not None:
        bias = as_float_array(bias, "bias", 1, f"({out_channels},)")
        same_dtype(bias, w, "bias", "weight")
        if bias.shape[0] != out_channels:
            raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    return x, w, bias, nd


def conv_forward(x, weight, bias, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation, as torch's conv1d/conv2d.

    x: (N, C, W) or (N, C, H, W); weight: (O, C/groups, kw) or (O, C/groups, kh, kw); bias: (O,)
    or None -> y: (N, O, ow) or (N, O, oh, ow), plus the cache for :func:`conv_backward`.
    """
    groups = _check_groups(groups)
    x, w, bias, nd = _conv_operands(x, weight, bias, in_axis=1, layout="(O, C/groups, *kernel)", groups=groups)
    sh, sw = pair(stride, nd, "stride", 1)
    ph, pw = pair(padding, nd, "padding", 0)
    dh, dw = pair(dilation, nd, "dilation", 1)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh = conv_output_size(h, kh, sh, ph, dh, "conv (height)")
    ow = conv_output_size(wd, kw, sw, pw, dw, "conv (width)")
    check_size("conv column buffer (N*C*kh*kw*oh*ow)", n, c, kh, kw, oh, ow)
    check_size("conv output (N*O*oh*ow)", n, o, oh, ow)
    kernels = _backend.backend_module()
    cols = kernels.im2col2d(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)  # (N, C*kh*kw, oh*ow)
    w2 = w.reshape(o, (c // groups) * kh * kw)
    if groups == 1:  # per-sample GEMMs, on more than one thread split over a team (_blas)
        y = _blas.team_matmul(w2, cols, np.empty((n, o, oh * ow), cols.dtype), _blas.backend_threads(kernels))
    else:
        y = _group_mm(w2, cols, groups)  # (N, O, oh*ow)
    if bias is not None:
        y += bias[:, None]
    y = y.reshape(n, o, oh, ow)
    cache = SimpleNamespace(kernels=kernels, cols=cols, w2=w2, x_shape=x.shape, w_shape=w.shape,
                            has_bias=bias is not None, geometry=(kh, kw, sh, sw, ph, pw, dh, dw, oh, ow),
                            nd=nd, out_shape=_to_nd(y, nd).shape, dtype=x.dtype, groups=groups)
    return _to_nd(y, nd), cache


def conv_backward(dy, cache):
    """Gradients of :func:`conv_forward`: dy (N, O, *out) -> (dx (N, C, *in), dw, db or None).

    dw = sum_n dy_n @ cols_n^T ; dcols = w^T @ dy ; dx = col2im(dcols).
    """
    dy = _grad(dy, cache)
    n, c, h, wd = cache.x_shape
    o = cache.w_shape[0]
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = cache.geometry
    dy2 = dy.reshape(n, o, oh * ow)
    if cache.groups == 1:  # per-sample GEMMs, on more than one thread split over a team (_blas)
        threads, cols, k = _blas.backend_threads(cache.kernels), cache.cols, cache.w2.shape[1]
        dw2 = _blas.team_matmul(dy2, cols.transpose(0, 2, 1), np.empty((n, o, k), cols.dtype), threads).sum(axis=0)
        dcols = _blas.team_matmul(cache.w2.T, dy2, np.empty((n, k, oh * ow), cols.dtype), threads)
    else:
        dw2 = _group_outer(dy2, cache.cols, cache.groups)  # (O, C/groups*kh*kw)
        dcols = _group_mm_t(cache.w2, dy2, cache.groups)  # (N, C*kh*kw, oh*ow)
    db = dy2.sum(axis=(0, 2)) if cache.has_bias else None
    dx = cache.kernels.col2im2d(dcols, c, h, wd, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    dwt = dw2.reshape(cache.w_shape)
    if cache.nd == 1:
        dx, dwt = dx[:, :, 0, :], dwt[:, :, 0, :]
    return dx, dwt, db


def conv_transpose_forward(x, weight, bias, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed convolution (the input gradient of a convolution), as torch's conv_transpose.

    x: (N, Cin, *in); weight: (Cin, Cout/groups, *kernel); bias: (Cout,) or None -> y: (N, Cout, *out),
    ``out = (in - 1)s - 2p + d(k-1) + output_padding + 1``. y = col2im(w^T @ x) + b (per group).
    """
    groups = _check_groups(groups)
    x, w, bias, nd = _conv_operands(x, weight, bias, in_axis=0, layout="(Cin, Cout/groups, *kernel)",
                                    groups=groups)
    sh, sw = pair(stride, nd, "stride", 1)
    ph, pw = pair(padding, nd, "padding", 0)
    dh, dw = pair(dilation, nd, "dilation", 1)
    oph, opw = pair(output_padding, nd, "output_padding", 0)
    for op, s, d in ((oph, sh, dh), (opw, sw, dw)):
        if op >= s and op >= d:
            raise ValueError(f"output_padding must be smaller than stride or dilation, got "
                             f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    n, cin, h, wd = x.shape
    _, cout_g, kh, kw = w.shape
    cout = cout_g * groups
    out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"transposed conv output would be {out_h}x{out_w}: padding {padding} is too "
                         f"large for input {h}x{wd} and kernel {kh}x{kw}")
    check_grid_side(out_h, "transposed conv output height")
    check_grid_side(out_w, "transposed conv output width")
    check_size("transposed conv column buffer (N*Cout*kh*kw*H*W)", n, cout, kh, kw, h, wd)
    check_size("transposed conv output (N*Cout*out_h*out_w)", n, cout, out_h, out_w)
    kernels = _backend.backend_module()
    w2 = w.reshape(cin, cout_g * kh * kw)
    cols = _group_mm_t(w2, x.reshape(n, cin, h * wd), groups)  # (N, Cout*kh*kw, H*W)
    y = kernels.col2im2d(cols, cout, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw, h, wd)
    if bias is not None:
        y += bias[:, None, None]
    cache = SimpleNamespace(kernels=kernels, x=x, w2=w2, w_shape=w.shape, has_bias=bias is not None,
                            geometry=(kh, kw, sh, sw, ph, pw, dh, dw, h, wd), nd=nd,
                            out_shape=_to_nd(y, nd).shape, dtype=x.dtype, groups=groups)
    return _to_nd(y, nd), cache


def conv_transpose_backward(dy, cache):
    """Gradients of :func:`conv_transpose_forward`: dy (N, Cout, *out) -> (dx, dw, db or None).

    dcols = im2col(dy) on the input grid ; dx = w @ dcols ; dw = sum_n x_n @ dcols_n^T.
    """
    dy = _grad(dy, cache)
    if cache.nd == 1:
        dy = dy[:, :, None, :]
    x = cache.x
    n, cin, h, wd = x.shape
    kh, kw, sh, sw, ph, pw, dh, dw, _, _ = cache.geometry
    dcols = cache.kernels.im2col2d(dy, kh, kw, sh, sw, ph, pw, dh, dw, h, wd)  # (N, Cout*kh*kw, H*W)
    x2 = x.reshape(n, cin, h * wd)
    dx = _group_mm(cache.w2, dcols, cache.groups).reshape(x.shape)
    dw2 = _group_outer(x2, dcols, cache.groups)
    db = dy.sum(axis=(0, 2, 3)) if cache.has_bias else None
    dwt = dw2.reshape(cache.w_shape)
    if cache.nd == 1:
        dx, dwt = dx[:, :, 0, :], dwt[:, :, 0, :]
    return dx, dwt, db


# ----------------------------------------------------------------------------- pooling
def _pool_geometry(x, nd, kernel_size, stride, padding, what):
    stride = kernel_size if stride is None else stride
    kh, kw = pair(kernel_size, nd, "kernel_size", 1)
    sh, sw = pair(stride, nd, "stride", 1)
    ph, pw = pair(padding, nd, "padding", 0)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{what}: padding must be at most half the kernel size, got padding "
                         f"{padding} for kernel_size {kernel_size}")
    oh = conv_output_size(x.shape[2], kh, sh, ph, 1, f"{what} (height)")
    ow = conv_output_size(x.shape[3], kw, sw, pw, 1, f"{what} (width)")
    check_size(f"{what} output (N*C*oh*ow)", x.shape[0], x.shape[1], oh, ow)
    return kh, kw, sh, sw, ph, pw, oh, ow


def _pool_forward(kind, x, nd, kernel_size, stride, padding):
    x = _spatial(x, nd, "input")
    geometry = _pool_geometry(x, nd, kernel_size, stride, padding, kind)
    kernels = _backend.backend_module()
    cache = SimpleNamespace(kernels=kernels, geometry=geometry, x_shape=x.shape, nd=nd, dtype=x.dtype)
    if kind == "max_pool":
        y, cache.idx = kernels.maxpool2d_forward(x, *geometry)
    else:
        y = kernels.avgpool2d_forward(x, *geometry)
    cache.out_shape = _to_nd(y, nd).shape
    return _to_nd(y, nd), cache


def _pool_backward(kind, dy, cache):
    dy = _grad(dy, cache)
    if cache.nd == 1:
        dy = dy[:, :, None, :]
    h, w = cache.x_shape[2:]
    if kind == "max_pool":
        dx = cache.kernels.maxpool2d_backward(dy, cache.idx, h, w)
    else:
        dx = cache.kernels.avgpool2d_backward(dy, h, w, *cache.geometry[:6])
    return _to_nd(dx, cache.nd)


def max_pool_forward(x, kernel_size, stride=None, padding=0, nd=2):
    """Max pooling (torch semantics: stride defaults to kernel_size, -inf padding <= k/2).

    x: (N, C, W) if nd == 1, (N, C, H, W) if nd == 2 -> y: (N, C, *out), plus the cache
    (argmax kept for backward).
    """
    return _pool_forward("max_pool", x, nd, kernel_size, stride, padding)


def max_pool_backward(dy, cache):
    """dy: (N, C, *out) -> dx: (N, C, *in); each gradient goes to its window's argmax."""
    return _pool_backward("max_pool", dy, cache)


def avg_pool_forward(x, kernel_size, stride=None, padding=0, nd=2):
    """Mean pooling (torch ``count_include_pad=True``): x (N, C, *in) -> y (N, C, *out)."""
    return _pool_forward("avg_pool", x, nd, kernel_size, stride, padding)


def avg_pool_backward(dy, cache):
    """dy: (N, C, *out) -> dx: (N, C, *in); each dy/(kh*kw) spread over its window."""
    return _pool_backward("avg_pool", dy, cache)


# ----------------------------------------------------------------------------- resampling
def upsample_forward(x, factor, nd=2):
    """Zero insertion by ``factor``: x (N, C, *in) -> y (N, C, *(k(in-1)+1))."""
    x = _spatial(x, nd, "input")
    fh, fw = pair(factor, nd, "factor", 1)
    oh = check_grid_side(fh * (x.shape[2] - 1) + 1, "upsampled height")
    ow = check_grid_side(fw * (x.shape[3] - 1) + 1, "upsampled width")
    check_size("upsample output (N*C*oh*ow)", x.shape[0], x.shape[1], oh, ow)
    kernels = _backend.backend_module()
    y = kernels.upsample2d_forward(x, fh, fw)
    cache = SimpleNamespace(kernels=kernels, factor=(fh, fw), nd=nd, out_shape=_to_nd(y, nd).shape,
                            dtype=x.dtype)
    return _to_nd(y, nd), cache


def upsample_backward(dy, cache):
    """dy (N, C, *out) -> dx = dy[..., ::k] (N, C, *in)."""
    dy = _grad(dy, cache)
    dy = dy if cache.nd == 2 else dy[:, :, None, :]
    return _to_nd(cache.kernels.upsample2d_backward(dy, *cache.factor), cache.nd)


def downsample_forward(x, factor, nd=2):
    """Keep every ``factor``-th sample: x (N, C, *in) -> y = x[..., ::k] (N, C, *ceil(in/k))."""
    x = _spatial(x, nd, "input")
    fh, fw = pair(factor, nd, "factor", 1)
    kernels = _backend.backend_module()
    y = kernels.downsample2d_forward(x, fh, fw)
    cache = SimpleNamespace(kernels=kernels, factor=(fh, fw), nd=nd, x_shape=x.shape,
                            out_shape=_to_nd(y, nd).shape, dtype=x.dtype)
    return _to_nd(y, nd), cache


def downsample_backward(dy, cache):
    """dy (N, C, *out) -> dx (N, C, *in) with dx[..., ::k] = dy, zeros elsewhere."""
    dy = _grad(dy, cache)
    dy = dy if cache.nd == 2 else dy[:, :, None, :]
    h, w = cache.x_shape[2:]
    return _to_nd(cache.kernels.downsample2d_backward(dy, h, w, *cache.factor), cache.nd)
