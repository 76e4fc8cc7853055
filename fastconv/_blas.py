"""The BLAS the compiled Winograd kernels call from inside their own parallel loops, and the
thread team that runs stacked GEMMs on single-threaded BLAS (:func:`team_matmul`).

Both compiled backends call scipy's ``sgemm``/``dgemm`` (``scipy.linalg.cython_blas``; Numba's
``np.dot`` goes through the same functions) once per block of tiles, from every worker thread
at once. That BLAS must then run on one thread, or each worker would start its own BLAS
threads (oversubscription): :func:`single_threaded` limits every BLAS that threadpoolctl sees
to one thread for the duration of a kernel call and restores the previous counts after.
"""
import contextlib

import numpy as np

_controller = None
probe = None  # tests: a callable run inside the limit (sees the BLAS thread counts a kernel sees)
TEAM_MIN_FLOPS = 1 << 24  # team_matmul: below this many multiply-adds, one plain np.matmul
_team = None  # (threads, ThreadPoolExecutor) of team_matmul


def cython_blas_capi():
    """``scipy.linalg.cython_blas.__pyx_capi__``: the PyCapsules of scipy's BLAS functions."""
    from scipy.linalg import cython_blas

    return cython_blas.__pyx_capi__


@contextlib.contextmanager
def single_threaded():
    """Every BLAS loaded in the process (scipy's, NumPy's) on one thread inside the block."""
    global _controller
    if _controller is None:
        import scipy.linalg  # noqa: F401  (loads scipy's BLAS before threadpoolctl looks)
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        if probe is not None:
            probe()
        yield


def team_matmul(a, b, out, threads):
    """``out[i] = a[i] @ b[i]`` (or ``a @ b[i]`` for a 2-D a) over the leading axis of b:
    a (P, I, K) or (I, K), b (P, K, J), out (P, I, J); returns out.

    With ``threads > 1`` (and at least ``TEAM_MIN_FLOPS`` multiply-adds) the leading axis is cut
    into ``threads`` contiguous ranges run by a team of that many Python threads (``np.matmul``
    releases the GIL), every BLAS on one thread for the call: whole GEMMs per thread, no BLAS
    threads (OpenBLAS's own collapse when the machine is loaded; README, Threads). Otherwise one
    ``np.matmul`` on the process's BLAS threads."""
    global _team
    p = b.shape[0]
    nw = min(int(threads), p)
    if nw <= 1 or p * a.shape[-2] * a.shape[-1] * b.shape[-1] < TEAM_MIN_FLOPS:
        return np.matmul(a, b, out=out)
    if _team is None or _team[0] != nw:
        from concurrent.futures import ThreadPoolExecutor

        if _team is not None:
            _team[1].shutdown()
        _team = (nw, ThreadPoolExecutor(nw, thread_name_prefix="fastconv-team"))
    bounds = [p * k // nw for k in range(nw + 1)]
    with single_threaded():
        futures = [_team[1].submit(np.matmul, a if a.ndim == 2 else a[lo:hi], b[lo:hi], out=out[lo:hi])
                   for lo, hi in zip(bounds, bounds[1:])]
        for f in futures:
            f.result()
    return out


def backend_threads(module):
    """The thread count of a kernel module (``get_num_threads``; 1 for one without it: the
    reference path keeps plain NumPy)."""
    getter = getattr(module, "get_num_threads", None)
    return int(getter()) if getter is not None else 1
