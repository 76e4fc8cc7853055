"""Convolution algorithm selection: im2col + GEMM or Winograd, forced or tuned ("auto").

Algorithms (``ALGOS``):

* ``"im2col"``: im2col + GEMM (:func:`fastconv.functional.conv_forward`); every convolution.
* ``"winograd_f2"``, ``"winograd_f4"``: Winograd F(2x2, 3x3) / F(4x4, 3x3)
  (:mod:`fastconv.conv_winograd`), fused cache-blocked kernels; 2-D, 3x3 kernel, stride 1,
  dilation 1, any padding. ``"winograd"`` names the default tile size, ``DEFAULT_WINOGRAD``.
* ``"winograd_batched_f4"`` (alias ``"winograd_batched"``): the same F(4x4, 3x3) math run
  batched: whole-batch tile transforms with (m+2)^2 large BLAS GEMMs over all tiles between
  them; same domain.

``"auto"`` works like ``torch.backends.cudnn.benchmark``: the first call for a key (op,
input and weight shapes, stride, padding, dilation, dtype, backend, threads) times every
applicable algorithm, forward + backward, and keeps the fastest for the process. With
``FASTCONV_CACHE`` set, choices are also stored in ``$FASTCONV_CACHE/conv_algo.json``
(atomically; entries are checked when read: format, machine, algorithm names and
applicability, and ignored when wrong). :func:`conv_algo_report` says what was chosen and why.

The process-wide setting (:func:`set_conv_algo`, :func:`use_conv_algo`, ``FASTCONV_CONV_ALGO``;
default ``"im2col"``) applies to layers built with ``algo=None``; where a Winograd algorithm
does not apply to such a layer, it runs im2col. A layer built with an explicit ``algo``
that does not apply raises ValueError naming the constraint.
"""
import contextlib
import json
import math
import os
import platform
import time
from types import SimpleNamespace

import numpy as np

from . import _backend, atomic, conv_winograd
from . import functional as F
from ._validate import check_grid_side, check_size, conv_output_size, int_tuple

ALGOS = ("im2col", "winograd_f2", "winograd_f4", "winograd_batched_f4")
DEFAULT_WINOGRAD = "winograd_f4"
_ALIASES = {"winograd": DEFAULT_WINOGRAD, "winograd_batched": "winograd_batched_f4"}
CHOICES = ALGOS + tuple(_ALIASES) + ("auto",)
_WINOGRAD = {"winograd_f2": (2, False), "winograd_f4": (4, False),  # algo -> (tile m, batched)
             "winograd_batched_f4": (4, True)}
_FILE_FORMAT = "fastconv-conv-algo-1"
_current = None
_tuned = {}   # key (tuple) -> {"algo", "times_ms", "source"}: the decisions of this process
_stored = {}  # the same, read from the choice file (moved into _tuned when used)
_loaded_file = None


# ----------------------------------------------------------------------------- naming
def _canonical(name, what="algo"):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, one of {list(CHOICES)}, got {type(name).__name__}")
    if name not in CHOICES:
        raise ValueError(f"unknown convolution algorithm {name!r}; expected one of {list(CHOICES)}")
    return _ALIASES.get(name, name)


def get_conv_algo():
    """The process-wide algorithm (``FASTCONV_CONV_ALGO`` or ``"im2col"`` by default)."""
    global _current
    if _current is None:
        _current = _canonical(os.environ.get("FASTCONV_CONV_ALGO", "im2col"), "FASTCONV_CONV_ALGO")
    return _current


def set_conv_algo(name):
    """Use ``name`` (one of ``CHOICES``) for layers built with ``algo=None`` from now on."""
    global _current
    _current = _canonical(name)


@contextlib.contextmanager
def use_conv_algo(name):
    """``with fc.use_conv_algo("auto"): ...`` restores the previous setting after."""
    previous = get_conv_algo()
    set_conv_algo(name)
    try:
        yield _current
    finally:
        set_conv_algo(previous)


def constraint(algo, kernel_size, stride, dilation, groups=1):
    """Why ``algo`` cannot run a 2-D conv of this geometry (a sentence), or None when it can."""
    algo = _canonical(algo)
    if algo in ("im2col", "auto"):
        return None
    if tuple(kernel_size) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return (f"{algo} needs a 2-D convolution with a 3x3 kernel, stride 1 and dilation 1; this "
                f"one has kernel {tuple(kernel_size)}, stride {tuple(stride)}, dilation {tuple(dilation)}")
    if groups != 1:
        return f"{algo} needs groups=1; this convolution has groups={groups}"
    return None


def check_layer_algo(algo, kernel_size, stride, dilation, groups=1):
    """Validate a layer's ``algo`` argument (None = the process-wide setting); return it canonical."""
    if algo is None:
        return None
    algo = _canonical(algo)
    why = constraint(algo, kernel_size, stride, dilation, groups)
    if why:
        raise ValueError(why)
    return algo


def applicable(kernel_size, stride, dilation, groups=1):
    """The algorithms of ``ALGOS`` that can run this geometry."""
    return [a for a in ALGOS if constraint(a, kernel_size, stride, dilation, groups) is None]


# ----------------------------------------------------------------------------- running
def _run_forward(algo, x, w, b, stride, padding, dilation, filter_cache, backend, groups=1,
                 keep_v=False):
    if algo == "im2col":
        y, cache = F.conv_forward(x, w, b, stride, padding, dilation, groups)
        return y, SimpleNamespace(algo=algo, inner=cache)
    x, w, b, _ = F._conv_operands(x, w, b, in_axis=1, layout="(O, C, *kernel)")
    h, wd = x.shape[2:]
    for size, p, what in ((h, padding[0], "height"), (wd, padding[1], "width")):
        if size + 2 * p < 3:
            raise ValueError(f"conv ({what}): input size {size} with padding {p} is smaller than "
                             f"the kernel span 3 (kernel 3, dilation 1)")
    m, batched = _WINOGRAD[algo]
    th, tw = -(-(h + 2 * padding[0] - 2) // m), -(-(wd + 2 * padding[1] - 2) // m)
    check_grid_side(h + 2 * padding[0], "padded input height")
    check_grid_side(wd + 2 * padding[1], "padded input width")
    check_size("Winograd input transform ((m+2)^2 * C * tiles)", (m + 2) ** 2, x.shape[1], x.shape[0], th, tw)
    check_size("Winograd product ((m+2)^2 * O * tiles)", (m + 2) ** 2, w.shape[0], x.shape[0], th, tw)
    y, cache = conv_winograd.winograd_forward(x, w, b, padding, m, backend, filter_cache, keep_v, batched)
    return y, SimpleNamespace(algo=algo, inner=cache)


def conv2d_forward(x, weight, bias, stride=1, padding=0, dilation=1, algo=None, filter_cache=None,
                   groups=1, keep_v=False):
    """2-D convolution by ``algo`` (None: the process-wide setting): x (N, C, H, W),
    weight (O, C, kh, kw), bias (O,) or None -> (y (N, O, oh, ow), cache for
    :func:`conv2d_backward`). ``filter_cache``: a :class:`fastconv.conv_winograd.FilterCache`
    kept by the layer (Winograd's transformed weights). ``keep_v``: a backward will follow, so
    Winograd stores its input transform for the weight gradient. ``oh = floor((H + 2p - d(k-1) - 1)/s) + 1``.
    """
    stride = int_tuple(stride, 2, "stride", 1)
    padding = int_tuple(padding, 2, "padding", 0)
    dilation = int_tuple(dilation, 2, "dilation", 1)
    kernel = tuple(np.shape(weight)[2:])
    explicit = algo is not None
    algo = _canonical(algo) if explicit else get_conv_algo()
    why = constraint(algo, kernel, stride, dilation, groups)
    if why:
        if explicit:
            raise ValueError(why)
        algo = "im2col"  # the process-wide choice applies where it can
    backend = _backend.get_backend()
    if algo == "auto":
        algo = _choose(x, weight, bias, stride, padding, dilation, backend, groups)
    return _run_forward(algo, x, weight, bias, stride, padding, dilation, filter_cache, backend, groups,
                        keep_v)


def conv2d_backward(dy, cache):
    """Gradients of :func:`conv2d_forward`: dy (N, O, oh, ow) -> (dx, dw, db or None)."""
    if cache.algo == "im2col":
        return F.conv_backward(dy, cache.inner)
    inner = cache.inner
    dy = F._grad(dy, inner)
    return conv_winograd.winograd_backward(dy, inner)


# ----------------------------------------------------------------------------- auto-tuning
def _threads(backend):
    getter = getattr(_backend.backend_module(backend), "get_num_threads", None)
    if getter is not None:
        return int(getter())
    try:
        from threadpoolctl import threadpool_info

        return max([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] or [1])
    except ImportError:
        return 1


def _key(x, w, stride, padding, dilation, backend):
    return ("conv2d", tuple(np.shape(x)), tuple(np.shape(w)), stride, padding, dilation,
            np.asarray(x).dtype.name, backend, _threads(backend))


def _key_str(key):
    return json.dumps(key, separators=(",", ":"))


def _time_algo(algo, x, w, b, stride, padding, dilation, backend, dy, groups, repeats=3):
    """Best of ``repeats`` forward + backward wall times (after one warm-up call), in ms."""
    cache = conv_winograd.FilterCache()
    best = math.inf
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        y, c = _run_forward(algo, x, w, b, stride, padding, dilation, cache, backend, groups,
                            keep_v=True)  # as a training layer runs it
        conv2d_backward(dy if dy is not None else np.ones_like(y), c)
        if i:
            best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def _choose(x, w, b, stride, padding, dilation, backend, groups=1):
    key = _key(x, w, stride, padding, dilation, backend)
    _load_file()
    entry = _tuned.get(key) or _stored.pop(key, None)
    if entry is not None:
        _tuned[key] = entry
        return entry["algo"]
    candidates = applicable(tuple(np.shape(w)[2:]), stride, dilation, groups)
    if len(candidates) == 1:
        _tuned[key] = {"algo": candidates[0], "times_ms": {}, "source": "only applicable algorithm"}
        return candidates[0]
    x_arr, w_arr = np.asarray(x), np.asarray(w)
    out = [conv_output_size(x_arr.shape[2 + i], w_arr.shape[2 + i], stride[i], padding[i], dilation[i],
                            "conv") for i in range(2)]
    dy = np.random.default_rng(0).standard_normal((x_arr.shape[0], w_arr.shape[0], *out)).astype(x_arr.dtype)
    times = {a: _time_algo(a, x_arr, w_arr, b, stride, padding, dilation, backend, dy, groups)
             for a in candidates}
    winner = min(times, key=times.get)
    _tuned[key] = {"algo": winner, "times_ms": times, "source": "measured (fwd+bwd, best of 3)"}
    _save_file()
    return winner


def clear_conv_algo_cache():
    """Forget every tuned choice of this process (the file under FASTCONV_CACHE is kept)."""
    global _loaded_file
    _tuned.clear()
    _stored.clear()
    _loaded_file = None


def tuned_choices():
    """``{key: {"algo", "times_ms", "source"}}`` of every "auto" decision so far (a copy)."""
    return {k: dict(v) for k, v in _tuned.items()}


# ----------------------------------------------------------------------------- persistence
def _machine():
    return {"cpu": platform.processor() or platform.machine(), "node": platform.node(),
            "numpy": np.__version__}


def _cache_path():
    root = os.environ.get("FASTCONV_CACHE")
    return os.path.join(os.path.expanduser(root), "conv_algo.json") if root else None


def _valid_entry(key, entry):
    if not (isinstance(key, list) and len(key) == 9 and key[0] == "conv2d"):
        return False
    if not isinstance(entry, dict) or entry.get("algo") not in ALGOS:
        return False
    times = entry.get("times_ms", {})
    if not isinstance(times, dict) or not all(
            k in ALGOS and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
            for k, v in times.items()):
        return False
    try:
        _, xs, ws, stride, _, dilation, _, _, _ = key
        groups = 1 if xs[1] == ws[1] else 2  # grouped convolutions have C_in/groups weight columns
        return constraint(entry["algo"], tuple(ws)[2:], tuple(stride), tuple(dilation), groups) is None
    except (TypeError, ValueError):
        return False


def _to_key(item):
    return tuple(tuple(v) if isinstance(v, list) else v for v in item)


def _load_file():
    """Read the stored choices once per process; a wrong file or entry is ignored."""
    global _loaded_file
    path = _cache_path()
    if path is None or _loaded_file == path:
        return
    _loaded_file = path
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return
    if not isinstance(data, dict) or data.get("format") != _FILE_FORMAT or data.get("machine") != _machine():
        return
    for key_str, entry in (data.get("entries") or {}).items() if isinstance(data.get("entries"), dict) else ():
        try:
            key = json.loads(key_str)
        except ValueError:
            continue
        if _valid_entry(key, entry):
            _stored.setdefault(_to_key(key), {"algo": entry["algo"], "times_ms": entry.get("times_ms", {}),
                                              "source": f"read from {path}"})


def _save_file():
    path = _cache_path()
    if path is None:
        return
    entries = {_key_str(k): {"algo": v["algo"], "times_ms": v["times_ms"]} for k, v in _tuned.items()
               if v["source"].startswith("measured")}
    try:
        with open(path, encoding="utf-8") as fh:  # keep what other processes stored
            old = json.load(fh)
        if isinstance(old, dict) and old.get("format") == _FILE_FORMAT and old.get("machine") == _machine():
            for k, v in (old.get("entries") or {}).items():
                try:
                    ok = _valid_entry(json.loads(k), v)
                except ValueError:
                    ok = False
                if ok:
                    entries.setdefault(k, v)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        atomic.write_json(path, {"format": _FILE_FORMAT, "machine": _machine(), "entries": entries})
    except OSError:
        pass  # a read-only cache folder only costs re-tuning next time


# ----------------------------------------------------------------------------- report
def conv_algo_report():
    """A Markdown table of every "auto" decision: key, time per algorithm, choice and why."""
    lines = [f"process-wide setting: {get_conv_algo()}; default Winograd tile: {DEFAULT_WINOGRAD}",
             "", "| input | weight | stride | padding | dtype | backend | threads | "
             + " | ".join(f"{a} ms" for a in ALGOS) + " | chosen | why |",
             "|" + "---|" * (9 + len(ALGOS))]
    for key, entry in _tuned.items():
        _, xs, ws, stride, padding, _, dtype, backend, threads = key
        cells = [("%.3g" % entry["times_ms"][a]) if a in entry["times_ms"] else "—" for a in ALGOS]
        lines.append(f"| {'x'.join(map(str, xs))} | {'x'.join(map(str, ws))} | {stride} | {padding} | "
                     f"{dtype} | {backend} | {threads} | " + " | ".join(cells)
                     + f" | {entry['algo']} | {entry['source']} |")
    if not _tuned:
        lines.append("| (no \"auto\" decision yet) |" + " |" * (8 + len(ALGOS)))
    return "\n".join(lines)
