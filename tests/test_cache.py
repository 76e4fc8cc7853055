"""Verified caches (fastconv.cache): a damaged entry is warned about once, rebuilt, and the caller continues.

Damage classes: overwritten pixels, a permuted or out-of-range index, a garbage, empty or
key-missing file, a torn array/manifest pair. Exercised on the module itself, on the face
``ImageCache`` and on the engine's LFW-62 cache (``load_lfw_people``) over a small fake LFW tree.
"""
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fastconv import cache
from fastconv.datasets import lfw_people


def _index_check(array, index):
    kept = np.asarray(index["kept"])
    if kept.size and (kept.min() < 0 or kept.max() >= index["n"] or np.any(np.diff(kept) <= 0)):
        raise ValueError("kept out of range")


def _entry(tmp_path):
    base = tmp_path / "entry"
    arr = np.arange(4 * 3 * 5, dtype=np.uint8).reshape(4, 3, 5)
    cache.save(base, arr, {"kept": [0, 2, 3, 5], "n": 6})
    return base, arr


def test_round_trip_is_a_read_only_memmap(tmp_path):
    base, arr = _entry(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, index = cache.load(base, check=_index_check)
    np.testing.assert_array_equal(got, arr)
    assert isinstance(got, np.memmap) and not got.flags.writeable and index == {"kept": [0, 2, 3, 5], "n": 6}
    assert cache.load(tmp_path / "absent") is None


def _corrupt_pixels(base):
    npy = cache.paths(base)[0]
    data = bytearray(open(npy, "rb").read())
    data[-1] ^= 0xFF
    open(npy, "wb").write(bytes(data))


def _edit_manifest(base, fn):
    path = cache.paths(base)[1]
    meta = json.loads(open(path).read())
    fn(meta)
    open(path, "w").write(json.dumps(meta))


DAMAGE = {
    "corrupt pixels": _corrupt_pixels,
    "permuted index": lambda b: _edit_manifest(b, lambda m: m["index"].update(kept=[0, 3, 2, 5])),
    "out-of-range index": lambda b: _edit_manifest(b, lambda m: m["index"].update(kept=[0, 2, 3, 99])),
    "garbage array": lambda b: open(cache.paths(b)[0], "wb").write(b"\x93NUMPY garbage"),
    "empty array": lambda b: open(cache.paths(b)[0], "wb").close(),
    "garbage manifest": lambda b: open(cache.paths(b)[1], "w").write("{not json"),
    "key-missing manifest": lambda b: _edit_manifest(b, lambda m: m.pop("sha256")),
    "missing manifest (torn write)": lambda b: os.remove(cache.paths(b)[1]),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_detected_with_one_warning(tmp_path, damage):
    base, _ = _entry(tmp_path)
    DAMAGE[damage](base)
    with pytest.warns(UserWarning, match="rebuilding damaged cache") as record:
        assert cache.load(base, check=_index_check) is None
    assert len(record) == 1


def test_check_callback_catches_an_index_with_a_valid_checksum(tmp_path):
    base = tmp_path / "e"
    cache.save(base, np.zeros((2, 2), np.uint8), {"kept": [1, 0], "n": 2})  # written wrong, checksum fine
    with pytest.warns(UserWarning, match="index check failed: ValueError: kept out of range"):
        assert cache.load(base, check=_index_check) is None


@pytest.fixture
def small_lfw(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = tmp_path / "lfw"
    for name in ("Ann_A", "Ben_B", "Cid_C"):
        (root / "lfw-deepfunneled" / name).mkdir(parents=True)
        for k in range(1, 4):
            img = rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "lfw-deepfunneled" / name / f"{name}_{k:04d}.jpg")
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    return root


# ----------------------------------------------------------------------------- the face ImageCache


@pytest.mark.parametrize("damage", ["corrupt pixels", "permuted index", "out-of-range index", "garbage array",
                                    "empty array", "key-missing manifest"])
def test_image_cache_rebuilds_a_damaged_entry(small_lfw, tmp_path, damage):
    from fastconv.face.data import ImageCache, Preprocess, list_images

    root = small_lfw / "lfw-deepfunneled"
    rel = list_images(root)
    image_cache = ImageCache(root, Preprocess(32, 150), cache_dir=tmp_path / "c", progress=False)
    images, kept = image_cache.load(rel)
    images = np.array(images)
    base = image_cache.last_path[:-4]
    if "index" in damage:
        bad = [0, 2, 1] + list(range(3, len(rel))) if damage == "permuted index" else list(range(len(rel) - 1)) + [99]
        _edit_manifest(base, lambda m: m["index"].update(kept=bad))
    else:
        DAMAGE[damage](base)
    with pytest.warns(UserWarning, match="rebuilding damaged cache") as record:
        again, kept2 = image_cache.load(rel)
    assert len(record) == 1 and image_cache.last_hit is False
    np.testing.assert_array_equal(np.asarray(again), images)
    np.testing.assert_array_equal(kept2, kept)
    with warnings.catch_warnings():  # the rebuilt entry is a clean hit
        warnings.simplefilter("error")
        image_cache.load(rel)
    assert image_cache.last_hit is True


# ----------------------------------------------------------------------------- the engine's LFW-62 cache


def _lfw_base(tmp_path):
    (npy,) = (tmp_path / "cache").glob("lfw_people_*.npy")
    return str(npy)[:-4]


@pytest.mark.parametrize("damage", ["corrupt pixels", "garbage array", "empty array", "key-missing manifest",
                                    "out-of-range index"])
def test_lfw_people_cache_is_rebuilt(small_lfw, tmp_path, damage):
    first = lfw_people.load_lfw_people(min_faces=2, size=8, root=small_lfw, verbose=False)
    assert first.images.shape == (9, 1, 8, 8) and first.names == ["Ann_A", "Ben_B", "Cid_C"]
    base = _lfw_base(tmp_path)
    if damage == "out-of-range index":
        _edit_manifest(base, lambda m: m["index"].update(labels=[0] * 8 + [7]))
    else:
        DAMAGE[damage](base)
    with pytest.warns(UserWarning, match="rebuilding damaged cache") as record:
        again = lfw_people.load_lfw_people(min_faces=2, size=8, root=small_lfw, verbose=False)
    assert len(record) == 1
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.labels, first.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lfw_people.load_lfw_people(min_faces=2, size=8, root=small_lfw, verbose=False)


def test_lfw_people_range_check_refuses_labels_past_the_names(tmp_path):
    images = np.zeros((2, 8, 8), np.uint8)
    lfw_people._check_entry(images, {"labels": [0, 1], "names": ["a", "b"], "skipped": 0}, 8)
    with pytest.raises(ValueError, match="labels outside"):
        lfw_people._check_entry(images, {"labels": [0, 2], "names": ["a", "b"], "skipped": 0}, 8)
    with pytest.raises(ValueError, match="labels for 2 images"):
        lfw_people._check_entry(images, {"labels": [0], "names": ["a", "b"], "skipped": 0}, 8)
