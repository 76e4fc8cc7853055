"""``fc.no_grad()``: forwards inside keep no backward caches (same outputs), backward then says why."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import nn


def _net():
    fc.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.PReLU(4), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def test_no_grad_keeps_outputs_drops_caches_and_restores():
    net = _net().eval()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 5, 5))
    want = net(x)
    assert fc.is_grad_enabled()
    with fc.no_grad():
        assert not fc.is_grad_enabled()
        with fc.no_grad():
            pass
        assert not fc.is_grad_enabled()  # a nested block restores the outer state
        got = net(x)
    assert fc.is_grad_enabled()
    np.testing.assert_array_equal(got, want)
    for layer in net:
        with pytest.raises(RuntimeError, match="under no_grad"):
            layer.backward(np.ones(3) if isinstance(layer, nn.Linear) else None)
    net(x)  # outside no_grad the caches are back
    assert net.backward(np.ones((2, 3))).shape == x.shape


def test_no_grad_restores_after_an_exception():
    with pytest.raises(ValueError):
        with fc.no_grad():
            raise ValueError("boom")
    assert fc.is_grad_enabled()


def test_dropout_backward_before_forward_still_says_so():
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Dropout(0.5).backward(np.ones(3))
