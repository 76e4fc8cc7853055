"""Thread pinning and a description of the machine the numbers came from.

``pin_env(n)`` must run before NumPy, Numba or PyTorch are imported (it only touches
``os.environ``); ``apply_limits(n)`` then sets every runtime that is already loaded.
"""
import os
import platform
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_PRELOADED = ("numpy", "numba", "torch")


def pin_env(n):
    """Set the thread-count variables to ``n``; returns the heavy modules already imported
    (for those the variables come too late and ``apply_limits`` has to do the work)."""
    early = [m for m in _PRELOADED if m in sys.modules]
    for var in THREAD_VARS:
        # An imported Numba raises at its next compilation when NUMBA_NUM_THREADS changes.
        if not (var == "NUMBA_NUM_THREADS" and "numba" in early):
            os.environ[var] = str(n)
    # Same OpenMP wait policy for every contender (fastconv.kernels defaults it to PASSIVE).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return early


def apply_limits(n):
    """Give BLAS, OpenMP, Numba, the Cython kernels and PyTorch ``n`` threads each."""
    import fastconv as fc
    import torch

    fc.set_num_threads(n)  # env vars + threadpoolctl (BLAS/OpenMP) + numba/cython setters
    for name in ("numba", "cython"):  # load them now so that their setters run too
        try:
            fc._backend.backend_module(name)
        except ImportError:
            pass
    fc.set_num_threads(n)
    torch.set_num_threads(n)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), None)
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{model} ({simd})" if model and simd else model


def _torch_capability(torch):
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:
        return None


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def describe(threads, early_imports):
    """Machine, versions, thread settings and the BLAS that threadpoolctl sees."""
    import numpy as np
    import torch

    import fastconv as fc

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "fastconv": getattr(fc, "__version__", "?"),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": _torch_capability(torch),
        "env": {k: os.environ.get(k) for k in THREAD_VARS + ("OPENBLAS_CORETYPE", "FASTCONV_BACKEND")},
        "env_set_before_imports": not early_imports,
        "imported_before_pinning": early_imports,
        "backends": fc.available_backends(),
        "loadavg_start": _loadavg(),
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        info["numba"] = None
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture",
                                   "num_threads", "threading_layer")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = []
    blas = [p for p in info["threadpools"] if p["user_api"] == "blas"]
    info["blas"] = ", ".join(f"{p['internal_api']} {p['version']} ({p['architecture']} kernels, "
                             f"{p['num_threads']} threads)" for p in blas) or "unknown"
    return info
