"""Drives every layer and every compiled kernel with ints from the whole int64 range and near
2**31, 2**32 and 2**63, on one backend: ``python extreme_ints_probe.py BACKEND EXAMPLES``.

Run by ``test_index_limits.py`` in a subprocess per backend, so that a crash (SIGSEGV,
SIGABRT, a heap corruption) fails that test instead of killing pytest. The address space is
capped a little above what the process uses after its imports, so that a legal but enormous
allocation raises MemoryError at once instead of swapping. Outcomes allowed:
- layers: a result equal to the reference backend's (where the reference can allocate its
  padded copy), or the reference's own ValueError/TypeError, word for word (validation runs
  before any kernel, so every backend must refuse the same calls with the same message), or
  MemoryError;
- compiled kernels called directly: a result equal to ``fastconv.reference`` on the same
  arguments, or ValueError/TypeError/OverflowError/MemoryError.
Anything else, a crash included, exits non-zero with hypothesis's falsifying example.
"""
import resource
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from engine_helpers import assert_close
from fastconv import _backend
from fastconv import reference as ref

HEADROOM = 3 << 30  # bytes of address space above the post-import size


def near(c):
    return st.integers(c - 3, c + 3)


# Products wrap where a factor is near 2**e / m for a small m (3 * 6148914691236517206 = 2**64 + 2).
WRAP_POINTS = st.builds(lambda e, m, d: 2**e // m + d, st.sampled_from([31, 32, 62, 63, 64]),
                        st.integers(1, 6), st.integers(-3, 3))
EXTREME = st.one_of(st.integers(-2**63, 2**63 - 1), near(2**31), near(2**32), near(2**63),
                    near(-2**63), WRAP_POINTS, st.integers(-2, 0))
SMALL = st.integers(1, 4)


def geometry_int(small=SMALL):
    """A legal small value half the time, so that calls get past the other arguments."""
    return st.one_of(small, EXTREME)


def per_axis(nd, strategy):
    return strategy if nd == 1 else st.one_of(strategy, st.tuples(strategy, strategy))


@st.composite
def layer_call(draw):
    """(layer kind, constructor args, input shape); the input itself is small and legal."""
    kind = draw(st.sampled_from(["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d",
                                 "MaxPool1d", "MaxPool2d", "MeanPool1d", "MeanPool2d",
                                 "Upsample1d", "Upsample2d", "Downsample1d", "Downsample2d",
                                 "Linear", "BatchNorm1d", "BatchNorm2d"]))
    nd = 2 if kind.endswith("2d") else 1
    c = draw(st.integers(1, 2))
    g = lambda small=SMALL: draw(per_axis(nd, geometry_int(small)))  # noqa: E731
    if kind.startswith("Conv"):
        cout = draw(geometry_int(st.integers(1, 2)))
        kwargs = dict(stride=g(), padding=g(st.integers(0, 2)), dilation=g())
        if "Transpose" in kind:
            kwargs["output_padding"] = g(st.integers(0, 1))
        args = (draw(st.one_of(st.just(c), EXTREME)), cout, g())
    elif "Pool" in kind:
        args, kwargs = (g(), draw(st.one_of(st.none(), st.just(g()))), g(st.integers(0, 1))), {}
    elif kind == "Linear":
        args, kwargs = (draw(st.one_of(st.just(c), EXTREME)), draw(geometry_int())), {}
    elif kind.startswith("BatchNorm"):
        args, kwargs = (draw(st.one_of(st.just(c), EXTREME)),), {}
    else:
        args, kwargs = (g(),), {}
    spatial = tuple(draw(st.integers(1, 6)) for _ in range(nd))
    shape = {"Linear": (2, c), "BatchNorm1d": (2, c) + spatial,
             "BatchNorm2d": (2, c, spatial[0], spatial[0])}.get(kind, (draw(st.integers(1, 2)), c) + spatial)
    return kind, args, kwargs, shape


def run_layer(kind, args, kwargs, x, backend, layer=None):
    """('ok', layer, y, dx, grads) or ('error', type name, message) or ('memory',)."""
    try:
        with fc.use_backend(backend):
            layer = getattr(fc.nn, kind)(*args, **kwargs) if layer is None else layer
            layer.zero_grad()
            y = layer(x)
            dx = layer.backward(np.ones_like(y))
        return ("ok", layer, y, dx, [p.grad.copy() for p in layer.parameters()])
    except MemoryError:
        return ("memory",)
    except (ValueError, TypeError) as exc:
        return ("error", type(exc).__name__, str(exc))


def check_layers(backend, examples):
    @settings(max_examples=examples, deadline=None, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(call=layer_call())
    def layers(call):
        kind, args, kwargs, shape = call
        x = np.random.default_rng(0).uniform(-1, 1, shape)
        expected = run_layer(kind, args, kwargs, x, "reference")
        if expected[0] == "memory" or backend == "reference":
            return
        got = run_layer(kind, args, kwargs, x, backend, expected[1] if expected[0] == "ok" else None)
        if got[0] == "memory":
            return
        assert got[0] == expected[0], f"{backend}: {got[:1] + got[1:3] * (got[0] == 'error')} but " \
                                      f"reference: {expected[:1] + expected[1:3] * (expected[0] == 'error')}"
        if got[0] == "error":
            assert got[1:] == expected[1:], f"{backend} says {got[1:]}, reference says {expected[1:]}"
        else:
            for a, b in zip(got[2:4] + tuple(got[4]), expected[2:4] + tuple(expected[4])):
                assert_close(a, b, a.dtype, f"{kind}{args}{kwargs}")

    layers()


# ----------------------------------------------------------------------------- kernels
def _ints(draw, names, small=SMALL):
    return {n: draw(geometry_int(small)) for n in names}


@st.composite
def kernel_call(draw):
    """(kernel name, args): small legal arrays, ints legal or extreme."""
    name = draw(st.sampled_from(["im2col2d", "col2im2d", "maxpool2d_forward", "maxpool2d_backward",
                                 "avgpool2d_forward", "avgpool2d_backward", "upsample2d_forward",
                                 "upsample2d_backward", "downsample2d_forward",
                                 "downsample2d_backward"]))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    hw = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    arr = lambda *shape: np.random.default_rng(1).uniform(-1, 1, shape).astype(dtype)  # noqa: E731
    k = _ints(draw, ["kh", "kw", "sh", "sw"])
    p = _ints(draw, ["ph", "pw"], st.integers(0, 1))
    o = _ints(draw, ["oh", "ow"], st.integers(1, 3))
    d = _ints(draw, ["dh", "dw"])
    f = _ints(draw, ["fh", "fw"])
    size = _ints(draw, ["h", "w"], st.integers(1, 5))
    geo = [k["kh"], k["kw"], k["sh"], k["sw"], p["ph"], p["pw"]]
    if name == "im2col2d":
        return name, (arr(n, c, *hw), *geo, d["dh"], d["dw"], o["oh"], o["ow"])
    if name == "col2im2d":
        rows = draw(st.integers(1, 8))
        cc = draw(geometry_int(st.just(c)))
        return name, (arr(n, rows, draw(st.integers(1, 9))), cc, size["h"], size["w"], *geo,
                      d["dh"], d["dw"], o["oh"], o["ow"])
    if name in ("maxpool2d_forward", "avgpool2d_forward"):
        return name, (arr(n, c, *hw), *geo, o["oh"], o["ow"])
    if name == "maxpool2d_backward":
        dy = arr(n, c, *hw)
        idx = np.random.default_rng(2).integers(0, 4, dy.shape)
        return name, (dy, idx, size["h"], size["w"])
    if name == "avgpool2d_backward":
        return name, (arr(n, c, *hw), size["h"], size["w"], *geo)
    if name == "downsample2d_backward":
        return name, (arr(n, c, *hw), size["h"], size["w"], f["fh"], f["fw"])
    return name, (arr(n, c, *hw), f["fh"], f["fw"])


def check_kernels(backend, examples):
    kernels = _backend.backend_module(backend)

    @settings(max_examples=examples, deadline=None, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(call=kernel_call())
    def direct(call):
        name, args = call
        try:
            got = getattr(kernels, name)(*args)
        except (ValueError, TypeError, OverflowError, MemoryError):
            return
        try:  # the guard let the call through, so the arguments are legal for the reference
            expected = getattr(ref, name)(*args)
        except MemoryError:
            return
        for a, b in zip(got if isinstance(got, tuple) else (got,),
                        expected if isinstance(expected, tuple) else (expected,)):
            assert a.shape == b.shape, f"{name}: shape {a.shape}, reference {b.shape}"
            if a.dtype == np.int64:
                assert np.array_equal(a, b), f"{name}: argmax differs from the reference"
            else:
                assert_close(a, b, a.dtype, name)

    direct()


def cap_address_space():
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(backend, examples):
    fc.set_backend(backend)
    fc.nn.Conv2d(1, 1, 2)(np.ones((1, 1, 3, 3)))  # load (JIT-compiled) kernels before the cap
    cap_address_space()
    check_layers(backend, examples)
    if backend != "reference":
        check_kernels(backend, examples)
    print(f"{backend}: {examples} layer calls and {examples if backend != 'reference' else 0} "
          f"kernel calls, no crash")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
