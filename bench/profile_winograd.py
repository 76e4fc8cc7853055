"""Where the time of one Winograd conv2d forward+backward goes, stage by stage.

``python -m bench.profile_winograd [--m 4] [--threads 1] [--cin 64 --cout 64 --size 56]``.
Each stage of ``fastconv.conv_winograd`` is re-run on its own with the backend's kernels
(median of repeats): the filter transforms, the fused forward kernel (per block of tiles:
input transform, a*a GEMMs, output transform + bias), the fused weight-gradient kernel (per
block: transforms of x and dy, dU += dM V^T), the filter-gradient transform, db, and the input
gradient (the fused forward kernel on dy). ``GEMM floor`` times the same a*a GEMMs as one
batched ``np.matmul`` over all tiles (operands prepared beforehand): what the multiplies alone
cost. ``Python overhead`` is the whole ``fc.nn.Conv2d`` forward (resp. backward) minus the sum
of its stages (argument checks, the weight-change check, calls).
The im2col layer and PyTorch are timed on the same data for comparison. With ``--threads 1``
the clock is this process's CPU time (``time.process_time``), so other work on a shared
machine does not inflate the stages; with more threads it is wall time.
"""
import argparse
import statistics
import sys
import time

from . import _env


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.profile_winograd", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--m", type=int, default=4, choices=(2, 4), help="tile size F(m x m, 3 x 3)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--cin", type=int, default=64)
    p.add_argument("--cout", type=int, default=64)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", nargs="*", default=["cython", "numba"])
    return p.parse_args(argv)


CLOCK = time.perf_counter


def _ms(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        samples.append(CLOCK() - t0)
    return 1e3 * statistics.median(samples)


def profile(backend, x, layer_w, m, repeats):
    """{stage: ms} for one backend; stages in call order, then the layer totals."""
    import numpy as np

    import fastconv as fc
    from fastconv import conv_winograd as cw
    from fastconv import winograd as wino

    k = cw.winograd_module(backend)
    at, g, bt = wino.matrices(m, x.dtype)
    n, c, h, w = x.shape
    o = layer_w.shape[0]
    th, tw = wino.tile_grid(h, w, m)
    a_mat, gT = np.ascontiguousarray(at.T), np.ascontiguousarray(g.T)
    tb = cw.block_tiles(c, o, m, x.dtype.itemsize)
    tb_dw = cw.GRAD_BLOCK_FACTOR * tb
    u = k.winograd_filter_in(layer_w, g)
    u_dx = k.winograd_filter_in(np.ascontiguousarray(layer_w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)), g)
    bias = np.zeros(o, dtype=x.dtype)
    dy = np.random.default_rng(1).standard_normal((n, o, h, w)).astype(x.dtype)
    du = k.winograd_filter_grad(x, dy, bt, a_mat, 1, 1, tb_dw)
    v = wino.winograd_tiles_in(x, bt, m, 1, 1, th, tw)  # only for the GEMM floor
    st = {
        "fwd: filter transform (x2: forward and flipped)": _ms(lambda: (k.winograd_filter_in(layer_w, g),
                                                                       k.winograd_filter_in(layer_w, g)), repeats),
        f"fwd: fused kernel (tb={tb})": _ms(lambda: k.winograd_conv(x, u, bias, bt, at, 1, 1, tb), repeats),
        f"dW: fused kernel dU = Σ dM·Vᵀ (tb={tb_dw})": _ms(lambda: k.winograd_filter_grad(x, dy, bt, a_mat, 1, 1, tb_dw),
                                                          repeats),
        "dW: filter-gradient transform": _ms(lambda: k.winograd_filter_out(du, gT), repeats),
        "db = Σ dy": _ms(lambda: dy.sum(axis=(0, 2, 3)), repeats),
        f"dx: fused kernel on dy (tb={tb})": _ms(lambda: k.winograd_conv(dy, u_dx, None, bt, at, 1, 1, tb), repeats),
    }
    floor = _ms(lambda: np.matmul(u, v), repeats)
    with fc.use_backend(backend):
        layer = fc.nn.Conv2d(x.shape[1], layer_w.shape[0], 3, padding=1, bias=True, dtype=x.dtype,
                             algo=f"winograd_f{m}")
        layer.weight.data[...] = layer_w
        fwd = _ms(lambda: layer(x), repeats)  # the weights are unchanged: the filter cache hits
        bwd = _ms(lambda: layer.backward(dy), repeats)
        plain = fc.nn.Conv2d(x.shape[1], layer_w.shape[0], 3, padding=1, bias=True, dtype=x.dtype, algo="im2col")
        plain.weight.data[...] = layer_w
        i_fwd = _ms(lambda: plain(x), repeats)
        i_bwd = _ms(lambda: plain.backward(dy), repeats)
    st["fwd: Python overhead"] = fwd - sum(v for s, v in st.items() if s.startswith("fwd") and "filter" not in s)
    st["bwd: Python overhead"] = bwd - sum(v for s, v in st.items() if s.startswith(("dW", "dx", "db")))
    st["GEMM floor: the fwd's a*a GEMMs as one np.matmul"] = floor
    st["layer forward (filter cache hit)"] = fwd
    st["layer backward"] = bwd
    st["im2col layer forward"] = i_fwd
    st["im2col layer backward"] = i_bwd
    return st


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    global CLOCK
    _env.pin_env(args.threads)
    _env.apply_limits(args.threads)
    CLOCK = time.process_time if args.threads == 1 else time.perf_counter
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.cin, args.size, args.size)).astype(np.float32)
    w = (rng.standard_normal((args.cout, args.cin, 3, 3)) / np.sqrt(9 * args.cin)).astype(np.float32)
    results = {b: profile(b, x, w, args.m, args.repeats) for b in args.backends}
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    dyt = torch.from_numpy(rng.standard_normal((args.batch, args.cout, args.size, args.size)).astype(np.float32))
    t_fwd = _ms(lambda: torch.nn.functional.conv2d(xt, wt, padding=1), args.repeats)
    t_both = _ms(lambda: torch.nn.functional.conv2d(xt, wt, padding=1).backward(dyt), args.repeats)
    print(f"F({args.m}x{args.m}, 3x3), x {args.batch}x{args.cin}x{args.size}x{args.size} -> {args.cout} "
          f"channels, float32, {args.threads} thread(s), median of {args.repeats} (ms, "
          f"{'CPU' if args.threads == 1 else 'wall'} time)\n")
    print("| stage | " + " | ".join(args.backends) + " |")
    print("|---|" + "---:|" * len(args.backends))
    for stage in results[args.backends[0]]:
        print(f"| {stage} | " + " | ".join(f"{results[b][stage]:.2f}" for b in args.backends) + " |")
    print(f"| torch forward | {t_fwd:.2f} |\n| torch forward+backward | {t_both:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
