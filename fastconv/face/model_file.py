"""The torch-free model file ``model.npz``: weights plus a JSON description, no pickle anywhere.

Layout (``numpy.savez``; read with ``np.load(allow_pickle=False)``):

* ``meta``: uint8 bytes of a UTF-8 JSON object: ``format`` ("fastconv-face-model"),
  ``format_version`` (:data:`FORMAT_VERSION`), ``model_name``, ``model_kwargs``, ``embedding_size``,
  ``input_size``, ``preprocess`` (``{"size", "crop"}`` of ``fastconv.face.preprocess.Preprocess``),
  ``normalization`` (``x/127.5 - 1`` per channel), ``flip_tta``, ``threshold`` (calibrated cosine,
  or null), ``threshold_kind`` ("cosine"), ``threshold_source``, ``weights_sha256``, and ``scorer``:
  null, or the stored PLDA back-end's description ``{"name": "plda", "threshold"`` (a natural-log
  likelihood ratio, or null), ``"threshold_kind": "log-likelihood ratio", "dim", "arrays_sha256"}``;
* ``w:<key>``: one float array per state-dict entry, keys as torch's ``state_dict()``;
* ``s:mean`` (D,), ``s:transform`` (k, D), ``s:psi`` (k,): float64 arrays of the PLDA back-end
  (``fastconv.face.scoring.PLDAScorer``), present exactly when ``scorer`` is not null.

``weights_sha256`` hashes every key, dtype, shape and byte of the weights (``arrays_sha256`` the
same of the scorer's arrays), so an edited or truncated file is refused with a clear message
instead of producing wrong embeddings or scores. Version 1 files (no ``scorer``) still load.
"""
import hashlib
import json
import zipfile
from typing import NamedTuple

import numpy as np

from ..atomic import atomic_write

__all__ = ["FORMAT", "FORMAT_VERSION", "READS_VERSIONS", "ModelFile", "ModelFileError", "describe_model",
           "save_model_file", "load_model_file", "read_model_file", "weights_digest", "decode_json_bytes"]

FORMAT = "fastconv-face-model"
FORMAT_VERSION = 2  # 2: optional stored scorer (``s:*`` arrays, ``meta["scorer"]``)
READS_VERSIONS = (1, 2)
_PREFIX = "w:"
_SCORER_PREFIX = "s:"
_SCORER_ARRAYS = ("mean", "transform", "psi")


class ModelFile(NamedTuple):
    """What :func:`read_model_file` returns: weights, description, and the stored scorer or None."""

    state: dict
    meta: dict
    scorer: object  # fastconv.face.scoring.PLDAScorer or None


class ModelFileError(ValueError):
    """A model file that is missing, not ours, from another format version, or damaged."""


def weights_digest(state):
    """sha256 hex digest of ``state`` (dict key -> ndarray) over sorted keys, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        a = np.ascontiguousarray(state[key])
        h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def decode_json_bytes(raw):
    """uint8 (n,) UTF-8 JSON bytes (an ``.npz`` entry) -> dict; ValueError (with the reason) otherwise."""
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError("meta is not a byte string")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(meta, dict):
        raise ValueError("meta is not a JSON object")
    return meta


def describe_model(name, model_kwargs, embedding_size, preprocess, threshold, threshold_source):
    """The JSON description of a model file (everything but the format fields and the checksum)."""
    from .. import __version__

    pre = dict(preprocess)
    return {
        "model_name": name, "model_kwargs": dict(model_kwargs), "embedding_size": int(embedding_size),
        "input_size": int(pre["size"]), "preprocess": pre,
        "normalization": {"formula": "x / 127.5 - 1", "mean": [0.5] * 3, "std": [0.5] * 3, "scale": 255},
        "flip_tta": True, "threshold": None if threshold is None else float(threshold),
        "threshold_kind": "cosine", "threshold_source": threshold_source, "fastconv_version": __version__,
    }


def _scorer_arrays(scorer):
    return {k: np.ascontiguousarray(v, dtype=np.float64)
            for k, v in zip(_SCORER_ARRAYS, (scorer.mean, scorer.T, scorer.psi))}


def save_model_file(path, state, meta, scorer=None):
    """Write ``state`` (dict str -> float ndarray), ``meta`` (JSON-able dict) and optionally ``scorer``
    (a ``PLDAScorer``, stored as its float64 arrays) to ``path`` atomically -> the meta written."""
    arrays = {}
    for key, value in state.items():
        a = np.asarray(value)
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"weight {key!r} must be float32 or float64, got {a.dtype}")
        arrays[_PREFIX + key] = a
    described = None
    if scorer is not None:
        s_arrays = _scorer_arrays(scorer)
        arrays.update({_SCORER_PREFIX + k: v for k, v in s_arrays.items()})
        described = {"name": scorer.name, "threshold": scorer.threshold, "threshold_kind": scorer.unit,
                     "dim": int(scorer.psi.shape[0]), "arrays_sha256": weights_digest(s_arrays)}
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION, weights_sha256=weights_digest(state),
                scorer=described)
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return meta


def load_model_file(path):
    """-> (state dict str -> ndarray, meta dict). Raises :class:`ModelFileError` with the reason."""
    state, meta, _ = read_model_file(path)
    return state, meta


def read_model_file(path):
    """-> :class:`ModelFile` (weights, description, stored scorer or None); :class:`ModelFileError`
    for a missing, foreign, other-version or damaged file (weights or scorer arrays)."""
    path = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = list(npz.files)
            if "meta" not in files:
                raise ModelFileError(f"{path} is not a fastconv face model (no 'meta' entry); write one with "
                                     f"`fastconv face convert -c best.pt --out model.npz`")
            meta_bytes = npz["meta"]
            state = {k[len(_PREFIX):]: npz[k] for k in files if k.startswith(_PREFIX)}
            s_arrays = {k[len(_SCORER_PREFIX):]: npz[k] for k in files if k.startswith(_SCORER_PREFIX)}
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except ModelFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable fastconv face model (.npz): {type(exc).__name__}: "
                             f"{exc}") from None
    try:
        meta = decode_json_bytes(meta_bytes)
    except ValueError as exc:
        raise ModelFileError(f"{path}: damaged model description: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a fastconv face model (format {meta.get('format')!r})")
    if meta.get("format_version") not in READS_VERSIONS:
        raise ModelFileError(f"{path} has model-file format version {meta.get('format_version')!r}; this "
                             f"fastconv reads versions {', '.join(map(str, READS_VERSIONS))}: convert the "
                             f"checkpoint again with this version")
    for key in ("model_name", "model_kwargs", "embedding_size", "preprocess", "weights_sha256"):
        if key not in meta:
            raise ModelFileError(f"{path}: model description lacks {key!r}")
    if weights_digest(state) != meta["weights_sha256"]:
        raise ModelFileError(f"{path}: the weights do not match their checksum (the file was modified or "
                             f"damaged); convert the checkpoint again")
    scorer = _stored_scorer(path, meta.get("scorer"), s_arrays)
    if scorer is not None and scorer.mean.shape[0] != meta["embedding_size"]:
        raise ModelFileError(f"{path}: the stored scorer is for {scorer.mean.shape[0]}-d embeddings, the model "
                             f"makes {meta['embedding_size']}-d ones")
    return ModelFile(state, meta, scorer)


def _stored_scorer(path, described, arrays):
    """The ``PLDAScorer`` of ``meta["scorer"]`` and the ``s:*`` arrays, checked, or None."""
    from .scoring import PLDAScorer

    if described is None:
        if arrays:
            raise ModelFileError(f"{path}: scorer arrays {sorted(arrays)} without a scorer description")
        return None
    if not isinstance(described, dict) or described.get("name") != "plda":
        raise ModelFileError(f"{path}: unknown stored scorer {described!r} (this fastconv reads 'plda')")
    if sorted(arrays) != sorted(_SCORER_ARRAYS) or weights_digest(arrays) != described.get("arrays_sha256"):
        raise ModelFileError(f"{path}: the scorer arrays do not match their checksum (the file was modified or "
                             f"damaged); convert the checkpoint again")
    try:
        thr = described.get("threshold")
        return PLDAScorer(*(arrays[k] for k in _SCORER_ARRAYS), threshold=None if thr is None else float(thr))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad stored scorer: {exc}") from None
