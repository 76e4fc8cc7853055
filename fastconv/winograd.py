"""Winograd convolution F(m x m, 3 x 3): the readable NumPy definition (reference backend).

A 3x3 stride-1 cross-correlation computes every m x m output tile from an a x a input tile,
``a = m + 2``, with a*a multiplies per (in, out) channel pair instead of 9 m^2 (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016):

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A          (.) = elementwise product

g: 3x3 filter, d: a x a input tile, Y: m x m output tile. Summed over input channels the
elementwise stage is, for each of the a*a positions xi, one matrix product

    M[xi] (O, T) = U[xi] (O, C) @ V[xi] (C, T)     U = G g G^T, V = B^T d B, T = tiles

which is what makes Winograd fast: a*a batched GEMMs. Gradients reuse the same pieces:

* input gradient: a stride-1 3x3 correlation of dy, zero-padded by 2 - p, with the flipped,
  channel-transposed kernel (a padding above 2 crops dy instead);
* weight gradient, F(3x3, m x m) by transposition of the identity above:
  dW = sum_tiles G^T [ (A dY A^T) (.) (B^T d B) ] G, so dU[xi] (O, C) = dM[xi] (O, T) @ V[xi]^T.

The four transforms below define the math. They and the two whole-batch compositions,
``winograd_conv`` and ``winograd_filter_grad``, are the kernel contract (docs/KERNELS.md). The
compiled twins (``fastconv.kernels.cython_winograd``, ``numba_winograd``) run the compositions
fused, block by block ("winograd_f*"), and the tile transforms over the whole batch for the
batched algorithm ("winograd_batched_f*": transforms, then a*a BLAS GEMMs over all tiles
between them). Matrices are exact in float64 (rationals with small
denominators) and passed in the data's dtype.
"""
from fractions import Fraction

import numpy as np

NAME = "reference"

# F(m x m, 3 x 3) as written out by Lavin & Gray (2016). F(2x2) interpolates at 0, +-1 and
# infinity; F(4x4) at 0, +-1, +-2 and infinity. Every entry is an exact rational; ``matrices``
# rounds it once to the requested dtype (float64 constants are never float32 ones cast up).
_F = Fraction
_MATRICES = {
    2: dict(
        AT=[[1, 1, 1, 0],
            [0, 1, -1, -1]],
        G=[[1, 0, 0],
           [_F(1, 2), _F(1, 2), _F(1, 2)],
           [_F(1, 2), _F(-1, 2), _F(1, 2)],
           [0, 0, 1]],
        BT=[[1, 0, -1, 0],
            [0, 1, 1, 0],
            [0, -1, 1, 0],
            [0, 1, 0, -1]],
    ),
    4: dict(
        AT=[[1, 1, 1, 1, 1, 0],
            [0, 1, -1, 2, -2, 0],
            [0, 1, 1, 4, 4, 0],
            [0, 1, -1, 8, -8, 1]],
        G=[[_F(1, 4), 0, 0],
           [_F(-1, 6), _F(-1, 6), _F(-1, 6)],
           [_F(-1, 6), _F(1, 6), _F(-1, 6)],
           [_F(1, 24), _F(1, 12), _F(1, 6)],
           [_F(1, 24), _F(-1, 12), _F(1, 6)],
           [0, 0, 1]],
        BT=[[4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1]],
    ),
}
TILE_SIZES = tuple(sorted(_MATRICES))


def matrices(m, dtype=np.float64):
    """``(AT (m, a), G (a, 3), BT (a, a))`` of F(m x m, 3 x 3), ``a = m + 2``, in ``dtype``."""
    if m not in _MATRICES:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    mats = _MATRICES[m]
    return tuple(np.array([[float(_F(v)) for v in row] for row in mats[k]], dtype=dtype)
                 for k in ("AT", "G", "BT"))


def tile_grid(out_h, out_w, m):
    """Tiles per column and row: ``(ceil(out_h/m), ceil(out_w/m))``."""
    return -(-out_h // m), -(-out_w // m)


# ----------------------------------------------------------------------------- the contract
def winograd_tiles_in(x, L, m, ph, pw, th, tw):
    """Tile transform ``V = L d L^T`` of every r x r tile taken at stride m.

    x: (N, C, H, W); L: (a, r) -> V: (a*a, C, N*th*tw) with tile t = (n*th + ti)*tw + tj and
    V[u*a + v, c, t] = sum_{i,j<r} L[u, i] L[v, j] xpad[n, c, ti*m + i, tj*m + j], xpad = x
    shifted by (ph, pw) and zero outside. Input transform: L = B^T (r = a); transform of dy
    for the weight gradient: L = A (r = m, ph = pw = 0).
    """
    n, c, h, w = x.shape
    a, r = L.shape
    rows, cols = (th - 1) * m + r, (tw - 1) * m + r
    xpad = np.zeros((n, c, rows, cols), dtype=x.dtype)
    src = x[:, :, max(0, -ph):max(0, min(h, rows - ph)), max(0, -pw):max(0, min(w, cols - pw))]
    xpad[:, :, max(0, ph):max(0, ph) + src.shape[2], max(0, pw):max(0, pw) + src.shape[3]] = src
    sn, sc, sh, sw = xpad.strides
    d = np.lib.stride_tricks.as_strided(xpad, (n, c, th, tw, r, r), (sn, sc, sh * m, sw * m, sh, sw))
    v = np.einsum("ui,vj,nctsij->uvcnts", L, L, d, optimize=True)
    return np.ascontiguousarray(v.reshape(a * a, c, n * th * tw))


def winograd_tiles_out(M, R, n, oh, ow, th, tw, bias=None):
    """Output transform ``Y = R M R^T`` of every tile (+ bias), cropped to the output grid.

    M: (a*a, O, N*th*tw); R: (m, a) (= A^T); bias: (O,) or None -> y: (N, O, oh, ow) with
    y[n, o, ti*m + i, tj*m + j] = sum_{u,v} R[i, u] R[j, v] M[u*a + v, o, t] (+ bias[o]).
    """
    m, a = R.shape
    o = M.shape[1]
    mt = M.reshape(a, a, o, n, th, tw)
    y = np.einsum("iu,jv,uvonts->notisj", R, R, mt, optimize=True)
    y = np.ascontiguousarray(y.reshape(n, o, th * m, tw * m)[:, :, :oh, :ow])
    if bias is not None:
        y += bias[:, None, None]
    return y


def winograd_filter_in(w, G):
    """Kernel transform ``U = G g G^T``: w (O, C, r, r), G (a, r) -> U (a*a, O, C)."""
    a = G.shape[0]
    u = np.einsum("ui,vj,ocij->uvoc", G, G, w, optimize=True)
    return np.ascontiguousarray(u.reshape(a * a, w.shape[0], w.shape[1]))


def winograd_filter_out(dU, GT):
    """Weight-gradient transform ``dW = G^T dU G``: dU (a*a, O, C), GT (r, a) -> dW (O, C, r, r)."""
    r, a = GT.shape
    du = dU.reshape(a, a, dU.shape[1], dU.shape[2])
    return np.ascontiguousarray(np.einsum("iu,jv,uvoc->ocij", GT, GT, du, optimize=True))


def stored_v_blocks(V, tb):
    """V (a*a, C, T) -> the stored-V layout (a*a*C*T,): tiles cut into blocks
    ``[k*tb, (k+1)*tb)`` (the last may be shorter), block k = V[:, :, k*tb:k*tb + nt]
    C-contiguous at offset ``a*a*C*k*tb``: the block buffer the fused kernels work in."""
    T = V.shape[2]
    tb = max(1, min(tb, T))
    return np.concatenate([V[:, :, t0:t0 + tb].ravel() for t0 in range(0, T, tb)] or [V.ravel()])


def stored_v_unblocked(flat, aa, c, tb):
    """Inverse of :func:`stored_v_blocks`: (a*a*C*T,) -> V (a*a, C, T)."""
    T = flat.shape[0] // (aa * c) if aa * c else 0
    tb = max(1, min(tb, T))
    return np.concatenate([flat[aa * c * t0:aa * c * min(T, t0 + tb)].reshape(aa, c, -1)
                           for t0 in range(0, T, tb)] or [flat.reshape(aa, c, T)], axis=2)


def winograd_conv(x, U, bias, BT, AT, ph, pw, tb, V=None):
    """The whole correlation: x (N, C, H, W), U (a*a, O, C), bias (O,) or None ->
    y (N, O, oh, ow), ``oh = H + 2 ph - 2``, ``ow = W + 2 pw - 2``:

        y = tiles_out(U @ tiles_in(x, B^T, ph, pw), A^T) + bias      (a*a GEMMs in the middle)

    BT (a, a), AT (m, a). ``tb`` (tiles per block) only matters to the compiled twins, which
    run this tile block by tile block; the reference does every tile at once. ``V`` (a*a*C*T,)
    or None: receives tiles_in(x, B^T) in block layout (:func:`stored_v_blocks`) for
    :func:`winograd_filter_grad`."""
    m = AT.shape[0]
    n, _, h, w = x.shape
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = tile_grid(oh, ow, m)
    tiles = winograd_tiles_in(x, BT, m, ph, pw, th, tw)    # (a*a, C, T)
    if V is not None:
        V[...] = stored_v_blocks(tiles, tb)
    return winograd_tiles_out(np.matmul(U, tiles), AT, n, oh, ow, th, tw, bias)


def winograd_filter_grad(x, dy, BT, A, ph, pw, tb, V=None):
    """Gradient of the loss with respect to U: x (N, C, H, W), dy (N, O, oh, ow) ->
    dU (a*a, O, C),

        dU[xi] = dM[xi] @ V[xi]^T,  dM = tiles_in(dy, A, 0, 0),  V = tiles_in(x, B^T, ph, pw)

    on the tile grid of dy; BT (a, a), A (a, m). ``tb``: as in :func:`winograd_conv`. ``V``:
    the forward's stored V (same tb), used instead of transforming x; None: recomputed."""
    m = A.shape[1]
    th, tw = tile_grid(dy.shape[2], dy.shape[3], m)
    dM = winograd_tiles_in(dy, A, m, 0, 0, th, tw)     # (a*a, O, T)
    if V is None:
        tiles = winograd_tiles_in(x, BT, m, ph, pw, th, tw)    # (a*a, C, T)
    else:
        tiles = stored_v_unblocked(V, BT.shape[0] ** 2, x.shape[1], tb)
    return np.matmul(dM, tiles.transpose(0, 2, 1))


# ----------------------------------------------------------------------------- whole convolution
def conv2d_winograd(x, w, ph, pw, m):
    """Readable F(m x m, 3 x 3) forward: x (N, C, H, W), w (O, C, 3, 3) -> y (N, O, oh, ow),
    ``oh = H + 2 ph - 2``. The definition the compiled path (fastconv.conv_winograd) follows."""
    at, g, bt = matrices(m, x.dtype)
    U = winograd_filter_in(w, g)                       # (a*a, O, C)
    return winograd_conv(x, U, None, bt, at, ph, pw, None)
