"""``fastconv bench`` / ``python -m bench``: fastconv backends against PyTorch CPU.

Thread counts are pinned from ``--threads`` *before* NumPy, Numba or PyTorch are imported
(everything heavy is imported inside :func:`main`, after the pinning).
"""
import argparse
import os
import sys

from . import _env

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")  # gitignored


def parse_args(argv):
    p = argparse.ArgumentParser(prog="fastconv bench", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="threads for every contender (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="max timed repeats per measurement "
                   "(default 5; 2 with --quick)")
    p.add_argument("--min-repeats", type=int, default=None, help="min timed repeats (default 1: a call slower than --budget is timed once after its warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up iterations (default 1)")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed calls after which a "
                   "measurement stops repeating (default 2; 0.3 with --quick)")
    p.add_argument("--quick", action="store_true", help="CI smoke run: small batches, few repeats (< 1 min)")
    p.add_argument("--cases", nargs="*", default=None, metavar="SUBSTR", help="only cases whose id contains one of these")
    p.add_argument("--contenders", nargs="*", default=None, metavar="NAME",
                   help="subset of reference/numba/cython/torch")
    p.add_argument("--algo", default="auto", help="convolution algorithm of the fastconv contenders: "
                   "im2col, winograd, winograd_f2, winograd_f4, winograd_batched_f4 or auto (default: auto, the fastest measured)")
    p.add_argument("--algos", action="store_true", help="one contender per backend and algorithm "
                   "(im2col, winograd_f2, winograd_f4, winograd_batched_f4, auto), and the \"auto\" choices with their timings")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"directory for bench.json / bench.md (default {DEFAULT_OUT})")
    p.add_argument("--list", action="store_true", help="list the case ids and exit")
    p.add_argument("--profile", action="store_true",
                   help="instead of the suite: break one conv2d forward+backward into stages "
                        "(see `python -m bench.profile_conv --help`; remaining options go there)")
    return p.parse_known_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = parse_args(argv)
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if args.list:
        from . import cases as cases_mod

        for c in cases_mod.select(cases_mod.all_cases(quick=args.quick), args.cases):
            print(f"{c.id:<36} {c.group} | {c.title} [{c.shape}]")
        return 0
    early = _env.pin_env(args.threads)  # before numpy / numba / torch are imported

    if args.profile:
        from . import profile_conv

        return profile_conv.main(rest + ["--threads", str(args.threads)] + (["--quick"] if args.quick else []))
    if rest:
        raise SystemExit(f"unrecognised arguments: {' '.join(rest)}")

    _env.apply_limits(args.threads)
    from fastconv import conv_algo as fc_conv_algo

    from . import cases as cases_mod
    from . import report, suite
    from .timing import Plan

    quick = args.quick
    plan = Plan(repeats=args.repeats or (2 if quick else 5), warmup=args.warmup,
                budget_s=args.budget if args.budget is not None else (0.3 if quick else 2.0),
                min_repeats=args.min_repeats or 1)
    cases = cases_mod.select(cases_mod.all_cases(quick=quick), args.cases)
    try:
        algo = fc_conv_algo._canonical(args.algo, "--algo")
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    names = suite.contenders(args.contenders, fc_conv_algo.ALGOS + ("auto",) if args.algos else None)
    meta = _env.describe(args.threads, early)
    meta["quick"] = quick
    meta["algos_report"] = args.algos
    meta["argv"] = argv
    print(f"fastconv bench: {len(cases)} case(s) x {', '.join(names)}; {args.threads} thread(s); "
          f"BLAS {meta['blas']}", flush=True)
    result = suite.run(cases, names, plan, gemm_n=1024 if quick else 2048,
                       log=lambda s: print(s, flush=True), algo=algo)
    meta["loadavg_end"] = _env._loadavg()
    paths, md = report.write(result, meta, args.out)
    print()
    print(md)
    print(f"wrote {paths['markdown']} and {paths['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
