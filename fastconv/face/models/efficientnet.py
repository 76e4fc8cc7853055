"""EfficientNet-B0 (torchvision, random init) with a face embedding head.

Input ``(B, 3, S, S)`` float, output ``(B, D)``: features -> BN -> Dropout -> Flatten -> FC -> BN1d.
"""
import torch
from torch import nn


class EfficientNetFace(nn.Module):
    """torchvision ``efficientnet_b0(weights=None)`` trunk + flatten/FC embedding head."""

    def __init__(self, embedding_size=512, input_size=112, width=1.0, dropout=0.0, **unused):
        super().__init__()
        from torchvision.models import efficientnet_b0

        if unused:
            raise ValueError(f"efficientnet_b0 does not take {sorted(unused)}; "
                             "valid: embedding_size, input_size, width, dropout")
        if not isinstance(input_size, int) or input_size < 32:
            raise ValueError(f"input_size must be an int >= 32, got {input_size!r}")
        self.input_size = input_size
        if width == 1.0:
            trunk = efficientnet_b0(weights=None)
        else:  # torchvision's own B0 block table, channels scaled by width
            from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
            setting, last = _efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=1.0)
            trunk = EfficientNet(setting, 0.2, last_channel=last)
        self.trunk = trunk.features
        with torch.no_grad():
            c, h, w = self.trunk(torch.zeros(1, 3, input_size, input_size)).shape[1:]
        self.bn = nn.BatchNorm2d(c)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c * h * w, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x):
        want = (3, self.input_size, self.input_size)
        if not torch.jit.is_tracing() and (x.dim() != 4 or tuple(x.shape[1:]) != want):
            raise ValueError(f"expected input (B, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")
        x = self.dropout(self.bn(self.trunk(x)))
        return self.features(self.fc(torch.flatten(x, 1)))
