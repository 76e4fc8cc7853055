"""Models built from fastconv.nn layers."""
from .cnn import CNN

__all__ = ["CNN"]
