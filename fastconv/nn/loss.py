"""Losses: ``forward(logits, target) -> float`` (mean reduction), ``backward() -> dL/dlogits``."""
import numpy as np

from .._validate import check_input


class CrossEntropyLoss:
    """Softmax cross-entropy, as torch.nn.CrossEntropyLoss (mean over the batch).

    logits: (N, K); target: int labels (N,) in [0, K), or class probabilities / one-hot (N, K).
    With label smoothing eps the target becomes (1 - eps) * target + eps / K.
    """

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._cache = None

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def _target(self, logits, target):
        n, k = logits.shape
        target = np.asarray(target)
        if target.ndim == 1:
            if not np.issubdtype(target.dtype, np.integer):
                raise TypeError(f"integer class labels expected for a 1-D target, got dtype {target.dtype}")
            if target.shape[0] != n:
                raise ValueError(f"target has {target.shape[0]} labels for {n} logits rows")
            if target.min() < 0 or target.max() >= k:
                raise ValueError(f"labels must lie in [0, {k}), got range [{target.min()}, {target.max()}]")
            probs = np.zeros((n, k), dtype=logits.dtype)
            probs[np.arange(n), target] = 1
        elif target.shape == (n, k):
            probs = target.astype(logits.dtype)
        else:
            raise ValueError(f"target must be labels (N,)=({n},) or probabilities (N, K)=({n}, {k}), "
                             f"got shape {target.shape}")
        eps = self.label_smoothing
        return probs if eps == 0 else (1 - eps) * probs + eps / k

    def forward(self, logits, target):
        logits = check_input(logits, "CrossEntropyLoss")
        if logits.ndim != 2:
            raise ValueError(f"logits must be (N, K), got shape {logits.shape}")
        probs = self._target(logits, target)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._cache = (log_softmax, probs)
        return float(-(probs * log_softmax).sum() / logits.shape[0])

    def backward(self):
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before forward")
        log_softmax, probs = self._cache
        softmax = np.exp(log_softmax)
        return (softmax * probs.sum(axis=1, keepdims=True) - probs) / log_softmax.shape[0]


class MSELoss:
    """Mean squared error: mean((pred - target)^2) over all elements."""

    def __init__(self):
        self._cache = None

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def forward(self, pred, target):
        pred = check_input(pred, "MSELoss")
        target = np.asarray(target, dtype=pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"target shape {target.shape} must equal prediction shape {pred.shape}")
        diff = pred - target
        self._cache = diff
        return float((diff * diff).mean())

    def backward(self):
        if self._cache is None:
            raise RuntimeError("MSELoss.backward called before forward")
        return 2 * self._cache / self._cache.size
