"""fastconv -> PyTorch: the torch module that computes the same function with the same weights.

One translator for the benchmark (``cases.py``: the torch contender of every case) and the
tests (``tests/engine/test_training_equivalence.py``: fastconv and torch trained side by side).
Layers keep their settings (kernel_size, stride, ... as the nd-tuples fastconv stores) and
their dtype; parameters and buffers are copied with ``load_state_dict``.
"""
import numpy as np
import torch

from fastconv import nn as fnn


class TorchDownsample(torch.nn.Module):
    """fastconv Downsample2d, factor (fh, fw): ``x[..., ::fh, ::fw].contiguous()`` (autograd backward)."""

    def __init__(self, factor):
        super().__init__()
        self.fh, self.fw = factor

    def forward(self, x):
        return x[..., ::self.fh, ::self.fw].contiguous()


class TorchUpsample(torch.nn.Module):
    """fastconv Upsample2d, factor (fh, fw): zero insertion via ``new_zeros`` + strided assignment."""

    def __init__(self, factor):
        super().__init__()
        self.fh, self.fw = factor

    def forward(self, x):
        n, c, h, w = x.shape
        y = x.new_zeros((n, c, self.fh * (h - 1) + 1, self.fw * (w - 1) + 1))
        y[..., ::self.fh, ::self.fw] = x
        return y


def torch_twin(fc_module):
    """The PyTorch module computing the same function as ``fc_module``, with its weights."""
    twin = _translate(fc_module)
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in fc_module.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"torch twin mismatch: missing {missing}, unexpected {unexpected}")
    return twin


def _dtype(array):
    return torch.float64 if array.dtype == np.float64 else torch.float32


_SAME = {"Conv1d": torch.nn.Conv1d, "Conv2d": torch.nn.Conv2d, "MaxPool1d": torch.nn.MaxPool1d,
         "MaxPool2d": torch.nn.MaxPool2d, "MeanPool1d": torch.nn.AvgPool1d, "MeanPool2d": torch.nn.AvgPool2d,
         "BatchNorm1d": torch.nn.BatchNorm1d, "BatchNorm2d": torch.nn.BatchNorm2d,
         "ReLU": torch.nn.ReLU, "Flatten": torch.nn.Flatten}


def _translate(m):
    name = type(m).__name__
    if isinstance(m, fnn.Sequential):
        return torch.nn.Sequential(*[_translate(c) for c in m])
    if name in ("Conv1d", "Conv2d"):
        return _SAME[name](m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                           bias=m.bias is not None, dtype=_dtype(m.weight))
    if name == "Linear":
        return torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=_dtype(m.weight))
    if name.startswith("BatchNorm"):
        dtype = _dtype(m.weight.data if m.affine else getattr(m, "running_mean", np.zeros(0)))
        return _SAME[name](m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, dtype=dtype)
    if name.startswith(("MaxPool", "MeanPool")):  # torch AvgPool: count_include_pad=True, as fastconv
        return _SAME[name](m.kernel_size, m.stride, m.padding)
    if name == "Flatten":
        return torch.nn.Flatten(m.start_dim)
    if name == "ReLU":
        return torch.nn.ReLU()
    if name == "Upsample2d":
        return TorchUpsample(m.factor)
    if name == "Downsample2d":
        return TorchDownsample(m.factor)
    raise TypeError(f"no torch twin for {name}")
