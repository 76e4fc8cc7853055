"""Does the grain size pay? Small calls with and without it, 1 and 2 threads, with and without
a competing process.

``python -m bench.grain [--backend cython] [--repeats 15]``: the LFW CNN training step of the
suite (batch 64, 1x32x32) and a small conv layer (4x16x16x16 -> 16), median ms of
``--repeats`` after 2 warm-ups, once with the default grain size and once with grain 0 (every
kernel parallel); "competitor" runs a busy-looping process on one core meanwhile. Each
configuration runs in a fresh process so the thread count is pinned before NumPy loads.
"""
import argparse
import json
import subprocess
import sys

_CHILD = r'''
import json, statistics, sys, time
threads, grain, backend, repeats = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
from fastconv.bench import _env
_env.pin_env(threads); _env.apply_limits(threads)
import numpy as np
import fastconv as fc
from fastconv.bench import cases
fc.set_backend(backend)
fc.set_num_threads(threads)
if grain != "default":
    fc.set_grain_size(int(grain))
out = {}
(train,) = [c for c in cases.all_cases() if c.id == "train_lfw_cnn"]
small = cases.Case("small", "", "", "", cases._layer(lambda: fc.nn.Conv2d(16, 16, 3, padding=1, dtype=np.float32),
                                                    (4, 16, 16, 16), np.float32))
for name, case in (("LFW CNN train step", train), ("conv 3x3 4x16x16x16", small)):
    r = case.fc_runner()
    for _ in range(2):
        r.reset(); r.forward(); r.backward()
    samples = []
    for _ in range(repeats):
        r.reset(); t0 = time.perf_counter(); r.forward(); r.backward(); samples.append(time.perf_counter() - t0)
    out[name] = 1e3 * statistics.median(samples)
print(json.dumps(out))
'''


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.grain", description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="cython")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rows = []
    for competitor in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
        try:
            for threads in (1, 2):
                for grain in ("default", "0"):
                    res = subprocess.run([sys.executable, "-c", _CHILD, str(threads), grain, args.backend,
                                          str(args.repeats)], capture_output=True, text=True, check=True)
                    rows.append((competitor, threads, grain, json.loads(res.stdout.strip().splitlines()[-1])))
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    names = list(rows[0][3])
    print(f"backend {args.backend}; median ms of {args.repeats}\n")
    print("| competing process | threads | grain | " + " | ".join(names) + " |")
    print("|---|---:|---|" + "---:|" * len(names))
    for competitor, threads, grain, res in rows:
        print(f"| {'yes' if competitor else 'no'} | {threads} | {grain} | "
              + " | ".join(f"{res[n]:.2f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
