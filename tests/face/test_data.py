"""Preprocessing, folder scanning, the decode cache and the Dataset."""
import numpy as np
import pytest
import torch
from PIL import Image

import fastconv.face.preprocess as preprocess
from fastconv.face.data import (
    FaceDataset,
    ImageCache,
    Preprocess,
    UnreadableImage,
    list_images,
    load_image,
    normalize,
    scan_identity_folder,
    training_set,
)


def test_preprocess_roundtrip_and_validation():
    pre = Preprocess(112, 150)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="crop"):
        Preprocess(64, 300)
    with pytest.raises(TypeError, match="int"):
        Preprocess(64.0, 150)
    with pytest.raises(ValueError, match="unknown Preprocess keys"):
        Preprocess.from_dict({"size": 64, "mean": 0.5})


def test_load_image_centre_crop(tmp_path):
    img = np.zeros((250, 250, 3), np.uint8)
    img[50:200, 50:200] = (255, 0, 0)  # exactly the 150 px centre is red
    Image.fromarray(img).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", Preprocess(64, 150))
    assert x.shape == (3, 64, 64) and x.dtype == np.uint8
    assert x[0].min() >= 250 and x[1:].max() <= 5  # only red survives the crop


def test_load_image_non_250_is_mapped_to_lfw_frame(tmp_path):
    # 500x300: shorter side -> 250 (scale 5/6), centre crop 250x250, then the usual crop
    img = np.zeros((300, 500, 3), np.uint8)
    img[:, 100:400] = 200
    Image.fromarray(img).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", Preprocess(32, 250))
    assert x.shape == (3, 32, 32)
    # after scaling the bright band spans 83..333 of 417 px; the 250 centre crop (83..333) is all bright
    assert x.min() >= 190


def test_load_image_errors(tmp_path, face_tree):
    with pytest.raises(UnreadableImage, match="missing"):
        load_image(tmp_path / "nope.jpg", Preprocess())
    with pytest.raises(UnreadableImage) as info:
        load_image(face_tree.root / face_tree.corrupt, Preprocess())
    assert isinstance(info.value, ValueError) and info.value.path.endswith("Bob_B_0004.jpg")


def test_scan_identity_folder(face_tree):
    rel, labels, names = scan_identity_folder(face_tree.root)
    assert names == face_tree.names
    assert len(rel) == 10 and rel[0] == "Alice_A/Alice_A_0001.jpg"  # includes the corrupt file
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    rel, labels, names = scan_identity_folder(face_tree.root, people={"Carol_C": 3, "Alice_A": 3})
    assert names == ["Alice_A", "Carol_C"] and labels.tolist() == [0, 0, 0, 1, 1, 1]
    rel, labels, names = scan_identity_folder(face_tree.root, min_images=4)
    assert names == ["Bob_B"] and labels.tolist() == [0] * 4
    with pytest.warns(UserWarning, match="1 identities not found"):
        scan_identity_folder(face_tree.root, people={"Nobody": 1, "Bob_B": 3})
    with pytest.raises(ValueError, match="not a directory"):
        scan_identity_folder(face_tree.root / "missing")
    assert list_images(face_tree.root)[0] == "Alice_A/Alice_A_0001.jpg"


def test_image_cache_skips_and_hits(face_tree, tmp_path, monkeypatch):
    rel = face_tree.relpaths[:4] + [face_tree.corrupt, "Nobody/Nobody_0001.jpg"] + face_tree.relpaths[4:]
    pre = Preprocess(32, 150)
    cache = ImageCache(face_tree.root, pre, cache_dir=tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match="skipped 2 unreadable images"):
        images, kept = cache.load(rel)
    assert cache.last_hit is False
    assert images.shape == (len(rel) - 2, 3, 32, 32) and images.dtype == np.uint8
    assert kept.tolist() == [0, 1, 2, 3] + list(range(6, len(rel)))
    assert {r for r, _ in cache.skipped} == {face_tree.corrupt, "Nobody/Nobody_0001.jpg"}
    assert any("missing" in reason for _, reason in cache.skipped)
    np.testing.assert_array_equal(images[0], load_image(face_tree.root / rel[0], pre))

    # second load: no decoding at all
    def boom(path):
        raise AssertionError("decoder called on a cache hit")

    monkeypatch.setattr(preprocess, "_decode", boom)
    cache2 = ImageCache(face_tree.root, pre, cache_dir=tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match="skipped 2"):
        images2, kept2 = cache2.load(rel)
    assert cache2.last_hit is True and len(cache2.skipped) == 2
    np.testing.assert_array_equal(np.asarray(images2), np.asarray(images))
    np.testing.assert_array_equal(kept2, kept)


def test_image_cache_key_changes(face_tree, tmp_path):
    rel = face_tree.relpaths
    a = ImageCache(face_tree.root, Preprocess(32, 150), cache_dir=tmp_path)
    b = ImageCache(face_tree.root, Preprocess(32, 140), cache_dir=tmp_path)
    c = ImageCache(face_tree.root, Preprocess(48, 150), cache_dir=tmp_path)
    d = ImageCache(tmp_path, Preprocess(32, 150), cache_dir=tmp_path)
    keys = {a.key(rel), b.key(rel), c.key(rel), d.key(rel), a.key(rel[:-1]), a.key(rel[::-1])}
    assert len(keys) == 6
    assert a.key(rel) == ImageCache(face_tree.root, Preprocess(32, 150), cache_dir=tmp_path / "x").key(rel)
    before = a.key(rel)
    Image.new("RGB", (250, 250), (1, 2, 3)).save(face_tree.root / rel[0])  # an edited image
    assert a.key(rel) != before


def test_image_cache_damaged_entry_is_rebuilt(face_tree, tmp_path):
    pre = Preprocess(32, 150)
    cache = ImageCache(face_tree.root, pre, cache_dir=tmp_path, progress=False)
    images, _ = cache.load(face_tree.relpaths)
    images = np.array(images)  # copy out of the memmap before damaging the file
    with open(cache.last_path, "r+b") as fh:
        fh.truncate(200)
    with pytest.warns(UserWarning, match="rebuilding damaged cache"):
        images2, _ = cache.load(face_tree.relpaths)
    assert cache.last_hit is False
    np.testing.assert_array_equal(np.asarray(images2), np.asarray(images))


def test_normalize():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1)
    y = normalize(x)
    assert y.dtype == torch.float32 and y.shape == (3, 1, 1)
    assert torch.allclose(y.flatten(), torch.tensor([-1.0, 1.0, 51 / 255 * 2 - 1]))
    assert normalize(x.expand(3, 2, 2).unsqueeze(0).repeat(2, 1, 1, 1)).shape == (2, 3, 2, 2)
    with pytest.raises(TypeError, match="uint8"):
        normalize(x.float())
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        normalize(torch.zeros(4, 4, dtype=torch.uint8))


def test_face_dataset():
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    ds = FaceDataset(images, np.array([3, 5]), transform=lambda t: t.flip(-1))
    x, y = ds[1]
    assert len(ds) == 2 and y == 5 and isinstance(y, int)
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(images[1]).flip(-1))
    with pytest.raises(ValueError, match="labels"):
        FaceDataset(images, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="uint8"):
        FaceDataset(images.astype(np.float32), np.array([1, 2]))


def test_training_set_drops_corrupt_and_renumbers(face_tree, tmp_path):
    with pytest.warns(UserWarning, match="skipped 1"):
        images, labels, names = training_set(face_tree.root, None, Preprocess(32, 150), min_images=1,
                                             cache_dir=tmp_path, progress=False)
    assert images.shape == (9, 3, 32, 32) and names == face_tree.names
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Bob has 4 files but only 3 readable: with min_images=4 nobody is left after dropping
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=">= 4 readable"):
        training_set(face_tree.root, None, Preprocess(32, 150), min_images=4, cache_dir=tmp_path, progress=False)
