"""The BLAS the compiled Winograd kernels call from inside their own parallel loops.

Both compiled backends call scipy's ``sgemm``/``dgemm`` (``scipy.linalg.cython_blas``; Numba's
``np.dot`` goes through the same functions) once per block of tiles, from every worker thread
at once. That BLAS must then run on one thread, or each worker would start its own BLAS
threads (oversubscription): :func:`single_threaded` limits every BLAS that threadpoolctl sees
to one thread for the duration of a kernel call and restores the previous counts after.
"""
import contextlib

_controller = None
probe = None  # tests: a callable run inside the limit (sees the BLAS thread counts a kernel sees)


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
