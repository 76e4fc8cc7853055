"""Per-layer time of one face-embedding batch: fastconv (plain and prepared runtime) vs torch CPU.

``python -m bench.face_profile --model iresnet18 --batch 64 [--threads 1] [--repeats 3]``:
random weights, eval mode, float32. Every leaf layer's forward is timed with process CPU time
(``time.process_time``: with one thread it counts the layer's own work and little of other
processes' load); the median over ``--repeats`` runs after a warm-up, per layer, in ms.
Rows are matched by the torch ``state_dict`` names the fastconv twins share; the prepared
runtime (``fastconv.face.inference``) folds BatchNorm away, so its rows carry the conv's name.
"""
import argparse
import statistics
import sys
import time

from . import _env

SIZES = {"iresnet_small": (64, 256), "iresnet18": (112, 512)}


def _leaves(named_modules, has_children):
    return [(name, m) for name, m in named_modules if name and not has_children(m)]


def _time_fastconv(net, x, repeats):
    """{leaf name: [ms per run]} and the total ms per run, for a fastconv module tree (a layer
    called several times per run, as in the chunked runtime, counts the sum)."""
    run = {}
    for name, module in _leaves(net.named_modules(), lambda m: len(m._modules) > 0):
        inner = module.forward

        def timed(v, inner=inner, name=name):
            t = time.process_time()
            y = inner(v)
            run[name] = run.get(name, 0.0) + 1e3 * (time.process_time() - t)
            return y
        object.__setattr__(module, "forward", timed)
    net(x)  # warm-up
    times, totals = {}, []
    for _ in range(repeats):
        run.clear()
        t = time.process_time()
        net(x)
        totals.append(1e3 * (time.process_time() - t))
        for name, ms in run.items():
            times.setdefault(name, []).append(ms)
    return times, totals


def _time_torch(model, x, repeats):
    import torch

    times, start = {}, {}
    for name, module in _leaves(model.named_modules(), lambda m: len(list(m.children())) > 0):
        module.register_forward_pre_hook(lambda m, a, name=name: start.__setitem__(name, time.process_time()))
        module.register_forward_hook(lambda m, a, y, name=name: times.setdefault(name, []).append(
            1e3 * (time.process_time() - start[name])))
    xt = torch.from_numpy(x)
    with torch.no_grad():
        model(xt)
        times.clear()
        totals = []
        for _ in range(repeats):
            t = time.process_time()
            model(xt)
            totals.append(1e3 * (time.process_time() - t))
    return times, totals


def _kind(name, module):
    """A coarse label: conv3x3 s1/s2, conv1x1, bn, prelu, linear, other."""
    k = getattr(module, "kernel_size", None)
    if k is not None:
        k = tuple(k) if not isinstance(k, int) else (k, k)
        s = module.stride if not isinstance(module.stride, int) else (module.stride,)
        return f"conv{k[0]}x{k[1]} s{tuple(s)[0]}"
    return type(module).__name__.lower().replace("batchnorm2d", "bn").replace("batchnorm1d", "bn")


def profile(name, batch, repeats, algo=None):
    import numpy as np
    import torch

    from fastconv.face.converter import convert
    from fastconv.face.inference import prepare
    from fastconv.face.models import get_model

    size, dim = SIZES[name]
    torch.manual_seed(0)
    model = get_model(name, dim, input_size=size).eval()
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    net = convert(model, np.float32)
    prepared = prepare(convert(model, np.float32), **({} if algo is None else {"algo": algo}))
    kinds = {n: _kind(n, m) for n, m in model.named_modules()}
    result = {}
    for who, (times, totals) in (("torch", _time_torch(model, x, repeats)),
                                 ("fastconv", _time_fastconv(net, x, repeats)),
                                 ("prepared", _time_fastconv(prepared, x, repeats))):
        result[who] = ({k: statistics.median(v[-repeats:]) for k, v in times.items()},
                       statistics.median(totals))
    return result, kinds


def report(result, kinds):
    names = list(dict.fromkeys(list(result["torch"][0]) + list(result["fastconv"][0])
                               + list(result["prepared"][0])))
    lines = ["| layer | kind | torch ms | fastconv ms | prepared ms |", "|---|---|---:|---:|---:|"]
    by_kind = {}
    for n in names:
        cells = [result[w][0].get(n) for w in ("torch", "fastconv", "prepared")]
        kind = kinds.get(n, "?")
        acc = by_kind.setdefault(kind, [0.0, 0.0, 0.0])
        for i, c in enumerate(cells):
            acc[i] += c or 0.0
        lines.append(f"| {n} | {kind} | " + " | ".join("—" if c is None else f"{c:.2f}" for c in cells) + " |")
    lines += ["", "| kind | torch ms | fastconv ms | prepared ms |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {a:.1f} | {b:.1f} | {c:.1f} |" for k, (a, b, c) in
              sorted(by_kind.items(), key=lambda kv: -kv[1][1])]
    lines.append("| **total (whole forward)** | " + " | ".join(
        f"{result[w][1]:.1f}" for w in ("torch", "fastconv", "prepared")) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.face_profile", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(SIZES), default="iresnet18")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--algo", default=None, help="conv algorithm for the prepared runtime (default: its own)")
    args = p.parse_args(argv)
    early = _env.pin_env(args.threads)
    _env.apply_limits(args.threads)
    info = _env.describe(args.threads, early)
    result, kinds = profile(args.model, args.batch, args.repeats, args.algo)
    print(f"{args.model} batch {args.batch}, float32, {args.threads} thread(s), process time, median of "
          f"{args.repeats}")
    print(report(result, kinds))
    from fastconv.face.inference import forward_choices

    print("\n| input (chunk, C, H, W) | weight | stride | backend | chosen | forward ms per algorithm |")
    print("|---|---|---|---|---|---|")
    for key, v in forward_choices().items():
        xs, ws, stride, _, _, backend = key
        times = ", ".join(f"{a} {t:.1f}" for a, t in v["times_ms"].items())
        print(f"| {'x'.join(map(str, xs))} | {'x'.join(map(str, ws))} | {stride[0]} | {backend} | "
              f"{v['algo']} | {times} |")
    print(f"load average {info['loadavg_start']} -> {_env._loadavg()}; {info['processor']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
