"""Where the time of one conv2d forward+backward goes: im2col, GEMMs, col2im, Python overhead.

``python -m bench.profile_conv`` (or ``fastconv bench --profile``). Every stage of
``fastconv.functional.conv_forward`` / ``conv_backward`` is re-run on its own with the
backend's kernels (median of repeats); ``Python overhead`` is the median time of the whole
layer call (``fc.nn.Conv2d`` forward / backward) minus the sum of its stages, i.e. argument
checks, caching, reshapes and the calls themselves (noise can make it slightly negative).
Default shape: the ResNet-18 3x3 64->64 conv on 56x56, batch 32, float32.
"""
import argparse
import os
import sys

from . import _env

STAGES = (
    ("fwd", "im2col", "kernels.im2col2d(x)"),
    ("fwd", "GEMM y = W·cols", "np.matmul(w2, cols)"),
    ("fwd", "bias add", "y += b"),
    ("bwd", "GEMM dW = Σ dy·colsᵀ", "np.matmul(dy2, cols^T).sum(0)"),
    ("bwd", "db = Σ dy", "dy2.sum((0, 2))"),
    ("bwd", "GEMM dcols = Wᵀ·dy", "np.matmul(w2.T, dy2)"),
    ("bwd", "col2im", "kernels.col2im2d(dcols)"),
)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.profile_conv", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=None, help="default 32 (4 with --quick)")
    p.add_argument("--cin", type=int, default=64)
    p.add_argument("--cout", type=int, default=64)
    p.add_argument("--size", type=int, default=56, help="input height = width")
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--repeats", type=int, default=None, help="default 5 (2 with --quick)")
    p.add_argument("--backends", nargs="*", default=None)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison line")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return p.parse_args(argv)


def _median_ms(fn, repeats, warmup=1):
    import statistics
    import time

    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(samples)


def _interleaved(fns, repeats, warmup=1):
    """Median ms of each function, timed round-robin so that load swings hit all of them alike.

    The layer's backward reads the cache of the layer's last forward, which is why the layer
    forward is timed just before it in every round."""
    import statistics
    import time

    samples = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                samples[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in samples.items()}


def profile_backend(name, x, layer, repeats):
    """Median ms of every stage and of the whole layer forward / backward for one backend."""
    import numpy as np

    import fastconv as fc
    from fastconv._validate import conv_output_size

    kernels = fc._backend.backend_module(name)
    w = layer.weight.data
    b = layer.bias.data if layer.bias is not None else None
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    oh = conv_output_size(h, kh, sh, ph, dh, "h")
    ow = conv_output_size(wd, kw, sw, pw, dw, "w")
    geo = (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    w2 = w.reshape(o, c * kh * kw)
    cols = kernels.im2col2d(x, *geo)
    y = np.matmul(w2, cols)
    dy = np.random.default_rng(1).standard_normal((n, o, oh, ow)).astype(x.dtype)
    dy2 = dy.reshape(n, o, oh * ow)
    dcols = np.matmul(w2.T, dy2)

    def bias_add():  # in place, as functional.conv_forward does
        if b is not None:
            np.add(y, b[:, None], out=y)

    fns = {
        "im2col": lambda: kernels.im2col2d(x, *geo),
        "GEMM y = W·cols": lambda: np.matmul(w2, cols),
        "bias add": bias_add,
        "GEMM dW = Σ dy·colsᵀ": lambda: np.matmul(dy2, cols.transpose(0, 2, 1)).sum(axis=0),
        "db = Σ dy": lambda: dy2.sum(axis=(0, 2)),
        "GEMM dcols = Wᵀ·dy": lambda: np.matmul(w2.T, dy2),
        "col2im": lambda: kernels.col2im2d(dcols, c, h, wd, *geo),
    }
    with fc.use_backend(name):
        layer(x)  # warm the layer's cache so that backward has something to read
        fns["layer forward"] = lambda: layer(x)
        fns["layer backward"] = lambda: layer.backward(dy)
        times = _interleaved(fns, repeats)  # one round = every stage once, then the layer
    stages = {label: times[label] for _, label, _ in STAGES}
    layer_fwd, layer_bwd = times["layer forward"], times["layer backward"]
    fwd_sum = sum(stages[label] for p, label, _ in STAGES if p == "fwd")
    bwd_sum = sum(stages[label] for p, label, _ in STAGES if p == "bwd")
    return {"stages_ms": stages, "layer_fwd_ms": layer_fwd, "layer_bwd_ms": layer_bwd,
            "overhead_fwd_ms": layer_fwd - fwd_sum, "overhead_bwd_ms": layer_bwd - bwd_sum,
            "total_ms": layer_fwd + layer_bwd}


def torch_times(x, layer, repeats):
    import torch

    from .twins import torch_twin

    conv = torch_twin(layer)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    state = {}

    def fwd():
        state["y"] = conv(tx)

    def bwd():
        tx.grad = None
        conv.zero_grad(set_to_none=True)
        y = conv(tx)
        y.backward(torch.ones_like(y))

    f = _median_ms(fwd, repeats)
    fb = _median_ms(bwd, repeats)
    return {"fwd_ms": f, "fwdbwd_ms": fb}


def render(result):
    names = list(result["backends"])
    cfg = result["config"]
    gemm_flops = result["gemm_flops"]
    peak = result["gemm_peak_gflops"]
    lines = [
        f"## conv2d forward+backward breakdown: {cfg['batch']}x{cfg['cin']}x{cfg['size']}x{cfg['size']} -> "
        f"{cfg['cout']} ch, {cfg['kernel']}x{cfg['kernel']}/{cfg['stride']} p{cfg['padding']}, {cfg['dtype']}, "
        f"{cfg['threads']} thread(s)",
        "",
        f"The three GEMMs do {gemm_flops / 1e9:.2f} GFLOP; at this machine's {cfg['dtype']} GEMM peak "
        f"({peak:.1f} GFLOP/s, NumPy {result['gemm_n']}² matmul) they would take "
        f"{gemm_flops / peak / 1e6:.1f} ms.",
        "",
        "| stage | " + " | ".join(f"{n} ms (%)" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]

    def cell(n, ms):
        tot = result["backends"][n]["total_ms"]
        return f"{ms:.2f} ({100 * ms / tot:.0f}%)"

    for pass_, label, _ in STAGES:
        lines.append(f"| {pass_}: {label} | " + " | ".join(
            cell(n, result["backends"][n]["stages_ms"][label]) for n in names) + " |")
    for pass_ in ("fwd", "bwd"):
        lines.append(f"| {pass_}: Python overhead (layer − stages) | " + " | ".join(
            cell(n, result["backends"][n][f"overhead_{pass_}_ms"]) for n in names) + " |")
    lines.append("| **layer forward + backward** | " + " | ".join(
        f"**{result['backends'][n]['total_ms']:.2f}**" for n in names) + " |")
    summary = []
    for n in names:
        st = result["backends"][n]["stages_ms"]
        tot = result["backends"][n]["total_ms"]
        gemm = sum(v for k, v in st.items() if k.startswith("GEMM"))
        layout = st["im2col"] + st["col2im"]
        other = tot - gemm - layout
        summary.append(f"{n}: GEMMs {100 * gemm / tot:.0f}% ({gemm_flops / gemm / 1e6:.1f} GFLOP/s), "
                       f"im2col+col2im {100 * layout / tot:.0f}%, rest {100 * other / tot:.0f}%")
    lines += ["", "Shares: " + "; ".join(summary) + "."]
    if result.get("torch"):
        t = result["torch"]
        lines.append(f"PyTorch CPU, same layer: forward {t['fwd_ms']:.2f} ms, forward+backward "
                     f"{t['fwdbwd_ms']:.2f} ms.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    _env.pin_env(args.threads)
    _env.apply_limits(args.threads)
    import numpy as np

    import fastconv as fc
    from fastconv.atomic import write_json, write_text

    from .timing import gemm_rate

    batch = args.batch or (4 if args.quick else 32)
    repeats = args.repeats or (2 if args.quick else 5)
    dtype = np.dtype(args.dtype)
    names = args.backends or ["reference"] + [n for n in fc.available_backends() if n != "reference"]
    fc.manual_seed(0)
    layer = fc.nn.Conv2d(args.cin, args.cout, args.kernel, args.stride, args.padding, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((batch, args.cin, args.size, args.size)).astype(dtype)
    gemm_n = 1024 if args.quick else 2048
    peak = gemm_rate(dtype, n=gemm_n)["gflops"]
    oh = (args.size + 2 * args.padding - args.kernel) // args.stride + 1
    macs = batch * args.cout * oh * oh * args.cin * args.kernel ** 2
    result = {"config": {"batch": batch, "cin": args.cin, "cout": args.cout, "size": args.size,
                         "kernel": args.kernel, "stride": args.stride, "padding": args.padding,
                         "dtype": dtype.name, "threads": args.threads, "repeats": repeats},
              "gemm_flops": 3 * 2.0 * macs, "gemm_peak_gflops": peak, "gemm_n": gemm_n, "backends": {}}
    for name in names:
        print(f"profiling {name} ...", flush=True)
        result["backends"][name] = profile_backend(name, x, layer, repeats)
    if not args.no_torch:
        result["torch"] = torch_times(x, layer, repeats)
    md = render(result)
    write_json(os.path.join(args.out, "profile_conv.json"), result)
    write_text(os.path.join(args.out, "profile_conv.md"), md)
    print()
    print(md)
    print(f"wrote {os.path.join(args.out, 'profile_conv.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
