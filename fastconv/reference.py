"""The reference backend: the math of every hot loop, in plain NumPy.

This module *defines* what the compiled kernels (``kernels/``) must compute; see
``docs/KERNELS.md`` for the contract. Arguments are trusted: ``fastconv.functional``
validates them first. Arrays are C-contiguous float32/float64 (``idx`` int64).

Notation: ``x: (N, C, H, W)``, kernel ``(kh, kw)``, stride ``(sh, sw)``, zero padding
``(ph, pw)``, dilation ``(dh, dw)``, output grid ``(oh, ow)`` with
``oh = floor((H + 2ph - dh(kh-1) - 1)/sh) + 1``.
"""
import numpy as np

NAME = "reference"


def _pad(x, ph, pw, value=0.0):
    """x: (N, C, H, W) -> (N, C, H + 2ph, W + 2pw), borders filled with ``value``."""
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _window_slices(i, j, sh, sw, dh, dw, oh, ow):
    """Rows/columns of the padded input that kernel offset (i, j) visits for all outputs."""
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


# ----------------------------------------------------------------------------- im2col
def im2col2d(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Unfold the windows of x into columns.

    x: (N, C, H, W) -> cols: (N, C*kh*kw, oh*ow) with
    ``cols[n, (c*kh + i)*kw + j, p*ow + q] = xpad[n, c, p*sh + i*dh, q*sw + j*dw]``.
    """
    n, c = x.shape[:2]
    xp = _pad(x, ph, pw)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _window_slices(i, j, sh, sw, dh, dw, oh, ow)
            cols[:, :, i, j] = xp[:, :, rows, columns]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im2d(cols, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Adjoint of :func:`im2col2d`: fold columns back, summing overlaps.

    cols: (N, C*kh*kw, oh*ow) -> x: (N, C, H, W). Contributions are added in kernel-offset
    order (i, then j); those landing in the padding are dropped.
    """
    n = cols.shape[0]
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _window_slices(i, j, sh, sw, dh, dw, oh, ow)
            xp[:, :, rows, columns] += cols[:, :, i, j]
    return np.ascontiguousarray(xp[:, :, ph:ph + h, pw:pw + w])


# ----------------------------------------------------------------------------- pooling
def maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """Max over each window of the -inf padded input.

    x: (N, C, H, W) -> (y: (N, C, oh, ow), idx: int64 (N, C, oh, ow)), ``idx = h*W + w`` of the
    winner in the unpadded input. Scanning the window row by row, a later element wins only if
    it is greater or NaN (PyTorch's rule).
    """
    n, c, h, w = x.shape
    xp = _pad(x, ph, pw, value=-np.inf)
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    p = np.arange(oh)[:, None] * sh - ph  # top row of each window, unpadded coordinates
    q = np.arange(ow)[None, :] * sw - pw
    # Before any element wins, the argmax is the window's first unpadded pixel (as torch), so a
    # window whose values are all -inf still routes its gradient inside the window, not to pixel 0.
    idx = np.broadcast_to(np.maximum(p, 0) * w + np.maximum(q, 0), (n, c, oh, ow)).astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _window_slices(i, j, sh, sw, 1, 1, oh, ow)
            v = xp[:, :, rows, columns]
            better = (v > y) | np.isnan(v)
            y = np.where(better, v, y)
            idx = np.where(better, (p + i) * w + (q + j), idx)
    return y, idx


def maxpool2d_backward(dy, idx, h, w):
    """Route each gradient to its window's winner, accumulating. dy, idx: (N, C, oh, ow) -> dx: (N, C, h, w)."""
    n, c = dy.shape[:2]
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    rows = np.repeat(np.arange(n * c), dy[0, 0].size)
    np.add.at(dx, (rows, idx.reshape(-1)), dy.reshape(-1))
    return dx.reshape(n, c, h, w)


def avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """Mean over each window of the zero-padded input, divided by kh*kw (padding counts).

    x: (N, C, H, W) -> y: (N, C, oh, ow).
    """
    n, c = x.shape[:2]
    xp = _pad(x, ph, pw)
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _window_slices(i, j, sh, sw, 1, 1, oh, ow)
            y += xp[:, :, rows, columns]
    return y / x.dtype.type(kh * kw)


def avgpool2d_backward(dy, h, w, kh, kw, sh, sw, ph, pw):
    """Adjoint of the mean pool: dy/(kh*kw) added to every pixel of its window.

    dy: (N, C, oh, ow) -> dx: (N, C, h, w).
    """
    n, c, oh, ow = dy.shape
    share = dy / dy.dtype.type(kh * kw)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _window_slices(i, j, sh, sw, 1, 1, oh, ow)
            dxp[:, :, rows, columns] += share
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])


# ----------------------------------------------------------------------------- resampling
def upsample2d_forward(x, fh, fw):
    """Zero insertion. x: (N, C, H, W) -> y: (N, C, fh(H-1)+1, fw(W-1)+1), ``y[..., ::fh, ::fw] = x``."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, fh * (h - 1) + 1, fw * (w - 1) + 1), dtype=x.dtype)
    y[:, :, ::fh, ::fw] = x
    return y


def upsample2d_backward(dy, fh, fw):
    """Adjoint of zero insertion: dy: (N, C, H', W') -> dx = dy[..., ::fh, ::fw]."""
    return dy[:, :, ::fh, ::fw].copy()  # a copy even for factor 1 (never a view of the input)


def downsample2d_forward(x, fh, fw):
    """Keep every fh-th row and fw-th column: x: (N, C, H, W) -> (N, C, ceil(H/fh), ceil(W/fw))."""
    return x[:, :, ::fh, ::fw].copy()  # a copy even for factor 1 (never a view of the input)


def downsample2d_backward(dy, h, w, fh, fw):
    """Scatter back to the stored input size: dx = zeros (N, C, h, w); dx[..., ::fh, ::fw] = dy."""
    n, c = dy.shape[:2]
    dx = np.zeros((n, c, h, w), dtype=dy.dtype)
    dx[:, :, ::fh, ::fw] = dy
    return dx


# ----------------------------------------------------------------------------- batch norm, ReLU
_PER_CHANNEL = (1, -1, 1)  # (C,) -> broadcast over x: (N, C, L)


def batchnorm_stats(x):
    """Batch statistics per channel. x: (N, C, L), N*L >= 1 -> (mean (C,), var (C,)),
    ``mean = sum x / (N L)``, ``var = sum (x - mean)^2 / (N L)`` (biased); the sums in float64,
    rounded once to x's dtype."""
    mean = x.mean(axis=(0, 2), dtype=np.float64)
    var = np.square(x - mean.reshape(_PER_CHANNEL)).mean(axis=(0, 2))
    return mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_forward(x, mean, inv_std, weight, bias):
    """Normalise and scale per channel: ``y = xhat * weight + bias``, ``xhat = (x - mean) * inv_std``.

    x: (N, C, L); mean, inv_std, weight, bias: (C,) -> y: (N, C, L).
    """
    xhat = (x - mean.reshape(_PER_CHANNEL)) * inv_std.reshape(_PER_CHANNEL)
    return xhat * weight.reshape(_PER_CHANNEL) + bias.reshape(_PER_CHANNEL)


def batchnorm_backward(dy, x, mean, inv_std, weight):
    """Gradients of :func:`batchnorm_forward` when mean and inv_std are x's batch statistics.

    dy, x: (N, C, L); mean, inv_std, weight: (C,) -> (dx (N, C, L), dweight (C,), dbias (C,)),
    with M = N L: ``dbias = sum dy``, ``dweight = sum dy xhat`` (sums in float64, rounded once),
    ``dx = (inv_std weight) ((dy - dbias / M) - xhat (dweight / M))`` in x's dtype.
    """
    m = x.shape[0] * x.shape[2]
    xhat = (x - mean.reshape(_PER_CHANNEL)) * inv_std.reshape(_PER_CHANNEL)
    dbias = dy.sum(axis=(0, 2), dtype=np.float64)
    dweight = (dy.astype(np.float64) * xhat).sum(axis=(0, 2))
    per_channel = [v.astype(x.dtype).reshape(_PER_CHANNEL) for v in (dbias / m, dweight / m)]
    scale = (inv_std * weight).reshape(_PER_CHANNEL)
    dx = scale * ((dy - per_channel[0]) - xhat * per_channel[1])
    return dx, dweight.astype(x.dtype), dbias.astype(x.dtype)


def relu_forward(x):
    """y = max(x, 0) elementwise, as ``np.maximum(x, 0)`` (NaN stays NaN, -0.0 becomes +0.0). Any shape."""
    return np.maximum(x, x.dtype.type(0))


def relu_backward(dy, y):
    """dx = dy * (y > 0) (1.0 or 0.0, so dy * 0 keeps NaN and sign); dy, y: the same shape."""
    return dy * (y > 0).astype(dy.dtype)
