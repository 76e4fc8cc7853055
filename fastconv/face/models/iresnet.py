"""IResNet backbones (insightface style) for face embeddings.

Input ``(B, 3, S, S)`` float, output ``(B, D)`` embeddings (not normalised).
Stem: 3x3 conv (stride 1 by default, no max-pool), then four stages of IR blocks
``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN (+ optional SE)`` whose first block
halves the resolution, then the embedding head ``BN -> Dropout -> Flatten -> FC -> BN``.
"""
import torch
from torch import nn

from ..backbone_spec import LAYERS, check_iresnet_options, feature_side, stage_channels  # noqa: F401 (LAYERS re-exported)


class SEModule(nn.Module):
    """Squeeze-and-excitation on ``(B, C, H, W)``: channel gates from global average pooling."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.PReLU(hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class DropBlock(nn.Module):
    """DropBlock on ``(B, C, H, W)`` (``torchvision.ops.drop_block2d``) while training, identity in eval.

    The block shrinks to the largest odd size that fits the feature map, so a late stage of a
    small input (2x2 at 64 px with a stride-2 stem) still works: a 1x1 block is plain dropout.
    """

    def __init__(self, p, block_size=3):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"DropBlock probability must be in [0, 1], got {p!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"DropBlock block_size must be an odd int >= 1, got {block_size!r}")
        self.p, self.block_size = float(p), block_size

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        from torchvision.ops import drop_block2d

        block = min(self.block_size, x.shape[-2], x.shape[-1])
        block -= 1 - block % 2  # even -> the odd size below
        return drop_block2d(x, self.p, block, training=True)

    def extra_repr(self):
        return f"p={self.p}, block_size={self.block_size}"


class IBasicBlock(nn.Module):
    """IR block ``(B, Cin, H, W) -> (B, Cout, H/stride, W/stride)``."""

    def __init__(self, cin, cout, stride=1, se=False, dropblock=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.se = SEModule(cout) if se else nn.Identity()
        self.dropblock = dropblock if dropblock is not None else nn.Identity()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        out = self.dropblock(self.se(out))
        return out + identity


class IResNet(nn.Module):
    """IResNet ``(B, 3, S, S) -> (B, embedding_size)``.

    ``width`` scales every stage's channels, ``stem_stride=2`` halves the resolution in the
    stem (cheap CPU variant), ``dropblock`` (probability) applies DropBlock2d in the last two
    stages while training, ``dropout`` is applied before the embedding FC.
    """

    def __init__(self, layers, embedding_size=512, input_size=112, width=1.0, se=False,
                 dropout=0.0, dropblock=0.0, dropblock_size=3, stem_stride=1):
        super().__init__()
        check_iresnet_options(input_size, stem_stride, width)
        self.input_size = input_size
        chans = stage_channels(width)
        stem = chans[0]
        self.conv1 = nn.Conv2d(3, stem, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5)
        self.prelu = nn.PReLU(stem)
        stages = []
        cin = stem
        for i, (n, cout) in enumerate(zip(layers, chans)):
            db = None
            if dropblock > 0 and i >= 2:
                db = DropBlock(dropblock, dropblock_size)
            blocks = [IBasicBlock(cin, cout, 2, se, db)]
            blocks += [IBasicBlock(cout, cout, 1, se, db) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_side = side = feature_side(input_size, stem_stride)
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        want = (3, self.input_size, self.input_size)
        if not torch.jit.is_tracing() and (x.dim() != 4 or tuple(x.shape[1:]) != want):
            raise ValueError(f"expected input (B, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x))
        x = self.fc(torch.flatten(x, 1))
        return self.features(x)

