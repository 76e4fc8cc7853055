"""Atomic file output: write a temp file beside the target, then ``os.replace`` it into place.

A reader never sees a half-written checkpoint, cache, JSON report or ONNX file, and a run killed
mid-write leaves the previous file intact. Files get the normal permissions (0666 & ~umask).
Standard library only: the engine, the benchmarks and ``fastconv.face`` all write through it.
"""
import contextlib
import json
import os
import tempfile

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def replaced_on_success(path, suffix=".tmp"):
    """Context manager yielding a temp path beside ``path``; on a clean exit it becomes ``path``,
    on an exception it is deleted."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path) + ".", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path, write_fn):
    """Write ``path`` via ``write_fn(binary_file)``, atomically (flushed and fsynced before the rename)."""
    with replaced_on_success(path) as tmp:
        with open(tmp, "wb") as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path, text):
    """Write the str ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode()
    atomic_write(path, lambda fh: fh.write(data))


def write_json(path, obj, indent=1, default=None):
    """``json.dumps(obj)`` to ``path`` atomically (``default`` as in :func:`json.dumps`)."""
    write_text(path, json.dumps(obj, indent=indent, default=default))
