"""Fixtures of the engine suite; the helpers live in ``engine_helpers.py`` (re-exported here).

* ``backend``: a test taking it runs once per backend that loads on this machine
  (``fc.available_backends()``, e.g. cython, numba, reference), inside ``fc.use_backend``.
* ``check_layer_vs_torch(fc_layer, torch_fn, x, dtype, layout=..., seed=..., train=...)``:
  the one-call parity check (see ``engine_helpers``), tolerances:
  float64 max|a - b| <= 1e-12; float32 max|a - b| / max(1, max|b|) <= 1e-5.
* Hypothesis profile: ``ci`` by default, ``FASTCONV_HYPOTHESIS_PROFILE=thorough`` for 10x examples.
"""
import pytest

import fastconv as fc
from engine_helpers import *  # noqa: F401,F403  (check_layer_vs_torch, assert_close, fuzz, ...)
from engine_helpers import BACKENDS, DTYPE_IDS, DTYPES


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The test body runs with this backend selected (the previous one is restored after)."""
    with fc.use_backend(request.param):
        yield request.param


@pytest.fixture(params=DTYPES, ids=DTYPE_IDS)
def dtype(request):
    return request.param
