"""Atomic file output: write a temp file beside the target, then ``os.replace`` it into place.

A reader never sees a half-written checkpoint, cache, JSON report or ONNX file, and a run killed
mid-write leaves the previous file intact. Standard library only: the engine, the benchmarks and
``fastconv.face`` all write through it.

* Permissions: a file that already exists keeps its mode; a new file gets ``mode`` when given
  (:data:`PRIVATE` = 0600 for embeddings and galleries, which are biometric data), else the normal
  ``0666 & ~umask``.
* A symlink is written through: its target is replaced, the link stays.
* The data is fsynced before the rename and the folder after it, so the new name survives a crash.
* Temp files are named ``.tmp-<name>.<pid>.<random>``; one left by a killed writer (its pid is gone)
  is removed at the next write of the same file.
"""
import contextlib
import json
import os
import re
import tempfile

PRIVATE = 0o600  # mode of new files holding face embeddings or galleries

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def _remove_stale_temps(folder, name):
    """Delete ``.tmp-<name>.<pid>.*`` files in ``folder`` whose writer process no longer exists."""
    pattern = re.compile(r"\.tmp-" + re.escape(name) + r"\.(\d+)\.")
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        pass
    finally:
        os.close(fd)


def check_writable(path):
    """Raise ValueError unless ``path`` can be created or replaced as a file (checked before long work):
    not a folder, and its nearest existing ancestor is a writable folder."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a folder")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: no write permission in {parent}")
    return path


@contextlib.contextmanager
def replaced_on_success(path, suffix=".tmp", mode=None):
    """Context manager yielding a temp path beside ``path``; on a clean exit it becomes ``path``
    (see the module docstring for permissions and symlinks), on an exception it is deleted."""
    target = os.path.realpath(os.fspath(path))  # through symlinks: replace the target, keep the link
    folder, name = os.path.split(target)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temps(folder, name)
    try:
        final_mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        final_mode = mode if mode is not None else 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{name}.{os.getpid()}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, final_mode)  # mkstemp creates 0600
        os.replace(tmp, target)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path, write_fn, mode=None):
    """Write ``path`` via ``write_fn(binary_file)``, atomically (flushed and fsynced before the rename).

    ``mode``: permissions of a new file (an existing file keeps its own), e.g. :data:`PRIVATE`.
    """
    with replaced_on_success(path, mode=mode) as tmp:
        with open(tmp, "wb") as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path, text, mode=None):
    """Write the str ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode()
    atomic_write(path, lambda fh: fh.write(data), mode=mode)


def write_json(path, obj, indent=1, default=None, mode=None):
    """``json.dumps(obj)`` to ``path`` atomically (``default`` as in :func:`json.dumps`)."""
    write_text(path, json.dumps(obj, indent=indent, default=default), mode=mode)
