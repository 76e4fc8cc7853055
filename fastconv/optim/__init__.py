"""Optimizers and learning-rate schedules."""
from .lr_scheduler import CosineAnnealingLR, StepLR
from .optimizer import SGD, Adam, AdamW, Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR"]
