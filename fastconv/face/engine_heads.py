"""Training heads on fastconv's engine, twins of ``fastconv.face.heads`` (same parameter names).

Each head is called as ``loss = head(embeddings (B, D), target)`` and ``head.backward()`` returns
dL/d(embeddings) and adds the head's parameter gradients.

``SoftmaxHead``: ``fc`` = Linear(D, C), then cross-entropy with label smoothing (target: (B,) int
labels, or (B, C) soft CutMix targets).

``CombinedMarginHead`` (insightface): cosines ``c = normalize(e) normalize(W)^T`` (B, C); on each
row's target class ``t = clamp(c_y, -1 + 1e-7, 1 - 1e-7)`` becomes
``phi = cos(m1 acos t + m2) - m3`` where ``t > th = cos((pi - m2) / m1)``, and the fallback
``phi = t - mm - m3`` with ``mm = sin(pi - m2) m2`` where ``m1 acos t + m2 > pi`` would make it
non-monotonic; ``m1 = 1, m2 = 0`` (CosFace) is ``phi = t - m3``. Logits ``s * c`` with ``phi`` in
the target places; loss = cross-entropy. Backward of the target entry:
``dphi/dt = m1 sin(m1 theta + m2) / sqrt(1 - t^2)`` (or 1 on the fallback), zero where the
clamp was active.
"""
import math

import numpy as np

from .. import nn
from ..nn import functional as NF
from ..nn.module import CachedModule, Parameter
from ..random import rng

__all__ = ["SoftmaxHead", "CombinedMarginHead", "build_engine_head"]


class SoftmaxHead(CachedModule):
    """Linear classifier ``(B, D) -> (B, C)`` logits and mean cross-entropy."""

    def __init__(self, embedding_size, num_classes, label_smoothing=0.0, dtype=np.float32):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.fc = nn.Linear(embedding_size, num_classes, dtype=dtype)
        self.loss = nn.CrossEntropyLoss(label_smoothing)

    def logits(self, embeddings, labels=None):
        return self.fc(embeddings)

    def forward(self, embeddings, target):
        return self.loss(self.logits(embeddings), target)

    def __call__(self, embeddings, target):
        return self.forward(embeddings, target)

    def backward(self, dloss=1.0):
        return self.fc.backward(self.loss.backward() * dloss)


class CombinedMarginHead(CachedModule):
    """``weight`` (C, D) class centres; target logit ``s (cos(m1 theta + m2) - m3)``, others ``s cos``."""

    def __init__(self, embedding_size, num_classes, s=64.0, m1=1.0, m2=0.5, m3=0.0, dtype=np.float32):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if s <= 0 or m1 <= 0 or m2 < 0 or m3 < 0 or m2 >= math.pi:
            raise ValueError(f"need s > 0, m1 > 0, 0 <= m2 < pi, m3 >= 0; got s={s}, m1={m1}, m2={m2}, m3={m3}")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.th = math.cos((math.pi - self.m2) / self.m1)
        self.mm = math.sin(math.pi - self.m2) * self.m2
        self.weight = Parameter(rng().normal(0, 0.01, (num_classes, embedding_size)).astype(dtype))
        self.loss = nn.CrossEntropyLoss()

    def cosine(self, embeddings):
        """(B, D) -> (B, C) cosines between embeddings and class centres."""
        return NF.normalize(embeddings) @ NF.normalize(self.weight.data).T

    def logits(self, embeddings, labels):
        """(B, C) scaled logits with the margin on each row's target class; caches for backward."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("margin heads need hard int labels (B,); soft CutMix/MixUp targets are not supported")
        en, wn = NF.normalize(embeddings), NF.normalize(self.weight.data)
        cos = en @ wn.T
        rows = np.arange(cos.shape[0])
        lo, hi = -1 + 1e-7, 1 - 1e-7
        raw = cos[rows, labels]
        t = np.clip(raw, lo, hi)
        inside = (raw >= lo) & (raw <= hi)
        if self.m1 == 1.0 and self.m2 == 0.0:
            phi, dphi = t - self.m3, np.ones_like(t)
        else:
            theta = np.arccos(t)
            angle = self.m1 * theta + self.m2
            margin = t > self.th
            phi = np.where(margin, np.cos(angle) - self.m3, t - self.mm - self.m3)
            dphi = np.where(margin, self.m1 * np.sin(angle) / np.sqrt(1 - t * t), 1.0)
        out = cos.copy()
        out[rows, labels] = phi
        self._remember((embeddings, en, wn, rows, labels, (dphi * inside).astype(cos.dtype)))
        return out * cos.dtype.type(self.s)

    def forward(self, embeddings, labels):
        return self.loss(self.logits(embeddings, labels), labels)

    def __call__(self, embeddings, labels):
        return self.forward(embeddings, labels)

    def backward(self, dloss=1.0):
        embeddings, en, wn, rows, labels, dphi_dcos = self._recall()
        dcos = self.loss.backward() * (dloss * self.s)
        dcos[rows, labels] *= dphi_dcos
        self.weight.grad += NF.normalize_backward(dcos.T @ en, self.weight.data)
        return NF.normalize_backward(dcos @ wn, embeddings)


def build_engine_head(kind, embedding_size, num_classes, dtype=np.float32, **kw):
    """Head by name (``softmax``, ``arcface``, ``cosface``, ``combined``) as ``fastconv.face.heads.build_head``."""
    if kind == "softmax":
        return SoftmaxHead(embedding_size, num_classes, kw.get("label_smoothing", 0.0), dtype)
    if kind == "arcface":
        return CombinedMarginHead(embedding_size, num_classes, kw.get("s", 64.0), 1.0, kw.get("m", 0.5), 0.0, dtype)
    if kind == "cosface":
        return CombinedMarginHead(embedding_size, num_classes, kw.get("s", 64.0), 1.0, 0.0, kw.get("m", 0.35), dtype)
    if kind == "combined":
        return CombinedMarginHead(embedding_size, num_classes, kw.get("s", 64.0), kw.get("m1", 1.0),
                                  kw.get("m2", 0.5), kw.get("m3", 0.0), dtype)
    raise ValueError(f"unknown head {kind!r}; expected one of ['arcface', 'combined', 'cosface', 'softmax']")
