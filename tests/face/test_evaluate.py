"""Embedding with flip TTA, pair scoring, report files, ONNX export and the eval CLI commands."""
import argparse
import json

import numpy as np
import pytest
import torch

import fastconv.face.cli_eval as cli_eval
from fastconv.face.checkpoint import InferenceModel
from fastconv.face.cli import run_command
from fastconv.face.data import Preprocess, normalize
from fastconv.face.evaluate import embed, evaluate_pairs, pair_scores
from fastconv.face.export import export_onnx
from fastconv.face.lfw import Pair

PRE = Preprocess(32, 150)


def _images(n=5, s=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, s, s), dtype=np.uint8)


def test_embed_flip_tta_matches_manual(tiny_model):
    model = tiny_model(8)
    model.train()
    imgs = _images()
    e = embed(model, imgs, batch_size=2, flip=True)
    assert e.shape == (5, 8) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert model.training  # mode restored
    with torch.no_grad():
        model.eval()
        x = normalize(torch.from_numpy(imgs))
        want = torch.nn.functional.normalize(model(x) + model(x.flip(3)), dim=1).numpy()
        plain = torch.nn.functional.normalize(model(x), dim=1).numpy()
    np.testing.assert_allclose(e, want, atol=1e-5)
    no_flip = embed(model, torch.from_numpy(imgs), flip=False)
    np.testing.assert_allclose(no_flip, plain, atol=1e-5)
    assert not np.allclose(no_flip, e, atol=1e-3)  # the model is not flip-invariant
    # flip TTA makes the embedding invariant to mirroring the input
    np.testing.assert_allclose(embed(model, imgs[..., ::-1].copy()), e, atol=1e-5)


def test_embed_bad_input(tiny_model):
    with pytest.raises(TypeError, match="uint8"):
        embed(tiny_model(), np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(N,3,S,S\)"):
        embed(tiny_model(), np.zeros((3, 8, 8), np.uint8))
    bad = torch.nn.Flatten(0)  # returns 1-D
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        embed(bad, np.zeros((2, 3, 8, 8), np.uint8), flip=False)


def _pairs(tree):
    r = tree.relpaths  # 3 per identity, sorted: Alice 0-2, Bob 3-5, Carol 6-8
    return [
        Pair(r[0], r[1], True), Pair(r[3], r[4], True), Pair(r[6], r[7], True), Pair(r[1], r[2], True),
        Pair(r[0], r[3], False), Pair(r[4], r[6], False), Pair(r[2], r[8], False),
        Pair(r[5], tree.corrupt, True),  # unreadable image: skipped
        Pair(r[2], r[5], False),
    ]


def test_pair_scores_skips_unreadable(face_tree, tmp_path, tiny_model):
    pairs = _pairs(face_tree)
    with pytest.warns(UserWarning, match="skipped 1 unreadable images"), \
            pytest.warns(UserWarning, match="skipped 1 of 9 pairs"):
        scores, labels, keep = pair_scores(tiny_model(), pairs, face_tree.root, PRE, cache_dir=tmp_path,
                                           progress=False)
    assert keep == [0, 1, 2, 3, 4, 5, 6, 8]
    assert labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert scores.shape == (8,) and np.all(np.abs(scores) <= 1 + 1e-6)


def test_evaluate_pairs_writes_files(face_tree, tmp_path, tiny_model):
    pairs = _pairs(face_tree)
    folds = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1])
    out = tmp_path / "out"
    with pytest.warns(UserWarning):
        report = evaluate_pairs(tiny_model(), pairs, face_tree.root, PRE, folds=folds, out_dir=out,
                                threshold=0.5, cache_dir=tmp_path / "c", progress=False)
    for name in ("metrics.json", "scores.csv", "roc.png", "scores_hist.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_pairs"] == 8 and saved["n_pairs_skipped"] == 1 and saved["n_folds"] == 2
    assert saved["auc"] == pytest.approx(report["auc"]) and "checkpoint_threshold_accuracy" in saved
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "scores.csv").read_text().splitlines()) == 9
    with pytest.raises(ValueError, match="folds must have shape"):
        evaluate_pairs(tiny_model(), pairs, face_tree.root, PRE, folds=folds[:3])


def test_export_onnx_parity(tmp_path, tiny_model):
    path = tmp_path / "m.onnx"
    diff = export_onnx(tiny_model(8), path, input_size=32)
    assert path.is_file() and diff < 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 4):  # dynamic batch axis
        (out,) = sess.run(None, {"input": np.zeros((batch, 3, 32, 32), np.float32)})
        assert out.shape == (batch, 8)
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", input_size=0)


def test_export_onnx_parity_failure_is_reported(tmp_path, tiny_model, monkeypatch):
    import fastconv.face.export as export

    monkeypatch.setattr(export, "onnx_parity", lambda *a, **k: 0.5)
    with pytest.raises(RuntimeError, match="parity check failed"):
        export_onnx(tiny_model(), tmp_path / "bad.onnx", input_size=16)
    assert not (tmp_path / "bad.onnx").exists()  # nothing half-checked is left behind


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch, tiny_model, tmp_path):
    """Parser with the eval commands; checkpoints are stand-ins returning the tiny model."""
    meta = {"preprocess": PRE.to_dict(), "threshold": 0.3, "embedding_size": 8, "model_name": "tiny"}
    monkeypatch.setattr(cli_eval, "_open_checkpoint",
                        lambda path, device: InferenceModel(tiny_model(8), dict(meta), PRE, 0.3))
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser(prog="fastconv face")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_eval.add_eval_commands(sub)

    def run(*argv):
        return run_command(parser.parse_args([str(a) for a in argv]))

    return run


def test_cli_eval_csv(cli, face_tree, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    lines = ["a,b,label"] + [f"{p.a},{p.b},{int(p.same)}" for p in _pairs(face_tree)]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ev"
    with pytest.warns(UserWarning):
        rc = cli("eval", "-c", "x.pt", "--pairs", csv, "--root", face_tree.root, "--out", out, "--device", "cpu",
                 "--cache-dir", tmp_path / "c")
    text = capsys.readouterr().out
    assert rc == 0
    for word in ("EER", "AUC", "TAR @ FAR=1e-3", "best accuracy", "checkpoint threshold 0.3000"):
        assert word in text, text
    assert (out / "metrics.json").is_file() and (out / "roc.png").is_file()


def test_cli_eval_bad_input(cli, tmp_path, capsys):
    assert cli("eval", "-c", "x.pt", "--pairs", tmp_path / "missing.txt") == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("1\nA 1\nA 1 B 2\n")
    assert cli("eval", "-c", "x.pt", "--pairs", bad, "--root", tmp_path) == 2
    assert "bad.txt:2:" in capsys.readouterr().err


def test_cli_verify(cli, face_tree, tmp_path, capsys):
    from PIL import Image

    a = face_tree.root / face_tree.relpaths[0]
    big = tmp_path / "big.png"  # a non-250x250 image is accepted
    Image.open(a).resize((400, 300)).save(big)
    assert cli("verify", a, a, "-c", "x.pt") == 0
    text = capsys.readouterr().out
    assert "cosine score: 1.0000" in text and "decision:     same" in text
    assert "stored in the checkpoint" in text
    assert cli("verify", a, big, "-c", "x.pt", "--threshold", "1.01") == 0
    text = capsys.readouterr().out
    assert "different" in text and "--threshold" in text
    assert cli("verify", a, face_tree.root / face_tree.corrupt, "-c", "x.pt") == 2
    assert "cannot read image" in capsys.readouterr().err


def test_cli_embed(cli, face_tree, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert cli("embed", face_tree.root, "-c", "x.pt", "--out", out) == 0
    emb = np.load(out)
    side = json.loads((tmp_path / "emb.json").read_text())
    assert emb.shape == (9, 8) and emb.dtype == np.float32
    assert side["paths"] == face_tree.relpaths and side["skipped"][0]["path"] == face_tree.corrupt
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert cli("embed", tmp_path / "nowhere", "-c", "x.pt", "--out", out) == 2


def test_cli_export_onnx(cli, tmp_path, capsys):
    assert cli("export-onnx", "-c", "x.pt", "--out", tmp_path / "m.onnx") == 0
    assert "max |torch - onnx|" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").is_file()


def test_real_checkpoint_roundtrip(face_tree, tmp_path, capsys, monkeypatch):
    """With Face-B's checkpoint module: save a real small model, then `verify` loads it."""
    ckpt_mod = pytest.importorskip("fastconv.face.checkpoint")
    models = pytest.importorskip("fastconv.face.models")
    try:
        model = models.get_model("iresnet_small", embedding_size=16)
    except (ValueError, TypeError) as exc:
        pytest.skip(f"iresnet_small unavailable: {exc}")
    meta = {"model_name": "iresnet_small", "model_kwargs": {}, "embedding_size": 16,
            "preprocess": Preprocess(64, 150).to_dict(), "threshold": 0.25}
    path = tmp_path / "ck.pt"
    ckpt_mod.save_checkpoint(path, {"model": model.state_dict(), "meta": meta})
    parser = argparse.ArgumentParser()
    cli_eval.add_eval_commands(parser.add_subparsers(dest="c"))
    a = str(face_tree.root / face_tree.relpaths[0])
    b = str(face_tree.root / face_tree.relpaths[4])
    args = parser.parse_args(["verify", a, b, "-c", str(path), "--device", "cpu"])
    assert args.func(args) == 0
    assert "threshold:    0.2500" in capsys.readouterr().out


@pytest.mark.lfw
def test_cli_protocol_pair_selection(lfw_dir):
    """--protocol view1 / view2 [--fold K] / --pairs pick the right LFW pairs (no model needed)."""
    parser = argparse.ArgumentParser()
    cli_eval.add_eval_commands(parser.add_subparsers(dest="c"))

    def pick(*argv):
        return cli_eval._pairs_for(parser.parse_args(["eval", "-c", "x.pt", "--lfw", str(lfw_dir), *argv]))

    pairs, folds, root, _ = pick("--protocol", "view1")
    assert len(pairs) == 1000 and folds is None and root.endswith("lfw-deepfunneled")
    pairs, folds, _, _ = pick("--protocol", "view2")
    assert len(pairs) == 6000 and np.bincount(folds).tolist() == [600] * 10
    pairs, folds, _, _ = pick("--protocol", "view2", "--fold", "3")
    assert len(pairs) == 600 and folds is None and pairs[0] == pick("--protocol", "view2")[0][1200]
    pairs, folds, _, _ = pick("--pairs", str(lfw_dir / "pairs.txt"))
    assert len(pairs) == 6000 and folds.max() == 9
    with pytest.raises(ValueError, match="1..10"):
        pick("--protocol", "view2", "--fold", "11")
    with pytest.raises(ValueError, match="--fold only applies"):
        pick("--protocol", "view1", "--fold", "2")
