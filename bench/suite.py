"""Run the cases for every contender (fastconv backends + PyTorch CPU) and derive the metrics."""
import gc
import time
import traceback

import numpy as np

import fastconv as fc

from . import timing

TORCH = "torch"


def contenders(requested=None, algos=None):
    """fastconv backends that load here (reference first, then compiled ones) plus ``torch``.

    With ``algos`` (convolution algorithms, see ``fastconv.conv_algo``) every backend becomes one
    contender per algorithm, named ``backend@algo``."""
    names = fc.available_backends()
    order = ["reference"] + [n for n in names if n != "reference"]
    order = [n for n in order if n in names] + [TORCH]
    if requested:
        unknown = [r for r in requested if r not in order]
        if unknown:
            raise SystemExit(f"contender(s) {unknown} not available; available: {order}")
        order = [n for n in order if n in requested]
    if algos:
        order = [f"{n}@{a}" for n in order if n != TORCH for a in algos] + [n for n in order if n == TORCH]
    return order


def split_contender(name, default_algo):
    """``"cython@winograd_f4"`` -> ("cython", "winograd_f4"); a plain backend gets ``default_algo``."""
    backend, _, algo = name.partition("@")
    return backend, algo or default_algo


def _algos_used(runner):
    """The algorithms the runner's Conv2d layers ran in their last forward, e.g. "winograd_f4 x3, im2col"."""
    module = getattr(runner, "module", None) or getattr(runner, "model", None)
    used = []
    for m in module.modules() if module is not None else ():
        cache = m.__dict__.get("_cache") if isinstance(m, fc.nn.Conv2d) else None
        if cache is not None:
            used.append(cache.algo)
    counts = {a: used.count(a) for a in dict.fromkeys(used)}
    return ", ".join(a if c == 1 else f"{a} x{c}" for a, c in counts.items()) or None


# ----------------------------------------------------------------------------- numba JIT
def _dispatchers(module):
    return {name: obj for name, obj in vars(module).items()
            if hasattr(obj, "stats") and hasattr(obj, "signatures") and hasattr(obj, "py_func")}


def _snapshot(dispatchers):
    return {name: (len(d.signatures), sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values()))
            for name, d in dispatchers.items()}


def _contract_calls(kernels, dtype):
    """One tiny call of every function of the kernel contract, in dependency order."""
    x = np.arange(60, dtype=dtype).reshape(1, 2, 5, 6)
    calls = []

    def add(name, fn):
        calls.append((name, fn))

    state = {}
    add("im2col2d", lambda: state.__setitem__("cols", kernels.im2col2d(x, 3, 3, 1, 1, 1, 1, 1, 1, 5, 6)))
    add("col2im2d", lambda: kernels.col2im2d(state["cols"], 2, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 5, 6))
    add("maxpool2d_forward", lambda: state.__setitem__("mp", kernels.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, 2, 3)))
    add("maxpool2d_backward", lambda: kernels.maxpool2d_backward(state["mp"][0], state["mp"][1], 5, 6))
    add("avgpool2d_forward", lambda: state.__setitem__("ap", kernels.avgpool2d_forward(x, 2, 2, 2, 2, 0, 0, 2, 3)))
    add("avgpool2d_backward", lambda: kernels.avgpool2d_backward(state["ap"], 5, 6, 2, 2, 2, 2, 0, 0))
    add("upsample2d_forward", lambda: state.__setitem__("up", kernels.upsample2d_forward(x, 2, 2)))
    add("upsample2d_backward", lambda: kernels.upsample2d_backward(state["up"], 2, 2))
    add("downsample2d_forward", lambda: state.__setitem__("dn", kernels.downsample2d_forward(x, 2, 2)))
    add("downsample2d_backward", lambda: kernels.downsample2d_backward(state["dn"], 5, 6, 2, 2))
    return calls


def numba_first_calls(dtypes=("float64", "float32")):
    """Time the first call of every Numba kernel (per dtype) before anything else runs it.

    Each record says where the machine code came from: ``cache`` (loaded from Numba's
    on-disk cache), ``compiled`` (JIT compiled now), ``loaded`` (already in this process),
    or ``error``. Returns [] when the numba backend does not load.
    """
    try:
        kernels = fc._backend.backend_module("numba")
    except ImportError:
        return []
    dispatchers = _dispatchers(kernels)
    records = []
    for dtype in dtypes:
        for name, call in _contract_calls(kernels, np.dtype(dtype)):
            before = _snapshot(dispatchers)
            t0 = time.perf_counter()
            try:
                call()
                error = None
            except Exception as exc:  # a kernel being rewritten must not stop the run
                error = f"{type(exc).__name__}: {exc}"
            ms = 1e3 * (time.perf_counter() - t0)
            after = _snapshot(dispatchers)
            hits = sum(after[k][1] - before[k][1] for k in after)
            misses = sum(after[k][2] - before[k][2] for k in after)
            new = [k for k in after if after[k][0] > before[k][0]]
            source = "error" if error else "compiled" if misses else "cache" if hits else "loaded"
            records.append({"kernel": name, "dtype": np.dtype(dtype).name, "ms": ms, "source": source,
                            "jitted": new, "error": error})
    return records


# ----------------------------------------------------------------------------- the run
def _measure(case, name, plan, algo="auto"):
    """Timings of one contender; fastconv ones also say which convolution algorithm ran
    ("auto" tunes in the warm-up call, outside the timings)."""
    if name == TORCH:
        runner = case.torch_runner()
        return timing.time_pair(runner, plan)
    backend, algo = split_contender(name, algo)
    with fc.use_backend(backend), fc.use_conv_algo(algo):
        runner = case.fc_runner()
        samples = timing.time_pair(runner, plan)
    samples["algo"] = _algos_used(runner)
    return samples


def run_case(case, names, plan, gemm, log=print, algo="auto"):
    macs, dtype = case.info()
    flops = 2.0 * macs if macs else None
    peak = gemm.get(dtype, {}).get("gflops")
    row = {"id": case.id, "group": case.group, "title": case.title, "shape": case.shape,
           "dtype": dtype, "train": case.train, "note": case.note, "macs": macs,
           "gflop_fwd": None if flops is None else flops / 1e9,
           "gflop_fwdbwd": None if flops is None else 3 * flops / 1e9,
           "gemm_peak_gflops": peak, "contenders": {}}
    for name in names:
        t0 = time.perf_counter()
        try:
            samples = _measure(case, name, plan, algo)
            rec = {"fwd_ms": timing.median_ms(samples["fwd"]),
                   "fwdbwd_ms": timing.median_ms(samples["fwdbwd"]),
                   "n": len(samples["fwd"]),
                   "fwd_samples_ms": [1e3 * s for s in samples["fwd"]],
                   "fwdbwd_samples_ms": [1e3 * s for s in samples["fwdbwd"] or []],
                   "algo": samples.get("algo"), "error": None}
        except Exception as exc:
            rec = {"fwd_ms": None, "fwdbwd_ms": None, "n": 0, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=4)}
        rec["wall_s"] = time.perf_counter() - t0
        for pass_, factor in (("fwd", 1), ("fwdbwd", 3)):
            ms = rec[f"{pass_}_ms"]
            gf = None if (flops is None or not ms) else factor * flops / (ms * 1e-3) / 1e9
            rec[f"{pass_}_gflops"] = gf
            rec[f"{pass_}_pct_peak"] = None if (gf is None or not peak) else 100.0 * gf / peak
        row["contenders"][name] = rec
        gc.collect()
        status = rec["error"] or (f"fwd {_fmt(rec['fwd_ms'])} ms, fwd+bwd {_fmt(rec['fwdbwd_ms'])} ms "
                                  f"(n={rec['n']})" + (f" [{rec['algo']}]" if rec.get("algo") else ""))
        log(f"  {case.id:<34} {name:<10} {status}")
    _ratios(row)
    return row


def _fmt(v):
    return "-" if v is None else f"{v:.3g}"


def _ratios(row):
    """time / torch time (lower is better) and reference time / backend time (speed-up)."""
    cs = row["contenders"]
    for pass_ in ("fwd", "fwdbwd"):
        torch_ms = cs.get(TORCH, {}).get(f"{pass_}_ms")
        ref_ms = cs.get("reference", {}).get(f"{pass_}_ms")
        for name, rec in cs.items():
            ms = rec.get(f"{pass_}_ms")
            rec[f"{pass_}_vs_torch"] = ms / torch_ms if (ms and torch_ms) else None
            rec[f"{pass_}_speedup_vs_reference"] = (ref_ms / ms if (ms and ref_ms and name != TORCH)
                                                    else None)


def run(cases, names, plan, gemm_n=2048, log=print, jit=True, algo="auto"):
    """The whole suite: GEMM peaks, Numba first calls (``jit``), then every case x contender.

    ``algo``: the convolution algorithm of contenders named without ``@algo``."""
    started = time.time()
    log(f"GEMM peak (NumPy matmul {gemm_n}x{gemm_n}) ...")
    gemm = {d: timing.gemm_rate(d, n=gemm_n) for d in ("float32", "float64")}
    for d, g in gemm.items():
        log(f"  {d}: {g['gflops']:.1f} GFLOP/s ({g['median_ms']:.1f} ms)")
    jit = numba_first_calls() if (jit and any(split_contender(n, "")[0] == "numba" for n in names)) else []
    if jit:
        total = sum(r["ms"] for r in jit)
        sources = sorted({r["source"] for r in jit})
        log(f"Numba first calls: {total:.0f} ms in all ({', '.join(sources)})")
    rows = []
    for case in cases:
        log(f"{case.group} | {case.title} [{case.shape}]")
        rows.append(run_case(case, names, plan, gemm, log=log, algo=algo))
    return {"gemm": gemm, "numba_first_calls": jit, "rows": rows, "contenders": names, "algo": algo,
            "conv_algo_report": fc.conv_algo_report(),
            "plan": plan.as_dict(), "started": started, "duration_s": time.time() - started}
