"""Face images for the torch trainer: the uint8 -> float normalisation and a Dataset.

Preprocessing (decode, crop, resize) lives in the torch-free ``fastconv.face.preprocess``, folder
scanning, the decode cache and the training set in the torch-free ``fastconv.face.image_sets``;
both are re-exported here.
"""
from __future__ import annotations

import numpy as np
import torch

from .image_sets import ImageCache, scan_identity_folder, training_set  # noqa: F401
from .preprocess import (CANONICAL, IMAGE_EXTENSIONS, Preprocess, UnreadableImage,  # noqa: F401
                         decode_images, list_images, load_image)

__all__ = [
    "Preprocess",
    "CANONICAL",
    "UnreadableImage",
    "load_image",
    "IMAGE_EXTENSIONS",
    "list_images",
    "scan_identity_folder",
    "decode_images",
    "ImageCache",
    "normalize",
    "FaceDataset",
    "training_set",
]


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) or (3,H,W) -> float32 in [-1, 1]: ``(x/255 - 0.5) / 0.5``, on x's device."""
    if not isinstance(x_uint8, torch.Tensor):
        raise TypeError(f"normalize expects a torch.Tensor, got {type(x_uint8).__name__}")
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"normalize expects dtype uint8, got {x_uint8.dtype}")
    if x_uint8.dim() not in (3, 4) or x_uint8.shape[-3] != 3:
        raise ValueError(f"normalize expects (N,3,H,W) or (3,H,W), got {tuple(x_uint8.shape)}")
    return x_uint8.float().div_(127.5).sub_(1.0)


class FaceDataset(torch.utils.data.Dataset):
    """images uint8 (M,3,S,S), labels int64 (M,) -> items (uint8 tensor (3,S,S) after transform, int)."""

    def __init__(self, images, labels, transform=None):
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            got = (type(images).__name__, getattr(images, "dtype", None), getattr(images, "shape", None))
            raise ValueError(f"images must be a uint8 ndarray (M,3,S,S), got {got}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be an integer array of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}"
            )
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.transform = transform

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.images[i], copy=True))
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])
