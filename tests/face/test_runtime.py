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
        "version": (set_meta(format_version=FORMAT_VERSION + 1), "format version 3; this fastconv reads versions 1, 2"),
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


@pytest.fixture
def plda_checkpoint(checkpoint, tmp_path):
    """``checkpoint`` plus a stored PLDA back-end (16-d, LLR threshold 0.5) -> (path, model, scorer)."""
    from fastconv.face.checkpoint import load_checkpoint, save_checkpoint
    from fastconv.face.scoring import plda_from_covariances, state_as_tensors

    ckpt, model = checkpoint
    rng = np.random.default_rng(3)
    a, w = rng.normal(size=(16, 16)), rng.normal(size=(16, 16))
    scorer = plda_from_covariances(rng.normal(0, 0.05, 16), 4 * a @ a.T / 16, w @ w.T / 16 + 0.1 * np.eye(16), dim=12)
    scorer.threshold = 0.5
    state = load_checkpoint(ckpt)
    state["meta"]["scorer"] = state_as_tensors(scorer.to_state())
    path = tmp_path / "plda.pt"
    save_checkpoint(path, state)
    return path, model, scorer


def test_model_file_carries_the_plda_back_end(plda_checkpoint, tmp_path):
    ckpt, _, scorer = plda_checkpoint
    meta, _ = convert_checkpoint(ckpt, tmp_path / "model.npz")
    assert meta["format_version"] == 2 and meta["threshold_kind"] == "cosine"
    assert meta["scorer"]["name"] == "plda" and meta["scorer"]["dim"] == 12
    assert meta["scorer"]["threshold"] == 0.5 and meta["scorer"]["threshold_kind"] == "log-likelihood ratio"
    m = load_model(tmp_path / "model.npz")
    assert m.threshold == 0.3125 and m.scorer.threshold == 0.5
    np.testing.assert_array_equal(m.scorer.T, scorer.T)
    x = np.random.default_rng(0).normal(size=(5, 16))
    np.testing.assert_array_equal(m.scorer.score(x, x[::-1]), scorer.score(x, x[::-1]))
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:  # plain float64 arrays, no pickle
        assert {k: z[k].dtype for k in z.files if k.startswith("s:")} == {
            "s:mean": np.float64, "s:transform": np.float64, "s:psi": np.float64}
    ckpt_plain = tmp_path / "plain.npz"
    convert_checkpoint(checkpoint_without_scorer(ckpt, tmp_path), ckpt_plain)
    assert load_model(ckpt_plain).scorer is None and load_model_file(ckpt_plain)[1]["scorer"] is None


def checkpoint_without_scorer(ckpt, tmp_path):
    from fastconv.face.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(ckpt)
    del state["meta"]["scorer"]
    save_checkpoint(tmp_path / "no-scorer.pt", state)
    return tmp_path / "no-scorer.pt"


def test_tampered_scorer_arrays_are_refused(plda_checkpoint, tmp_path):
    ckpt, _, _ = plda_checkpoint
    good = tmp_path / "model.npz"
    convert_checkpoint(ckpt, good)

    def edit_scorer_meta(**changes):
        def edit(arrays):
            meta = json.loads(arrays["meta"].tobytes())
            meta["scorer"].update(changes)
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        return edit

    def nudge(arrays):
        arrays["s:psi"] = arrays["s:psi"] * 1.001

    def drop_description(arrays):
        meta = json.loads(arrays["meta"].tobytes())
        meta["scorer"] = None
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    cases = {
        "psi": (nudge, "scorer arrays do not match their checksum"),
        "missing": (lambda a: a.pop("s:mean"), "scorer arrays do not match their checksum"),
        "name": (edit_scorer_meta(name="svm"), "unknown stored scorer"),
        "threshold": (edit_scorer_meta(threshold="high"), "bad stored scorer"),
        "orphan": (drop_description, "scorer arrays .* without a scorer description"),
    }
    for what, (edit, message) in cases.items():
        bad = tmp_path / f"bad-{what}.npz"
        _rewrite(good, bad, edit)
        with pytest.raises(ModelFileError, match=message):
            load_model(bad)


def _printed(out, label):
    return float(next(line for line in out.splitlines() if line.startswith(label)).split(":")[1].split()[0])


@pytest.mark.parametrize("scorer", ["auto", "plda", "cosine"])
def test_verify_with_model_scores_like_the_checkpoint(plda_checkpoint, tmp_path, face_tree, capsys, scorer):
    """`verify --model` and `verify -c` agree on score (1e-5), threshold and decision for every --scorer."""
    from fastconv.face.cli import main

    ckpt, _, _ = plda_checkpoint
    npz = tmp_path / "model.npz"
    assert main(["convert", "-c", str(ckpt), "--out", str(npz)]) == 0
    assert "PLDA back-end (12 dims, log-likelihood-ratio threshold 0.5000)" in capsys.readouterr().out
    label = "cosine score" if scorer == "cosine" else "PLDA log-likelihood ratio"
    for a, b in [face_tree.relpaths[:2], (face_tree.relpaths[0], face_tree.relpaths[4])]:
        a, b = str(face_tree.root / a), str(face_tree.root / b)
        assert main(["verify", a, b, "-c", str(ckpt), "--scorer", scorer, "--device", "cpu"]) == 0
        want = capsys.readouterr().out
        assert main(["verify", a, b, "--model", str(npz), "--scorer", scorer]) == 0
        got = capsys.readouterr().out
        ref = _printed(want, label)
        assert abs(_printed(got, label) - ref) <= 1e-5 * max(1.0, abs(ref))
        assert _printed(got, "threshold") == _printed(want, "threshold") == (0.3125 if scorer == "cosine" else 0.5)
        assert [ln for ln in got.splitlines() if ln.startswith("decision")] == \
            [ln for ln in want.splitlines() if ln.startswith("decision")]
        if scorer != "cosine":
            assert "log-likelihood ratio stored with the model file's PLDA back-end" in got


def test_embed_with_model_writes_the_plda_features_of_the_checkpoint(plda_checkpoint, tmp_path, face_tree):
    from fastconv.face.cli import main

    ckpt, _, scorer = plda_checkpoint
    npz = tmp_path / "model.npz"
    assert main(["convert", "-c", str(ckpt), "--out", str(npz)]) == 0
    assert main(["embed", str(face_tree.root), "--model", str(npz), "--scorer", "plda", "-o",
                 str(tmp_path / "fc.npy")]) == 0
    assert main(["embed", str(face_tree.root), "-c", str(ckpt), "--scorer", "plda", "-o", str(tmp_path / "t.npy"),
                 "--device", "cpu"]) == 0
    got, want = np.load(tmp_path / "fc.npy"), np.load(tmp_path / "t.npy")
    assert got.shape == want.shape == (len(face_tree.relpaths), 12)
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.max(np.abs(want)))
    side = json.loads((tmp_path / "fc.json").read_text())
    assert side["scorer"]["name"] == "plda" and side["engine"] == "fastconv"
    np.testing.assert_allclose(side["scorer"]["b"], scorer.b)


def test_scorer_plda_with_a_model_file_without_one_is_a_clear_error(checkpoint, tmp_path, face_tree, capsys):
    from fastconv.face.cli import main

    ckpt, _ = checkpoint
    npz = tmp_path / "model.npz"
    assert main(["convert", "-c", str(ckpt), "--out", str(npz)]) == 0
    a, b = (str(face_tree.root / r) for r in face_tree.relpaths[:2])
    capsys.readouterr()
    assert main(["verify", a, b, "--model", str(npz), "--scorer", "plda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --scorer plda: the model file stores no PLDA back-end") and "Traceback" not in err
    assert main(["verify", a, b, "--model", str(npz)]) == 0  # auto: cosine
    assert "cosine score:" in capsys.readouterr().out


def test_runtime_imports_neither_torch_nor_torchvision():
    code = ("import sys, fastconv.face.runtime, fastconv.face.cli_runtime, fastconv.face.preprocess, "
            "fastconv.face.cli_eval, fastconv.face.model_file, fastconv.face.scoring, fastconv.face.jitter_spec;"
            "import fastconv.face.cli; fastconv.face.cli.build_parser();"
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
