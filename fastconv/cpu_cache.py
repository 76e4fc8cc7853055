"""The CPU's per-core L2 cache size, read from the OS (the block size of the Winograd kernels)."""
import functools
import os

FALLBACK_L2_BYTES = 256 * 1024  # where the OS does not say: the smallest L2 of current x86 cores
_SYSFS = "/sys/devices/system/cpu/cpu0/cache"


def _parse_size(text):
    """``"512K"`` / ``"1M"`` / ``"524288"`` -> bytes, or None."""
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None


@functools.lru_cache(maxsize=None)
def l2_cache_bytes():
    """Bytes of L2 per core: Linux sysfs (the level-2 data/unified cache of cpu0), then
    ``os.sysconf("SC_LEVEL2_CACHE_SIZE")`` (glibc), else ``FALLBACK_L2_BYTES``."""
    try:
        for entry in sorted(os.listdir(_SYSFS)):
            path = os.path.join(_SYSFS, entry)
            if not entry.startswith("index"):
                continue
            with open(os.path.join(path, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            if level == "2" and kind in ("Unified", "Data"):
                with open(os.path.join(path, "size")) as f:
                    size = _parse_size(f.read())
                if size:
                    return size
    except (OSError, ValueError):
        pass
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
        if size > 0:
            return size
    except (ValueError, OSError, AttributeError):
        pass
    return FALLBACK_L2_BYTES
