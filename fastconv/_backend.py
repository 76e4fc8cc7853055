"""Backend registry: which implementation of the kernel contract (docs/KERNELS.md) runs.

A backend is a module exposing the functions of the contract. ``reference`` (pure NumPy)
always loads; the compiled ones register a loader here and are imported lazily.
"""
import contextlib
import importlib
import numbers
import operator
import os
import sys

# name -> (module path, how to get it when it does not load); listed fastest first.
# The compiled kernels live in the top-level folder kernels/ of the repository, which setup.py
# installs as the package fastconv.kernels (package_dir): kernels/numba_kernels.py is imported
# as "fastconv.kernels.numba_kernels", kernels/cython_kernels.pyx is built to
# "fastconv.kernels.cython_kernels".
_REGISTRY = {
    "cython": (
        "fastconv.kernels.cython_kernels",
        "build the Cython extension: `pip install -e .` (needs Cython and a C compiler with OpenMP)",
    ),
    "numba": (
        "fastconv.kernels.numba_kernels",
        "install Numba: `pip install numba`",
    ),
    "reference": ("fastconv.reference", "it is part of fastconv and should always load"),
}
# Environment variables a backend's import reads: named when that import fails for a reason
# other than a missing module (NUMBA_NUM_THREADS=0 makes `import numba` raise ValueError).
_SETTINGS = {"numba": ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "NUMBA_CACHE_DIR")}
_loaded = {}
_errors = {}
_current = None


def register_backend(name, module_path, how_to_get="", first=False):
    """Register a backend module by import path. ``first=True`` makes it the preferred default."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"backend name must be a non-empty str, got {name!r}")
    global _REGISTRY
    entry = (module_path, how_to_get)
    items = [(k, v) for k, v in _REGISTRY.items() if k != name]
    _REGISTRY = dict([(name, entry)] + items if first else items + [(name, entry)])
    _loaded.pop(name, None)
    _errors.pop(name, None)


def _load(name):
    if name in _loaded:
        return _loaded[name]
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(_REGISTRY)}")
    if name not in _errors:
        try:
            _loaded[name] = importlib.import_module(_REGISTRY[name][0])
            return _loaded[name]
        except Exception as exc:  # ImportError, or a broken build/configuration raising something else
            _errors[name] = exc
    raise ImportError(_why_not(name, _errors[name])) from _errors[name]


def _why_not(name, exc):
    """The message of a backend that did not load: a missing module gets the how-to, any other
    failure is reported as what it is, with the environment settings the import reads."""
    module_path, how_to_get = _REGISTRY[name]
    cause = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError):
        return f"backend {name!r} is not available ({cause}); to get it, {how_to_get}"
    settings = [f"{var}={os.environ[var]!r}" for var in _SETTINGS.get(name, ()) if var in os.environ]
    where = f"; check the environment: {', '.join(settings)}" if settings else ""
    return f"backend {name!r} is installed but {module_path} failed to import ({cause}){where}"


def available_backends():
    """Names of the backends that really load on this machine, fastest first."""
    names = []
    for name in _REGISTRY:
        try:
            _load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _backend_from_env():
    """The backend FASTCONV_BACKEND names (case and surrounding spaces ignored), or None if unset.

    ValueError for a name that is no registered backend; it is raised by the first
    :func:`get_backend` and, at import, shown as a warning (see the end of this module).
    """
    raw = os.environ.get("FASTCONV_BACKEND")
    if raw is None or not raw.strip():
        return None
    wanted = raw.strip().lower()
    for name in _REGISTRY:
        if name.lower() == wanted:
            return name
    raise ValueError(f"FASTCONV_BACKEND={raw!r} names no backend; expected one of {sorted(_REGISTRY)} "
                     f"(case and surrounding spaces are ignored)")


def _default_name():
    env = _backend_from_env()
    if env is not None:
        _load(env)  # a missing build raises with the how-to, a broken one with its cause
        return env
    return available_backends()[0]


def get_backend():
    """Name of the backend in use (``FASTCONV_BACKEND`` or the fastest available by default)."""
    global _current
    if _current is None:
        _current = _default_name()
    return _current


def set_backend(name):
    """Use backend ``name`` from now on; raises ImportError saying how to get it if it does not load."""
    global _current
    _load(name)
    _current = name


def backend_module(name=None):
    """The module implementing the kernel contract for ``name`` (default: the current backend)."""
    return _load(get_backend() if name is None else name)


@contextlib.contextmanager
def use_backend(name):
    """Context manager: ``with fc.use_backend("numba"): ...`` restores the previous backend after."""
    previous = get_backend()
    set_backend(name)
    try:
        yield name
    finally:
        set_backend(previous)


# Far above any CPU's hardware threads today, far below what OpenMP/BLAS choke on (they
# allocate per-thread state); a fixed bound, so a script is accepted on every machine alike.
MAX_THREADS = 4096


def set_num_threads(n):
    """Set the thread count of OpenMP (Cython kernels), Numba and BLAS together.

    n: an int (Python or NumPy) in [1, MAX_THREADS]; otherwise TypeError/ValueError and
    nothing is changed. Numba uses at most ``NUMBA_NUM_THREADS`` (its pool size at import);
    once Numba is imported that variable is left as it is, since Numba raises at its next
    compilation when it changes.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"n must be <= {MAX_THREADS} (fastconv's thread limit), got {n}")
    names = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]
    if "numba" not in sys.modules:  # later Numba refuses a NUMBA_NUM_THREADS unlike its pool's
        names.append("NUMBA_NUM_THREADS")
    for var in names:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)  # BLAS and OpenMP runtimes already loaded
    except ImportError:
        pass
    for name in ("numba", "cython"):
        module = _loaded.get(name)
        setter = getattr(module, "set_num_threads", None)
        if setter is not None:
            setter(n)


def set_grain_size(n=None):
    """Compiled kernels doing less than ``n`` elements of work run on one thread (ATen's
    ``parallel_for`` grain); 0 makes every kernel parallel, None restores each backend's
    default. Applies to the loaded compiled backends (Cython, Numba; their Winograd transforms
    read the same setting); returns the previous values by module."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0):
        raise ValueError(f"grain size must be an int >= 0 or None, got {n!r}")
    previous = {}
    for name in ("cython", "numba"):
        module = _loaded.get(name)
        if module is not None:
            previous[module.__name__] = module.get_grain_size()
            module.set_grain_size(None if n is None else int(n))
    return previous


try:  # report a bad FASTCONV_BACKEND at import; get_backend() raises it (fastconv.face never calls it)
    _backend_from_env()
except ValueError as _exc:
    import warnings

    warnings.warn(str(_exc), RuntimeWarning, stacklevel=2)
