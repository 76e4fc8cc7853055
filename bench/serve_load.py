"""Bounded load test of ``fastconv face serve`` on loopback: requests/s and latency percentiles.

``python -m bench.serve_load [-c best.pt] [--requests N] [--out DIR]``

Starts the server as a child process on 127.0.0.1 (a free port; nothing else is contacted), sends a
fixed number of requests per scenario from C client threads (each its own keep-alive connection),
then stops the server. Scenarios:

* ``/verify`` at concurrency 1, 4 and 16 (two 250x250 JPEGs, ``detect=false``; plus one run with face
  detection on two LFW photos when LFW is present);
* ``/identify`` (top 5) at concurrency 4 against galleries of 1k and 100k synthetic faces (random unit
  vectors, 10 faces per subject, written to the gallery before the server starts).

Without ``-c`` the model is the ``cpu-small`` architecture (iresnet_small at the preset's width, D=256, 64 px) with
random weights: the work per request is that of a trained one. Every request must succeed (HTTP 200),
else the run exits with status 1. Writes ``serve_load.json`` and ``serve_load.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")  # gitignored


def random_checkpoint(path):
    """A ``cpu-small``-shaped checkpoint with random weights and a stored threshold (for timing only)."""
    import torch

    from fastconv.face.checkpoint import save_checkpoint
    from fastconv.face.config import load_config
    from fastconv.face.models import get_model
    from fastconv.face.train import model_kwargs

    cfg = load_config("cpu-small")
    torch.manual_seed(0)
    kw = model_kwargs(cfg)
    model = get_model(cfg["model"]["name"], embedding_size=cfg["model"]["embedding_size"], **kw)
    meta = {"model_name": cfg["model"]["name"], "model_kwargs": kw, "embedding_size": cfg["model"]["embedding_size"],
            "preprocess": {"size": cfg["data"]["size"], "crop": cfg["data"]["crop"]}, "threshold": 0.3}
    save_checkpoint(path, {"model": model.state_dict(), "meta": meta})
    return path


def synthetic_gallery(path, checkpoint, n_faces, per_subject=10, seed=0):
    """Write ``n_faces`` random unit embeddings (``per_subject`` per subject) for ``checkpoint``'s model."""
    import numpy as np

    from fastconv.face.serve.embedder import TorchEmbedder
    from fastconv.face.serve.gallery import Gallery

    emb = TorchEmbedder(checkpoint)
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n_faces, emb.embedding_size)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    g = Gallery(path, emb.model_id, emb.embedding_size)
    g.bulk_add([f"subject{i // per_subject:06d}" for i in range(n_faces)], E)
    g.close()


def jpeg(seed, size=250):
    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Server:
    """``fastconv face serve`` as a child process on 127.0.0.1; ``stop()`` ends it."""

    def __init__(self, checkpoint, gallery, workers, threads):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "fastconv.face", "serve", "-c", str(checkpoint), "--gallery", str(gallery),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers), "--threads", str(threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env.pop("FASTCONV_API_KEY", None)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._wait()

    def _wait(self, timeout=120):
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not come up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_load(url, route, make_request, n_requests, concurrency, warmup=4):
    """Send ``n_requests`` (after ``warmup`` untimed ones) from ``concurrency`` threads.

    ``make_request(i) -> dict`` of httpx ``post`` keyword arguments. -> {requests_per_s, p50_ms, p95_ms,
    p99_ms, mean_ms, failed, n}.
    """
    import httpx
    import numpy as np

    with httpx.Client(timeout=120) as c:
        for i in range(warmup):
            c.post(url + route, **make_request(i)).raise_for_status()
    lat, failed, lock = [], [], threading.Lock()
    counter = iter(range(n_requests))

    def worker():
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = c.post(url + route, **make_request(i))
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, exc
                dt = time.perf_counter() - t0
                with lock:
                    (lat if ok else failed).append(dt if ok else repr(r)[:200])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = 1000 * np.asarray(lat)
    return {"route": route, "concurrency": concurrency, "n": n_requests, "failed": len(failed),
            "failures": failed[:3], "wall_s": wall, "requests_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def _lfw_pair():
    from fastconv.paths import image_dir

    root = image_dir()
    pair = [root / "George_W_Bush" / "George_W_Bush_0001.jpg", root / "George_W_Bush" / "George_W_Bush_0002.jpg"]
    return [p.read_bytes() for p in pair] if all(p.is_file() for p in pair) else None


def markdown(results, machine) -> str:
    lines = [f"{machine}", "", "| route | gallery | detect | concurrency | requests | req/s | p50 ms | p95 ms | "
             "p99 ms | failed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| `{r['route']}` | {r.get('gallery', '-')} | {r['detect']} | {r['concurrency']} | {r['n']} | "
                     f"{r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['failed']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", "-c", default=None, help="model to serve (default: random cpu-small weights)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per scenario (default 200)")
    p.add_argument("--concurrency", default="1,4,16", help="client threads for /verify (default 1,4,16)")
    p.add_argument("--galleries", default="1000,100000", help="gallery sizes for /identify (default 1000,100000)")
    p.add_argument("--workers", type=int, default=2, help="server inference threads (default 2)")
    p.add_argument("--threads", type=int, default=2, help="server torch threads (default 2)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for serve_load.json/.md (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    if args.requests < 1:
        raise SystemExit("--requests must be >= 1")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    sizes = [int(n) for n in args.galleries.split(",") if n.strip()]

    from ._env import _cpu_model, _loadavg

    results = []
    with tempfile.TemporaryDirectory(prefix="fastconv-serve-load-") as tmp:
        tmp = pathlib.Path(tmp)
        ckpt = pathlib.Path(args.checkpoint) if args.checkpoint else random_checkpoint(tmp / "model.pt")
        a, b = jpeg(1), jpeg(2)
        plain = {"files": {"img1": ("a.jpg", a, "image/jpeg"), "img2": ("b.jpg", b, "image/jpeg")},
                 "data": {"detect": "false"}}
        srv = Server(ckpt, tmp / "empty.db", args.workers, args.threads)
        try:
            for c in levels:
                r = run_load(srv.url, "/api/v1/verify", lambda i: plain, args.requests, c)
                results.append({**r, "detect": "no"})
                print(f"verify c={c}: {r['requests_per_s']:.1f} req/s, p50 {r['p50_ms']:.0f} ms", flush=True)
            lfw = _lfw_pair()
            if lfw:
                det = {"files": {"img1": ("a.jpg", lfw[0], "image/jpeg"), "img2": ("b.jpg", lfw[1], "image/jpeg")},
                       "data": {"detect": "true"}}
                r = run_load(srv.url, "/api/v1/verify", lambda i: det, args.requests, 4)
                results.append({**r, "detect": "yes (LFW photos)"})
                print(f"verify+detect c=4: {r['requests_per_s']:.1f} req/s", flush=True)
        finally:
            srv.stop()
        for n in sizes:
            db = tmp / f"gallery-{n}.db"
            t0 = time.perf_counter()
            synthetic_gallery(db, ckpt, n)
            build_s = time.perf_counter() - t0
            srv = Server(ckpt, db, args.workers, args.threads)
            try:
                probe = {"files": {"img": ("a.jpg", a, "image/jpeg")}, "data": {"detect": "false", "top_k": "5"}}
                r = run_load(srv.url, "/api/v1/identify", lambda i: probe, args.requests, 4)
            finally:
                srv.stop()
            results.append({**r, "detect": "no", "gallery": f"{n:,}", "gallery_build_s": build_s})
            print(f"identify n={n}: {r['requests_per_s']:.1f} req/s, p50 {r['p50_ms']:.0f} ms", flush=True)
    machine = (f"{_cpu_model()}, {os.cpu_count()} cores; server --workers {args.workers} --threads {args.threads}; "
               f"load average {_loadavg()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    os.makedirs(args.out, exist_ok=True)
    from fastconv.atomic import write_json, write_text

    write_json(os.path.join(args.out, "serve_load.json"), {"machine": machine, "results": results}, indent=1)
    table = markdown(results, machine)
    write_text(os.path.join(args.out, "serve_load.md"), table)
    print(table, end="")
    failed = sum(r["failed"] for r in results)
    if failed:
        print(f"{failed} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
