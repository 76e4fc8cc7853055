"""Device and precision choice: ``resolve_device`` and ``precision = "auto"`` (bf16 only on native-bf16 CPUs)."""
import pytest
import torch

import fastconv.face.device as device
from fastconv.face.config import load_config


def test_resolve_device():
    assert device.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert device.resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        device.resolve_device("tpu9")
    if not torch.cuda.is_available():
        assert device.resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            device.resolve_device("cuda")


class _Probe:
    def __init__(self, amx=False, bf16=False):
        self._is_amx_tile_supported = lambda: amx
        self._is_avx512_bf16_supported = lambda: bf16


def test_native_bf16_from_torch_then_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(torch._C, "_cpu", _Probe(bf16=True), raising=False)
    assert device.cpu_has_native_bf16() == (True, "torch reports AVX512-BF16")
    monkeypatch.setattr(torch._C, "_cpu", _Probe(), raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    monkeypatch.setattr(device, "_cpuinfo_flags", lambda: device._read_flags(info))
    native, why = device.cpu_has_native_bf16()
    assert not native and "avx512_bf16" in why
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16\n")
    assert device.cpu_has_native_bf16() == (True, "/proc/cpuinfo lists amx_bf16, avx512_bf16")


def test_precision_auto(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: (False, "no native bf16"))
    precision, why = device.resolve_precision("auto", cpu)
    assert precision == "fp32" and why.startswith("auto: no native bf16")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: (True, "torch reports AMX"))
    assert device.resolve_precision("auto", cpu) == ("bf16", "auto: torch reports AMX")
    assert device.resolve_precision("bf16", cpu) == ("bf16", "set in the config")
    assert load_config("cpu-small")["precision"] == "auto"
    with pytest.raises(ValueError, match="precision must be one of"):
        load_config("base", ["precision=fp8"])
