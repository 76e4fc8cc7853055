"""Winograd convolution and algorithm selection (fastconv.winograd, conv_winograd, conv_algo).

Tolerances (Winograd rounds differently from a direct sum): float64 max|diff| / max(1, max|ref|)
<= 1e-11, float32 <= 5e-5, against torch run in float64 on the same (float32-representable)
data. Every test runs under every backend (``backend`` fixture) where the backend matters.
"""
import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from engine_helpers import BACKENDS, error, fuzz
from fastconv import conv_algo, conv_winograd
from fastconv import winograd as wino

torch = pytest.importorskip("torch")

WINOGRAD = [a for a in conv_algo.ALGOS if a != "im2col"]  # fused and batched, every tile size
TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 5e-5}


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    """No test sees another's "auto" decisions or a stored choice file."""
    monkeypatch.delenv("FASTCONV_CACHE", raising=False)
    conv_algo.clear_conv_algo_cache()
    yield
    conv_algo.clear_conv_algo_cache()


def _torch_conv(x, w, b, padding):
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    wt = torch.tensor(w.astype(np.float64), requires_grad=True)
    bt = torch.tensor(b.astype(np.float64), requires_grad=True)
    return xt, wt, bt, torch.nn.functional.conv2d(xt, wt, bt, padding=padding)


def _check_vs_torch(algo, n, c, o, h, w, padding, dtype, seed=0):
    """Conv2d(algo) forward, dx, dW, db against torch; returns the worst error."""
    rng = np.random.default_rng(seed)
    layer = fc.nn.Conv2d(c, o, 3, padding=padding, dtype=dtype, algo=algo)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    y = layer(x)
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    dx = layer.backward(dy)
    xt, wt, bt, yt = _torch_conv(x, layer.weight.data, layer.bias.data, padding)
    yt.backward(torch.tensor(dy.astype(np.float64)))
    worst = 0.0
    for name, got, ref in (("y", y, yt), ("dx", dx, xt.grad), ("dW", layer.weight.grad, wt.grad),
                           ("db", layer.bias.grad, bt.grad)):
        ref = ref.detach().numpy()
        assert got.dtype == np.dtype(dtype) and got.shape == ref.shape, name
        err = error(got, ref, dtype)
        assert err <= TOL[np.dtype(dtype)], f"{algo} {name}: error {err:.3g} ({np.dtype(dtype).name})"
        worst = max(worst, err)
    return worst


# ----------------------------------------------------------------------------- the math
@pytest.mark.parametrize("m", wino.TILE_SIZES)
def test_matrices_give_the_exact_correlation(m):
    """sum_x A^T[i, x] G[x, k] B^T[x, j] = [j == i + k] in exact rational arithmetic: then
    A^T [(G g) (.) (B^T d)] is the correlation of d with g for every d, g (and the 2-D nesting)."""
    mats = wino._MATRICES[m]
    at, g, bt = ([[Fraction(v) for v in row] for row in mats[k]] for k in ("AT", "G", "BT"))
    a = m + 2
    for i in range(m):
        for k in range(3):
            for j in range(a):
                total = sum(at[i][x] * g[x][k] * bt[x][j] for x in range(a))
                assert total == (1 if j == i + k else 0), (i, k, j)


def test_float64_matrices_are_rounded_once():
    """The float64 constants are the exactly rounded rationals, not float32 ones cast up."""
    _, g, _ = wino.matrices(4, np.float64)
    assert g[1, 0] == -1 / 6 and g[3, 0] == 1 / 24 and np.float32(g[1, 0]) != g[1, 0]
    assert wino.matrices(4, np.float32)[1].dtype == np.float32
    with pytest.raises(ValueError, match="tile size"):
        wino.matrices(3)


# ----------------------------------------------------------------------------- kernels
COMPILED = [b for b in BACKENDS if b != "reference"]
KERNEL_TOL = {np.dtype(np.float64): 1e-13, np.dtype(np.float32): 2e-6}


def _kernel_case(k, dtype, n, c, o, h, w, ph, pw, m, tb, seed=0):
    """The fused kernels of module ``k`` with ``tb`` tiles per block against fastconv.winograd
    (which does all tiles at once), with V recomputed and with V stored by the forward (the
    stored V itself against the reference's tiles_in in block layout); returns the worst error."""
    rng = np.random.default_rng(seed)
    at, g, bt = wino.matrices(m, dtype)
    a_mat = np.ascontiguousarray(at.T)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    u = rng.standard_normal(((m + 2) ** 2, o, c)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    dy = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    th, tw = wino.tile_grid(oh, ow, m)
    tiles = wino.winograd_tiles_in(x, bt, m, ph, pw, th, tw)
    v = np.full(tiles.size, np.nan, dtype=dtype)  # every entry must be written
    y_keep = k.winograd_conv(x, u, bias, bt, at, ph, pw, tb, v)
    worst = 0.0
    for got, ref in ((k.winograd_conv(x, u, bias, bt, at, ph, pw, tb),
                      wino.winograd_conv(x, u, bias, bt, at, ph, pw, tb)),
                     (y_keep, wino.winograd_conv(x, u, bias, bt, at, ph, pw, tb)),
                     (v, wino.stored_v_blocks(tiles, tb)),
                     (k.winograd_filter_grad(x, dy, bt, a_mat, ph, pw, tb, v),
                      wino.winograd_filter_grad(x, dy, bt, a_mat, ph, pw, tb)),
                     (k.winograd_conv(x, u, None, bt, at, ph, pw, tb),
                      wino.winograd_conv(x, u, None, bt, at, ph, pw, tb)),
                     (k.winograd_filter_grad(x, dy, bt, a_mat, ph, pw, tb),
                      wino.winograd_filter_grad(x, dy, bt, a_mat, ph, pw, tb))):
        assert got.dtype == dtype and got.shape == ref.shape
        err = error(got, ref, np.float32)
        assert err <= KERNEL_TOL[np.dtype(dtype)], (err, tb)
        worst = max(worst, err)
    return worst


@pytest.mark.parametrize("backend_name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@fuzz(12)
@given(n=st.integers(1, 3), c=st.integers(1, 5), o=st.integers(1, 5), h=st.integers(1, 23),
       w=st.integers(1, 40), ph=st.integers(0, 2), pw=st.integers(0, 2),
       m=st.sampled_from(wino.TILE_SIZES), tb=st.sampled_from([1, 3, 8, 13, 64, 10**6]),
       seed=st.integers(0, 2**16))
def test_compiled_kernels_match_reference(backend_name, dtype, n, c, o, h, w, ph, pw, m, tb, seed):
    """The fused conv and weight-gradient kernels of each compiled backend against the
    reference, for block sizes that cut tile rows and images anywhere."""
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        return
    _kernel_case(conv_winograd.winograd_module(backend_name), dtype, n, c, o, h, w, ph, pw, m, tb, seed)


@pytest.mark.parametrize("backend_name", COMPILED)
@pytest.mark.parametrize("m", wino.TILE_SIZES)
@pytest.mark.parametrize("case", [
    dict(n=2, c=3, o=2, h=9, w=11, ph=1, pw=1, tb=5),    # T = 2*3*3 = 18 (m=4): not a multiple of tb
    dict(n=1, c=2, o=3, h=7, w=7, ph=1, pw=0, tb=1),     # one tile per block
    dict(n=1, c=2, o=2, h=3, w=3, ph=0, pw=0, tb=8),     # a single tile (1x1 output)
    dict(n=2, c=1, o=1, h=1, w=1, ph=2, pw=2, tb=2),     # width 1, padding 2
    dict(n=1, c=2, o=2, h=2, w=2, ph=1, pw=2, tb=3),     # width 2
    dict(n=3, c=2, o=2, h=3, w=3, ph=0, pw=1, tb=4),     # width 3, padding 0 / 1
    dict(n=2, c=4, o=3, h=13, w=17, ph=2, pw=0, tb=7),   # a block spans tile rows and images
], ids=["ragged", "tb1", "one-tile", "w1", "w2", "w3", "spans"])
def test_block_boundaries(backend_name, m, case):
    k = conv_winograd.winograd_module(backend_name)
    for dtype in (np.float64, np.float32):
        _kernel_case(k, dtype, m=m, **case)


@pytest.mark.parametrize("backend_name", COMPILED)
def test_weight_gradient_reduction_over_threads(backend_name):
    """dU summed by one worker or by two (per-worker accumulators, added at the end) agree
    within rounding, and both match the reference."""
    k = conv_winograd.winograd_module(backend_name)
    rng = np.random.default_rng(7)
    at, _, bt = wino.matrices(4, np.float32)
    x = rng.standard_normal((2, 6, 20, 20)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 20, 20)).astype(np.float32)
    ref = wino.winograd_filter_grad(x, dy, bt, np.ascontiguousarray(at.T), 1, 1, None)
    got = {}
    previous = k.get_num_threads()
    try:
        fc.set_grain_size(0)
        for threads in (1, 2):
            fc.set_num_threads(threads)
            got[threads] = k.winograd_filter_grad(x, dy, bt, np.ascontiguousarray(at.T), 1, 1, 8)
    finally:
        fc.set_num_threads(previous)
        fc.set_grain_size(None)
    for threads, du in got.items():
        assert error(du, ref, np.float32) <= 2e-6, threads
    assert error(got[1], got[2], np.float32) <= 2e-6


@pytest.mark.parametrize("backend_name", COMPILED)
def test_blas_runs_on_one_thread_inside_the_kernels(backend_name, monkeypatch):
    """Whatever BLAS thread count the caller set, the kernels' GEMMs see 1 (no
    oversubscription), and the caller's setting is back after the call."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from fastconv import _blas

    k = conv_winograd.winograd_module(backend_name)
    seen = []
    monkeypatch.setattr(_blas, "probe", lambda: seen.append(
        [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]))
    at, _, bt = wino.matrices(2, np.float64)
    x, u = np.ones((1, 2, 6, 6)), np.ones((16, 3, 2))
    with threadpool_limits(2, user_api="blas"):
        k.winograd_conv(x, u, None, bt, at, 1, 1, 4)
        k.winograd_filter_grad(x, np.ones((1, 3, 6, 6)), bt, np.ascontiguousarray(at.T), 1, 1, 4)
        after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert len(seen) == 2 and all(counts and set(counts) == {1} for counts in seen), seen
    assert after and set(after) == {2}


@pytest.mark.parametrize("backend_name", COMPILED)
@pytest.mark.parametrize("algo, team_calls", [("winograd_batched", 3), ("im2col", 3)])
def test_gemm_team_matches_one_thread(backend_name, algo, team_calls, monkeypatch):
    """On 2 threads the batched design splits its a*a GEMMs, and im2col its per-sample GEMMs,
    over a thread team on single-threaded BLAS (y, dW, dx: three team calls each); forward and
    gradients equal the 1-thread run within rounding."""
    from threadpoolctl import threadpool_info

    from fastconv import _blas

    monkeypatch.setattr(_blas, "TEAM_MIN_FLOPS", 0)
    seen = []
    monkeypatch.setattr(_blas, "probe", lambda: seen.append(
        [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 11, 9)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 11, 9)).astype(np.float32)
    got = {}
    template = fc.nn.Conv2d(6, 5, 3, padding=1, dtype=np.float32)
    k = conv_winograd.winograd_module(backend_name)
    previous = k.get_num_threads()
    try:
        with fc.use_backend(backend_name):
            for threads in (1, 2):
                fc.set_num_threads(threads)
                if k.get_num_threads() != threads:
                    pytest.skip(f"{backend_name} cannot run {threads} threads here")
                layer = fc.nn.Conv2d(6, 5, 3, padding=1, dtype=np.float32, algo=algo)
                layer.load_state_dict(template.state_dict())
                seen.clear()
                y = layer(x)
                got[threads] = (y, layer.backward(dy), layer.weight.grad.copy(), list(seen))
    finally:
        fc.set_num_threads(previous)
    assert not got[1][3]  # one thread: a plain np.matmul, no team
    assert len(got[2][3]) == team_calls and all(set(c) == {1} for c in got[2][3])
    for one, two in zip(got[1][:3], got[2][:3]):
        assert error(two, one, np.float32) <= KERNEL_TOL[np.dtype(np.float32)]


@pytest.mark.parametrize("backend_name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@fuzz(6)
@given(c=st.integers(1, 5), o=st.integers(1, 5), m=st.sampled_from(wino.TILE_SIZES),
       seed=st.integers(0, 2**16))
def test_compiled_filter_transforms_match_reference(backend_name, dtype, c, o, m, seed):
    k = conv_winograd.winograd_module(backend_name)
    rng = np.random.default_rng(seed)
    _, g, _ = wino.matrices(m, dtype)
    wt = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    assert error(k.winograd_filter_in(wt, g), wino.winograd_filter_in(wt, g), np.float32) <= KERNEL_TOL[np.dtype(dtype)]
    du = rng.standard_normal(((m + 2) ** 2, o, c)).astype(dtype)
    gt = np.ascontiguousarray(g.T)
    assert error(k.winograd_filter_out(du, gt), wino.winograd_filter_out(du, gt), np.float32) <= KERNEL_TOL[np.dtype(dtype)]


@pytest.mark.parametrize("backend_name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@fuzz(12)
@given(n=st.integers(1, 3), c=st.integers(1, 5), o=st.integers(1, 5), h=st.integers(1, 23),
       w=st.integers(1, 40), ph=st.integers(0, 2), pw=st.integers(0, 2),
       m=st.sampled_from(wino.TILE_SIZES), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_compiled_tile_transforms_match_reference(backend_name, dtype, n, c, o, h, w, ph, pw, m,
                                                   with_bias, seed):
    """The batched algorithm's whole-batch transforms: tiles_in with B^T (the input) and with A
    (dy, for the weight gradient), tiles_out (+ bias) cropped to ragged outputs."""
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        return
    k = conv_winograd.winograd_module(backend_name)
    rng = np.random.default_rng(seed)
    at, _, bt = wino.matrices(m, dtype)
    a_mat = np.ascontiguousarray(at.T)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = wino.tile_grid(oh, ow, m)
    mm = rng.standard_normal(((m + 2) ** 2, o, n * th * tw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if with_bias else None
    for got, ref in ((k.winograd_tiles_in(x, bt, m, ph, pw, th, tw), wino.winograd_tiles_in(x, bt, m, ph, pw, th, tw)),
                     (k.winograd_tiles_in(x, a_mat, m, 0, 0, *wino.tile_grid(h, w, m)),
                      wino.winograd_tiles_in(x, a_mat, m, 0, 0, *wino.tile_grid(h, w, m))),
                     (k.winograd_tiles_out(mm, at, n, oh, ow, th, tw, bias),
                      wino.winograd_tiles_out(mm, at, n, oh, ow, th, tw, bias))):
        assert got.dtype == dtype and got.shape == ref.shape
        assert error(got, ref, np.float32) <= KERNEL_TOL[np.dtype(dtype)]


@pytest.mark.parametrize("backend_name", COMPILED)
def test_tile_transforms_reject_inconsistent_sizes(backend_name):
    """Direct calls of the whole-batch transforms cannot index out of bounds either."""
    k = conv_winograd.winograd_module(backend_name)
    at, _, bt = wino.matrices(2)
    x, mm = np.zeros((1, 2, 4, 4)), np.zeros((16, 3, 4))
    k.winograd_tiles_out(mm, at, 1, 4, 4, 2, 2)  # consistent: no error
    for bad in (dict(m=0), dict(m=9), dict(th=0), dict(tw=0), dict(ph=-1), dict(pw=2**40)):
        args = dict(m=2, ph=0, pw=0, th=2, tw=2) | bad
        with pytest.raises(ValueError):
            k.winograd_tiles_in(x, bt, args["m"], args["ph"], args["pw"], args["th"], args["tw"])
    with pytest.raises(ValueError):
        k.winograd_tiles_in(x, np.zeros((9, 9)), 2, 0, 0, 2, 2)
    with pytest.raises(ValueError, match="does not cover"):
        k.winograd_tiles_out(mm, at, 1, 5, 4, 2, 2)   # a 2x2 grid of 2x2 tiles is 4x4, not 5x4
    with pytest.raises(ValueError, match="does not cover"):
        k.winograd_tiles_out(mm, at, 1, 2, 4, 2, 2)   # nor 2x4 (a tile row left unused)
    with pytest.raises(ValueError, match="M must"):
        k.winograd_tiles_out(mm, at, 2, 4, 4, 2, 2)   # M has the tiles of one image, not two
    with pytest.raises(ValueError, match="M must"):
        k.winograd_tiles_out(np.zeros((9, 3, 4)), at, 1, 4, 4, 2, 2)
    with pytest.raises(ValueError, match="bias"):
        k.winograd_tiles_out(mm, at, 1, 4, 4, 2, 2, np.zeros(4))
    with pytest.raises(ValueError):
        k.winograd_tiles_out(mm, at, 0, 4, 4, 2, 2)


@pytest.mark.parametrize("backend_name", COMPILED)
def test_kernels_reject_inconsistent_sizes(backend_name):
    """Direct calls to the compiled kernels cannot index out of bounds (the reference
    trusts its caller, fastconv.conv_winograd, as the other reference kernels do)."""
    k = conv_winograd.winograd_module(backend_name)
    at, g, bt = wino.matrices(2)
    a_mat = np.ascontiguousarray(at.T)
    x, u = np.zeros((1, 2, 4, 4)), np.zeros((16, 3, 2))
    with pytest.raises(ValueError, match="U must"):
        k.winograd_conv(x, np.zeros((16, 3, 5)), None, bt, at, 0, 0, 4)   # channels differ
    with pytest.raises(ValueError, match="U must"):
        k.winograd_conv(x, np.zeros((9, 3, 2)), None, bt, at, 0, 0, 4)    # a*a positions
    with pytest.raises(ValueError, match="bias"):
        k.winograd_conv(x, u, np.zeros(4), bt, at, 0, 0, 4)
    with pytest.raises(ValueError):
        k.winograd_conv(x, u, None, np.zeros((9, 9)), at, 0, 0, 4)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        k.winograd_conv(np.zeros((1, 2, 1, 4)), u, None, bt, at, 0, 0, 4)
    with pytest.raises(ValueError, match="dy must"):
        k.winograd_filter_grad(x, np.zeros((1, 3, 3, 2)), bt, a_mat, 0, 0, 4)
    with pytest.raises(ValueError):
        k.winograd_filter_in(np.zeros((2, 2, 5, 5)), g)
    for bad in (dict(ph=-1), dict(ph=2**40), dict(tb=0), dict(tb=2**40)):  # past the index limit
        args = dict(ph=0, pw=0, tb=4) | bad
        with pytest.raises(ValueError):
            k.winograd_conv(x, u, None, bt, at, args["ph"], args["pw"], args["tb"])
        with pytest.raises(ValueError):
            k.winograd_filter_grad(x, np.zeros((1, 3, 3, 3)), bt, a_mat, args["ph"], args["pw"], args["tb"])


def test_block_size_follows_the_l2_cache():
    """tb: twice the L2 over the bytes a tile occupies in the block buffers, clipped."""
    tb = conv_winograd.block_tiles(64, 64, 4, 4, l2_bytes=2 << 20)
    assert tb == (4 << 20) // (36 * 128 * 4) // 8 * 8 == 224
    assert conv_winograd.block_tiles(64, 64, 4, 4, l2_bytes=1 << 20) == 112
    assert conv_winograd.block_tiles(512, 512, 4, 8, l2_bytes=1 << 18) == conv_winograd.MIN_BLOCK_TILES
    assert conv_winograd.block_tiles(1, 1, 2, 4, l2_bytes=1 << 30) == conv_winograd.MAX_BLOCK_TILES


def test_l2_cache_size_is_read_or_falls_back(monkeypatch, tmp_path):
    from fastconv import cpu_cache

    assert cpu_cache._parse_size("512K\n") == 512 * 1024 and cpu_cache._parse_size("2M") == 2 << 20
    assert cpu_cache._parse_size("junk") is None
    for idx, (level, kind, size) in enumerate([("1", "Data", "32K"), ("2", "Unified", "1024K")]):
        d = tmp_path / f"index{idx}"
        d.mkdir()
        (d / "level").write_text(level)
        (d / "type").write_text(kind)
        (d / "size").write_text(size)
    monkeypatch.setattr(cpu_cache, "_SYSFS", str(tmp_path))
    cpu_cache.l2_cache_bytes.cache_clear()
    try:
        assert cpu_cache.l2_cache_bytes() == 1 << 20
        monkeypatch.setattr(cpu_cache, "_SYSFS", str(tmp_path / "missing"))
        monkeypatch.setattr(cpu_cache.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
        cpu_cache.l2_cache_bytes.cache_clear()
        assert cpu_cache.l2_cache_bytes() == cpu_cache.FALLBACK_L2_BYTES
    finally:
        cpu_cache.l2_cache_bytes.cache_clear()


def test_stored_v_layout_round_trips():
    """stored_v_blocks / stored_v_unblocked: blocks of tb tiles, the last one shorter."""
    V = np.arange(4 * 3 * 10, dtype=np.float64).reshape(4, 3, 10)
    flat = wino.stored_v_blocks(V, 4)
    np.testing.assert_array_equal(flat[:4 * 3 * 4], V[:, :, :4].ravel())
    np.testing.assert_array_equal(flat[4 * 3 * 8:], V[:, :, 8:].ravel())
    for tb in (1, 3, 4, 10, 99):
        np.testing.assert_array_equal(wino.stored_v_unblocked(wino.stored_v_blocks(V, tb), 4, 3, tb), V)


def test_stored_v_is_rejected_at_the_wrong_size():
    at, _, bt = wino.matrices(4, np.float32)
    x = np.ones((1, 2, 6, 6), np.float32)
    u = np.ones((36, 3, 2), np.float32)
    for name in COMPILED:
        k = conv_winograd.winograd_module(name)
        with pytest.raises(ValueError, match="V must"):
            k.winograd_conv(x, u, None, bt, at, 1, 1, 8, np.empty(5, np.float32))


@pytest.mark.parametrize("algo", ["winograd_f4", "winograd_batched_f4"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_training_layer_stores_v_and_eval_layer_does_not(backend, algo, dtype):
    """In training mode the forward stores V and the weight gradient reads it; in eval mode
    nothing is stored and dW is recomputed from x. Both give the same gradients (same blocks:
    within the kernels' tolerance)."""
    rng = np.random.default_rng(3)
    layer = fc.nn.Conv2d(5, 6, 3, padding=1, dtype=dtype, algo=algo)
    x = rng.standard_normal((2, 5, 13, 10)).astype(dtype)
    dy = rng.standard_normal((2, 6, 13, 10)).astype(dtype)
    grads = {}
    for training in (True, False):
        layer.train(training)
        layer.weight.grad[...] = 0
        y = layer(x)
        assert (layer._recall().inner.v is None) != training
        dx = layer.backward(dy)
        grads[training] = (y, dx, layer.weight.grad.copy())
    for got, ref in zip(grads[True], grads[False]):
        assert error(got, ref, dtype) <= KERNEL_TOL[np.dtype(dtype)]
    layer.train()
    with fc.no_grad():  # keeps no cache, so nothing is stored; the forward is unchanged
        assert error(layer(x), grads[True][0], dtype) <= KERNEL_TOL[np.dtype(dtype)]


# ----------------------------------------------------------------------------- parity vs torch
@pytest.mark.parametrize("algo", WINOGRAD)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@fuzz(6)
@given(n=st.integers(1, 4), c=st.integers(1, 24), o=st.integers(1, 24), h=st.integers(1, 12),
       w=st.sampled_from([1, 2, 3, 5, 8, 13, 37, 64, 101, 300]), padding=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_winograd_matches_torch(backend, algo, dtype, n, c, o, h, w, padding, seed):
    if h + 2 * padding < 3 or w + 2 * padding < 3:
        return
    _check_vs_torch(algo, n, c, o, h, w, padding, dtype, seed)


@pytest.mark.parametrize("algo", WINOGRAD)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 2), (2, 3, 4, 2, 3, 1), (1, 2, 2, 7, 5, 3),
                                   (1, 3, 2, (3, 9), (0, 2), None)],
                         ids=["1x1-pad2", "2x3-pad1", "pad3", "asymmetric"])
def test_winograd_awkward_shapes(backend, algo, dtype, shape):
    """Width 1 (padding 2), widths 2-3, padding above 2 (dx crops dy), asymmetric padding."""
    n, c, o, hw, padding, _ = shape
    h, w = (hw, hw) if isinstance(hw, int) else hw
    _check_vs_torch(algo, n, c, o, h, w, padding, dtype)


@pytest.mark.parametrize("algo", WINOGRAD)
@pytest.mark.parametrize("channels", [256, 512])
def test_winograd_float32_error_at_many_channels(algo, channels):
    """The bound holds where the error is largest: many channels (one backend suffices: the
    transforms are held to the reference above)."""
    assert _check_vs_torch(algo, 2, channels, 8, 6, 9, 1, np.float32) <= 5e-5


# ----------------------------------------------------------------------------- selection
def test_auto_picks_a_valid_algorithm_equal_to_forcing_it(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 12, 12))
    auto = fc.nn.Conv2d(8, 6, 3, padding=1, algo="auto")
    y_auto = auto(x)
    dx_auto = auto.backward(np.ones_like(y_auto))
    (key, entry), = conv_algo.tuned_choices().items()
    assert entry["algo"] in conv_algo.applicable((3, 3), (1, 1), (1, 1))
    assert set(entry["times_ms"]) == set(conv_algo.ALGOS) and key[7] == backend
    for algo in conv_algo.ALGOS:
        forced = fc.nn.Conv2d(8, 6, 3, padding=1, algo=algo)
        forced.load_state_dict(auto.state_dict())
        y = forced(x)
        dx = forced.backward(np.ones_like(y))
        if algo == entry["algo"]:
            assert np.array_equal(y, y_auto) and np.array_equal(dx, dx_auto)
        assert error(y, y_auto, np.float64) <= 1e-11 and error(dx, dx_auto, np.float64) <= 1e-11
    assert entry["algo"] in fc.conv_algo_report()


def test_auto_with_one_candidate_does_not_time(backend):
    layer = fc.nn.Conv2d(2, 3, 5, algo="auto")
    layer(np.ones((1, 2, 7, 7)))
    (entry,) = conv_algo.tuned_choices().values()
    assert entry == {"algo": "im2col", "times_ms": {}, "source": "only applicable algorithm"}


@pytest.mark.parametrize("algo", ["winograd", "winograd_batched"] + WINOGRAD)
@pytest.mark.parametrize("geometry, constraint", [
    (dict(kernel_size=5), r"3x3 kernel.*kernel \(5, 5\)"),
    (dict(kernel_size=3, stride=2), r"stride 1.*stride \(2, 2\)"),
    (dict(kernel_size=3, dilation=2), r"dilation 1.*dilation \(2, 2\)"),
    (dict(kernel_size=(3, 1)), r"kernel \(3, 1\)"),
])
def test_inapplicable_algorithm_names_the_constraint(algo, geometry, constraint):
    with pytest.raises(ValueError, match=constraint):
        fc.nn.Conv2d(2, 2, algo=algo, **geometry)
    with pytest.raises(ValueError, match=constraint):
        conv_algo.conv2d_forward(np.ones((1, 2, 9, 9)), np.ones((2, 2) + ((geometry["kernel_size"],) * 2
                                 if isinstance(geometry["kernel_size"], int) else geometry["kernel_size"])),
                                 None, geometry.get("stride", 1), 0, geometry.get("dilation", 1), algo=algo)


def test_aliases_name_the_default_tiles():
    assert conv_algo.check_layer_algo("winograd", (3, 3), (1, 1), (1, 1)) == "winograd_f4"
    assert conv_algo.check_layer_algo("winograd_batched", (3, 3), (1, 1), (1, 1)) == "winograd_batched_f4"
    with fc.use_conv_algo("winograd_batched") as name:
        assert name == "winograd_batched_f4"


def test_bad_algorithm_names():
    with pytest.raises(ValueError, match="unknown convolution algorithm 'fft'"):
        fc.nn.Conv2d(1, 1, 3, algo="fft")
    with pytest.raises(TypeError, match="must be a str"):
        fc.set_conv_algo(4)
    with pytest.raises(ValueError, match="unknown"):
        fc.set_conv_algo("Winograd")
    assert fc.get_conv_algo() == "im2col"


def test_process_wide_setting_applies_where_it_can(backend):
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 9))
    three, five = fc.nn.Conv2d(2, 2, 3), fc.nn.Conv2d(2, 2, 5)
    with fc.use_conv_algo("winograd") as name:
        assert name == "winograd_f4" and fc.get_conv_algo() == "winograd_f4"
        three(x)
        five(x)  # 5x5: im2col, no error
        assert three._recall().algo == "winograd_f4" and five._recall().algo == "im2col"
    assert fc.get_conv_algo() == "im2col"
    three(x)
    assert three._recall().algo == "im2col"


@pytest.mark.parametrize("algo", ["winograd", "winograd_batched"])
def test_bad_input_is_caught_before_the_kernels(backend, algo):
    layer = fc.nn.Conv2d(3, 2, 3, algo=algo)
    with pytest.raises(ValueError, match="channels"):
        layer(np.ones((1, 4, 8, 8)))
    with pytest.raises(ValueError, match="smaller than the kernel span"):
        layer(np.ones((1, 3, 1, 8)))
    with pytest.raises(TypeError, match="dtype"):
        layer(np.ones((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(TypeError):
        layer(np.ones((1, 3, 8, 8), dtype=np.int64))
    y = layer(np.ones((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.ones((1, 2, 5, 6)))
    with pytest.raises(TypeError, match="dtype"):
        layer.backward(np.ones_like(y, dtype=np.float32))


# ----------------------------------------------------------------------------- weight cache
@pytest.mark.parametrize("algo", ["winograd", "winograd_batched"])
def test_cached_filter_transform_is_refreshed_after_an_optimiser_step(backend, algo):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 10, 10))
    layer = fc.nn.Conv2d(3, 4, 3, padding=1, algo=algo)
    plain = fc.nn.Conv2d(3, 4, 3, padding=1, algo="im2col")
    opt = fc.optim.SGD(layer.parameters(), lr=0.5)
    y0 = layer(x)
    layer(x)
    assert layer._filter_cache.transforms == 1  # unchanged weights: transformed once
    layer.backward(np.ones_like(y0))
    opt.step()  # in-place update of weight.data
    y1 = layer(x)
    assert layer._filter_cache.transforms == 2
    plain.load_state_dict(layer.state_dict())
    assert error(y1, plain(x), np.float64) <= 1e-11 and error(y1, y0, np.float64) > 1e-3
    layer.weight.data[0, 0, 0, 0] += 1.0  # any other write is seen too
    assert error(layer(x), plain(x), np.float64) > 1e-3 and layer._filter_cache.transforms == 3


# ----------------------------------------------------------------------------- persistence
def _tune_one(shape=(1, 4, 10, 10)):
    layer = fc.nn.Conv2d(shape[1], 4, 3, padding=1, algo="auto")
    layer(np.ones(shape))
    return layer


def test_choices_are_stored_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path))
    _tune_one()
    path = tmp_path / "conv_algo.json"
    data = json.loads(path.read_text())
    assert data["format"] == "fastconv-conv-algo-1" and len(data["entries"]) == 1
    chosen = next(iter(data["entries"].values()))["algo"]
    conv_algo.clear_conv_algo_cache()
    _tune_one()
    (entry,) = conv_algo.tuned_choices().values()
    assert entry["algo"] == chosen and entry["source"].startswith("read from")


@pytest.mark.parametrize("corrupt", ["not json", "wrong format", "unknown algo", "inapplicable",
                                     "bad times"])
def test_a_wrong_choice_file_is_ignored(tmp_path, monkeypatch, corrupt):
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path))
    _tune_one()
    path = tmp_path / "conv_algo.json"
    data = json.loads(path.read_text())
    (key,) = data["entries"]
    if corrupt == "not json":
        path.write_text("{")
    elif corrupt == "wrong format":
        data["format"] = "something-else"
    elif corrupt == "unknown algo":
        data["entries"][key]["algo"] = "fft"
    elif corrupt == "inapplicable":  # a Winograd choice stored for a 5x5 layer
        k = json.loads(key)
        k[2][2:] = [5, 5]
        data["entries"] = {json.dumps(k, separators=(",", ":")): {"algo": "winograd_f4", "times_ms": {}}}
    elif corrupt == "bad times":
        data["entries"][key]["times_ms"] = {"im2col": "fast"}
    if corrupt != "not json":
        path.write_text(json.dumps(data))
    conv_algo.clear_conv_algo_cache()
    _tune_one()
    layer5 = fc.nn.Conv2d(4, 4, 5, padding=1, algo="auto")
    layer5(np.ones((1, 4, 10, 10)))
    sources = [e["source"] for e in conv_algo.tuned_choices().values()]
    assert not any(s.startswith("read from") for s in sources), sources
    assert all(e["algo"] in conv_algo.ALGOS for e in conv_algo.tuned_choices().values())


def test_grouped_convolutions_run_im2col(backend):
    with pytest.raises(ValueError, match="groups=1; this convolution has groups=2"):
        fc.nn.Conv2d(4, 4, 3, groups=2, algo="winograd_f2")
    layer = fc.nn.Conv2d(4, 4, 3, padding=1, groups=2, algo="auto")
    layer(np.ones((1, 4, 6, 6)))
    assert layer._recall().algo == "im2col"
    with fc.use_conv_algo("winograd"):
        layer.algo = None
        layer(np.ones((1, 4, 6, 6)))
        assert layer._recall().algo == "im2col"
