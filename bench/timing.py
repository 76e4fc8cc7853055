"""Timing: warm-up, then the median of repeats, within a time budget per measurement."""
import statistics
import time

import numpy as np


class Plan:
    """How hard to measure: ``warmup`` untimed calls, then between ``min_repeats`` and
    ``repeats`` timed ones, stopping early once ``budget_s`` seconds of timed calls are spent."""

    def __init__(self, repeats=5, warmup=1, budget_s=3.0, min_repeats=2):
        self.repeats = max(1, int(repeats))
        self.warmup = max(0, int(warmup))
        self.budget_s = float(budget_s)
        self.min_repeats = max(1, min(int(min_repeats), self.repeats))

    def as_dict(self):
        return {"repeats": self.repeats, "warmup": self.warmup, "budget_s": self.budget_s,
                "min_repeats": self.min_repeats}


def time_pair(runner, plan):
    """Time ``runner.forward()`` and ``runner.backward()`` in the same iterations.

    Each iteration runs ``runner.reset()`` (untimed), the forward (timed) and, when the
    runner has one, the backward (timed); the forward+backward sample of an iteration is the
    sum of the two. Returns ``{"fwd": [s, ...], "fwdbwd": [s, ...] or None}``.
    """
    has_bwd = getattr(runner, "backward", None) is not None
    for _ in range(plan.warmup):
        runner.reset()
        runner.forward()
        if has_bwd:
            runner.backward()
    fwd, both = [], []
    spent = 0.0
    while len(fwd) < plan.repeats and (len(fwd) < plan.min_repeats or spent < plan.budget_s):
        runner.reset()
        t0 = time.perf_counter()
        runner.forward()
        t1 = time.perf_counter()
        if has_bwd:
            runner.backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        if has_bwd:
            both.append(t2 - t0)
        spent += t2 - t0
    return {"fwd": fwd, "fwdbwd": both if has_bwd else None}


def median_ms(samples):
    return None if not samples else 1e3 * statistics.median(samples)


def gemm_rate(dtype, n=2048, repeats=5, warmup=1):
    """GFLOP/s of one large NumPy matmul (n x n @ n x n, 2n^3 flops), median of repeats."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    for _ in range(warmup):
        np.matmul(a, b, out=out)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        samples.append(time.perf_counter() - t0)
    med = statistics.median(samples)
    return {"dtype": np.dtype(dtype).name, "n": n, "median_ms": 1e3 * med,
            "gflops": 2.0 * n ** 3 / med / 1e9, "samples_ms": [1e3 * s for s in samples]}
