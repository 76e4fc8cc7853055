"""Framing jitter: deterministic given a seed, identity at zero, a real change otherwise; eval --jitter."""
import numpy as np
import pytest
import torch

from fastconv.face.augment import build_transform
from fastconv.face.jitter import REALISTIC, JitterSpec, jitter_images, parse_jitter, reframe
from fastconv.face.jitter_spec import format_jitter


def _images(n=4, s=24):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 3, s, s), dtype=np.uint8)


def test_jitter_is_deterministic_given_a_seed_and_changes_with_it():
    imgs = _images()
    a = jitter_images(imgs, (0.1, 0.06, 8), seed=3)
    b = jitter_images(imgs, (0.1, 0.06, 8), seed=3)
    c = jitter_images(imgs, (0.1, 0.06, 8), seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, imgs)
    assert a.dtype == np.uint8 and a.shape == imgs.shape
    np.testing.assert_array_equal(jitter_images(imgs, (0, 0, 0), seed=3), imgs)  # no jitter, no change


def test_reframe_moves_content_like_a_shifted_box():
    img = torch.zeros(3, 20, 20, dtype=torch.uint8)
    img[:, 10, 10] = 255
    # a box moved right by 0.1 of the side sees the dot 2 pixels further left
    out = reframe(img, 1.0, 0.1, 0.0, 0.0)
    assert out[0, 10, 8] == 255 and out[0, 10, 10] == 0


def test_spec_validation_and_training_switch():
    assert parse_jitter("0.1,0.05,5") == (0.1, 0.05, 5.0)
    with pytest.raises(ValueError, match="SCALE,SHIFT,DEGREES"):
        parse_jitter("0.1,0.05")
    with pytest.raises(ValueError, match="0 <= scale < 1"):
        JitterSpec(1.5, 0, 0)
    # the CLI's bare --jitter is REALISTIC written out, and reads back to it
    assert format_jitter(REALISTIC) == "0.1,0.06,8"
    assert parse_jitter(format_jitter(JitterSpec(0.05, 0.125, 2.5))) == (0.05, 0.125, 2.5)
    aug = {"flip": False, "resized_crop": False, "framing": True, "framing_scale": 0.1, "framing_shift": 0.06,
           "framing_rotation": 8.0}
    t = build_transform(aug, 24)
    torch.manual_seed(0)
    x = torch.from_numpy(_images(1)[0])
    y = t(x)
    assert y.shape == x.shape and y.dtype == torch.uint8 and not torch.equal(x, y)
    assert build_transform(dict(aug, framing=False), 24) is None
