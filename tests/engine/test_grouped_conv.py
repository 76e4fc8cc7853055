"""Grouped and depthwise convolution (``groups``) against torch, every layer, backend and dtype.

groups in {1, 2, C}: C up to 64 input channels for the depthwise case (``groups = in_channels``,
1 or 2 outputs per input channel), otherwise channels are multiples of the group count. The
geometry (kernel, stride, padding, dilation, output_padding, sizes) is drawn as in
``test_parity.py``; same helper and tolerances.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from engine_helpers import DTYPE_IDS, DTYPES, LAYOUTS, check_layer_vs_torch, fuzz, geometry, param
from test_parity import build_conv as build  # the conv builder of the parity suite, groups passed through

torch = pytest.importorskip("torch")

LAYERS = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]


@st.composite
def grouped_spec(draw, layer):
    nd = 2 if layer.endswith("2d") else 1
    kind = "tconv" if "Transpose" in layer else "conv"
    which = draw(st.sampled_from(["1", "2", "C"]))
    if which == "C":
        cin = draw(st.integers(1, 64))
        groups, cout = cin, cin * draw(st.integers(1, 2))
    else:
        groups = int(which)
        cin, cout = groups * draw(st.integers(1, 8)), groups * draw(st.integers(1, 8))
    n, axes, sizes = draw(geometry(nd, kind, max(cin, cout)))
    spec = dict(layer=layer, n=n, cin=cin, cout=cout, groups=groups, size=tuple(sizes),
                kernel_size=param(axes, "k", nd), stride=param(axes, "s", nd), padding=param(axes, "p", nd),
                dilation=param(axes, "d", nd), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
                layout=draw(st.sampled_from(LAYOUTS)))
    if kind == "tconv":
        spec["output_padding"] = param(axes, "op", nd)
    return spec


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layer", LAYERS)
@fuzz(10)
@given(data=st.data())
def test_grouped_conv_parity(backend, layer, dtype, data):
    spec = data.draw(grouped_spec(layer), label="spec")
    fl, tl, x = build(spec, dtype)
    check_layer_vs_torch(fl, tl, x, dtype, layout=spec["layout"], seed=spec["seed"])


@pytest.mark.parametrize("layer", LAYERS)
def test_depthwise_64_channels(backend, layer):
    """The EfficientNet case: 64 channels, groups = 64, 3x3, stride 2."""
    spec = dict(layer=layer, n=2, cin=64, cout=64, groups=64, size=(9,) * (2 if layer.endswith("2d") else 1),
                kernel_size=3, stride=2, padding=1, dilation=1, bias=True, seed=5)
    if "Transpose" in layer:
        spec["output_padding"] = 1
    fl, tl, x = build(spec, np.float64)
    check_layer_vs_torch(fl, tl, x, np.float64)


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="divisible by groups"):
        fc.nn.Conv2d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="groups"):
        fc.nn.Conv2d(4, 4, 3, groups=0)
    with pytest.raises(ValueError, match="expects 8"):  # weight (4, 2, 3, 3) with groups 4 needs 8 inputs
        fc.functional.conv_forward(np.zeros((1, 6, 5, 5)), np.zeros((4, 2, 3, 3)), None, groups=4)
    with pytest.raises(ValueError, match="divisible by groups"):
        fc.functional.conv_transpose_forward(np.zeros((1, 6, 5, 5)), np.zeros((6, 2, 3, 3)), None, groups=4)
