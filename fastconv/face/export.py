"""ONNX export of an embedding model with an onnxruntime parity check.

The ONNX graph takes ``input``: float32 (batch, 3, S, S) already normalised with
``fastconv.face.data.normalize`` and returns ``embedding``: (batch, D) (not L2-normalised).
"""
from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch

from ..atomic import replaced_on_success

__all__ = ["export_onnx", "onnx_parity"]


def _torch_export(model, example, path, opset):
    # The TorchScript exporter needs no extra packages (the dynamo exporter needs onnxscript).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (example,), path,
            dynamo=False,
            input_names=["input"],
            output_names=["embedding"],
            dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def onnx_parity(model, path, input_size: int, batch: int = 3, seed: int = 0) -> float:
    """Max |torch - onnxruntime| on a random normalised batch (N=batch, different from export)."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, input_size, input_size, generator=g) * 2 - 1
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["embedding"], {"input": x.numpy()})
    with torch.no_grad():
        want = model(x).float().numpy()
    if got.shape != want.shape:
        raise RuntimeError(f"ONNX output shape {got.shape} differs from torch output shape {want.shape}")
    return float(np.max(np.abs(got - want)))


def export_onnx(model, path, input_size: int, opset=17, check=True, atol=1e-4) -> float:
    """Export ``model`` ((B,3,S,S) normalised float -> (B,D)) to ``path`` with a dynamic batch axis.

    With ``check``: returns max |torch - onnx| on a random batch and raises ``RuntimeError``
    when it exceeds ``atol``; without: returns ``nan``. The file is written atomically.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 9 <= opset <= 21:
        raise ValueError(f"opset must be an int in 9..21, got {opset!r}")
    m = copy.deepcopy(model).cpu().float().eval()
    with replaced_on_success(path, suffix=".onnx") as tmp:
        _torch_export(m, torch.zeros(2, 3, input_size, input_size), tmp, opset)
        diff = onnx_parity(m, tmp, input_size) if check else float("nan")
        if check and not diff <= atol:
            raise RuntimeError(f"ONNX parity check failed: max |torch - onnx| = {diff:.3g} > {atol:g}")
    return diff
