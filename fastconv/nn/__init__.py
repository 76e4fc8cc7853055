"""Layers with hand-written forward and backward (PyTorch layouts and semantics)."""
from .activation import GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Swish, Tanh
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from . import functional
from .dropout import Dropout, Dropout2d
from .global_pool import AdaptiveAvgPool2d, GlobalAvgPool2d
from .l2norm import L2Normalize
from .linear import Flatten, Identity, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential, is_grad_enabled, no_grad
from .normalization import BatchNorm1d, BatchNorm2d
from .prelu import PReLU
from .pooling import AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d, MeanPool1d, MeanPool2d
from .resample import Downsample1d, Downsample2d, Upsample1d, Upsample2d
from .residual import Gate, Residual

__all__ = [
    "Module", "Parameter", "Sequential", "no_grad", "is_grad_enabled",
    "Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d",
    "Upsample1d", "Upsample2d", "Downsample1d", "Downsample2d",
    "MaxPool1d", "MaxPool2d", "MeanPool1d", "MeanPool2d", "AvgPool1d", "AvgPool2d",
    "Flatten", "Linear", "Identity",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Swish", "Softmax",
    "BatchNorm1d", "BatchNorm2d", "Dropout", "Dropout2d",
    "CrossEntropyLoss", "MSELoss",
    # face backbones: PReLU, global pooling, branches, L2 normalisation
    "PReLU", "GlobalAvgPool2d", "AdaptiveAvgPool2d", "Residual", "Gate", "L2Normalize", "functional",
]
