"""Recall and speed of the optional faiss IVF index against exact search on synthetic galleries.

``python -m bench.ann_recall [--faces 1000000] [--dim 256] [--queries 500] [--nprobe 8,16,32,64]``

Gallery: ``faces / per_subject`` identities, each a random unit centre; a face is its centre plus
Gaussian noise (``--noise`` per dimension, 0.064 at D = 256 gives a cosine of ~0.7 between a face
and its centre), renormalised. ``--noise 0`` is not allowed; ``--uniform`` uses independent random
unit vectors instead (no structure: the hardest case for any index). Queries are fresh faces of random
identities. For each nprobe: recall@10 = share of the exact top-10 faces that the index's
candidates (``max(100, 10 k)``, as :meth:`Gallery.search` asks for), ranked exactly, also put in their
top 10; top-1 agreement; and the median latency of one query, exact (one (N, D) @ (D,) product)
and approximate. Writes ``ann_recall.json`` / ``.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")  # gitignored


def synthetic(n, dim, per_subject, noise, uniform, seed, chunk=100_000):
    """-> (E float32 (n, d) unit rows, subject of each row int64 (n,))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_sub = -(-n // per_subject)
    centres = rng.standard_normal((n_sub, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    subject = np.arange(n) // per_subject
    E = np.empty((n, dim), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x = rng.standard_normal((b - a, dim), dtype=np.float32)
        E[a:b] = x if uniform else centres[subject[a:b]] + noise * x
        E[a:b] /= np.linalg.norm(E[a:b], axis=1, keepdims=True)
    return E, subject, centres


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.ann_recall", description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256, help="embedding size (default 256, cpu-small's)")
    p.add_argument("--per-subject", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.064)
    p.add_argument("--uniform", action="store_true", help="unstructured random unit vectors")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--nprobe", default="8,16,32,64")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.faces < 1000 or args.queries < 1 or args.noise <= 0 or args.dim < 2:
        raise SystemExit("need --faces >= 1000, --queries >= 1, --noise > 0, --dim >= 2")
    from ._env import pin_env

    pin_env(args.threads)
    import faiss
    import numpy as np
    from threadpoolctl import threadpool_limits

    from fastconv.atomic import write_json, write_text
    from fastconv.face.serve.ann import IVFIndex

    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)
    k = 10
    t0 = time.perf_counter()
    E, subject, centres = synthetic(args.faces, args.dim, args.per_subject, args.noise, args.uniform, seed=0)
    rng = np.random.default_rng(1)
    qs = rng.integers(0, len(centres), args.queries)
    Q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    Q = Q if args.uniform else centres[qs] + args.noise * Q
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    gen_s = time.perf_counter() - t0

    exact_top, exact_ms = [], []
    for q in Q:
        t = time.perf_counter()
        s = E @ q
        top = np.argpartition(-s, k)[:k]
        exact_top.append(top[np.argsort(-s[top])])
        exact_ms.append(1000 * (time.perf_counter() - t))
    ids = np.arange(len(E), dtype=np.int64)
    t0 = time.perf_counter()
    index = IVFIndex(args.dim, nprobe=1)
    index.build(E, ids)
    build_s = time.perf_counter() - t0
    rows = []
    n_cand = max(100, 10 * k)
    for nprobe in [int(x) for x in args.nprobe.split(",") if x.strip()]:
        index._index.nprobe = nprobe
        hit, top1, ms = 0, 0, []
        for q, truth in zip(Q, exact_top):
            t = time.perf_counter()
            _, cand = index.search(q[None], n_cand)
            cand = cand[0][cand[0] >= 0]
            s = E[cand] @ q
            mine = cand[np.argsort(-s)[:k]]
            ms.append(1000 * (time.perf_counter() - t))
            hit += len(set(mine.tolist()) & set(truth.tolist()))
            top1 += int(len(mine) and mine[0] == truth[0])
        rows.append({"nprobe": nprobe, "nlist": index.nlist, "recall_at_10": hit / (k * len(Q)),
                     "top1_agreement": top1 / len(Q), "median_ms": float(np.median(ms)),
                     "scanned_fraction": nprobe / index.nlist})
        print(f"nprobe {nprobe:3d}: recall@10 {rows[-1]['recall_at_10']:.4f}, top-1 {rows[-1]['top1_agreement']:.4f}, "
              f"{rows[-1]['median_ms']:.2f} ms/query", flush=True)
    from ._env import _cpu_model, _loadavg

    data = "uniform random unit vectors" if args.uniform else (
        f"{len(centres):,} identities x {args.per_subject} faces, noise {args.noise}/dim")
    report = {"faces": args.faces, "dim": args.dim, "data": data, "queries": args.queries, "threads": args.threads,
              "generate_s": gen_s, "build_s": build_s, "exact_median_ms": float(np.median(exact_ms)), "rows": rows,
              "machine": f"{_cpu_model()}, {os.cpu_count()} cores, {args.threads} threads, faiss {faiss.__version__}; "
                         f"load average {_loadavg()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"}
    lines = [report["machine"], "",
             f"{args.faces:,} faces, D = {args.dim}, {data}; {args.queries} queries; build (k-means + add) "
             f"{build_s:.0f} s; exact search {report['exact_median_ms']:.1f} ms/query", "",
             "| nprobe / nlist | scanned | recall@10 | top-1 agrees | ms/query |", "|---|---|---|---|---|"]
    lines += [f"| {r['nprobe']} / {r['nlist']} | {100 * r['scanned_fraction']:.1f} % | {r['recall_at_10']:.4f} | "
              f"{r['top1_agreement']:.4f} | {r['median_ms']:.2f} |" for r in rows]
    os.makedirs(args.out, exist_ok=True)
    name = "ann_recall_uniform" if args.uniform else "ann_recall"
    write_json(os.path.join(args.out, name + ".json"), report)
    write_text(os.path.join(args.out, name + ".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
