"""Config as data: presets, --set overrides and refusals."""
import pytest

from fastconv.face.augment import build_batch_mix, build_transform
from fastconv.face.config import load_config, preset_names


def test_presets_load_and_override_base():
    assert {"base", "cpu-small", "gpu-r18", "gpu-r50"} <= set(preset_names())
    base, small = load_config("base"), load_config("cpu-small")
    assert base["model"]["name"] == "iresnet18" and small["model"]["name"] == "iresnet_small"
    assert small["ce"]["momentum"] == base["ce"]["momentum"]  # inherited
    for name in ("gpu-r18", "gpu-r50"):
        assert load_config(name)["data"]["size"] == 112


def test_set_overrides_are_typed():
    cfg = load_config("cpu-small", ["ce.lr=0.05", "ce.epochs=3", "augment.flip=false", "precision=bf16",
                                    "arcface.m=1"])
    assert cfg["ce"]["lr"] == 0.05 and cfg["ce"]["epochs"] == 3
    assert cfg["augment"]["flip"] is False and cfg["precision"] == "bf16"
    assert isinstance(cfg["arcface"]["m"], float)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key 'ce\.lrr'.*ce\.lr"):
        load_config("base", ["ce.lrr=1"])
    with pytest.raises(ValueError, match="unknown config key"):
        load_config("base", ["nosection.x=1"])
    with pytest.raises(ValueError, match="key=value"):
        load_config("base", ["ce.lr"])


def test_bad_types_and_choices():
    with pytest.raises(ValueError, match="expected an int"):
        load_config("base", ["ce.epochs=two"])
    with pytest.raises(ValueError, match="expected a bool"):
        load_config("base", ["augment.flip=maybe"])
    with pytest.raises(ValueError, match="precision must be one of"):
        load_config("base", ["precision=fp8"])
    with pytest.raises(ValueError, match="calibration must be one of"):
        load_config("base", ["calibration=median"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("no-such-preset")


def test_cutmix_mixup_refused_with_margin_head():
    with pytest.raises(ValueError, match="softmax head.*margin"):
        load_config("base", ["arcface.cutmix=1.0"])
    with pytest.raises(ValueError, match="softmax head"):
        load_config("base", ["ce.head=cosface", "ce.mixup=0.2"])
    cfg = load_config("base", ["ce.cutmix=1.0", "ce.mixup=0.2"])  # allowed with softmax
    assert build_batch_mix(cfg["ce"], 10) is not None
    with pytest.raises(ValueError, match="softmax head"):
        build_batch_mix({"head": "arcface", "cutmix": 1.0}, 10)


def test_both_stages_disabled_refused():
    with pytest.raises(ValueError, match="both stages"):
        load_config("base", ["ce.enabled=false", "arcface.enabled=false"])


def test_preset_file(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('[ce]\nlr = 0.3\n[arcface]\nenabled = false\n')
    cfg = load_config(str(p))
    assert cfg["ce"]["lr"] == 0.3 and cfg["arcface"]["enabled"] is False
    p.write_text('[ce]\nlearning_rate = 0.3\n')
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(str(p))


def test_transform_and_mix_shapes():
    import torch
    cfg = load_config("base", ["augment.perspective=0.2", "ce.cutmix=1.0"])
    t = build_transform(cfg["augment"], 32)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    y = t(x)
    assert y.dtype == torch.uint8 and y.shape == (3, 32, 32)
    assert build_transform({"flip": False, "resized_crop": False, "color_jitter": 0, "perspective": 0}, 32) is None
    mix = build_batch_mix(cfg["ce"], 5)
    xb, tb = mix(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert xb.shape == (4, 3, 32, 32) and tb.shape == (4, 5)
    torch.testing.assert_close(tb.sum(1), torch.ones(4))
