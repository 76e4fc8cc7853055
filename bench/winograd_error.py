"""Winograd's rounding error against torch (float64) by tile size, dtype and channel count.

``python -m bench.winograd_error [--channels 1 16 64 256 512]``: for each tile size and dtype,
the forward output, input gradient and weight gradient of ``fc.nn.Conv2d(C, C, 3, padding=1,
algo=...)`` on a batch of 2 at 12x12 (uniform-init weights, normal inputs, uniform dy) are
compared with torch's float64 result on the same values. The measure is the tests' one:
max|diff| / max(1, max|ref|). Prints a Markdown table (the worst of the three per cell).
"""
import argparse
import sys

import numpy as np


def measure(algo, c, dtype, n=2, size=12, seed=0):
    import torch

    import fastconv as fc

    rng = np.random.default_rng(seed)
    fc.manual_seed(seed)
    layer = fc.nn.Conv2d(c, c, 3, padding=1, dtype=dtype, algo=algo)
    x = rng.standard_normal((n, c, size, size)).astype(dtype)
    y = layer(x)
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    dx = layer.backward(dy)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    wt = torch.tensor(layer.weight.data.astype(np.float64), requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(layer.bias.data.astype(np.float64)), padding=1)
    yt.backward(torch.tensor(dy.astype(np.float64)))
    errs = []
    for got, ref in ((y, yt), (dx, xt.grad), (layer.weight.grad, wt.grad)):
        ref = ref.detach().numpy()
        errs.append(float(np.abs(got.astype(np.float64) - ref).max() / max(1.0, np.abs(ref).max())))
    return errs


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.winograd_error", description=__doc__.split("\n")[0])
    p.add_argument("--channels", type=int, nargs="*", default=[1, 16, 64, 256, 512])
    p.add_argument("--backend", default=None)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    import fastconv as fc

    if args.backend:
        fc.set_backend(args.backend)
    algos = list(fc.conv_algo.ALGOS)
    print(f"backend {fc.get_backend()}; cell = max over (y, dx, dW) of max|diff| / max(1, max|ref|)\n")
    print("| dtype | channels | " + " | ".join(algos) + " |")
    print("|---|---:|" + "---:|" * len(algos))
    for dtype in (np.float32, np.float64):
        for c in args.channels:
            cells = [f"{max(measure(a, c, dtype)):.2g}" for a in algos]
            print(f"| {np.dtype(dtype).name} | {c} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
