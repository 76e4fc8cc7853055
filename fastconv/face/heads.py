"""Classification heads that turn ``(B, D)`` embeddings and labels into a training loss.

``SoftmaxHead``: linear classifier + cross-entropy (hard ``(B,)`` int labels or soft ``(B, C)``
targets from CutMix/MixUp). ``CombinedMarginHead``: insightface's combined margin
``cos(m1 * theta + m2) - m3`` on the target class with L2-normalised weights and embeddings,
scaled by ``s``; ``ArcFace(s, m)`` = (1, m, 0), ``CosFace(s, m)`` = (1, 0, m).

Theta + m > pi: like insightface's arcface branch we keep the target logit monotonic in theta by
switching, when ``m1 * theta + m2 > pi`` (i.e. ``cos(theta) < th = cos((pi - m2) / m1)``), to the
CosFace-like fallback ``cos(theta) - mm - m3`` with ``mm = sin(pi - m2) * m2`` (the "th, mm"
fallback, not the easy margin).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_embeddings(embeddings, size):
    if not torch.is_tensor(embeddings):
        raise TypeError(f"embeddings must be a tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2 or embeddings.shape[1] != size:
        raise ValueError(f"embeddings must have shape (B, {size}), got {tuple(embeddings.shape)}")


def _check_hard_labels(labels, batch, num_classes):
    if not torch.is_tensor(labels) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an int64 tensor of shape ({batch},), got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")


class SoftmaxHead(nn.Module):
    """Linear classifier ``(B, D) -> (B, C)`` logits and cross-entropy loss."""

    def __init__(self, embedding_size, num_classes, label_smoothing=0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.embedding_size, self.num_classes = embedding_size, num_classes
        self.label_smoothing = label_smoothing
        self.fc = nn.Linear(embedding_size, num_classes)

    def logits(self, embeddings, labels=None):
        """``(B, D) -> (B, C)`` class logits (labels unused, kept for a common signature)."""
        _check_embeddings(embeddings, self.embedding_size)
        return self.fc(embeddings)

    def forward(self, embeddings, labels):
        """Mean CE loss; ``labels`` is ``(B,)`` int64 or ``(B, C)`` float soft targets."""
        logits = self.logits(embeddings).float()
        if torch.is_tensor(labels) and labels.is_floating_point():
            if labels.shape != logits.shape:
                raise ValueError(f"soft targets must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
        else:
            _check_hard_labels(labels, logits.shape[0], self.num_classes)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class CombinedMarginHead(nn.Module):
    """Normalised-weight margin head: target logit ``s * (cos(m1*theta + m2) - m3)``, others ``s * cos``."""

    def __init__(self, embedding_size, num_classes, s=64.0, m1=1.0, m2=0.5, m3=0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if s <= 0 or m1 <= 0 or m2 < 0 or m3 < 0 or m2 >= math.pi:
            raise ValueError(f"need s > 0, m1 > 0, 0 <= m2 < pi, m3 >= 0; got s={s}, m1={m1}, m2={m2}, m3={m3}")
        self.embedding_size, self.num_classes = embedding_size, num_classes
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.th = math.cos((math.pi - self.m2) / self.m1)
        self.mm = math.sin(math.pi - self.m2) * self.m2
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, 0, 0.01)

    def cosine(self, embeddings):
        """``(B, D) -> (B, C)`` cosine between embeddings and class centres (float32)."""
        _check_embeddings(embeddings, self.embedding_size)
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))

    def logits(self, embeddings, labels):
        """``(B, C)`` scaled logits with the margin applied to each row's target class."""
        cos = self.cosine(embeddings)
        _check_hard_labels(labels, cos.shape[0], self.num_classes)
        rows = torch.arange(cos.shape[0], device=cos.device)
        target = cos[rows, labels].clamp(-1 + 1e-7, 1 - 1e-7)
        if self.m1 == 1.0 and self.m2 == 0.0:
            phi = target - self.m3
        else:
            theta = torch.acos(target)
            phi = torch.cos(self.m1 * theta + self.m2) - self.m3
            phi = torch.where(target > self.th, phi, target - self.mm - self.m3)
        out = cos.clone()
        out[rows, labels] = phi.to(out.dtype)
        return out * self.s

    def forward(self, embeddings, labels):
        """Mean cross-entropy over the margin logits."""
        if torch.is_tensor(labels) and labels.is_floating_point():
            raise ValueError("margin heads need hard int labels; soft CutMix/MixUp targets are not supported")
        return F.cross_entropy(self.logits(embeddings, labels), labels)


def ArcFace(embedding_size, num_classes, s=64.0, m=0.5):
    """Additive angular margin: ``CombinedMarginHead(m1=1, m2=m, m3=0)``."""
    return CombinedMarginHead(embedding_size, num_classes, s=s, m1=1.0, m2=m, m3=0.0)


def CosFace(embedding_size, num_classes, s=64.0, m=0.35):
    """Additive cosine margin: ``CombinedMarginHead(m1=1, m2=0, m3=m)``."""
    return CombinedMarginHead(embedding_size, num_classes, s=s, m1=1.0, m2=0.0, m3=m)


def build_head(kind, embedding_size, num_classes, **kw):
    """Head by name: ``softmax``, ``arcface``, ``cosface`` or ``combined``."""
    if kind == "softmax":
        return SoftmaxHead(embedding_size, num_classes, label_smoothing=kw.get("label_smoothing", 0.0))
    if kind == "arcface":
        return ArcFace(embedding_size, num_classes, s=kw.get("s", 64.0), m=kw.get("m", 0.5))
    if kind == "cosface":
        return CosFace(embedding_size, num_classes, s=kw.get("s", 64.0), m=kw.get("m", 0.35))
    if kind == "combined":
        return CombinedMarginHead(embedding_size, num_classes, s=kw.get("s", 64.0), m1=kw.get("m1", 1.0),
                                  m2=kw.get("m2", 0.5), m3=kw.get("m3", 0.0))
    raise ValueError(f"unknown head {kind!r}; expected one of ['arcface', 'combined', 'cosface', 'softmax']")
