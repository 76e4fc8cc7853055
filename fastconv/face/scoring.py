"""Pair scorers: cosine (the baseline) and a learned two-covariance PLDA back-end.

PLDA model (Ioffe 2006; the "two-covariance" model of joint Bayesian face verification): an embedding
``x (D,)`` of person ``p`` is ``x = m + y_p + e`` with identity ``y_p ~ N(0, B)`` and noise
``e ~ N(0, W)``. The fit estimates ``m``, the between-class covariance ``B`` and the within-class
covariance ``W`` from labelled training-side embeddings, then diagonalises both at once: a matrix
``T (k, D)`` with ``T W T' = I`` and ``T B T' = diag(psi)``, keeping the ``k`` directions of
largest ``psi`` (the LDA directions). With ``u = T (x1 - m)``, ``v = T (x2 - m)`` the log-likelihood
ratio of "same person" against "different people" is, summed over the kept dimensions,

    LLR = sum_i  a_i (u_i^2 + v_i^2) + b_i u_i v_i + c_i,
    a_i = (1 / (psi_i + 1) - (psi_i + 1) / (2 psi_i + 1)) / 2,
    b_i = psi_i / (2 psi_i + 1),
    c_i = log(psi_i + 1) - log(2 psi_i + 1) / 2.

Its scores are natural-log likelihood ratios (0 = equal evidence; thresholds on this scale are not
cosines). A scorer is stored as plain float64 arrays (``to_state`` / ``from_state``) so checkpoints
keep loading with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SCORERS", "CosineScorer", "PLDAScorer", "fit_plda", "plda_from_covariances", "scorer_from_state",
           "choose_scorer"]

SCORERS = ("cosine", "plda")


class CosineScorer:
    """``score(e1 (P,D), e2 (P,D)) -> (P,)`` dot products of L2-normalised embeddings (cosines)."""

    name = "cosine"
    unit = "cosine"

    def score(self, e1, e2):
        e1, e2 = _pair_arrays(e1, e2)
        return np.einsum("nd,nd->n", e1, e2)

    def transform(self, e):
        return np.asarray(e, dtype=np.float64)

    def score_matrix(self, a, b):
        """``a (Na, D)``, ``b (Nb, D)`` -> (Na, Nb) cosines of every (a_i, b_j)."""
        return self.transform(a) @ self.transform(b).T


def _pair_arrays(e1, e2):
    e1, e2 = np.asarray(e1, dtype=np.float64), np.asarray(e2, dtype=np.float64)
    if e1.ndim != 2 or e1.shape != e2.shape:
        raise ValueError(f"pair embeddings must be two (P, D) arrays of one shape, got {e1.shape} and {e2.shape}")
    return e1, e2


class PLDAScorer:
    """Two-covariance PLDA in its diagonalised form: ``mean (D,)``, ``transform T (k, D)``, ``psi (k,)``.

    ``threshold``: optional log-likelihood-ratio threshold calibrated on validation pairs.
    """

    name = "plda"
    unit = "log-likelihood ratio"

    def __init__(self, mean, transform, psi, threshold=None):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.T = np.asarray(transform, dtype=np.float64)
        self.psi = np.asarray(psi, dtype=np.float64)
        if self.mean.ndim != 1 or self.T.ndim != 2 or self.T.shape[1] != self.mean.shape[0] \
                or self.psi.shape != (self.T.shape[0],):
            raise ValueError(f"PLDA arrays do not fit: mean {self.mean.shape}, transform {self.T.shape}, "
                             f"psi {self.psi.shape} (need (D,), (k, D), (k,))")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.T).all() and np.isfinite(self.psi).all()) \
                or (self.psi < 0).any():
            raise ValueError("PLDA arrays hold NaN/Inf or a negative between-class variance")
        if threshold is not None and not math.isfinite(float(threshold)):
            raise ValueError(f"PLDA threshold {threshold!r} is not finite")
        self.threshold = None if threshold is None else float(threshold)
        p = self.psi
        self.a = 0.5 * (1.0 / (p + 1.0) - (p + 1.0) / (2.0 * p + 1.0))
        self.b = p / (2.0 * p + 1.0)
        self.c = float(np.sum(np.log(p + 1.0) - 0.5 * np.log(2.0 * p + 1.0)))

    def transform(self, e):
        """``e (N, D)`` -> ``T (e - mean)`` (N, k): within-class covariance I, between-class diag(psi)."""
        e = np.asarray(e, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.mean.shape[0]:
            raise ValueError(f"embeddings must be (N, {self.mean.shape[0]}), got {e.shape}")
        return (e - self.mean) @ self.T.T

    def score(self, e1, e2):
        """Log-likelihood ratios (P,) of pairs ``e1[i], e2[i]`` (each (P, D))."""
        e1, e2 = _pair_arrays(e1, e2)
        u, v = self.transform(e1), self.transform(e2)
        return (u * u + v * v) @ self.a + (u * v) @ self.b + self.c

    def score_matrix(self, a, b):
        """``a (Na, D)``, ``b (Nb, D)`` -> (Na, Nb) log-likelihood ratios of every (a_i, b_j)."""
        u, v = self.transform(a), self.transform(b)
        return ((u * u) @ self.a)[:, None] + ((v * v) @ self.a)[None, :] + (u * self.b) @ v.T + self.c

    def to_state(self):
        """Plain dict of float64 arrays (and a float), safe for ``weights_only`` checkpoints and .npz."""
        st = {"name": self.name, "mean": self.mean, "transform": self.T, "psi": self.psi}
        if self.threshold is not None:
            st["threshold"] = self.threshold
        return st


def scorer_from_state(state):
    """``PLDAScorer`` from :meth:`PLDAScorer.to_state` (arrays may be tensors); ValueError when malformed."""
    if not isinstance(state, dict) or state.get("name") != "plda":
        raise ValueError(f"not a stored scorer (expected a dict with name 'plda'), got {type(state).__name__}")
    try:
        arrays = [np.asarray(_numpy(state[k]), dtype=np.float64) for k in ("mean", "transform", "psi")]
    except KeyError as exc:
        raise ValueError(f"stored scorer lacks {exc}") from None
    thr = state.get("threshold")
    return PLDAScorer(*arrays, threshold=None if thr is None else float(thr))


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def plda_from_covariances(mean, between, within, dim=0):
    """``PLDAScorer`` of the model ``x = mean + y + e``, ``y ~ N(0, between)``, ``e ~ N(0, within)``.

    ``within`` (D, D) must be positive definite, ``between`` (D, D) positive semi-definite. ``dim``:
    keep the ``dim`` directions of largest between/within ratio (0 = all D).
    """
    within = np.asarray(within, dtype=np.float64)
    between = np.asarray(between, dtype=np.float64)
    w_val, w_vec = np.linalg.eigh(0.5 * (within + within.T))
    if w_val.min() <= 0:
        raise ValueError("within-class covariance is not positive definite")
    whiten = (w_vec / np.sqrt(w_val)).T  # whiten @ within @ whiten.T = I
    b_w = whiten @ between @ whiten.T
    psi, vec = np.linalg.eigh(0.5 * (b_w + b_w.T))
    order = np.argsort(psi)[::-1]
    if dim:
        order = order[:dim]
    return PLDAScorer(mean, vec[:, order].T @ whiten, np.clip(psi[order], 0.0, None))


def fit_plda(embeddings, labels, dim=0, reg=1e-4):
    """Fit the two-covariance PLDA to ``embeddings (N, D)`` with identity ``labels (N,)``.

    Moment estimates: ``W`` = pooled within-class covariance (divided by N - C), ``B`` = covariance of
    the class means (each class weighted by its size) minus ``W C / N``, the noise the means carry
    (negative between-class variances are clipped to 0); ``W += reg * trace(W) / D * I`` keeps it
    invertible. Classes with one image add to ``B`` only through their mean. ``dim`` as in
    :func:`plda_from_covariances` (0 = min(D, C - 1)).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need embeddings (N, D) and labels (N,), got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold NaN or Inf")
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    n, d, c = x.shape[0], x.shape[1], len(classes)
    if c < 2 or n - c < 1:
        raise ValueError(f"PLDA needs >= 2 identities and some identity with >= 2 images, got {c} identities "
                         f"and {n} embeddings")
    mean = x.mean(0)
    class_means = np.zeros((c, d))
    np.add.at(class_means, inv, x)
    class_means /= counts[:, None]
    resid = x - class_means[inv]
    within = resid.T @ resid / (n - c)
    centred = class_means - mean
    between = (centred * counts[:, None]).T @ centred / n - within * c / n  # class means carry W / n_c
    within += reg * np.trace(within) / d * np.eye(d)
    return plda_from_covariances(mean, between, within, dim=dim or min(d, c - 1))


def choose_scorer(name, stored, what="checkpoint"):
    """The scorer of ``--scorer NAME``: ``auto`` = the stored back-end when there is one, else cosine.

    ``stored``: the ``what``'s (checkpoint, model file) ``PLDAScorer`` or None. ValueError for
    ``plda`` without one.
    """
    if name not in ("auto",) + SCORERS:
        raise ValueError(f"--scorer must be one of auto, {', '.join(SCORERS)}, got {name!r}")
    if name == "cosine" or (name == "auto" and stored is None):
        return CosineScorer()
    if stored is None:
        fix = "convert a checkpoint that has one" if what == "model file" else "train with scorer.fit = true"
        raise ValueError(f"--scorer plda: the {what} stores no PLDA back-end ({fix}, or fit one with `fastconv "
                         f"face fit-scorer`; or use --scorer cosine)")
    return stored


def stored_scorer(meta, path="checkpoint"):
    """The ``PLDAScorer`` in a checkpoint's ``meta["scorer"]``, or None; ValueError when malformed."""
    state = meta.get("scorer") if isinstance(meta, dict) else None
    if state is None:
        return None
    try:
        return scorer_from_state(state)
    except ValueError as exc:
        raise ValueError(f"{path}: bad stored scorer: {exc}") from None


def state_as_tensors(state):
    """:meth:`PLDAScorer.to_state` with its arrays as float64 tensors (what ``weights_only`` loads)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in state.items()}


def fit_training_side(backbone, data, device, dim=0, calibration="best"):
    """Fit PLDA on the training images of ``data`` (embedded with flip TTA, as eval does) and calibrate
    its LLR threshold on the validation pairs when there are any (``calibration``: best | cv-median,
    ``fastconv.face.calibrate``) -> ``PLDAScorer``."""
    from .calibrate import calibrate_threshold
    from .evaluate import embed

    scorer = fit_plda(embed(backbone, data["images"], device=device), data["labels"], dim=dim)
    pairs, same = data["val_pairs"], np.asarray(data["val_same"])
    if len(pairs) and same.any() and not same.all():
        val = embed(backbone, data["val_images"], device=device)
        scores = scorer.score(val[pairs[:, 0]], val[pairs[:, 1]])
        scorer.threshold = float(calibrate_threshold(scores, same, pairs, calibration))
    return scorer
