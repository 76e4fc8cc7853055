"""Checkpoints: atomic save, ``weights_only=True`` load, and model rebuild for inference.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) with at least
``model`` (state dict) and ``meta`` = {model_name, model_kwargs, embedding_size,
preprocess (Preprocess.to_dict()), threshold (cosine, or None)}.
"""
import pathlib

import torch

from ..atomic import atomic_write


def save_checkpoint(path, state):
    """Write ``state`` (a dict) to ``path`` atomically: temp file in the same folder + os.replace."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = pathlib.Path(path)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict with ``torch.load(weights_only=True)``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a fastconv checkpoint (expected a dict, got {type(state).__name__})")
    return state


def load_for_inference(path, map_location="cpu"):
    """``(model in eval mode, meta)`` from a checkpoint written by ``fastconv.face.train``."""
    from .models import get_model

    state = load_checkpoint(path, map_location)
    if "model" not in state or "meta" not in state:
        raise ValueError(f"{path} lacks 'model'/'meta' (keys: {sorted(state)})")
    meta = state["meta"]
    model = get_model(meta["model_name"], embedding_size=meta["embedding_size"], **meta.get("model_kwargs", {}))
    model.load_state_dict(state["model"])
    model.to(map_location).eval()
    return model, meta
