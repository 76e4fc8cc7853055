"""Checkpoints: atomic save, ``weights_only=True`` load, and model rebuild for inference.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) with at least
``model`` (state dict) and ``meta`` = {model_name, model_kwargs, embedding_size,
preprocess (Preprocess.to_dict()), threshold (cosine, or None)}.

Loading never unpickles code (``torch.load(weights_only=True)``). Whatever is wrong with a file
(empty, random bytes, text, a pickle with code, missing keys, wrong sizes, NaN weights or a NaN
threshold) raises :class:`CheckpointError`, a ValueError with a one-line message.
"""
import math
import pathlib
from typing import NamedTuple

import torch

from ..atomic import atomic_write

__all__ = ["CheckpointError", "InferenceModel", "save_checkpoint", "load_checkpoint", "load_for_inference"]


class CheckpointError(ValueError):
    """A file that is not a usable fastconv.face checkpoint."""


def save_checkpoint(path, state):
    """Write ``state`` (a dict) to ``path`` atomically: temp file in the same folder + os.replace."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = pathlib.Path(path)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


_TORCH_ADVICE = ("weights_only", "Weights only", "Check the documentation", "Please file an issue")


def _why_unreadable(exc):
    """A one-line reason for a failed ``torch.load``, without torch's advice to load unsafely."""
    text = str(exc)
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    if "Weights only load failed" not in text:
        first = text.strip().splitlines()[0] if text.strip() else ""
        return f"{type(exc).__name__}{': ' + first if first else ''}"
    detail = ""
    for line in text.splitlines():
        line = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if line and not any(a in line for a in _TORCH_ADVICE):
            detail = line.split(". ")[0].rstrip(".")
            break
    return (f"refused to unpickle it ({detail or 'it holds objects other than tensors and plain data'}); "
            "fastconv only loads tensors and plain data, never code")


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict with ``torch.load(weights_only=True)``; CheckpointError when unreadable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # EOFError, UnpicklingError, RuntimeError, ...: all mean "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable checkpoint: {_why_unreadable(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a fastconv checkpoint (expected a dict, got {type(state).__name__})")
    return state


class InferenceModel(NamedTuple):
    """What eval/verify/embed/export need from a checkpoint."""

    model: torch.nn.Module  # eval mode, on the requested device
    meta: dict
    preprocess: "object"  # fastconv.face.data.Preprocess
    threshold: "float | None"


def check_finite_weights(state_dict, path):
    """CheckpointError naming the first floating tensor of ``state_dict`` with NaN or Inf values."""
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: weight {key!r} holds NaN or Inf values (a diverged training?)")


def _check_threshold(meta, path):
    thr = meta.get("threshold")
    if thr is None:
        return None
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
        raise CheckpointError(f"{path}: stored threshold {thr!r} is not a finite number")
    return float(thr)


def load_for_inference(path, map_location="cpu") -> InferenceModel:
    """``(model in eval mode, meta, preprocess, threshold)`` from a checkpoint of ``fastconv.face.train``."""
    from .data import Preprocess
    from .models import get_model

    state = load_checkpoint(path, map_location)
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("meta"), dict):
        raise CheckpointError(f"{path} lacks a 'model' state dict and a 'meta' dict (keys: {sorted(map(str, state))})")
    meta = state["meta"]
    missing = [k for k in ("model_name", "embedding_size", "preprocess") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: meta lacks {missing}")
    try:
        pre = Preprocess.from_dict(dict(meta["preprocess"]))
        model = get_model(meta["model_name"], embedding_size=meta["embedding_size"],
                          **dict(meta.get("model_kwargs") or {}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad meta: {exc}") from None
    threshold = _check_threshold(meta, path)
    check_finite_weights(state["model"], path)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise CheckpointError(f"{path}: weights do not fit {meta['model_name']}: {detail}") from None
    model.to(map_location).eval()
    return InferenceModel(model, meta, pre, threshold)
