"""Face-embedding throughput: fastconv's engine (each backend) vs torch CPU vs onnxruntime.

``python -m bench.face_embed --threads 1 [--quick] [--plain] [--clock wall|process] [--out DIR]``:
for ``iresnet_small`` at 64 px (256-d) and IResNet-18 at 112 px (512-d), random weights, eval mode,
float32, one forward pass (no flip TTA) at batch 1 and 64; median of repeats after a warm-up
(which also runs the runtime's per-layer algorithm timing), images/s. "fastconv <backend>" is the
network as the runtime runs it (``fastconv.face.inference.prepare``: BatchNorm folded, no caches,
chunked, measured algorithms); ``--plain`` adds the converted engine model as it trains
("fastconv <backend> plain"). ``--clock process`` times process CPU time instead of wall time
(with one thread: less sensitive to other processes on a shared machine). The ONNX model is
written by ``fastconv.face.export.export_onnx``, the function behind ``fastconv face export-onnx``.
First-call latency is measured separately, in fresh processes: import, load ``model.npz`` and embed
one image (Numba loads its compiled kernels from its on-disk cache here).
Thread counts are pinned before NumPy, Numba, torch and onnxruntime load.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from . import _env

MODELS = [("iresnet_small", 64, 256, {}), ("iresnet18", 112, 512, {})]
BATCHES = (1, 64)

_FIRST_CALL = """
import time, sys
t0 = time.perf_counter()
import numpy as np
import fastconv
from fastconv.face.runtime import load_model
m = load_model(sys.argv[1], backend=sys.argv[2])
t1 = time.perf_counter()
x = np.zeros((1, 3, m.preprocess.size, m.preprocess.size), np.uint8)
m.embed(x, flip=False)
t2 = time.perf_counter()
m.embed(x, flip=False)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def _median_s(fn, repeats, budget, clock=time.perf_counter):
    import statistics

    fn()  # warm-up
    samples, spent = [], 0.0
    while len(samples) < repeats and (len(samples) < 2 or spent < budget):
        t = clock()
        fn()
        samples.append(clock() - t)
        spent += samples[-1]
    return statistics.median(samples), len(samples)


def measure(threads, quick, workdir, plain=False, clock=time.perf_counter):
    import numpy as np
    import onnxruntime as ort
    import torch

    import fastconv as fc
    from fastconv.face.converter import convert, torch_state
    from fastconv.face.export import export_onnx
    from fastconv.face.inference import prepare
    from fastconv.face.model_file import describe_model, save_model_file
    from fastconv.face.models import get_model

    repeats, budget = (2, 0.5) if quick else (5, 3.0)
    rows, first = [], []
    for name, size, dim, kw in MODELS[:1] if quick else MODELS:
        torch.manual_seed(0)
        model = get_model(name, dim, input_size=size, **kw).eval()
        net = convert(model, np.float32)
        prepared = prepare(net)
        onnx_path = os.path.join(workdir, f"{name}.onnx")
        export_onnx(model, onnx_path, size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        for batch in BATCHES:
            x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
            xt = torch.from_numpy(x)
            contenders = {}
            for backend in fc.available_backends():
                for label, engine in (("", prepared), (" plain", net)) if plain else (("", prepared),):
                    def run(b=backend, engine=engine):
                        with fc.use_backend(b), fc.no_grad():
                            engine(x)
                    contenders[f"fastconv {backend}{label}"] = run

            def run_torch():
                with torch.no_grad():
                    model(xt)
            contenders["torch CPU"] = run_torch
            contenders["onnxruntime"] = lambda: sess.run(["embedding"], {"input": x})
            for who, fn in contenders.items():
                s, n = _median_s(fn, repeats, budget, clock)
                rows.append({"model": name, "size": size, "batch": batch, "engine": who, "median_s": s,
                             "images_per_s": batch / s, "repeats": n})
                print(f"{name}@{size} batch {batch:>2} {who:<20} {batch / s:9.1f} img/s ({1e3 * s:.1f} ms)",
                      flush=True)
        # first call in a fresh process, per backend
        npz = os.path.join(workdir, f"{name}.npz")
        save_model_file(npz, torch_state(model), describe_model(name, {"input_size": size, **kw}, dim,
                                                                {"size": size, "crop": 150}, None, "none"))
        env = dict(os.environ, **{v: str(threads) for v in _env.THREAD_VARS})
        for backend in fc.available_backends():
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL, npz, backend], capture_output=True, text=True,
                                 env=env, check=True).stdout.split()
            load, first_call, second = map(float, out)
            first.append({"model": name, "backend": backend, "import_and_load_s": load, "first_call_s": first_call,
                          "second_call_s": second})
            print(f"{name} {backend}: import+load {load:.2f} s, first call {first_call:.3f} s, "
                  f"second {second:.3f} s", flush=True)
    return rows, first


def markdown(rows, first):
    lines = ["| model | batch | " + " | ".join(sorted({r["engine"] for r in rows})) + " |"]
    engines = sorted({r["engine"] for r in rows})
    lines.append("|---|---:|" + "---:|" * len(engines))
    for (model, size, batch) in dict.fromkeys((r["model"], r["size"], r["batch"]) for r in rows):
        cell = {r["engine"]: r["images_per_s"] for r in rows if (r["model"], r["size"], r["batch"]) == (model, size, batch)}
        lines.append(f"| {model} @ {size} px | {batch} | " + " | ".join(f"{cell[e]:.1f}" for e in engines) + " |")
    ours = [e for e in engines if e.startswith("fastconv")]
    lines += ["", "time ratio (fastconv time / other engine's time; below 1: fastconv is faster)", "",
              "| model | batch | " + " | ".join(f"{e} / torch | {e} / onnxruntime" for e in ours) + " |",
              "|---|---:|" + "---:|" * (2 * len(ours))]
    for (model, size, batch) in dict.fromkeys((r["model"], r["size"], r["batch"]) for r in rows):
        cell = {r["engine"]: r["images_per_s"] for r in rows
                if (r["model"], r["size"], r["batch"]) == (model, size, batch)}
        lines.append(f"| {model} @ {size} px | {batch} | " + " | ".join(
            f"{cell['torch CPU'] / cell[e]:.2f} | {cell['onnxruntime'] / cell[e]:.2f}" for e in ours) + " |")
    lines += ["", "| model | backend | import + load model.npz (s) | first embed (s) | second embed (s) |",
              "|---|---|---:|---:|---:|"]
    lines += [f"| {f['model']} | {f['backend']} | {f['import_and_load_s']:.2f} | {f['first_call_s']:.3f} | "
              f"{f['second_call_s']:.3f} |" for f in first]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.face_embed", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    p.add_argument("--quick", action="store_true", help="iresnet_small only, 2 repeats")
    p.add_argument("--plain", action="store_true", help="also time the unprepared engine model")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="wall time (default) or process CPU time")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    early = _env.pin_env(args.threads)
    _env.apply_limits(args.threads)
    info = _env.describe(args.threads, early)
    with tempfile.TemporaryDirectory() as tmp:
        rows, first = measure(args.threads, args.quick, tmp, args.plain,
                              time.process_time if args.clock == "process" else time.perf_counter)
    info["loadavg_end"] = _env._loadavg()
    from fastconv.atomic import write_json, write_text

    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "face_embed.json"), {"machine": info, "clock": args.clock, "rows": rows,
                                                           "first_call": first})
    table = markdown(rows, first)
    write_text(os.path.join(args.out, "face_embed.md"), table)
    print(table)
    print(f"load average {info['loadavg_start']} -> {info['loadavg_end']}; {info['processor']}; "
          f"{args.threads} thread(s); {args.clock} clock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
