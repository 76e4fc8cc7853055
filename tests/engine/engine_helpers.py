"""Helpers of the engine suite (imported by conftest.py and the test modules).

* ``check_layer_vs_torch``: the single parity check (tinygrad's ``helper_test_op`` idea):
  copies the fastconv layer's parameters and buffers into the torch module, runs forward and
  backward with the same random upstream gradient and compares output, input gradient,
  every parameter gradient and every buffer (BatchNorm running statistics).
* Hypothesis profiles: ``ci`` (default, small) and ``thorough`` (10x the examples), picked
  with ``FASTCONV_HYPOTHESIS_PROFILE=thorough`` (``HYPOTHESIS_PROFILE`` works too).
  Tests size their example counts with :func:`fuzz` / :func:`examples`.

Tolerances (``assert_close``, the one place that defines them; every suite uses it):
  float64: max|a - b| <= 1e-12 (absolute);
  float32: max|a - b| / max(1, max|b|) <= 1e-5 (relative to the largest reference value);
  inf/NaN must sit at the same places as in the reference, the measure covers the finite rest.
For float32 layers the torch side runs in float64 on the *same* float32-representable
inputs and parameters, so the error measured is fastconv's float32 rounding alone.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import fastconv as fc

# ----------------------------------------------------------------------------- hypothesis
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
             HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", deadline=None, suppress_health_check=_SUPPRESS, print_blob=True)
settings.register_profile("thorough", deadline=None, suppress_health_check=_SUPPRESS, print_blob=True)
PROFILE = os.environ.get("FASTCONV_HYPOTHESIS_PROFILE", os.environ.get("HYPOTHESIS_PROFILE", "ci"))
if PROFILE not in ("ci", "thorough"):
    raise ValueError(f"FASTCONV_HYPOTHESIS_PROFILE must be 'ci' or 'thorough', got {PROFILE!r}")
settings.load_profile(PROFILE)
_SCALE = 10 if PROFILE == "thorough" else 1


def examples(n):
    """Example count for a test: ``n`` in the ci profile, 10n in the thorough one."""
    return n * _SCALE


def fuzz(n):
    """``@settings`` for a fuzz test with ``n`` ci examples (no deadline, profile-scaled)."""
    return settings(max_examples=examples(n), deadline=None, suppress_health_check=_SUPPRESS,
                    print_blob=True)


# ----------------------------------------------------------------------------- backends
BACKENDS = fc.available_backends()
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]


# ----------------------------------------------------------------------------- comparison
F64_ATOL = 1e-12
F32_RTOL = 1e-5


def error(a, b, dtype):
    """The measure the tolerance applies to (see the module docstring)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    diff = float(np.max(np.abs(a - b)))
    if np.dtype(dtype) == np.float64:
        return diff
    return diff / max(1.0, float(np.max(np.abs(b))))


def assert_close(actual, expected, dtype, what=""):
    """fastconv ``actual`` vs reference ``expected`` (numpy or torch), same shape, within tolerance."""
    if hasattr(expected, "detach"):
        expected = expected.detach().cpu().numpy()
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    finite = np.isfinite(expected)
    if not finite.all() or not np.isfinite(actual).all():  # inf/NaN must sit at the same places
        assert np.array_equal(actual[~finite], expected[~finite].astype(actual.dtype), equal_nan=True), \
            f"{what}: non-finite values differ from the reference"
        assert np.isfinite(actual[finite]).all(), f"{what}: inf/NaN where the reference is finite"
        actual, expected = actual[finite], expected[finite]
        if actual.size == 0:
            return
    tol = F64_ATOL if np.dtype(dtype) == np.float64 else F32_RTOL
    err = error(actual, expected, dtype)
    if not err <= tol:
        where = np.unravel_index(np.argmax(np.abs(actual.astype(np.float64) - expected)), actual.shape)  # flat if masked
        raise AssertionError(f"{what}: error {err:.3g} > {tol:g} ({np.dtype(dtype).name}); worst at "
                             f"{where}: got {actual[where]!r}, expected {expected[where]!r}")


def assert_bitwise_equal(actual, expected, what=""):
    """Same dtype, same shape, the same bits everywhere (signed zeros included); NaN where the
    reference has NaN (its payload may differ)."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.dtype.kind == "f":
        bits = np.dtype(f"u{actual.dtype.itemsize}")
        differ = actual.view(bits) != expected.view(bits)
        differ &= ~(np.isnan(actual) & np.isnan(expected))
    else:
        differ = actual != expected
    if differ.any():
        bad = np.argwhere(differ)
        i = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} entries differ (must be bit-exact); first at {i}: "
                             f"got {actual[i]!r}, expected {expected[i]!r}")


def assert_dtype(a, dtype, what):
    assert isinstance(a, np.ndarray), f"{what}: expected numpy.ndarray, got {type(a).__name__}"
    assert a.dtype == np.dtype(dtype), f"{what}: dtype {a.dtype}, expected {np.dtype(dtype)}"


# ----------------------------------------------------------------------------- layouts
LAYOUTS = ["c", "f", "strided", "transposed", "reversed"]


def with_layout(a, layout):
    """An array equal to ``a`` but laid out as asked (all but "c" are non-C-contiguous for ndim > 1).

    c: C order; f: Fortran order; strided: every other element of a wider buffer (last axis);
    transposed: a transposed view of a transposed copy; reversed: negative strides on the last axis.
    """
    if layout == "c":
        out = np.ascontiguousarray(a)
    elif layout == "f":
        out = np.asfortranarray(a)
    elif layout == "strided":
        big = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, dtype=a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
    elif layout == "transposed":
        out = np.ascontiguousarray(a.T).T
    elif layout == "reversed":
        out = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    assert np.array_equal(out, a)
    return out


# ----------------------------------------------------------------------------- imports
def import_installed(name):
    """Import a module that exists only in an installed tree: ``fastconv.kernels`` and
    ``fastconv.bench`` are mapped from the top-level ``kernels/`` and ``bench/`` folders by
    setup.py's ``package_dir`` (``pip install -e .``). Where it is missing, the test is skipped,
    except where ``FASTCONV_REQUIRE_BACKENDS`` is set (CI): the compiled backends need the same
    install, so a missing module is then a failure, not a silent skip."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        required = os.environ.get("FASTCONV_REQUIRE_BACKENDS")
        why = f"{name} does not import ({type(exc).__name__}: {exc}); install with `pip install -e .`"
        if required:
            pytest.fail(f"{why}; required because FASTCONV_REQUIRE_BACKENDS={required!r}", pytrace=False)
        pytest.skip(why)


# ----------------------------------------------------------------------------- the helper
def _torch():
    return pytest.importorskip("torch")


def check_layer_vs_torch(fc_layer, torch_fn, x, dtype, *, layout="c", seed=0, train=True,
                         check_buffers=True):
    """Forward + backward of ``fc_layer`` against ``torch_fn`` on the same data; returns (y, dx).

    fc_layer: a fastconv Module; torch_fn: a torch.nn.Module (its parameters/buffers are
    overwritten with fastconv's, matched by name) or a plain callable on tensors.
    x: the input values (cast to ``dtype``), handed to fastconv with ``layout`` (see
    :func:`with_layout`). dy: uniform(-1, 1) from ``seed``, in the same layout.
    Checks: y, dx, every parameter gradient, every buffer after forward (same tolerance),
    dtypes preserved, the input arrays not written to.
    """
    torch = _torch()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    x = np.asarray(x).astype(dtype)
    fc_layer.train(train)
    if isinstance(torch_fn, torch.nn.Module):
        torch_fn = torch_fn.to(torch.float64).train(train)
        t_params = dict(torch_fn.named_parameters())
        t_buffers = dict(torch_fn.named_buffers())
        fc_params = dict(fc_layer.named_parameters())
        assert set(fc_params) == set(t_params), f"parameter names differ: {sorted(fc_params)} vs {sorted(t_params)}"
        with torch.no_grad():
            for name, p in fc_params.items():
                assert p.data.shape == tuple(t_params[name].shape), \
                    f"{name}: fastconv shape {p.data.shape} vs torch {tuple(t_params[name].shape)}"
                assert_dtype(p.data, dtype, f"parameter {name}")
                t_params[name].copy_(torch.from_numpy(p.data.astype(np.float64)))
            for name, b in fc_layer.state_dict().items():
                if name in t_buffers and name not in fc_params:
                    t_buffers[name].copy_(torch.from_numpy(np.asarray(b, dtype=np.float64)))
        for p in fc_layer.parameters():
            p.zero_grad()
    x_in = with_layout(x, layout)
    x_copy = x_in.copy()
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)

    y = fc_layer(x_in)
    yt = torch_fn(xt)
    assert_dtype(y, dtype, "output")
    assert_close(y, yt, dtype, "forward output")

    dy = rng.uniform(-1, 1, size=y.shape).astype(dtype)
    dy_in = with_layout(dy, layout)
    dy_copy = dy_in.copy()
    dx = fc_layer.backward(dy_in)
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    assert_dtype(dx, dtype, "input gradient")
    assert_close(dx, xt.grad, dtype, "input gradient")
    assert np.array_equal(x_in, x_copy, equal_nan=True), "the layer wrote to its input"
    assert np.array_equal(dy_in, dy_copy), "backward wrote to dy"

    if isinstance(torch_fn, torch.nn.Module):
        for name, p in fc_layer.named_parameters():
            tp = dict(torch_fn.named_parameters())[name]
            assert_dtype(p.grad, dtype, f"{name}.grad")
            assert_close(p.grad, tp.grad, dtype, f"{name}.grad")
        if check_buffers:
            t_buffers = dict(torch_fn.named_buffers())
            for name, b in fc_layer.state_dict().items():
                if name in t_buffers and name not in dict(fc_layer.named_parameters()):
                    assert_close(b, t_buffers[name], dtype, f"buffer {name}")
    return y, dx


# ----------------------------------------------------------------------------- geometry
COLS_BUDGET = 120_000  # N * C * kh * kw * H * W per 2-D example: keeps each example ~ms


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_min_in(k, p, d):
    """Smallest input size with a legal window: d(k-1) + 1 <= size + 2p."""
    return max(1, d * (k - 1) + 1 - 2 * p)


def tconv_out(size, k, s, p, d, op):
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def tconv_min_in(k, s, p, d, op):
    """Smallest input size whose transposed-conv output is >= 1."""
    need = 2 * p - d * (k - 1) - op  # (in - 1) s >= need
    return 1 + max(0, -(-need // s))


@st.composite
def axis_params(draw, kind):
    """One spatial axis: kernel, stride, padding, dilation, output_padding and the min size."""
    k = draw(st.integers(1, 9))
    if kind == "pool":
        s = draw(st.integers(1, 9))
        p = draw(st.integers(0, min(4, k // 2)))
        return dict(k=k, s=s, p=p, d=1, op=0, min=max(1, k - 2 * p))
    s, p, d = draw(st.integers(1, 9)), draw(st.integers(0, 4)), draw(st.integers(1, 3))
    if kind == "tconv":
        op = draw(st.integers(0, max(s, d) - 1))
        return dict(k=k, s=s, p=p, d=d, op=op, min=tconv_min_in(k, s, p, d, op))
    return dict(k=k, s=s, p=p, d=d, op=0, min=conv_min_in(k, p, d))


@st.composite
def geometry(draw, nd, kind, channels):
    """Axes plus input sizes (always legal). ``channels``: the larger channel count, for the cap."""
    n = draw(st.integers(1, 4))
    axes = [draw(axis_params(kind)) for _ in range(nd)]
    if nd == 1:
        a = axes[0]
        top = 300 if kind != "tconv" else max(a["min"], 300 // a["s"])
        sizes = [draw(st.integers(a["min"], max(a["min"], top)))]
    else:
        long_axis = draw(st.integers(0, 1))
        short = axes[1 - long_axis]
        short_size = draw(st.integers(short["min"], short["min"] + 5))
        la = axes[long_axis]
        cost = n * channels * axes[0]["k"] * axes[1]["k"] * short_size
        top = min(300 if kind != "tconv" else 300 // la["s"], COLS_BUDGET // cost)
        long_size = draw(st.integers(la["min"], max(la["min"], top)))
        sizes = [0, 0]
        sizes[long_axis], sizes[1 - long_axis] = long_size, short_size
    return n, axes, sizes


def param(axes, key, nd):
    return axes[0][key] if nd == 1 else tuple(a[key] for a in axes)
