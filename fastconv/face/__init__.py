"""Face recognition: PyTorch training and evaluation, plus a torch-free runtime.

``fastconv.face.convert(torch_model)`` (from ``fastconv.face.converter``) maps a trained backbone
onto fastconv's engine; ``fastconv.face.runtime`` runs a converted ``model.npz`` without torch.
Nothing is imported eagerly, so ``import fastconv.face.runtime`` stays torch-free.
"""


def __getattr__(name):
    if name == "convert":
        from .converter import convert

        return convert
    raise AttributeError(f"module 'fastconv.face' has no attribute {name!r}")
