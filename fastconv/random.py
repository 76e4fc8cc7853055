"""One seeded generator for parameter initialisation and dropout masks."""
import numpy as np

_rng = np.random.default_rng()


def manual_seed(seed):
    """Reseed fastconv's generator (initial weights and dropout masks become reproducible)."""
    global _rng
    _rng = np.random.default_rng(seed)


def rng():
    """The generator fastconv draws from."""
    return _rng


def uniform(bound, shape, dtype):
    """U(-bound, bound) samples of ``shape`` and ``dtype`` (PyTorch's default layer init)."""
    return _rng.uniform(-bound, bound, size=shape).astype(dtype)
