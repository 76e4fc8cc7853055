"""Atomic output: the target appears whole or not at all, with the normal file permissions."""
import json
import os

import pytest

from fastconv.atomic import atomic_write, replaced_on_success, write_json


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_json_is_whole_and_has_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.bin"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, boom)
    assert path.read_bytes() == b"old"
    with pytest.raises(ValueError):
        with replaced_on_success(path, suffix=".onnx") as tmp:
            assert tmp.endswith(".onnx") and os.path.dirname(tmp) == str(tmp_path)
            raise ValueError("parity check failed")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]
