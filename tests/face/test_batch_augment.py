"""Batched augmentation (face/batch_augment.py) against the per-image torchvision pipeline it replaces:
the same op on the same parameters gives the same pixels (up to uint8 rounding and the crop's border),
and the random draws stay in the configured ranges."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from fastconv.face.batch_augment import BatchAugment, build_batch_augment
from fastconv.face.jitter import reframe

ALL_ON = {"flip": True, "resized_crop": True, "crop_scale": 0.8, "framing": True, "framing_scale": 0.1,
          "framing_shift": 0.06, "framing_rotation": 8.0, "color_jitter": 0.2}


def _images(n=4, size=64, seed=0):
    """Smooth uint8 faces-sized images (bilinear upsampling of 8x8 noise), so that one bilinear warp and
    another differ by rounding only."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8)


def _identity(n):
    return {"flip": torch.zeros(n, dtype=torch.bool), "crop": torch.tensor([[0.0, 0, 1, 1]]).double().repeat(n, 1),
            "framing": torch.tensor([[1.0, 0, 0, 0]]).double().repeat(n, 1), "color": torch.ones(n, 3).double(),
            "order": torch.arange(3)}


def _levels(y):
    """Normalised float batch -> grey levels 0..255."""
    return (y * 0.5 + 0.5) * 255


def test_identity_parameters_give_the_normalised_batch_and_flip_mirrors_it():
    x = _images()
    aug = BatchAugment(ALL_ON)
    assert torch.allclose(aug.apply(x, _identity(4)), x.float() / 127.5 - 1, atol=1e-6)
    flipped = dict(_identity(4), flip=torch.tensor([True, False, True, False]))
    want = torch.where(flipped["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
    assert torch.allclose(_levels(aug.apply(x, flipped)), want.float(), atol=1e-3)


def test_framing_matches_jitter_reframe_on_the_same_draws():
    x = _images()
    fr = torch.tensor([[1.08, 0.05, -0.03, 6.0], [0.92, -0.04, 0.02, -7.0], [1.0, 0.0, 0.0, 8.0],
                       [0.95, 0.06, 0.06, 0.0]]).double()
    got = _levels(BatchAugment(ALL_ON).apply(x, dict(_identity(4), framing=fr)))
    ref = torch.stack([reframe(x[i], *fr[i].tolist()).float() for i in range(4)])
    diff = (got - ref).abs()
    assert diff.mean() < 1.0  # rounding, and the black border's edge: a hard mask here, a bilinear blend there
    assert (diff > 2).float().mean() < 0.02
    # a wrong rotation sign or shift direction moves most pixels: the same check then fails
    wrong = _levels(BatchAugment(ALL_ON).apply(x, dict(_identity(4), framing=fr * torch.tensor([1, -1, -1, -1]))))
    assert ((wrong - ref).abs() > 2).float().mean() > 0.1


def test_resized_crop_matches_torchvision_on_an_integer_box():
    x = _images()
    boxes = [(2, 5, 56, 58), (0, 0, 60, 54), (4, 3, 58, 61), (1, 2, 62, 57)]  # top, left, height, width
    crop = torch.tensor([[-1 + (2 * left + w) / 64, -1 + (2 * top + h) / 64, w / 64, h / 64]
                         for top, left, h, w in boxes]).double()
    got = _levels(BatchAugment(ALL_ON).apply(x, dict(_identity(4), crop=crop)))
    ref = torch.stack([TF.resized_crop(x[i], *boxes[i], [64, 64], antialias=True).float() for i in range(4)])
    # interior: rounding only; the outer ring differs where torchvision clamps at the box edge and the
    # warp reads the neighbouring pixel
    assert (got - ref)[..., 1:-1, 1:-1].abs().max() <= 1.0


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_colour_matches_torchvision_adjust_ops_in_order(order):
    x = _images()
    col = torch.tensor([[1.1, 0.9, 1.2], [0.8, 1.15, 0.85], [1.0, 1.0, 1.0], [1.2, 0.8, 0.8]]).double()
    got = BatchAugment(ALL_ON).apply(x, dict(_identity(4), color=col, order=torch.tensor(order))) * 0.5 + 0.5
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for i in range(4):
        im = x[i].float() / 255
        for op in order:
            im = ops[op](im, float(col[i, op]))
        assert torch.allclose(got[i], im, atol=1e-5)


def test_draws_stay_in_the_configured_ranges_and_repeat_with_the_seed():
    aug = BatchAugment(ALL_ON)
    torch.manual_seed(3)
    p = aug.draw(4000)
    torch.manual_seed(3)
    q = aug.draw(4000)
    assert all(torch.equal(p[k], q[k]) for k in p)
    assert 0.4 < p["flip"].float().mean() < 0.6
    cx, cy, w, h = p["crop"].unbind(1)
    area, ratio = w * h, w / h
    # redrawn until the window fits, as torchvision does: never clipped, so every window keeps its
    # area and aspect; the whole-image fallback (10 misses in a row) is rare
    assert (area >= 0.8 - 1e-9).all() and (area <= 1 + 1e-9).all() and (torch.maximum(w, h) <= 1).all()
    assert (ratio >= 0.9 - 1e-9).all() and (ratio <= 1.1 + 1e-9).all()
    assert (w == 1).float().mean() < 0.01
    assert ((cx.abs() + w) <= 1 + 1e-9).all() and ((cy.abs() + h) <= 1 + 1e-9).all()  # inside the image
    f, dx, dy, angle = p["framing"].unbind(1)
    assert f.min() >= 0.9 and f.max() <= 1.1 and dx.abs().max() <= 0.06 and dy.abs().max() <= 0.06
    assert angle.abs().max() <= 8.0 and angle.abs().max() > 7.5  # uses the range, not a fraction of it
    assert p["color"].min() >= 0.8 and p["color"].max() <= 1.2
    assert sorted(p["order"].tolist()) == [0, 1, 2]
    off = BatchAugment({"flip": False}).draw(5)
    assert not off["flip"].any() and torch.equal(off["crop"], _identity(5)["crop"])


def test_every_switch_changes_the_batch_and_the_output_is_finite_and_in_range():
    x = _images(8)
    torch.manual_seed(0)
    for key in ("flip", "resized_crop", "framing", "color_jitter"):
        aug = BatchAugment({key: 0.3 if key == "color_jitter" else True})
        y = aug(x)
        assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()
        assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
        assert not torch.allclose(y, x.float() / 127.5 - 1, atol=1e-3), key


def test_config_switch_and_bad_input():
    assert build_batch_augment({"batched": False, "flip": True}) is None
    assert isinstance(build_batch_augment({"batched": True, "flip": True}), BatchAugment)
    with pytest.raises(ValueError, match="perspective has no batched form"):
        build_batch_augment({"batched": True, "perspective": 0.2})
    with pytest.raises(ValueError, match="crop_scale must be in"):
        BatchAugment({"resized_crop": True, "crop_scale": 0.0})
    with pytest.raises(ValueError, match="expects uint8"):
        BatchAugment(ALL_ON)(torch.zeros(2, 3, 8, 8))
    assert math.isclose(float(BatchAugment({})(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)).min()), 1.0)
