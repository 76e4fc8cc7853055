"""The learning-rate schedule both trainers use (torch's ``fastconv.face.train`` and the engine's)."""
import math


def lr_factor(step, total, warmup, min_ratio=0.0):
    """Linear warm-up over ``warmup`` steps then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
