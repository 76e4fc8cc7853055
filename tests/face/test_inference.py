"""The inference-prepared IResNet (``fastconv.face.inference``): BatchNorm folding exact in float64,
the prepared network equal to the plain engine model and to torch for every backbone, backend,
algorithm and chunking, and clear errors for what it cannot prepare.
"""
import numpy as np
import pytest
import torch

from fastconv import nn
from fastconv.face import convert
from fastconv.face import inference
from fastconv.nn.module import CachedModule
from fastconv.face.inference import PreparedConv2d, PreparedPReLU, fold_bn_after, fold_bn_before, prepare

from engine_helpers import assert_close  # noqa: E402  (tests/face/conftest.py adds the path)
from face_synth import calibrated_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_blas_thread")

BACKBONES = [("iresnet_small", {}), ("iresnet18", dict(input_size=32, width=0.25)),
             ("se_iresnet18", dict(input_size=32, width=0.25)), ("iresnet50", dict(input_size=16, width=0.125))]


def _random_bn(channels, rng, ndim=2):
    bn = (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm1d)(channels, eps=1e-5)
    bn.weight.data[...] = rng.uniform(0.5, 1.5, channels)
    bn.bias.data[...] = rng.uniform(-1, 1, channels)
    bn.running_mean[...] = rng.uniform(-1, 1, channels)
    bn.running_var[...] = rng.uniform(0.2, 2, channels)
    return bn.eval()


def _torch_model(name, kw, seed=0):
    """A calibrated torch backbone with random BN affine parameters too (beta != 0 everywhere)."""
    model = calibrated_model(name, **kw).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine and m.weight.requires_grad:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g, dtype=torch.float64))
                m.bias.copy_(torch.rand(m.bias.shape, generator=g, dtype=torch.float64) - 0.5)
    return model


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0), (2, 2)])
def test_fold_bn_after_conv_is_exact_in_float64(stride, padding):
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(5, 7, 3, stride, padding, bias=True)
    bn = _random_bn(7, rng)
    x = rng.uniform(-1, 1, (3, 5, 9, 8))
    w, b = fold_bn_after(conv.weight.data, conv.bias.data, bn)
    got = PreparedConv2d(w, b, conv.stride, conv.padding, np.float64)(x)
    assert_close(got, bn(conv(x)), np.float64, "conv -> BN folded")


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 2), (1, 0)])
def test_fold_bn_before_conv_is_exact_in_float64_at_the_zero_padded_border(stride, padding):
    """BN -> conv (zero padding) -> BN as one conv plus a bias map: the border really differs."""
    rng = np.random.default_rng(1)
    bn_in, bn_out = _random_bn(4, rng), _random_bn(6, rng)
    conv = nn.Conv2d(4, 6, 3, stride, padding, bias=False)
    x = rng.uniform(-1, 1, (2, 4, 7, 10))
    w_in, t = fold_bn_before(conv.weight.data, bn_in)
    w, b = fold_bn_after(w_in, None, bn_out)
    shift_w, _ = fold_bn_after(conv.weight.data, None, bn_out)
    layer = PreparedConv2d(w, b, conv.stride, conv.padding, np.float64, shift=t, shift_weight=shift_w)
    want = bn_out(conv(bn_in(x)))
    assert_close(layer(x), want, np.float64, "BN -> conv -> BN folded")
    if padding:  # a per-channel bias would be wrong at the border: the map is not constant
        ymap = layer._bias_map(7, 10)
        assert np.ptp(ymap, axis=(1, 2)).max() > 1e-3


def test_prepared_prelu_is_exact_and_in_place():
    rng = np.random.default_rng(2)
    prelu = nn.PReLU(5)
    prelu.weight.data[...] = rng.uniform(-0.5, 0.5, 5)
    x = rng.uniform(-1, 1, (3, 5, 4, 4))
    want = prelu(x.copy())
    buf = x.copy()
    got = PreparedPReLU(prelu, np.float64)(buf)
    assert got is buf and np.array_equal(got, want)


# every algorithm on the plain and the SE block; "auto" (the runtime's choice) on every backbone
CASES = [(b, a) for b in BACKBONES for a in inference.ALGOS + ("auto",)
         if a == "auto" or b[0] in ("iresnet18", "se_iresnet18")]


@pytest.mark.parametrize("name,kw,algo", [(b[0], b[1], a) for b, a in CASES], ids=[f"{b[0]}-{a}" for b, a in CASES])
def test_prepared_equals_plain_engine_model_and_torch(backend, name, kw, algo):
    model = _torch_model(name, kw)
    x64 = np.random.default_rng(3).uniform(-1, 1, (5, 3, model.input_size, model.input_size))
    with torch.no_grad():
        want = model(torch.from_numpy(x64)).numpy()
    for dtype in (np.float64, np.float32):
        net = convert(model, dtype)
        x = x64.astype(dtype)
        plain = net(x)
        for chunk in (2, None):  # 2: three chunks, the last one shorter
            got = prepare(net, algo=algo, chunk=chunk)(x)
            assert got.dtype == dtype and got.shape == plain.shape
            if dtype == np.float64:
                assert np.max(np.abs(got - plain)) <= 1e-10 and np.max(np.abs(got - want)) <= 1e-10
            else:
                for ref in (plain, want):
                    cos = np.sum(got * ref, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
                    assert cos.min() >= 0.99999 and np.max(np.abs(got - ref)) <= 1e-4


def test_auto_records_a_forward_only_choice_per_geometry():
    model = _torch_model("iresnet18", dict(input_size=32, width=0.25))
    net = prepare(convert(model, np.float32), algo="auto", chunk=4)
    net(np.zeros((4, 3, 32, 32), np.float32))
    mine = {k: v for k, v in inference.forward_choices().items() if k[0][0] == 4 and k[4] == "<f4"}
    assert all(v["algo"] in v["times_ms"] for v in mine.values())
    winograd_able = [v for k, v in mine.items() if k[1][2:] == (3, 3) and k[2] == (1, 1)]
    others = [v for k, v in mine.items() if not (k[1][2:] == (3, 3) and k[2] == (1, 1))]
    assert winograd_able and others
    assert all(set(v["times_ms"]) == set(inference.ALGOS) for v in winograd_able)
    assert all(set(v["times_ms"]) == {"im2col", "im2col_batch"} for v in others)


def test_prepare_keeps_no_caches_and_refuses_what_it_cannot_run():
    model = _torch_model("se_iresnet18", dict(input_size=32, width=0.25))
    net = convert(model, np.float32)
    prepared = prepare(net)
    prepared(np.zeros((2, 3, 32, 32), np.float32))
    engine_layers = [m for m in prepared.modules() if isinstance(m, CachedModule)]
    assert engine_layers  # the squeeze-excitation gates run as engine layers, under no_grad
    for m in engine_layers:
        with pytest.raises(RuntimeError, match="no_grad"):
            m._recall()
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 32, 32\)"):
        prepared(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(TypeError, match="float32 input"):
        prepared(np.zeros((2, 3, 32, 32), np.float64))
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        prepare(net, chunk=0)
    with pytest.raises(ValueError, match="unknown convolution algorithm"):
        prepare(net, algo="fft")
    with pytest.raises(TypeError, match="IResNet"):
        prepare(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(ValueError, match="eval mode"):
        prepare(net.train())


def test_default_chunk_fills_about_chunk_bytes():
    small = prepare(convert(_torch_model("iresnet_small", {}), np.float32))
    big = prepare(convert(_torch_model("iresnet18", dict(input_size=112, width=0.25)), np.float32))
    assert small.chunk == inference.MAX_CHUNK  # 32 ch x 32 x 32 floats: 128 KiB an image
    assert big.chunk == inference.CHUNK_BYTES // (16 * 112 * 112 * 4)


def test_runtime_optimize_flag_changes_only_the_rounding(tmp_path):
    from fastconv.face.model_file import describe_model, save_model_file
    from fastconv.face.converter import torch_state
    from fastconv.face.runtime import load_model

    model = _torch_model("iresnet18", dict(input_size=32, width=0.25)).float()
    path = tmp_path / "model.npz"
    save_model_file(path, torch_state(model), describe_model(
        "iresnet18", {"input_size": 32, "width": 0.25}, 32, {"size": 32, "crop": 150}, None, "none"))
    images = np.random.default_rng(4).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        fast, plain = load_model(path, dtype), load_model(path, dtype, optimize=False)
        assert isinstance(fast.forward_net, inference.PreparedIResNet) and plain.forward_net is plain.net
        a, b = fast.embed(images), plain.embed(images)
        assert np.max(np.abs(a - b)) <= tol and np.min(np.sum(a * b, 1)) >= 0.99999
