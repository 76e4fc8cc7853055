"""Backbone factory: ``get_model(name, embedding_size=512, **kw)`` and ``model_info``.

Every backbone maps ``(B, 3, S, S)`` float images (``S = input_size``) to ``(B, D)`` embeddings.
"""

import torch
from torch import nn

from ..backbone_spec import IRESNET_VARIANTS
from .efficientnet import EfficientNetFace
from .iresnet import IResNet


def _iresnet(layers, **defaults):
    def build(embedding_size=512, **kw):
        return IResNet(layers, embedding_size=embedding_size, **{**defaults, **kw})
    return build


_MODELS = {name: _iresnet(layers, **defaults) for name, (layers, defaults) in IRESNET_VARIANTS.items()}
_MODELS["efficientnet_b0"] = lambda embedding_size=512, **kw: EfficientNetFace(embedding_size, **kw)


def model_names():
    """Names accepted by :func:`get_model`."""
    return sorted(_MODELS)


def get_model(name, embedding_size=512, **kw):
    """Build backbone ``name`` producing ``(B, embedding_size)`` embeddings.

    Keyword options (iresnet*): ``input_size``, ``width``, ``dropout``, ``dropblock``,
    ``stem_stride``, ``se``; efficientnet_b0: ``input_size``, ``width``, ``dropout``.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {model_names()}")
    if not isinstance(embedding_size, int) or embedding_size < 1:
        raise ValueError(f"embedding_size must be a positive int, got {embedding_size!r}")
    try:
        return _MODELS[name](embedding_size=embedding_size, **kw)
    except TypeError as exc:
        raise ValueError(f"bad options for {name}: {exc}") from exc


def model_info(model, input_size):
    """``dict(params, flops)`` for one ``(1, 3, S, S)`` image in eval mode.

    ``flops`` is ``torch.utils.flop_counter.FlopCounterMode``'s total: 2 * MACs of the convolutions
    and matrix products (the Linear layers); element-wise ops, BN and pooling are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "flops": int(counter.get_total_flops())}
