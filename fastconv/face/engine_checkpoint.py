"""The resume checkpoint of ``fastconv face train --engine fastconv``: ``last.npz``, torch-free, no pickle.

Layout (``numpy.savez``; read with ``np.load(allow_pickle=False)``):

* ``meta``: uint8 bytes of a UTF-8 JSON object: ``format`` ("fastconv-face-engine-checkpoint"),
  ``format_version``, ``config`` and ``config_sha256`` (the run's config, see :func:`config_digest`),
  ``stage_index`` / ``epoch`` (where the run continues: the next stage and epoch 0 once a stage
  has finished), ``best_eer`` (null before any validation), ``history`` (the epoch records),
  ``rng`` (the bit-generator state of ``fastconv.random``, which draws initial weights and dropout
  masks; the data order and augmentation are seeded per epoch), ``sha256`` (of everything else);
* ``backbone:<key>`` / ``head:<key>``: the state dicts;
* ``momentum:<group>:<index>``: SGD momentum buffers of :class:`~fastconv.face.engine_train.StageOptimizer`.

Written atomically after every epoch (``fastconv.atomic``: a rewrite keeps the file's permissions).
A missing, foreign, damaged, edited or other-config file raises :class:`EngineCheckpointError`
(a ValueError with a one-line message: ``fastconv face`` exits 2 with it).
"""
import hashlib
import json
import math
import zipfile

import numpy as np

from ..atomic import atomic_write
from .config import flat_keys
from .model_file import decode_json_bytes, weights_digest

__all__ = ["FORMAT", "FORMAT_VERSION", "EngineCheckpointError", "config_digest", "save_engine_checkpoint",
           "load_engine_checkpoint", "restore_optimizer"]

FORMAT = "fastconv-face-engine-checkpoint"
FORMAT_VERSION = 1
_UNHASHED = ("init_state",)  # comparison-only start weights: a resumed run loads its own


class EngineCheckpointError(ValueError):
    """A ``last.npz`` that cannot continue this run."""


def _plain_config(cfg):
    return {k: v for k, v in cfg.items() if k not in _UNHASHED}


def config_digest(cfg):
    """sha256 hex digest of the config (sorted-key JSON; ``init_state`` left out)."""
    return hashlib.sha256(json.dumps(_plain_config(cfg), sort_keys=True).encode()).hexdigest()


def _digest(arrays, meta):
    """sha256 of (the model file's digest of the arrays: names, dtypes, shapes, bytes; the sorted-key JSON
    of ``meta``)."""
    return hashlib.sha256((weights_digest(arrays) + json.dumps(meta, sort_keys=True)).encode()).hexdigest()


def save_engine_checkpoint(path, *, backbone, head, optimizer, cfg, stage_index, epoch, best_eer, history, rng):
    """Write ``last.npz`` (see the module docstring); ``rng`` is a numpy Generator (fastconv's)."""
    arrays = {f"backbone:{k}": v for k, v in backbone.state_dict().items()}
    arrays.update({f"head:{k}": v for k, v in head.state_dict().items()})
    for g, sgd in enumerate(optimizer.sgds):
        for i, state in enumerate(sgd.state):
            if state.get("momentum_buffer") is not None:
                arrays[f"momentum:{g}:{i}"] = state["momentum_buffer"]
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": _plain_config(cfg),
            "config_sha256": config_digest(cfg), "stage_index": int(stage_index), "epoch": int(epoch),
            "best_eer": None if not math.isfinite(best_eer) else float(best_eer), "history": history,
            "rng": rng.bit_generator.state}
    meta["sha256"] = _digest(arrays, meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _read(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise EngineCheckpointError(f"cannot resume: {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise EngineCheckpointError(f"cannot resume: {path} is not a readable .npz ({type(exc).__name__}: "
                                    f"{exc})") from None
    if "meta" not in arrays:
        raise EngineCheckpointError(f"cannot resume: {path} is not an engine checkpoint (no meta entry)")
    try:
        meta = decode_json_bytes(arrays.pop("meta"))
    except ValueError as exc:
        raise EngineCheckpointError(f"cannot resume: {path} is not an engine checkpoint ({exc})") from None
    return arrays, meta


def _config_differences(saved, cfg):
    """Dotted keys whose values differ between two configs, as ``key: saved -> now``."""
    def flat(c):
        out = {}
        for key in flat_keys(c):
            node = c
            for part in key.split("."):
                node = node[part]
            out[key] = node
        return out

    a, b = flat(saved), flat(_plain_config(cfg))
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def load_engine_checkpoint(path, cfg):
    """-> dict: backbone, head (state dicts), momentum {(group, index): array}, stage_index, epoch,
    best_eer (inf when none), history, rng (bit-generator state). Checked against ``cfg``."""
    arrays, meta = _read(path)
    if meta.get("format") != FORMAT:
        raise EngineCheckpointError(f"cannot resume: {path} is not a fastconv engine checkpoint (format "
                                    f"{meta.get('format')!r}); the torch engine writes last.pt")
    if meta.get("format_version") != FORMAT_VERSION:
        raise EngineCheckpointError(f"cannot resume: {path} has checkpoint format version "
                                    f"{meta.get('format_version')!r}; this fastconv reads {FORMAT_VERSION}")
    claimed = meta.pop("sha256", None)
    if claimed != _digest(arrays, meta):
        raise EngineCheckpointError(f"cannot resume: {path} does not match its checksum (modified or damaged)")
    if meta.get("config_sha256") != config_digest(cfg):
        diff = _config_differences(meta.get("config", {}), cfg)
        shown = "; ".join(diff[:4]) + (f"; {len(diff) - 4} more" if len(diff) > 4 else "")
        raise EngineCheckpointError(f"cannot resume: {path} was made with another config ({shown or 'hash differs'})")
    out = {"backbone": {}, "head": {}, "momentum": {}}
    for key, value in arrays.items():
        kind, _, name = key.partition(":")
        if kind in ("backbone", "head"):
            out[kind][name] = value
        elif kind == "momentum":
            g, _, i = name.partition(":")
            out["momentum"][(int(g), int(i))] = value
        else:
            raise EngineCheckpointError(f"cannot resume: {path} holds an unknown entry {key!r}")
    try:
        best = meta["best_eer"]
        out.update(stage_index=int(meta["stage_index"]), epoch=int(meta["epoch"]),
                   best_eer=float("inf") if best is None else float(best), history=list(meta["history"]),
                   rng=dict(meta["rng"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineCheckpointError(f"cannot resume: {path}: incomplete checkpoint description ({exc})") from None
    return out


def restore_optimizer(optimizer, momentum, path):
    """Put the saved momentum buffers (``{(group, index): array}``) into ``optimizer`` (a StageOptimizer)."""
    for (g, i), buf in momentum.items():
        if not (0 <= g < len(optimizer.sgds) and 0 <= i < len(optimizer.sgds[g].params)):
            raise EngineCheckpointError(f"cannot resume: {path} has a momentum buffer for parameter {g}:{i}, "
                                        f"which this model lacks")
        p = optimizer.sgds[g].params[i]
        if buf.shape != p.data.shape or buf.dtype != p.data.dtype:
            raise EngineCheckpointError(f"cannot resume: {path}: momentum buffer {g}:{i} is {buf.dtype} "
                                        f"{buf.shape}, the parameter {p.data.dtype} {p.data.shape}")
        optimizer.sgds[g].state[i]["momentum_buffer"] = np.array(buf, copy=True)
