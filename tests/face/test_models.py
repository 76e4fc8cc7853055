"""Backbones: output shapes at 64 and 112, factory errors, model_info numbers."""
import pytest
import torch
from torch import nn

from fastconv.face.models import get_model, model_info, model_names

# (params, GFLOPs) at 112x112 / D=512, insightface reference: iresnet50 ~43.6M params, ~12.6 GFLOPs
SMALL = {"width": 0.125, "embedding_size": 32}


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("size", [64, 112])
def test_output_shape(name, size):
    torch.manual_seed(0)
    kw = {"width": 0.25} if name != "efficientnet_b0" else {"width": 0.5}
    model = get_model(name, embedding_size=24, input_size=size, **kw).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 24)
    assert torch.isfinite(out).all()


def test_wrong_input_size_names_expected_and_actual():
    model = get_model("iresnet18", 16, input_size=64, width=0.125)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\).*\(1, 3, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32))


def test_unknown_model_and_bad_option():
    with pytest.raises(ValueError, match="iresnet50"):
        get_model("resnet9000")
    with pytest.raises(TypeError):
        get_model(50)
    with pytest.raises(ValueError, match="bad options"):
        get_model("iresnet18", 16, colour="blue")


def test_model_info_counts_macs_exactly():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    info = model_info(net, 8)
    conv_macs = 8 * 8 * 4 * 3 * 9
    lin_macs = 4 * 8 * 8 * 5
    assert info["flops"] == 2 * (conv_macs + lin_macs)
    assert info["params"] == 4 * 3 * 9 + 256 * 5 + 5


def test_iresnet_reference_numbers():
    info = model_info(get_model("iresnet50", 512, input_size=112), 112)
    assert 43e6 < info["params"] < 44e6  # insightface r50: 43.6 M
    assert 12.0e9 < info["flops"] < 13.0e9  # 6.3 GMACs
    small = model_info(get_model("iresnet_small", 256, input_size=64), 64)
    assert small["flops"] < 0.2e9


def test_width_multiplier_scales_channels():
    a = get_model("iresnet18", 16, input_size=32, width=0.25)
    b = get_model("iresnet18", 16, input_size=32, width=0.5)
    assert a.layer4[0].conv2.out_channels == 128 and b.layer4[0].conv2.out_channels == 256
    assert model_info(a, 32)["flops"] < model_info(b, 32)["flops"]


def test_dropblock_only_in_training():
    from fastconv.face.models.iresnet import DropBlock

    torch.manual_seed(0)
    m = get_model("iresnet18", 8, input_size=32, width=0.125, dropblock=0.5)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        ref = m(x)
        assert torch.equal(m(x), ref)  # eval: deterministic, no blocks dropped
        for mod in m.modules():  # only the DropBlocks in training mode (BN stays in eval)
            if isinstance(mod, DropBlock):
                mod.train()
        dropped = m(x)
    assert not torch.allclose(dropped, ref)  # training mode drops blocks
    assert any(type(mod).__name__ == "DropBlock" for mod in m.layer4.modules())
    assert not any(type(mod).__name__ == "DropBlock" for mod in m.layer1.modules())


def test_dropblock_trains_when_the_last_stage_is_smaller_than_the_block():
    # cpu-small geometry: 64 px, stride-2 stem -> layer3 4x4, layer4 2x2 (torchvision refuses block 2)
    torch.manual_seed(0)
    m = get_model("iresnet_small", 8, input_size=64, dropblock=0.5)
    m.train()
    x = torch.randn(4, 3, 64, 64)
    m(x).sum().backward()
    assert m.layer4[0].conv1.weight.grad is not None
    from fastconv.face.models.iresnet import DropBlock

    d = DropBlock(1.0, 3).train()
    assert torch.count_nonzero(d(torch.ones(2, 4, 2, 2))) == 0  # p=1 on a 2x2 map drops everything
    assert torch.equal(d.eval()(torch.ones(2, 4, 2, 2)), torch.ones(2, 4, 2, 2))
    for bad in (2, 0, 1.5):
        with pytest.raises(ValueError, match="odd int"):
            DropBlock(0.1, bad)
    with pytest.raises(ValueError, match="probability"):
        DropBlock(1.5)
