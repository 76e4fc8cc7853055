"""Markdown and JSON reports of a suite run."""
import os
import time

from fastconv.atomic import write_json, write_text

from .suite import TORCH

PASSES = (("fwd", "fwd"), ("fwdbwd", "fwd+bwd"))


def _ms(v):
    if v is None:
        return "—"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _x(v):
    return "—" if v is None else f"{v:.2f}×"


def _gf(rec, pass_):
    gf, pct = rec.get(f"{pass_}_gflops"), rec.get(f"{pass_}_pct_peak")
    if gf is None:
        return "—"
    return f"{gf:.1f} ({pct:.0f}%)" if pct is not None else f"{gf:.1f}"


def _best_fc(row, pass_):
    best = None
    for name, rec in row["contenders"].items():
        ms = rec.get(f"{pass_}_ms")
        if name == TORCH or ms is None:
            continue
        if best is None or ms < row["contenders"][best][f"{pass_}_ms"]:
            best = name
    return best


def _algo_cell(cs, fcs):
    """The convolution algorithm(s) each fastconv contender ran, merged when they agree."""
    used = {n: cs[n].get("algo") for n in fcs if cs[n].get("algo")
            and ("@" not in n or n.endswith("@auto"))}  # a forced one ran what its name says
    if not used:
        return "—"
    if len(set(used.values())) == 1:
        return next(iter(used.values()))
    return "; ".join(f"{n}: {a}" for n, a in used.items())


def table(rows, names):
    """Markdown tables, one per group."""
    fcs = [n for n in names if n != TORCH]
    compiled = [n for n in fcs if n != "reference"]
    header = (["case", "shape", "pass", "algo", "GFLOP"] + [f"{n} ms" for n in fcs]
              + ([f"{TORCH} ms"] if TORCH in names else [])
              + ([f"{n} ÷ torch" for n in fcs] if TORCH in names else [])
              + ([f"{n} speed-up vs ref" for n in compiled] if "reference" in fcs else [])
              + ["best fastconv GFLOP/s (% GEMM peak)"]
              + (["torch GFLOP/s (% GEMM peak)"] if TORCH in names else [])
              + ["n"])
    out, group = [], None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            out += ["", f"### {group}", "", "| " + " | ".join(header) + " |",
                    "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|"]
        cs = row["contenders"]
        for pass_, label in PASSES:
            if pass_ == "fwdbwd" and all(cs[n].get("fwdbwd_ms") is None and not cs[n].get("error")
                                         for n in names):
                continue
            gflop = row[f"gflop_{pass_}"]
            cells = [row["title"] if pass_ == "fwd" else "", row["shape"] if pass_ == "fwd" else "",
                     ("step" if pass_ == "fwdbwd" else "fwd+loss") if row["train"] else label,
                     _algo_cell(cs, fcs) if pass_ == "fwd" else "",
                     "—" if gflop is None else f"{gflop:.3g}"]
            cells += ["error" if cs[n].get("error") else _ms(cs[n].get(f"{pass_}_ms")) for n in fcs]
            if TORCH in names:
                cells.append("error" if cs[TORCH].get("error") else _ms(cs[TORCH].get(f"{pass_}_ms")))
                cells += [_x(cs[n].get(f"{pass_}_vs_torch")) for n in fcs]
            if "reference" in fcs:
                cells += [_x(cs[n].get(f"{pass_}_speedup_vs_reference")) for n in compiled]
            best = _best_fc(row, pass_)
            cells.append("—" if best is None or row[f"gflop_{pass_}"] is None
                         else f"{_gf(cs[best], pass_)} {best}")
            if TORCH in names:
                cells.append(_gf(cs[TORCH], pass_))
            counts = [cs[n]["n"] for n in names if not cs[n].get("error")]
            cells.append("—" if not counts else f"{min(counts)}" if min(counts) == max(counts)
                         else f"{min(counts)}–{max(counts)}")
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out).strip("\n")


def _jit_table(records):
    if not records:
        return []
    kernels, by = [], {}
    for r in records:
        if r["kernel"] not in kernels:
            kernels.append(r["kernel"])
        by[(r["kernel"], r["dtype"])] = r
    dtypes = sorted({r["dtype"] for r in records}, reverse=True)
    lines = ["| kernel | " + " | ".join(f"{d} first call ms (source)" for d in dtypes) + " |",
             "|---|" + "---:|" * len(dtypes)]
    for k in kernels:
        cells = []
        for d in dtypes:
            r = by.get((k, d))
            cells.append("—" if r is None else f"{r['ms']:.0f} ({r['source']})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    total = sum(r["ms"] for r in records)
    lines.append(f"\nTotal first-call time of the Numba kernels: {total / 1e3:.2f} s "
                 "(outside every timing above).")
    return lines


def markdown(result, meta):
    names = result["contenders"]
    plan = result["plan"]
    gemm = result["gemm"]
    lines = [
        "# fastconv benchmark" + (" (--quick)" if meta.get("quick") else ""),
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M', time.localtime(result['started']))}; "
        f"suite wall time {result['duration_s']:.0f} s",
        f"- machine: {meta['processor']}, {meta['cpu_count']} CPUs, {meta['platform']}; load average "
        f"(1/5/15 min) at start {meta.get('loadavg_start')}, at end {meta.get('loadavg_end')}",
        f"- threads: {meta['threads']} for every contender (OMP/OpenBLAS/MKL/Numba env vars"
        f"{' set before importing NumPy/Numba/torch' if meta['env_set_before_imports'] else ' (set after ' + ', '.join(meta['imported_before_pinning']) + ' was imported; runtime limits applied)'}"
        f", threadpoolctl, `torch.set_num_threads({meta['torch_threads']})`)",
        f"- BLAS (threadpoolctl): {meta['blas']}; OPENBLAS_CORETYPE={meta['env'].get('OPENBLAS_CORETYPE')}; "
        f"torch CPU capability {meta.get('torch_cpu_capability')} (torch may use wider SIMD than NumPy's "
        "BLAS, so its % of the NumPy GEMM peak can exceed 100%)",
        f"- GEMM peak, NumPy matmul {gemm['float32']['n']}²: SGEMM {gemm['float32']['gflops']:.1f} GFLOP/s, "
        f"DGEMM {gemm['float64']['gflops']:.1f} GFLOP/s (median of {len(gemm['float32']['samples_ms'])})",
        f"- versions: Python {meta['python']}, NumPy {meta['numpy']}, torch {meta['torch']}, "
        f"Numba {meta.get('numba')}, fastconv {meta['fastconv']}",
        f"- timing: {plan['warmup']} warm-up call(s), then the median of {plan['min_repeats']}–{plan['repeats']} "
        f"repeats (stopping after {plan['budget_s']:g} s of timed calls); imports and JIT compilation are "
        "outside the timings",
        "",
        "Columns: `X ms` = median milliseconds; `X ÷ torch` = X's time / PyTorch's time (lower is "
        "better, 1.00× = parity); `speed-up vs ref` = reference time / backend time; GFLOP/s counts "
        "2·MACs of the convolutions and linear layers for the forward and 3× that for forward+backward; "
        "% GEMM peak is against the SGEMM (float32 cases) or DGEMM (float64 cases) rate above. "
        "`n` = timed repeats per contender (after the warm-up). `fwd+bwd` rows time the forward and the backward of the same iteration; `step` rows are a "
        "full training step (zero_grad, forward, cross-entropy, backward, SGD momentum 0.9).",
        "PyTorch runs with autograd on in the forward (like fastconv's forward, which keeps what its "
        "backward needs) and computes the input gradient in the backward. Resampling twins in torch: "
        "Downsample2d = `x[..., ::2, ::2].contiguous()`, Upsample2d = `new_zeros` + "
        "`y[..., ::2, ::2] = x` (autograd gives the backwards).",
        f"`algo` = the convolution algorithm the fastconv contenders ran (`{result.get('algo', 'im2col')}` "
        "unless a contender is named `backend@algo`; \"auto\" measures every applicable one in the warm-up "
        "call and keeps the fastest). GFLOP/s is *effective*: direct-convolution FLOPs / time, so "
        "Winograd, which does fewer multiplies, can exceed the SGEMM rate (% GEMM peak above 100%).",
        "ResNet-18 rows: bias-free convolutions at the feature-map sizes the issue names (56², 28², "
        "14²); the stem conv takes the 3x112x112 input and the stem max pool its 64x56x56 output.",
        "",
        table(result["rows"], names),
    ]
    notes = [f"- {r['title']}: {r['note']}" for r in result["rows"] if r.get("note")]
    if notes:
        lines += ["", "Case notes:", ""] + notes
    errors = [(r["id"], n, c["error"]) for r in result["rows"] for n, c in r["contenders"].items()
              if c.get("error")]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {cid} / {n}: {e}" for cid, n, e in errors]
    if result.get("conv_algo_report") and meta.get("algos_report"):
        lines += ["", "### Convolution algorithm choices (\"auto\")", "", result["conv_algo_report"]]
    jit = _jit_table(result["numba_first_calls"])
    if jit:
        lines += ["", "### Numba first calls (JIT compile or cache load)", ""] + jit
    return "\n".join(lines) + "\n"


def write(result, meta, out_dir):
    """Write ``bench.json`` and ``bench.md`` (plus timestamped copies) into ``out_dir``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result["started"]))
    md = markdown(result, meta)
    payload = {"meta": meta, **result}
    paths = {}
    for base in ("bench", f"bench-{stamp}"):
        jp, mp = os.path.join(out_dir, base + ".json"), os.path.join(out_dir, base + ".md")
        write_json(jp, payload, default=str)
        write_text(mp, md)
        paths.setdefault("json", jp)
        paths.setdefault("markdown", mp)
    return paths, md
