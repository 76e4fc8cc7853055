"""What an IResNet backbone is, shared by the torch models and their fastconv twins (no torch here).

``LAYERS``: blocks per stage; ``IRESNET_VARIANTS``: name -> (stage depths, default options);
``stage_channels(width)``: channels of the four stages; ``check_iresnet_options`` validates the
options both implementations take.
"""

LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3)}
BASE_WIDTHS = (64, 128, 256, 512)

IRESNET_VARIANTS = {
    "iresnet18": (LAYERS["iresnet18"], {}),
    "iresnet34": (LAYERS["iresnet34"], {}),
    "iresnet50": (LAYERS["iresnet50"], {}),
    "se_iresnet18": (LAYERS["iresnet18"], {"se": True}),
    "se_iresnet50": (LAYERS["iresnet50"], {"se": True}),
    # narrow CPU variant for 64x64 faces: half width, stride-2 stem
    "iresnet_small": (LAYERS["iresnet18"], {"width": 0.5, "stem_stride": 2, "input_size": 64}),
}


def _channels(width, base):
    """Channels of a stage for a width multiplier, at least 8 and a multiple of 8."""
    return max(8, int(round(base * width / 8)) * 8)


def stage_channels(width):
    """The four stages' channel counts for a width multiplier."""
    return [_channels(width, b) for b in BASE_WIDTHS]


def feature_side(input_size, stem_stride):
    """Side of the last feature map: the stem (stride 1 or 2) and four stride-2 stages, ceil each."""
    side = input_size
    for _ in range(4 + (stem_stride == 2)):
        side = (side + 1) // 2
    return side


def check_iresnet_options(input_size, stem_stride, width):
    """ValueError unless input_size is an int >= 16, stem_stride 1 or 2 and width > 0."""
    if not isinstance(input_size, int) or input_size < 16:
        raise ValueError(f"input_size must be an int >= 16, got {input_size!r}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width!r}")
