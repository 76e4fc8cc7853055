"""What the service needs from a model: an :class:`Embedder`.

An embedder maps preprocessed face crops, uint8 (N, 3, S, S) with S = ``size``, to L2-normalised
float32 embeddings (N, D), and says which model it is (``model_id``: a digest of the weights, so a
gallery can refuse embeddings of another model), which engine runs it, its preprocessing
(``crop`` px of the 250x250 LFW frame resized to ``size``), and how pairs are scored: ``scorer``
(``fastconv.face.scoring``: cosine, or the model's stored PLDA back-end, whose scores are
natural-log likelihood ratios) with its ``threshold`` on that scale (``threshold_kind``).

:class:`TorchEmbedder` runs a ``fastconv face train`` checkpoint on PyTorch. A torch-free
embedder (``model.npz`` on fastconv's engine) plugs in through :func:`open_embedder`.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "TorchEmbedder", "open_embedder", "weights_digest"]


@runtime_checkable
class Embedder(Protocol):
    model_id: str  # "<model name>-<16 hex digits of the weights' SHA-256>"
    engine: str  # "torch" or "fastconv"
    scorer: object  # fastconv.face.scoring.CosineScorer or PLDAScorer: score(e1, e2), score_matrix
    threshold: float  # on the scorer's scale; same person when score >= threshold
    threshold_kind: str  # "cosine" or "log-likelihood ratio" (the scorer's unit)
    threshold_source: str
    crop: int  # centre crop of the 250x250 frame, px
    size: int  # model input side S
    embedding_size: int  # D

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """crops uint8 (N, 3, S, S) -> float32 (N, D), each row of unit L2 norm."""


def weights_digest(named_arrays) -> str:
    """16 hex digits of SHA-256 over (name, dtype, shape, bytes) of every array, sorted by name."""
    h = hashlib.sha256()
    for name, arr in sorted(named_arrays, key=lambda kv: kv[0]):
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _scoring(name, stored_plda, cosine_threshold, override, what):
    """-> (scorer of ``--scorer name``, threshold, where it comes from); ValueError when there is none."""
    from ..scoring import choose_scorer

    scorer = choose_scorer(name, stored_plda, "model file" if what.startswith("model file") else "checkpoint")
    if override is not None:
        if not math.isfinite(override) or (scorer.name == "cosine" and not -1 <= override <= 1):
            scale = "cosine in [-1, 1]" if scorer.name == "cosine" else "finite log-likelihood ratio"
            raise ValueError(f"--threshold must be a {scale} for the {scorer.name} scorer, got {override}")
        return scorer, float(override), "--threshold"
    stored = cosine_threshold if scorer.name == "cosine" else scorer.threshold
    if stored is None:
        raise ValueError(f"{what} stores no {scorer.unit} threshold for the {scorer.name} scorer; pass --threshold T")
    return scorer, float(stored), f"stored in {what} (chosen on its validation pairs)"


class _Scoring:
    """``scorer``, ``threshold``, ``threshold_kind``, ``threshold_source`` of an embedder (set by ``_set_scoring``)."""

    def _set_scoring(self, name, stored_plda, cosine_threshold, override, what):
        self.scorer, self.threshold, self.threshold_source = _scoring(name, stored_plda, cosine_threshold,
                                                                      override, what)
        self.threshold_kind = self.scorer.unit


class TorchEmbedder(_Scoring):
    """A ``fastconv face train`` checkpoint on PyTorch (CPU unless ``device`` says otherwise).

    ``embed`` uses the same flip test-time augmentation as ``fastconv face eval``
    (embedding(x) + embedding(hflip(x)), normalised) unless ``flip=False``.
    """

    engine = "torch"

    def __init__(self, checkpoint, threshold=None, device="cpu", flip=True, threads=None, scorer="auto"):
        import torch

        from ..scoring import stored_scorer
        from ..checkpoint import load_for_inference
        from ..device import resolve_device

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        opened = load_for_inference(checkpoint, map_location=str(self.device))
        self.model, meta = opened.model, opened.meta
        self.size, self.crop = opened.preprocess.size, opened.preprocess.crop
        self.embedding_size = int(meta["embedding_size"])
        self.model_name = str(meta["model_name"])
        self._set_scoring(scorer, stored_scorer(meta, os.fspath(checkpoint)), opened.threshold, threshold,
                          f"checkpoint {os.path.basename(os.fspath(checkpoint))}")
        state = self.model.state_dict()
        self.model_id = f"{self.model_name}-" + weights_digest(
            (k, v.detach().cpu().float().numpy()) for k, v in state.items() if v.is_floating_point())
        self.flip = flip
        self._lock = threading.Lock()  # one forward at a time; torch parallelises inside it

    def embed(self, crops: np.ndarray) -> np.ndarray:
        from ..evaluate import embed

        if crops.ndim != 4 or crops.shape[1:] != (3, self.size, self.size):
            raise ValueError(f"crops must be (N, 3, {self.size}, {self.size}), got {crops.shape}")
        with self._lock:
            return embed(self.model, crops, flip=self.flip, device=self.device)


class RuntimeEmbedder(_Scoring):
    """A ``model.npz`` from ``fastconv face convert`` on fastconv's own engine (no torch in the process).

    The engine's layers keep forward state, so one forward runs at a time. ``model_id`` digests the
    file's bytes (SHA-256).
    """

    engine = "fastconv"

    def __init__(self, path, threshold=None, threads=None, backend=None, scorer="auto"):
        from ..runtime import load_model

        if threads is not None:
            import fastconv as fc

            fc.set_num_threads(int(threads))
        self.model = load_model(path, backend=backend)
        self.size, self.crop = self.model.preprocess.size, self.model.preprocess.crop
        self.embedding_size = self.model.embedding_size
        self.model_name = str(self.model.meta.get("model_name", "model"))
        self._set_scoring(scorer, self.model.scorer, self.model.threshold, threshold,
                          f"model file {os.path.basename(os.fspath(path))}")
        with open(path, "rb") as fh:
            self.model_id = f"{self.model_name}-" + hashlib.sha256(fh.read()).hexdigest()[:16]
        self._lock = threading.Lock()

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if crops.ndim != 4 or crops.shape[1:] != (3, self.size, self.size):
            raise ValueError(f"crops must be (N, 3, {self.size}, {self.size}), got {crops.shape}")
        with self._lock:
            return np.asarray(self.model.embed(crops), dtype=np.float32)


def open_embedder(checkpoint=None, model=None, threshold=None, device="cpu", threads=None, scorer="auto") -> Embedder:
    """The embedder for ``--checkpoint best.pt`` (torch) or ``--model model.npz`` (fastconv's engine).

    ``scorer``: auto (the stored PLDA back-end when there is one, else cosine), cosine or plda.
    """
    if (checkpoint is None) == (model is None):
        raise ValueError("give exactly one of --checkpoint/-c (a .pt checkpoint) or --model (a model.npz)")
    if model is not None:
        return RuntimeEmbedder(model, threshold=threshold, threads=threads, scorer=scorer)
    return TorchEmbedder(checkpoint, threshold=threshold, device=device, threads=threads, scorer=scorer)
