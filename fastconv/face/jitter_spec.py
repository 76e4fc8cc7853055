"""The numbers of a framing jitter, without torch: what ``eval --jitter`` parses and prints.

``(scale, shift, rotation)``: a detector box's side is scaled by ``f ~ U[1 - scale, 1 + scale]``,
its centre moved by ``dx, dy ~ U[-shift, shift]`` (fractions of the side) and it is rotated by
``U[-rotation, rotation]`` degrees. :mod:`.jitter` applies such a spec to images (with torch);
this module only holds, checks and formats it, so the CLI parser can state the default without
importing torch (the torch-free ``verify`` / ``embed`` paths build the same parser).
"""
from __future__ import annotations

__all__ = ["JitterSpec", "REALISTIC", "parse_jitter", "format_jitter"]


class JitterSpec(tuple):
    """``(scale, shift, rotation)``: ranges of the box scale factor, centre offset and angle (degrees)."""

    def __new__(cls, scale, shift, rotation):
        vals = tuple(float(v) for v in (scale, shift, rotation))
        if not (0 <= vals[0] < 1 and 0 <= vals[1] <= 0.5 and 0 <= vals[2] <= 90):
            raise ValueError(f"framing jitter needs 0 <= scale < 1, 0 <= shift <= 0.5, 0 <= rotation <= 90, "
                             f"got scale={vals[0]}, shift={vals[1]}, rotation={vals[2]}")
        return super().__new__(cls, vals)


REALISTIC = JitterSpec(0.1, 0.06, 8.0)
"""What a face detector's box does to an LFW crop: ``eval --jitter``'s default when given bare."""


def parse_jitter(text):
    """``"SCALE,SHIFT,DEGREES"`` -> JitterSpec; ValueError naming the expected form."""
    try:
        parts = [float(t) for t in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3:
        raise ValueError(f"--jitter expects SCALE,SHIFT,DEGREES (e.g. {format_jitter(REALISTIC)}), got {text!r}")
    return JitterSpec(*parts)


def format_jitter(spec):
    """JitterSpec -> ``"SCALE,SHIFT,DEGREES"``, the form :func:`parse_jitter` reads (``0.1,0.06,8``)."""
    return ",".join(f"{v:g}" for v in spec)
