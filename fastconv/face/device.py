"""Where and in which precision ``fastconv.face`` runs: :func:`resolve_device`, :func:`resolve_precision`."""
import torch

__all__ = ["resolve_device", "resolve_precision", "cpu_has_native_bf16"]


def resolve_device(device="cpu", local_rank=0) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; otherwise ``torch.device(device)``.

    A bare ``"cuda"`` becomes ``cuda:local_rank`` (the process's GPU under torchrun); asking for
    CUDA without a GPU raises ValueError.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use cpu or auto")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo "flags"; aarch64 lists "bf16" in "Features"


def _read_flags(path):
    """CPU feature flags of the first processor listed in a ``/proc/cpuinfo``-format file (empty if unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def _cpuinfo_flags():
    return _read_flags("/proc/cpuinfo")


def cpu_has_native_bf16():
    """``(bool, reason)``: does this CPU compute bf16 natively (AVX512-BF16, AMX or Arm BF16)?

    Asks torch's CPU capability report first (``torch._C._cpu``), then ``/proc/cpuinfo``.
    """
    probe = getattr(torch._C, "_cpu", None)
    for name, what in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16")):
        fn = getattr(probe, name, None)
        if fn is not None and fn():
            return True, f"torch reports {what}"
    flags = _cpuinfo_flags()
    found = sorted(f for f in flags if f in _BF16_FLAGS or f == "bf16")
    if found:
        return True, f"/proc/cpuinfo lists {', '.join(found)}"
    return False, "no native bf16 on this CPU (torch reports neither AMX nor AVX512-BF16, /proc/cpuinfo " \
                  f"lists none of {', '.join(_BF16_FLAGS)})"


def resolve_precision(precision, device):
    """``(precision, reason)``: ``"auto"`` becomes bf16 on a CPU with native bf16, fp32 on other CPUs,
    bf16 on a CUDA GPU that supports it, else fp16; fp32/bf16/fp16 are kept as given."""
    if precision != "auto":
        return precision, "set in the config"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU supports bf16"
        return "fp16", "auto: this GPU has no bf16 (fp16 with GradScaler)"
    native, why = cpu_has_native_bf16()
    if native:
        return "bf16", f"auto: {why}"
    return "fp32", f"auto: {why}; emulated bf16 autocast is slower than fp32"
