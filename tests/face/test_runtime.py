"""The torch-free deployment path: converter parity for every iresnet backbone under every backend,
the model.npz format (round trip, other versions, tampering, pickles), and the runtime's embeddings
against ``fastconv.face.evaluate.embed``.
"""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import fastconv as fc
from fastconv.face import convert
from fastconv.face.converter import convert_checkpoint, describe
from fastconv.face.engine_models import UnsupportedModel, build_engine_model
from fastconv.face.model_file import FORMAT_VERSION, ModelFileError, load_model_file
from fastconv.face.runtime import load_model

sys.path.insert(0, os.path.dirname(__file__))
from engine_helpers import assert_close  # noqa: E402  (tests/face/conftest.py adds the path)
from face_synth import calibrated_model  # noqa: E402
from torch_block import run_without_torch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_blas_thread")

# every iresnet family member, shrunk (width, input) so a forward takes milliseconds; the deep ones
# repeat the blocks of the shallow ones, so only BACKBONES runs under every backend
BACKBONES = [("iresnet_small", {}), ("iresnet18", dict(input_size=32, width=0.25)),
             ("se_iresnet18", dict(input_size=32, width=0.25)), ("iresnet50", dict(input_size=16, width=0.125))]
DEEP = [("iresnet34", dict(input_size=16, width=0.125)), ("se_iresnet50", dict(input_size=16, width=0.125))]


def _batch(model, n=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, model.input_size, model.input_size))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,kw", BACKBONES, ids=[b[0] for b in BACKBONES])
def test_converted_backbone_matches_torch(backend, name, kw, dtype):
    model = calibrated_model(name, **kw).double()
    net = convert(model, dtype)
    x = _batch(model).astype(dtype)
    with torch.no_grad():
        want = model(torch.from_numpy(x.astype(np.float64)))
    got = net(x)
    assert got.dtype == dtype and got.shape == (3, 32)
    assert_close(got, want, dtype, f"{name} embeddings")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,kw", DEEP, ids=[b[0] for b in DEEP])
def test_deep_backbones_match_torch(name, kw, dtype):
    test_converted_backbone_matches_torch(fc.get_backend(), name, kw, dtype)


@pytest.mark.parametrize("name,kw", [BACKBONES[1], BACKBONES[2]], ids=["iresnet18", "se_iresnet18"])
def test_converted_backbone_trains_like_torch(backend, name, kw):
    """Train mode (batch statistics), forward and backward: output, input and parameter gradients."""
    model = calibrated_model(name, **kw).double().train()
    net = convert(model, np.float64).train()
    x = _batch(model, n=4)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = model(xt)
    y = net(x)
    assert_close(y, yt, np.float64, "train-mode output")
    dy = np.random.default_rng(1).uniform(-1, 1, y.shape)
    yt.backward(torch.from_numpy(dy))
    assert_close(net.backward(dy), xt.grad, np.float64, "input gradient")
    tparams = dict(model.named_parameters())
    for key, p in net.named_parameters():
        if tparams[key].requires_grad:
            assert_close(p.grad, tparams[key].grad, np.float64, f"{key}.grad")
    tbuf = dict(model.named_buffers())
    for key, b in net.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            assert_close(b, tbuf[key], np.float64, key)


def test_describe_recovers_name_and_options():
    model = calibrated_model("se_iresnet18", 24, input_size=32, width=0.25, dropout=0.1)
    name, kw, emb = describe(model)
    assert (name, emb) == ("se_iresnet18", 24)
    assert kw == {"input_size": 32, "width": 0.25, "dropout": 0.1, "stem_stride": 1, "se": True, "dropblock": 0.0}


def test_efficientnet_is_refused_with_a_reason():
    from fastconv.face.models import get_model

    with pytest.raises(UnsupportedModel, match="efficientnet_b0 does not convert.*export-onnx"):
        convert(get_model("efficientnet_b0", 16, input_size=64))
    with pytest.raises(UnsupportedModel, match="unknown model"):
        build_engine_model("resnet9000")


# ----------------------------------------------------------------------------- model.npz
@pytest.fixture
def checkpoint(tmp_path):
    from fastconv.face.checkpoint import save_checkpoint

    model = calibrated_model("iresnet18", 16, input_size=32, width=0.25)
    meta = {"model_name": "iresnet18", "model_kwargs": {"input_size": 32, "width": 0.25, "dropout": 0.0,
                                                        "stem_stride": 1, "dropblock": 0.0},
            "embedding_size": 16, "preprocess": {"size": 32, "crop": 150}, "threshold": 0.3125}
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": model.state_dict(), "meta": meta})
    return path, model


def test_model_file_round_trip(checkpoint, tmp_path, face_tree):
    from fastconv.face.data import Preprocess, decode_images
    from fastconv.face.evaluate import embed

    ckpt, model = checkpoint
    meta, diff = convert_checkpoint(ckpt, tmp_path / "model.npz")
    assert diff < 1e-4
    m = load_model(tmp_path / "model.npz")
    assert (m.threshold, m.embedding_size, m.preprocess) == (0.3125, 16, Preprocess(32, 150))
    assert m.meta["format_version"] == FORMAT_VERSION and m.meta["input_size"] == 32
    images, _, _ = decode_images(face_tree.root, face_tree.relpaths, m.preprocess, progress=False)
    want = embed(model, images, flip=True)  # the torch path (float32)
    got = m.embed(images, flip=True)
    assert got.dtype == np.float32
    assert np.max(np.abs(got - want)) <= 1e-5
    assert np.min(np.sum(got * want, axis=1)) >= 0.99999
    no_flip = m.embed(images, flip=False)
    assert np.max(np.abs(no_flip - embed(model, images, flip=False))) <= 1e-5
    assert np.max(np.abs(no_flip - got)) > 1e-3  # the flip changes the embedding: TTA really ran


def _rewrite(src, dst, edit):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(dst, **arrays)


def test_other_versions_and_tampered_files_are_refused(checkpoint, tmp_path):
    ckpt, _ = checkpoint
    good = tmp_path / "model.npz"
    convert_checkpoint(ckpt, good)

    def set_meta(**changes):
        def edit(arrays):
            meta = json.loads(arrays["meta"].tobytes())
            meta.update(changes)
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        return edit

    def nudge_weight(arrays):
        arrays["w:fc.weight"] = arrays["w:fc.weight"] + np.float32(1e-3)

    cases = {
        "version": (set_meta(format_version=FORMAT_VERSION + 1), "format version 2; this fastconv reads version 1"),
        "format": (set_meta(format="something-else"), "is not a fastconv face model"),
        "weights": (nudge_weight, "do not match their checksum"),
        "missing": (lambda a: a.pop("w:bn2.running_var"), "do not match their checksum"),
        "meta": (lambda a: a.update(meta=np.frombuffer(b"{not json", np.uint8)), "damaged model description"),
        "pickle": (lambda a: a.update({"w:evil": np.array([{"x": 1}], dtype=object)}), "not a readable"),
    }
    for what, (edit, message) in cases.items():
        bad = tmp_path / f"bad-{what}.npz"
        _rewrite(good, bad, edit)
        with pytest.raises(ModelFileError, match=message):
            load_model(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model_file(tmp_path / "junk.npz")
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "absent.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ModelFileError):
        load_model_file(truncated)
    assert zipfile.is_zipfile(good)


def test_runtime_imports_neither_torch_nor_torchvision():
    code = ("import sys, fastconv.face.runtime, fastconv.face.cli_runtime, fastconv.face.preprocess;"
            "bad = [m for m in ('torch', 'torchvision') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_verify_and_embed_run_with_torch_blocked(checkpoint, tmp_path, face_tree):
    """`fastconv face verify/embed --model` in a process where importing torch fails, vs the torch path."""
    from fastconv.face.cli import main

    ckpt, _ = checkpoint
    model_npz = tmp_path / "model.npz"
    assert main(["convert", "-c", str(ckpt), "--out", str(model_npz)]) == 0
    a, b = (str(face_tree.root / r) for r in face_tree.relpaths[:2])

    def no_torch(*args):
        return run_without_torch("face", *args)

    r = no_torch("verify", a, b, "--model", str(model_npz))
    assert r.returncode == 0, r.stderr
    assert "decision:" in r.stdout and "0.3125" in r.stdout
    r = no_torch("embed", str(face_tree.root), "--model", str(model_npz), "-o", str(tmp_path / "fc.npy"))
    assert r.returncode == 0, r.stderr
    assert main(["embed", str(face_tree.root), "-c", str(ckpt), "-o", str(tmp_path / "torch.npy"),
                 "--device", "cpu"]) == 0
    got, want = np.load(tmp_path / "fc.npy"), np.load(tmp_path / "torch.npy")
    assert got.shape == want.shape == (len(face_tree.relpaths), 16)
    assert np.max(np.abs(got - want)) <= 1e-5
    assert json.loads((tmp_path / "fc.json").read_text())["paths"] == \
        json.loads((tmp_path / "torch.json").read_text())["paths"]
    r = no_torch("verify", a, b, "--model", str(tmp_path / "absent.npz"))
    assert r.returncode == 2 and r.stderr.startswith("error: model file not found") and "Traceback" not in r.stderr
