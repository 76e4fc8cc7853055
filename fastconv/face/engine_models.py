"""The face backbones on fastconv's own engine (NumPy + compiled kernels, no torch).

Twins of ``fastconv.face.models``: the same layers under the same attribute names, so a torch
``state_dict()`` (minus BatchNorm's ``num_batches_tracked``) loads with ``load_state_dict`` and
the keys of a converted ``model.npz`` are torch's. Every model maps ``(B, 3, S, S)`` normalised
float images to ``(B, D)`` embeddings (not L2-normalised).

``build_engine_model(name, embedding_size, **model_kwargs)`` takes the names and keyword
arguments of ``fastconv.face.models.get_model`` (``model_kwargs`` as stored in a checkpoint).
"""
import numpy as np

from .. import nn
from ..nn.residual import chain
from .backbone_spec import IRESNET_VARIANTS, check_iresnet_options, feature_side, stage_channels

__all__ = ["build_engine_model", "ENGINE_MODELS", "UnsupportedModel"]


class UnsupportedModel(ValueError):
    """A backbone (or option) the fastconv engine cannot run; the message says why."""


def _hold(module, name, value):
    """Keep ``value`` on ``module`` without registering it (an execution order over registered layers)."""
    object.__setattr__(module, name, value)


class SEModule(nn.Gate):
    """Squeeze-excitation: ``x * sigmoid(fc2(prelu(fc1(mean_hw(x)))))``; x: (B, C, H, W)."""

    def __init__(self, channels, reduction=4, dtype=np.float64):
        nn.Module.__init__(self)
        hidden = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, dtype=dtype)
        self.act = nn.PReLU(hidden, dtype=dtype)
        self.fc2 = nn.Conv2d(hidden, channels, 1, dtype=dtype)
        self.gate = nn.Sigmoid()
        _hold(self, "_chain", chain(self.pool, self.fc1, self.act, self.fc2, self.gate))

    def branches(self):
        return (self._chain,)


class IBasicBlock(nn.Residual):
    """IR block ``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN (-> SE)`` + shortcut.

    (B, Cin, H, W) -> (B, Cout, ceil(H/stride), ceil(W/stride)); the shortcut is a 1x1 conv + BN
    when the shape changes, the identity otherwise.
    """

    def __init__(self, cin, cout, stride=1, se=False, dtype=np.float64):
        nn.Module.__init__(self)
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5, dtype=dtype)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False, dtype=dtype)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, dtype=dtype)
        self.prelu = nn.PReLU(cout, dtype=dtype)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False, dtype=dtype)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5, dtype=dtype)
        self.se = SEModule(cout, dtype=dtype) if se else nn.Identity()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False, dtype=dtype),
                                            nn.BatchNorm2d(cout, eps=1e-5, dtype=dtype))
        _hold(self, "_main", chain(self.bn1, self.conv1, self.bn2, self.prelu, self.conv2, self.bn3, self.se))
        _hold(self, "_shortcut", self.downsample)  # None: the identity

    def branches(self):
        return self._main, self._shortcut


class IResNet(nn.Module):
    """IResNet ``(B, 3, S, S) -> (B, embedding_size)``: stem conv3x3(stem_stride) -> BN -> PReLU,
    four stages of IR blocks (the first of each halves H and W), BN -> Dropout -> Flatten -> FC -> BN1d.
    """

    def __init__(self, layers, embedding_size=512, input_size=112, width=1.0, se=False, dropout=0.0,
                 dropblock=0.0, dropblock_size=3, stem_stride=1, dtype=np.float64):
        super().__init__()
        check_iresnet_options(input_size, stem_stride, width)
        self.input_size = input_size
        self.dropblock = float(dropblock)  # DropBlock is the identity at inference; training refuses it
        chans = stage_channels(width)
        self.conv1 = nn.Conv2d(3, chans[0], 3, stem_stride, 1, bias=False, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(chans[0], eps=1e-5, dtype=dtype)
        self.prelu = nn.PReLU(chans[0], dtype=dtype)
        cin = chans[0]
        stages = []
        for n, cout in zip(layers, chans):
            blocks = [IBasicBlock(cin, cout, 2, se, dtype)] + [IBasicBlock(cout, cout, 1, se, dtype)
                                                               for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_side = side = feature_side(input_size, stem_stride)
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size, dtype=dtype)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5, dtype=dtype)
        self.frozen = ("features.weight",)  # fixed at 1, as in the torch model (requires_grad=False)
        _hold(self, "_chain", chain(self.conv1, self.bn1, self.prelu, self.layer1, self.layer2, self.layer3,
                                    self.layer4, self.bn2, self.dropout, nn.Flatten(), self.fc, self.features))

    def forward(self, x):
        want = (3, self.input_size, self.input_size)
        if not isinstance(x, np.ndarray) or x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected input (B, 3, {self.input_size}, {self.input_size}), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        return self._chain(x)

    def backward(self, dy):
        return self._chain.backward(dy)


def _iresnet(layers, **defaults):
    def build(embedding_size=512, dtype=np.float64, **kw):
        return IResNet(layers, embedding_size=embedding_size, dtype=dtype, **{**defaults, **kw})
    return build


def _efficientnet(embedding_size=512, dtype=np.float64, **kw):
    raise UnsupportedModel(
        "efficientnet_b0 does not convert to the fastconv engine yet: the engine has its depthwise "
        "convolutions (Conv2d groups=C), SiLU and squeeze-excitation, but no twin of torchvision's MBConv "
        "blocks and stochastic depth; deploy it with `fastconv face export-onnx` or use an iresnet backbone")


ENGINE_MODELS = {name: _iresnet(layers, **defaults) for name, (layers, defaults) in IRESNET_VARIANTS.items()}
ENGINE_MODELS["efficientnet_b0"] = _efficientnet


def build_engine_model(name, embedding_size=512, dtype=np.float64, **kw):
    """The fastconv twin of ``fastconv.face.models.get_model(name, embedding_size, **kw)``, in ``dtype``."""
    if name not in ENGINE_MODELS:
        raise UnsupportedModel(f"unknown model {name!r}; the fastconv engine runs {sorted(ENGINE_MODELS)}")
    try:
        return ENGINE_MODELS[name](embedding_size=embedding_size, dtype=dtype, **kw)
    except TypeError as exc:
        raise UnsupportedModel(f"bad options for {name}: {exc}") from exc
