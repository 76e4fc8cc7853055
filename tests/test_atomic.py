"""Atomic output: the target appears whole or not at all; modes kept, symlinks followed, stale temps removed."""
import json
import os
import subprocess
import sys

import pytest

from fastconv.atomic import PRIVATE, atomic_write, check_writable, replaced_on_success, write_json


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


def test_an_existing_file_keeps_its_mode_and_new_private_files_are_0600(tmp_path):
    path = tmp_path / "emb.npy"
    atomic_write(path, lambda fh: fh.write(b"a"), mode=PRIVATE)
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o640)
    atomic_write(path, lambda fh: fh.write(b"b"))  # no mode given: the file's own mode is kept
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_bytes() == b"b"
    os.chmod(path, 0o600)
    write_json(path, {"x": 1})
    assert path.stat().st_mode & 0o777 == 0o600  # a 0600 file never becomes 0644


def test_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "real" / "data.json"
    target.parent.mkdir()
    write_json(target, {"v": 1})
    os.chmod(target, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_json(link, {"v": 2})
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == {"v": 2} and target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real"]  # no temp beside the link


def test_stale_temp_files_of_dead_writers_are_removed_at_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-x.bin.{dead.pid}.abc123.tmp"
    live = tmp_path / f".tmp-x.bin.{os.getpid()}.def456.tmp"  # a writer still running (this process)
    other = tmp_path / f".tmp-y.bin.{dead.pid}.ghi789.tmp"  # another file's temp: not ours to judge
    for p in (stale, live, other):
        p.write_bytes(b"half")
    atomic_write(tmp_path / "x.bin", lambda fh: fh.write(b"new"))
    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "x.bin").read_bytes() == b"new"


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    import fastconv.atomic as atomic

    synced = []
    real = atomic._fsync_dir

    def spy(folder):
        synced.append((folder, (tmp_path / "r.json").exists()))
        real(folder)
    monkeypatch.setattr(atomic, "_fsync_dir", spy)
    write_json(tmp_path / "r.json", {})
    assert synced == [(str(tmp_path), True)]  # once, after the new name is in place


def test_check_writable_refuses_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        check_writable(afile / "x.npy")
    with pytest.raises(ValueError, match="it is a folder"):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "new" / "deeper" / "x.npy").endswith("x.npy")  # folders get created
