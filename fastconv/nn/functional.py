"""Stateless functions of the layer API (``fc.nn.functional``), with their backward.

``normalize(x, dim=1, eps=1e-12)``: ``y = x / max(||x||_2, eps)`` along ``dim`` (torch's
``F.normalize`` with p=2). Backward (``normalize_backward``), with ``r = max(||x||, eps)``:
``dx = (dy - y * sum(dy * y)) / r`` where ``||x|| >= eps``, else ``dx = dy / eps``.
"""
import numpy as np

from .._validate import check_grad, check_input



def _norm(x, dim):
    return np.sqrt((x * x).sum(axis=dim, keepdims=True))


def normalize(x, dim=1, eps=1e-12):
    """x: any float array -> x / max(||x||_2 along dim, eps), same shape and dtype."""
    x = check_input(x, "normalize")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"normalize: dim {dim} out of range for shape {x.shape}")
    return x / np.maximum(_norm(x, dim), x.dtype.type(eps))


def normalize_backward(dy, x, dim=1, eps=1e-12):
    """dL/dx of :func:`normalize` for the upstream gradient ``dy`` (shape of x)."""
    x = check_input(x, "normalize")
    check_grad(dy, x.shape, x.dtype)
    norm = _norm(x, dim)
    r = np.maximum(norm, x.dtype.type(eps))
    y = x / r
    projected = (dy - y * (dy * y).sum(axis=dim, keepdims=True)) / r
    return np.where(norm >= eps, projected, dy / x.dtype.type(eps))
