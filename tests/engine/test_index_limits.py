"""No int can drive a kernel out of bounds (issue 9, class 1).

One bound for every backend, applied by ``fastconv._validate`` before any kernel runs:
geometry ints and grid sides <= 2**31 - 1, derived element counts <= 2**63 - 1, ValueError
naming the parameter and the limit. The compiled kernels keep their own guard for direct
calls. The crash-prone checks run in a subprocess per backend (``extreme_ints_probe.py``),
so a SIGSEGV fails the test instead of killing the run.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc
from engine_helpers import BACKENDS, examples
from fastconv import _validate

HERE = pathlib.Path(__file__).parent
LIMIT = r"2147483647 \(2\*\*31 - 1, the index limit\)"


def _run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=HERE)


def _explain(result):
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


REPRODUCERS = """
import sys, numpy as np, fastconv as fc
fc.set_backend(sys.argv[1])
calls = [
    lambda: fc.nn.Conv2d(1, 1, 1, stride=(1, 3 * 2**61), padding=(0, 2**62 - 1), bias=False),
    lambda: fc.nn.Upsample2d((1, 6148914691236517206))(np.arange(4.).reshape(1, 1, 1, 4)),
]
for call in calls:
    try:
        call()
    except ValueError as exc:
        print("ValueError:", exc)
    else:
        print("accepted")
"""


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_issue_reproducers_raise_value_error(backend_name):
    result = _run(["-c", REPRODUCERS, backend_name], timeout=300)
    assert result.returncode == 0, _explain(result)
    lines = result.stdout.splitlines()
    assert lines == [
        "ValueError: stride must be <= 2147483647 (2**31 - 1, the index limit), got 6917529027641081856",
        "ValueError: factor must be <= 2147483647 (2**31 - 1, the index limit), got 6148914691236517206",
    ], _explain(result)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_extreme_ints_never_crash_a_backend(backend_name):
    """Hypothesis, in a subprocess: every layer and every compiled kernel, ints from the whole
    int64 range and near 2**31, 2**32, 2**63 (see extreme_ints_probe.py for what may happen)."""
    result = _run(["extreme_ints_probe.py", backend_name, str(examples(150))])
    assert result.returncode == 0, _explain(result)
    assert "no crash" in result.stdout


# ----------------------------------------------------------------------------- the bound
ONE = np.ones((1, 1, 4))
ONE2 = np.ones((1, 1, 4, 4))


@pytest.mark.parametrize("make", [
    lambda v: fc.nn.Conv1d(1, 1, 1, stride=v), lambda v: fc.nn.Conv2d(1, 1, 1, padding=(0, v)),
    lambda v: fc.nn.Conv1d(1, 1, 1, dilation=v), lambda v: fc.nn.Conv2d(1, 1, (v, 1)),
    lambda v: fc.nn.ConvTranspose1d(1, 1, 1, output_padding=v), lambda v: fc.nn.MaxPool2d(v),
    lambda v: fc.nn.MeanPool1d(2, stride=v), lambda v: fc.nn.MaxPool1d(2, padding=v),
    lambda v: fc.nn.Upsample1d(v), lambda v: fc.nn.Downsample2d((1, v)),
    lambda v: fc.nn.Conv2d(v, 1, 1), lambda v: fc.nn.Linear(1, v), lambda v: fc.nn.BatchNorm2d(v),
], ids=["conv-stride", "conv-padding", "conv-dilation", "conv-kernel", "tconv-output_padding",
        "pool-kernel", "pool-stride", "pool-padding", "upsample", "downsample", "channels",
        "features", "num_features"])
@pytest.mark.parametrize("value", [2**31, 2**32 + 1, 2**63, 2**64 + 5, np.int64(2**62)])
def test_every_geometry_int_is_bounded(make, value):
    with pytest.raises(ValueError, match=r"must be <= " + LIMIT + rf", got {int(value)}$"):
        make(value)


def test_the_bound_itself_is_accepted():
    """2**31 - 1 is legal where the output stays small (stride, dilation with enough padding)."""
    big = _validate.INDEX_MAX
    for backend_name in BACKENDS:
        with fc.use_backend(backend_name):
            y = fc.nn.Conv1d(1, 1, 1, stride=big, bias=False)(ONE)
            assert y.shape == (1, 1, 1)
            assert fc.nn.Downsample2d((big, 1))(ONE2).shape == (1, 1, 1, 4)
            assert fc.nn.MaxPool1d(2, stride=big)(ONE).shape == (1, 1, 1)


@pytest.mark.parametrize("call, match", [
    (lambda: fc.nn.Conv1d(1, 1, 1, padding=2**30)(ONE), r"conv \(width\): output size 2147483652 is more than "),
    (lambda: fc.nn.ConvTranspose1d(1, 1, 1, stride=2**30)(ONE),
     r"transposed conv output width 3221225473 is more than "),
    (lambda: fc.nn.Upsample2d((2**30, 1))(ONE2), r"upsampled height 3221225473 is more than "),
    (lambda: fc.nn.Conv2d(2**31 - 1, 2**31 - 1, 2**31 - 1),
     r"weight would have \d+ elements, more than 9223372036854775807"),
])
def test_derived_sizes_are_bounded(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_element_counts_are_exact_products():
    assert _validate.check_size("x", 2**31 - 1, 2**31 - 1, 2) == 2 * (2**31 - 1) ** 2
    with pytest.raises(ValueError, match=rf"conv column buffer .* would have {(2**31 - 1) ** 4} "
                                         r"elements, more than 9223372036854775807 \(2\*\*63 - 1"):
        _validate.check_size("conv column buffer (N*C*kh*kw*oh*ow)", *(2**31 - 1,) * 4)


def test_an_input_dimension_past_the_bound_is_refused():
    wide = np.broadcast_to(np.zeros(1), (1, 1, 2**31))  # no memory behind it
    with pytest.raises(ValueError, match=r"input \(N, C, W\): a dimension of 2147483648 is more than " + LIMIT):
        fc.nn.MaxPool1d(2)(wide)


# ----------------------------------------------------------------------------- set_num_threads
@pytest.mark.parametrize("bad", [2**40, 4097, np.int64(10**6)])
def test_set_num_threads_bound_changes_nothing(bad):
    # The variables are read, not set: a changed NUMBA_NUM_THREADS in this process would make
    # Numba's next compilation raise (its pool is running).
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    before = {v: os.environ.get(v) for v in names}
    with pytest.raises(ValueError, match=rf"n must be <= 4096 \(fastconv's thread limit\), got {int(bad)}"):
        fc.set_num_threads(bad)
    assert {v: os.environ.get(v) for v in names} == before


def test_set_num_threads_takes_numpy_ints():
    code = ("import os, numpy as np, fastconv as fc; fc.available_backends(); fc.set_num_threads(np.int64(1)); "
            "fc.set_num_threads(np.uint8(1)); print(os.environ['OMP_NUM_THREADS'])")
    result = _run(["-c", code], timeout=300)
    assert result.returncode == 0 and result.stdout.split() == ["1"], _explain(result)
