"""Grain size (fc.set_grain_size): small kernels run on one thread; the result never depends on it."""
import numpy as np
import pytest

import fastconv as fc


@pytest.mark.parametrize("algo", ["im2col", "winograd_f4", "winograd_batched_f4"])
def test_results_do_not_depend_on_the_grain_size(backend, algo):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9))
    layer = fc.nn.Conv2d(3, 4, 3, padding=1, algo=algo)
    pool = fc.nn.MaxPool2d(2)
    outs = []
    try:
        for grain in (0, 1 << 30):  # always parallel, never parallel
            fc.set_grain_size(grain)
            y = pool(layer(x))
            outs.append((y, layer.backward(pool.backward(np.ones_like(y)))))
    finally:
        fc.set_grain_size(None)
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])


def test_grain_size_is_validated_and_restorable():
    with pytest.raises(ValueError, match=">= 0"):
        fc.set_grain_size(-1)
    with pytest.raises(ValueError):
        fc.set_grain_size(1.5)
    fc.available_backends()  # load the compiled ones
    try:
        fc.set_grain_size(123)
        after = fc.set_grain_size(456)
        assert after and all(v == 123 for v in after.values())
    finally:
        defaults = fc.set_grain_size(None)
    assert all(v == 456 for v in defaults.values())
    assert fc.set_grain_size(None) == {"fastconv.kernels.cython_kernels": 1 << 16,
                                       "fastconv.kernels.numba_kernels": 1 << 15}
