"""Where a training step's time goes: per layer and per kernel, fastconv against PyTorch.

``python -m bench.profile_step --case train_lfw --threads 2 [--backend cython] [--repeats 9]``

For one training-step case of the suite (``bench/cases.py``; ``--case`` is a substring of its
id) this times, in the same process, fastconv's and the PyTorch twin's forward and backward
of every layer of the model (plus loss and optimiser step), median ms over ``--repeats``
steps after 3 warm-ups. fastconv's layers are timed by wrapping each one's ``forward`` /
``backward``; torch's by module forward hooks and full backward hooks (the time between a
module's backward pre-hook and its hook). The kernel table splits fastconv's time further:
every call into the backend's compiled kernels (``fastconv.kernels.*``), the rest of a
layer being NumPy (GEMMs, elementwise work, copies) and Python.

Thread counts are pinned from ``--threads`` before NumPy is imported, as ``python -m bench``.
"""
import argparse
import collections
import statistics
import sys
import time

from . import _env


def _timed_layers(model, log):
    """Wrap the forward/backward of each child of a Sequential to append seconds to ``log``."""
    for i, layer in enumerate(model):
        name = f"{i:02d} {type(layer).__name__}"
        for phase in ("forward", "backward"):
            inner = getattr(layer, phase)

            def timed(x, inner=inner, key=(name, phase)):
                t0 = time.perf_counter()
                out = inner(x)
                log[key].append(time.perf_counter() - t0)
                return out
            setattr(layer, phase, timed)


def _timed_kernels(modules, log):
    """Wrap every public function of the kernel modules; returns a function undoing it."""
    undo = []
    for mod in modules:
        for name, fn in list(vars(mod).items()):
            if name.startswith("_") or not callable(fn) or isinstance(fn, type) or name in (
                    "set_num_threads", "get_num_threads", "set_grain_size", "get_grain_size"):
                continue

            def timed(*a, fn=fn, key=(mod.__name__.rsplit(".", 1)[-1], name), **kw):
                t0 = time.perf_counter()
                out = fn(*a, **kw)
                log[key].append(time.perf_counter() - t0)
                return out
            setattr(mod, name, timed)
            undo.append((mod, name, fn))
    return lambda: [setattr(m, n, f) for m, n, f in undo]


def _torch_hooks(model, log):
    starts = {}
    for i, layer in enumerate(model):
        name = f"{i:02d} {type(layer).__name__}"

        def pre_fwd(mod, inp, name=name):
            starts[(name, "forward")] = time.perf_counter()

        def post_fwd(mod, inp, out, name=name):
            log[(name, "forward")].append(time.perf_counter() - starts[(name, "forward")])

        def pre_bwd(mod, gout, name=name):
            starts[(name, "backward")] = time.perf_counter()

        def post_bwd(mod, gin, gout, name=name):
            log[(name, "backward")].append(time.perf_counter() - starts[(name, "backward")])
        layer.register_forward_pre_hook(pre_fwd)
        layer.register_forward_hook(post_fwd)
        layer.register_full_backward_pre_hook(pre_bwd)
        layer.register_full_backward_hook(post_bwd)


def _steps(runner, log, repeats, warmup=3):
    for _ in range(warmup):
        runner.forward()
        runner.backward()
    log.clear()
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.forward()
        t1 = time.perf_counter()
        runner.backward()
        t2 = time.perf_counter()
        log[("step", "forward")].append(t1 - t0)
        log[("step", "backward")].append(t2 - t1)


def _med_ms(log, key, repeats):
    """Median over steps of the per-step total (a key may be hit several times per step)."""
    samples = log.get(key, [])
    if not samples:
        return 0.0
    per_step = len(samples) // repeats or 1
    totals = [sum(samples[i * per_step:(i + 1) * per_step]) for i in range(len(samples) // per_step)]
    return 1e3 * statistics.median(totals)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.split("\n")[0])
    p.add_argument("--case", default="train_lfw", help="substring of a training-step case id")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="cython")
    p.add_argument("--algo", default="auto", help="convolution algorithm (as python -m bench --algo)")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    _env.pin_env(args.threads)
    _env.apply_limits(args.threads)
    import fastconv as fc
    from fastconv import _backend

    from . import cases

    (case,) = [c for c in cases.all_cases() if c.train and args.case in c.id][:1] or [None]
    if case is None:
        raise SystemExit(f"error: no training-step case matches {args.case!r}")
    fc.set_backend(args.backend)
    with fc.use_conv_algo(args.algo):
        fc_log, tr_log = collections.defaultdict(list), collections.defaultdict(list)
        runner = case.fc_runner()
        _timed_layers(runner.model, fc_log)
        kernel_mods = [_backend.backend_module(args.backend)]
        try:
            from fastconv.kernels import cython_winograd, numba_winograd  # noqa: F401
            kernel_mods.append(cython_winograd if args.backend == "cython" else numba_winograd)
        except ImportError:
            pass
        undo = _timed_kernels(kernel_mods, fc_log)
        try:
            _steps(runner, fc_log, args.repeats)
        finally:
            undo()
        trunner = case.torch_runner()
        _torch_hooks(trunner.model, tr_log)
        _steps(trunner, tr_log, args.repeats)

    r = args.repeats
    print(f"{case.title} [{case.shape}], {args.threads} thread(s), fastconv {args.backend} "
          f"(algo {args.algo}) vs torch; median ms of {r} steps\n")
    print("| layer | phase | fastconv | torch | ratio |")
    print("|---|---|---:|---:|---:|")
    layer_keys = [k for k in tr_log if k[0] != "step"]
    for key in sorted(set(layer_keys) | {k for k in fc_log if k[0][:2].isdigit()}):
        a, b = _med_ms(fc_log, key, r), _med_ms(tr_log, key, r)
        print(f"| {key[0]} | {key[1]} | {a:.2f} | {b:.2f} | {a / b if b else float('nan'):.2f} |")
    for phase in ("forward", "backward"):
        a, b = _med_ms(fc_log, ("step", phase), r), _med_ms(tr_log, ("step", phase), r)
        print(f"| whole step | {phase} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    print("\n| fastconv kernel | calls/step | ms/step |")
    print("|---|---:|---:|")
    for key in sorted(k for k in fc_log if not k[0][:2].isdigit() and k[0] != "step"):
        print(f"| {key[0]}.{key[1]} | {len(fc_log[key]) // r} | {_med_ms(fc_log, key, r):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
