"""Augmentation: per-image torchvision.transforms.v2 pipeline on uint8 ``(3, S, S)`` tensors and
batch-level CutMix/MixUp on normalised float batches ``(B, 3, S, S)`` with ``(B,)`` labels.
"""
from torchvision.transforms import v2


def build_transform(aug, size):
    """v2 pipeline from the ``[augment]`` config section, or None when every switch is off.

    uint8 ``(3, S, S)`` -> uint8 ``(3, S, S)``; flip, mild RandomResizedCrop, framing jitter (``jitter.py``), ColorJitter,
    RandomPerspective.
    """
    ops = []
    if aug.get("flip", False):
        ops.append(v2.RandomHorizontalFlip())
    if aug.get("resized_crop", False):
        scale = float(aug.get("crop_scale", 0.8))
        if not 0 < scale <= 1:
            raise ValueError(f"augment.crop_scale must be in (0, 1], got {scale}")
        ops.append(v2.RandomResizedCrop(size, scale=(scale, 1.0), ratio=(0.9, 1.1), antialias=True))
    if aug.get("framing", False):
        from .jitter import FramingJitter

        ops.append(FramingJitter((aug["framing_scale"], aug["framing_shift"], aug["framing_rotation"])))
    cj = float(aug.get("color_jitter", 0.0))
    if cj > 0:
        ops.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj))
    persp = float(aug.get("perspective", 0.0))
    if persp > 0:
        ops.append(v2.RandomPerspective(distortion_scale=persp, p=0.5))
    return v2.Compose(ops) if ops else None


def build_training_augment(aug, size):
    """-> (per-image transform for the loader or None, batch function uint8 ``(B, 3, S, S)`` -> normalised
    float32): with ``augment.batched`` the loader does nothing and :class:`batch_augment.BatchAugment` does
    it all on the batch; else the v2 pipeline per image and ``data.normalize`` on the batch."""
    from .batch_augment import build_batch_augment
    from .data import normalize

    batched = build_batch_augment(aug)
    return (None, batched) if batched is not None else (build_transform(aug, size), normalize)


def build_batch_mix(stage, num_classes):
    """CutMix and/or MixUp (v2.RandomChoice of the enabled ones) from a stage config, or None.

    Called as ``images, targets = mix(images, labels)``; targets become ``(B, C)`` float.
    """
    mixes = []
    if stage.get("cutmix", 0.0) > 0:
        mixes.append(v2.CutMix(alpha=float(stage["cutmix"]), num_classes=num_classes))
    if stage.get("mixup", 0.0) > 0:
        mixes.append(v2.MixUp(alpha=float(stage["mixup"]), num_classes=num_classes))
    if mixes and stage.get("head", "softmax") != "softmax":
        raise ValueError(f"CutMix/MixUp need the softmax head, got head={stage.get('head')!r}")
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
