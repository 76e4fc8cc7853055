"""CNN: a configurable conv stack + Flatten + Linear classifier, built from fastconv.nn layers.

Block i is ``Conv2d(c_{i-1}, c_i, k_i, s_i, padding=k_i // 2) [-> BatchNorm2d] -> act_i
[-> MaxPool2d(pool_i)]``; after the blocks come ``Flatten [-> Dropout] -> Linear(-, num_classes)``.
x: (N, in_channels, H, W) with H = W = input_size (or (H, W)) -> logits (N, num_classes).
"""
import numpy as np

from .. import nn, optim
from .._validate import int_tuple

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "gelu": nn.GELU, "silu": nn.SiLU}


def _per_block(value, n, name, kind):
    """A single value (applied to every block) or a sequence of ``n`` -> list of ``n``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} must have one entry per conv block ({n}), got {len(values)}")
    for v in values:
        if not isinstance(v, kind):
            raise TypeError(f"{name} entries must be {kind}, got {v!r}")
    return values


class CNN(nn.Module):
    """Conv classifier with an internal CrossEntropyLoss.

    ``pool``: None (no pooling), an int k (MaxPool2d(k) after every block) or one int/None per
    block. ``loss(x, labels)`` runs forward and returns the float loss; ``backward()`` then
    accumulates the gradients; ``step()`` applies the optimizer.
    """

    def __init__(self, in_channels, input_size, num_classes, channels=(32, 64, 128), kernel_sizes=3,
                 strides=1, activations="relu", pool=2, batchnorm=False, dropout=0.0,
                 dtype=np.float64, label_smoothing=0.0):
        super().__init__()
        channels = list(channels)
        if not channels:
            raise ValueError("channels must name at least one conv block")
        n = len(channels)
        kernel_sizes = _per_block(kernel_sizes, n, "kernel_sizes", (int, np.integer))
        strides = _per_block(strides, n, "strides", (int, np.integer))
        activations = _per_block(activations, n, "activations", str)
        pools = _per_block(pool, n, "pool", (int, np.integer, type(None)))
        for a in activations:
            if a not in ACTIVATIONS:
                raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {a!r}")
        h, w = int_tuple(input_size, 2, "input_size", 1)
        layers, c_in = [], in_channels
        for c, k, s, a, p in zip(channels, kernel_sizes, strides, activations, pools):
            layers.append(nn.Conv2d(c_in, c, k, stride=s, padding=k // 2, bias=not batchnorm, dtype=dtype))
            h, w = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
            if batchnorm:
                layers.append(nn.BatchNorm2d(c, dtype=dtype))
            layers.append(ACTIVATIONS[a]())
            if p is not None and p > 1:
                layers.append(nn.MaxPool2d(p))
                h, w = (h - p) // p + 1, (w - p) // p + 1
            if h < 1 or w < 1:
                raise ValueError(f"input_size {input_size} is too small for this conv/pool stack")
            c_in = c
        layers.append(nn.Flatten())
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(c_in * h * w, num_classes, dtype=dtype))
        self.net = nn.Sequential(*layers)
        self.dtype = np.dtype(dtype)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        object.__setattr__(self, "optimizer", None)

    def forward(self, x):
        """x: (N, C, H, W) -> logits (N, num_classes) (kept for :meth:`backward`)."""
        logits = self.net(x)
        object.__setattr__(self, "_logits", logits)
        return logits

    def loss(self, x, labels):
        """Forward and the mean cross-entropy against labels (N,) -> float; returns the loss."""
        return self.criterion(self.forward(x), labels)

    def backward(self, labels=None):
        """Backpropagate the loss of the last :meth:`loss` call (or, given ``labels``, of the
        last forward against them); returns dL/dx (N, C, H, W)."""
        if labels is not None:
            if "_logits" not in self.__dict__:
                raise RuntimeError("CNN.backward(labels) called before forward")
            self.criterion(self._logits, labels)
        return self.net.backward(self.criterion.backward())

    def configure_optimizer(self, name="sgd", **kwargs):
        """Attach an optimizer over :meth:`parameters`: "sgd", "adam" or "adamw"; returns it."""
        cls = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}.get(name)
        if cls is None:
            raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {name!r}")
        object.__setattr__(self, "optimizer", cls(self.parameters(), **kwargs))
        return self.optimizer

    def step(self, optimizer=None):
        """Apply ``optimizer`` (or the attached one) to the accumulated gradients."""
        opt = optimizer or self.optimizer
        if opt is None:
            raise RuntimeError("no optimizer: call configure_optimizer(...) or pass one to step()")
        opt.step()

    def predict(self, x, batch_size=256):
        """Class predictions (N,) in eval mode, batch by batch (training mode restored after)."""
        was_training = self.training
        self.eval()
        try:
            out = [self.forward(x[i:i + batch_size]).argmax(axis=1) for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        return np.concatenate(out)
