"""Argument checks run in Python before any kernel: wrong calls raise TypeError/ValueError.

Index limits, the same for every backend (the kernels index with 64-bit ints):
- every geometry int (kernel size, stride, padding, dilation, output_padding, factor, channel
  and feature counts) and every side of an input or output grid is at most ``INDEX_MAX`` =
  2**31 - 1, so a product of two of them (``p*sh``, ``q*sw + j*dw``) cannot overflow int64;
- every derived element count (output, column buffer) is at most ``SIZE_MAX`` = 2**63 - 1,
  computed exactly with Python ints before anything is allocated.
Past a limit: ValueError naming the parameter and the limit.
"""
import math
import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_MAX = 2**31 - 1
SIZE_MAX = 2**63 - 1


def check_index(value, name, minimum):
    """An int (Python or NumPy, not bool) in ``[minimum, INDEX_MAX]``, returned as a Python int."""
    if type(value) is not int:  # the fast path skips the (slow) ABC checks for Python ints
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {value!r}")
        value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > INDEX_MAX:
        raise ValueError(f"{name} must be <= {INDEX_MAX} (2**31 - 1, the index limit), got {value}")
    return value


def check_size(what, *factors):
    """The element count ``prod(factors)`` must be <= SIZE_MAX (exact: Python ints do not wrap)."""
    count = math.prod(factors)
    if count > SIZE_MAX:
        raise ValueError(f"{what} would have {count} elements, more than {SIZE_MAX} "
                         f"(2**63 - 1, the index limit)")
    return count


def check_input(x, what):
    """x must be a float32/float64 ndarray (any shape); returned as is. ``what`` names the layer."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} input must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what} input must have dtype float32 or float64, got {x.dtype}")
    return x


def check_channels(**counts):
    """Each keyword (channels, features) must be an int (Python or NumPy) in [1, INDEX_MAX]."""
    for name, value in counts.items():
        check_index(value, name, 1)


def as_float_array(x, name, ndim, layout, empty_ok=False):
    """Check that ``x`` is a float32/float64 ndarray with ``ndim`` dims; return it C-contiguous.

    A non-contiguous (or Fortran-ordered) input is copied to C order: kernels read raw memory.
    ``layout`` names the dims for the message, e.g. "(N, C, H, W)". Empty arrays raise unless
    ``empty_ok`` (the compiled kernels accept them and return empty or zero outputs).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray {layout}, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {x.shape}")
    if 0 in x.shape and not empty_ok:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if x.ndim and max(x.shape) > INDEX_MAX:
        check_grid_side(max(x.shape), f"{name} {layout}: a dimension of")
    return np.ascontiguousarray(x)


def same_dtype(x, ref, what, ref_name):
    """Raise TypeError unless ``x`` has the dtype of ``ref`` (no silent casts)."""
    if x.dtype != ref.dtype:
        raise TypeError(f"{what} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}; "
                        f"convert with .astype(np.{ref.dtype})")


def int_tuple(value, n, name, minimum):
    """Turn an int or a length-``n`` sequence of ints into a tuple, each in [minimum, INDEX_MAX]."""
    items = (value,) * n if type(value) is int or isinstance(value, numbers.Integral) else value
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, got {value!r}") from None
    if len(items) != n or not all(type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))
                                  for v in items):
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return tuple([check_index(v, name, minimum) for v in items])


def pair(value, nd, name, minimum):
    """An int or an ``nd``-tuple of ints (nd = 1 or 2) -> the 2-D tuple ``(h, w)`` the kernels take.

    1-D operations are 2-D ones of height 1: their height entry is the neutral one (0 for a
    padding, whose ``minimum`` is 0; 1 for kernel sizes, strides, dilations and factors).
    """
    t = int_tuple(value, nd, name, minimum)
    return t if nd == 2 else (min(minimum, 1),) + t


def conv_output_size(size, kernel, stride, padding, dilation, what):
    """``floor((size + 2p - d(k-1) - 1)/s) + 1``; ValueError when the window does not fit or
    the output is longer than INDEX_MAX."""
    span = dilation * (kernel - 1) + 1
    if size + 2 * padding < span:
        raise ValueError(f"{what}: input size {size} with padding {padding} is smaller than the "
                         f"kernel span {span} (kernel {kernel}, dilation {dilation})")
    return check_grid_side((size + 2 * padding - span) // stride + 1, f"{what}: output size")


def check_grid_side(size, what):
    """A side of an input or output grid must be <= INDEX_MAX."""
    if size > INDEX_MAX:
        raise ValueError(f"{what} {size} is more than {INDEX_MAX} (2**31 - 1, the index limit)")
    return size


def check_window_fits(size, kernel, stride, padding, dilation, out, what):
    """The windows of an ``out``-long grid must fit the padded input (direct kernel calls)."""
    if (out - 1) * stride + dilation * (kernel - 1) + 1 > size + 2 * padding:
        raise ValueError(f"{what}: output size {out} (kernel {kernel}, stride {stride}, dilation "
                         f"{dilation}) does not fit the input size {size} with padding {padding}")


def check_grad(dy, shape, dtype, name="dy"):
    """A gradient must be an ndarray with the forward output's shape and dtype (no silent casts)."""
    if not isinstance(dy, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(dy).__name__}")
    if dy.shape != tuple(shape):
        raise ValueError(f"{name} must have the forward output's shape {tuple(shape)}, got {dy.shape}")
    if dy.dtype != dtype:
        raise TypeError(f"{name} must have the forward dtype {np.dtype(dtype)}, got {dy.dtype}")
    return dy


def float_dtype(dtype):
    """A layer's parameter dtype: float32 or float64 (np.dtype or anything np.dtype takes)."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype
