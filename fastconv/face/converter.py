"""Convert a trained torch face backbone to fastconv's engine and write the torch-free ``model.npz``.

``convert(torch_model)`` -> the fastconv twin (``fastconv.face.engine_models``) with the same
weights, in eval mode. ``convert_checkpoint(best.pt, model.npz)`` also stores the preprocessing,
the embedding size, the calibrated cosine threshold and the checkpoint's PLDA scoring back-end
when it stores one (its arrays and log-likelihood-ratio threshold; see ``fastconv.face.model_file``)
and checks the two engines agree on a random batch before writing.
"""
import numpy as np

from .backbone_spec import LAYERS, stage_channels
from .engine_models import UnsupportedModel, build_engine_model

__all__ = ["convert", "describe", "torch_state", "convert_checkpoint"]


def describe(torch_model):
    """-> (model_name, model_kwargs, embedding_size) of a ``fastconv.face.models`` backbone."""
    from .models.efficientnet import EfficientNetFace
    from .models.iresnet import IResNet, SEModule

    if isinstance(torch_model, EfficientNetFace):
        build_engine_model("efficientnet_b0")  # raises UnsupportedModel with the reason
    if not isinstance(torch_model, IResNet):
        raise UnsupportedModel(f"cannot convert {type(torch_model).__name__}: fastconv converts the backbones "
                               f"of fastconv.face.models (iresnet*, se_iresnet*)")
    layers = tuple(len(getattr(torch_model, f"layer{i}")) for i in range(1, 5))
    se = isinstance(torch_model.layer1[0].se, SEModule)
    names = [n for n, lay in LAYERS.items() if lay == layers]
    if not names:
        raise UnsupportedModel(f"IResNet with stage depths {layers} has no fastconv twin; known: {LAYERS}")
    stem = torch_model.conv1.out_channels
    width = stem / 64
    chans = tuple(getattr(torch_model, f"layer{i}")[0].conv1.out_channels for i in range(1, 5))
    if tuple(stage_channels(width)) != chans:
        raise UnsupportedModel(f"cannot infer the width multiplier of stage channels {chans}")
    has_dropblock = not all(type(b.dropblock).__name__ == "Identity"
                            for i in range(1, 5) for b in getattr(torch_model, f"layer{i}"))
    kwargs = {"input_size": torch_model.input_size, "width": width, "dropout": float(torch_model.dropout.p),
              "stem_stride": torch_model.conv1.stride[0], "se": se,
              "dropblock": float(torch_model.layer3[0].dropblock.p) if has_dropblock else 0.0}
    name = ("se_" if se else "") + names[0]
    return name, kwargs, torch_model.fc.out_features


def torch_state(torch_model):
    """``state_dict()`` as float32/float64 NumPy arrays, without BatchNorm's ``num_batches_tracked``."""
    return {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def convert(torch_model, dtype=np.float32, name=None, model_kwargs=None):
    """The fastconv twin of ``torch_model`` (weights copied, eval mode), in ``dtype``.

    ``name``/``model_kwargs`` as in a checkpoint's meta; inferred from the model when omitted.
    """
    if name is None:
        name, model_kwargs, embedding_size = describe(torch_model)
    else:
        embedding_size = torch_model.fc.out_features if hasattr(torch_model, "fc") else None
    net = build_engine_model(name, embedding_size, dtype=dtype, **dict(model_kwargs or {}))
    net.load_state_dict(torch_state(torch_model), strict=True)
    return net.eval()


def parity(torch_model, net, batch=2, seed=0):
    """max |torch - fastconv| of the embeddings of a random normalised batch (float32 inputs)."""
    import torch

    size = net.input_size
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        want = torch_model.float().eval()(torch.from_numpy(x)).numpy()
    got = net(x.astype(net.fc.weight.dtype))
    return float(np.max(np.abs(got - want)))


def convert_checkpoint(checkpoint, out, atol=1e-3):
    """``best.pt`` -> ``model.npz`` (float32 weights); returns (meta written, parity max|diff|)."""
    from .checkpoint import load_for_inference
    from .model_file import describe_model, save_model_file
    from .scoring import stored_scorer

    opened = load_for_inference(checkpoint)
    torch_model, meta = opened.model, opened.meta
    name, kwargs = meta["model_name"], dict(meta.get("model_kwargs", {}))
    net = convert(torch_model, np.float32, name, kwargs)
    diff = parity(torch_model, net)
    if not diff <= atol:
        raise RuntimeError(f"conversion check failed: max |torch - fastconv| = {diff:.3g} > {atol:g}")
    description = describe_model(name, kwargs, meta["embedding_size"], opened.preprocess.to_dict(), opened.threshold,
                                 meta.get("threshold_source") or "checkpoint (chosen on its validation pairs)")
    scorer = stored_scorer(meta, str(checkpoint))
    return save_model_file(out, torch_state(torch_model), description, scorer=scorer), diff
