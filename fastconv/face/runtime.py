"""Torch-free face embeddings: load ``model.npz`` and run it on fastconv's engine.

>>> from fastconv.face.runtime import load_model
>>> m = load_model("model.npz")                      # float32; dtype=np.float64 for the exact path
>>> e = m.embed_files(["a.jpg", "b.jpg"])[0]         # (2, D) L2-normalised, flip TTA
>>> score = float(e[0] @ e[1]); same = score >= m.threshold   # cosine
>>> llr = m.scorer.score(e[:1], e[1:])[0]            # the stored PLDA back-end (m.scorer None: none stored)

Images are decoded and preprocessed by ``fastconv.face.preprocess`` (Pillow), the code training
and the torch evaluation use, then normalised as ``x/127.5 - 1``. The backbone runs prepared for
inference (``fastconv.face.inference``: BatchNorm folded into the convolutions and the FC, no
backward caches, the batch in chunks, the fastest measured algorithm per 3x3 convolution);
``optimize=False`` runs the plain engine model instead. Importing this module imports neither
torch nor torchvision.
"""
import numpy as np

from .. import use_backend
from ..nn.module import no_grad
from .engine_models import UnsupportedModel, build_engine_model
from .inference import prepare
from .model_file import ModelFileError, read_model_file
from .preprocess import Preprocess, decode_images, load_image, normalize_images

__all__ = ["FaceModel", "load_model", "embed_images", "ModelFileError"]


def embed_images(forward, images_uint8, dtype=np.float32, batch_size=64, flip=True):
    """uint8 (N, 3, S, S) -> (N, D) L2-normalised embeddings in ``dtype``; ``forward``: (B,3,S,S) -> (B,D).

    With ``flip``: ``normalise(f(x) + f(x[..., ::-1]))``, as ``fastconv.face.evaluate.embed``.
    """
    if not isinstance(images_uint8, np.ndarray) or images_uint8.dtype != np.uint8 or images_uint8.ndim != 4:
        raise TypeError(f"images must be a uint8 ndarray (N, 3, S, S), got "
                        f"{getattr(images_uint8, 'dtype', type(images_uint8).__name__)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    chunks = []
    for start in range(0, images_uint8.shape[0], batch_size):
        x = normalize_images(np.asarray(images_uint8[start:start + batch_size]), dtype)
        e = forward(x)
        if flip:
            e = e + forward(np.ascontiguousarray(x[..., ::-1]))
        norm = np.sqrt((e * e).sum(axis=1, keepdims=True))
        chunks.append(e / np.maximum(norm, e.dtype.type(1e-12)))
    return np.concatenate(chunks) if chunks else None


class FaceModel:
    """A fastconv backbone in eval mode plus the preprocessing and threshold it was trained with.

    ``net``: the engine model; ``optimize``: run it prepared for inference (see the module doc).
    ``threshold``: the calibrated cosine threshold (or None); ``scorer``: the stored PLDA back-end
    (``fastconv.face.scoring.PLDAScorer``, scores and ``scorer.threshold`` in log-likelihood ratios) or None.
    """

    def __init__(self, net, meta, dtype=np.float32, backend=None, optimize=True, scorer=None):
        self.net = net.eval()
        self.forward_net = prepare(self.net) if optimize else self.net
        self.meta = meta
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.preprocess = Preprocess.from_dict(dict(meta["preprocess"]))
        self.threshold = None if meta.get("threshold") is None else float(meta["threshold"])
        self.embedding_size = int(meta["embedding_size"])
        self.scorer = scorer

    def _forward(self, x):
        with no_grad():
            if self.backend is None:
                return self.forward_net(x)
            with use_backend(self.backend):
                return self.forward_net(x)

    def embed(self, images_uint8, batch_size=64, flip=True):
        """uint8 (N, 3, S, S) -> (N, D) embeddings in ``dtype``, L2-normalised (flip TTA by default)."""
        e = embed_images(self._forward, images_uint8, self.dtype, batch_size, flip)
        return np.zeros((0, self.embedding_size), self.dtype) if e is None else e

    def embed_files(self, paths, batch_size=64, flip=True, root=""):
        """-> (embeddings (M, D), kept int64 (M,) indices into ``paths``, skipped [(path, reason)])."""
        images, kept, skipped = decode_images(root, list(paths), self.preprocess, progress=False)
        return self.embed(images, batch_size, flip), kept, skipped

    def embed_image(self, path, flip=True):
        """One image file -> (D,) embedding; raises ``UnreadableImage`` for a bad file."""
        return self.embed(load_image(path, self.preprocess)[None], 1, flip)[0]


def load_model(path, dtype=np.float32, backend=None, optimize=True):
    """Load a ``model.npz`` written by ``fastconv face convert`` -> :class:`FaceModel`.

    ``dtype``: float32 (as trained) or float64; ``backend``: a fastconv backend name (default:
    the current one); ``optimize``: prepared for inference (False: the plain engine model). Raises :class:`ModelFileError` for a missing, foreign or damaged file.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    state, meta, scorer = read_model_file(path)
    try:
        net = build_engine_model(meta["model_name"], int(meta["embedding_size"]), dtype=dtype,
                                 **dict(meta["model_kwargs"]))
        net.load_state_dict(state, strict=True)
    except UnsupportedModel as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: the weights do not fit model {meta['model_name']!r}: {exc}") from None
    return FaceModel(net, meta, dtype, backend, optimize, scorer)
