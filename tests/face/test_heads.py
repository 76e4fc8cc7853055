"""Softmax and combined-margin heads against the direct formulas."""
import math

import pytest
import torch
import torch.nn.functional as F

from fastconv.face.heads import ArcFace, CombinedMarginHead, CosFace, SoftmaxHead


def _cos(head, emb):
    with torch.no_grad():
        return F.normalize(emb, dim=1) @ F.normalize(head.weight, dim=1).T


def test_arcface_matches_formula():
    torch.manual_seed(0)
    head = ArcFace(8, 5, s=30.0, m=0.4)
    emb, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    cos = _cos(head, emb)
    expect = cos.clone()
    for i, c in enumerate(y.tolist()):
        theta = math.acos(float(cos[i, c]))
        assert theta + 0.4 < math.pi  # ordinary branch
        expect[i, c] = math.cos(theta + 0.4)
    torch.testing.assert_close(head.logits(emb, y), 30.0 * expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head(emb, y), F.cross_entropy(30.0 * expect, y), rtol=1e-5, atol=1e-5)


def test_arcface_theta_plus_m_beyond_pi_uses_th_mm_fallback():
    head = ArcFace(2, 2, s=1.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta = 3.0  # theta + m = 3.5 > pi
    emb = torch.tensor([[math.cos(theta), math.sin(theta)]])
    logit = head.logits(emb, torch.tensor([0]))[0, 0].item()
    expected = math.cos(theta) - math.sin(math.pi - 0.5) * 0.5
    assert logit == pytest.approx(expected, abs=1e-5)
    assert logit != pytest.approx(math.cos(theta + 0.5), abs=1e-3)  # the raw formula would rise again
    # monotonic: the target logit keeps decreasing in theta across the switch point
    thetas = torch.linspace(0.1, 3.1, 200)
    e = torch.stack([torch.cos(thetas), torch.sin(thetas)], 1)
    vals = head.logits(e, torch.zeros(200, dtype=torch.long))[:, 0]
    assert (vals[1:] <= vals[:-1] + 1e-6).all()


def test_cosface_and_combined_match_formula():
    torch.manual_seed(1)
    emb, y = torch.randn(4, 6), torch.tensor([1, 0, 2, 1])
    cf = CosFace(6, 3, s=16.0, m=0.35)
    cos = _cos(cf, emb)
    expect = cos.clone()
    expect[torch.arange(4), y] -= 0.35
    torch.testing.assert_close(cf.logits(emb, y), 16.0 * expect, rtol=1e-5, atol=1e-5)
    comb = CombinedMarginHead(6, 3, s=10.0, m1=0.9, m2=0.2, m3=0.1)
    cos = _cos(comb, emb)
    expect = cos.clone()
    for i, c in enumerate(y.tolist()):
        expect[i, c] = math.cos(0.9 * math.acos(float(cos[i, c])) + 0.2) - 0.1
    torch.testing.assert_close(comb.logits(emb, y), 10.0 * expect, rtol=1e-5, atol=1e-5)


def test_margin_gradient_finite_at_extremes():
    head = ArcFace(2, 2, s=64.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)  # theta = 0 and pi
    head(emb, torch.tensor([0, 0])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_softmax_hard_and_soft_targets():
    torch.manual_seed(0)
    head = SoftmaxHead(8, 4, label_smoothing=0.1)
    emb, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0])
    logits = head.logits(emb)
    assert logits.shape == (5, 4)
    torch.testing.assert_close(head(emb, y), F.cross_entropy(logits, y, label_smoothing=0.1))
    soft = torch.full((5, 4), 0.25)
    torch.testing.assert_close(head(emb, soft), F.cross_entropy(logits, soft, label_smoothing=0.1))


def test_head_input_errors():
    head = ArcFace(8, 4)
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        head(torch.randn(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="int64"):
        head(torch.randn(3, 8), [0, 1, 2])
    with pytest.raises(ValueError, match="hard int labels"):
        head(torch.randn(3, 8), torch.rand(3, 4))
    with pytest.raises(ValueError, match="soft targets"):
        SoftmaxHead(8, 4)(torch.randn(3, 8), torch.rand(3, 5))
