"""Bad input to every ``fastconv face`` command ends in one ``error:`` line and exit status 2.

Checkpoints that are empty, random bytes, text, a pickle with code in it (never executed), lack a
key, have the wrong sizes, NaN weights or a NaN threshold; output paths that cannot be written
(checked before the work); pair lists with a bad first label, a byte-order mark, blank rows.
"""
import os

import numpy as np
import pytest
import torch

from fastconv.face.checkpoint import CheckpointError, load_for_inference, save_checkpoint
from fastconv.face.cli import main
from fastconv.face.data import Preprocess
from fastconv.face.lfw import Pair, read_pairs_csv
from fastconv.face.models import get_model

KW = {"input_size": 16, "width": 0.125}


def _good_state():
    torch.manual_seed(0)
    model = get_model("iresnet18", 16, **KW)
    meta = {"model_name": "iresnet18", "model_kwargs": KW, "embedding_size": 16,
            "preprocess": Preprocess(16, 150).to_dict(), "threshold": 0.3}
    return {"model": model.state_dict(), "meta": meta}


class _Code:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_bad(path, kind):
    """A checkpoint file at ``path`` that is broken in the way ``kind`` names."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("model: iresnet18\nthreshold: 0.3\n")
    elif kind == "pickle-with-code":
        torch.save({"model": _Code(path.parent / "PWNED"), "meta": {}}, path)
    elif kind == "missing-key":
        state = _good_state()
        del state["meta"]
        save_checkpoint(path, state)
    elif kind == "wrong-size":
        state = _good_state()
        state["meta"]["embedding_size"] = 32
        save_checkpoint(path, state)
    elif kind == "nan-weights":
        state = _good_state()
        state["model"]["fc.weight"][0, 0] = float("nan")
        save_checkpoint(path, state)
    elif kind == "nan-threshold":
        state = _good_state()
        state["meta"]["threshold"] = float("nan")
        save_checkpoint(path, state)
    else:
        raise AssertionError(kind)


BAD = ["empty", "random", "text", "pickle-with-code", "missing-key", "wrong-size", "nan-weights", "nan-threshold"]


def _assert_clean_error(rc, err, *words):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "weights_only" not in err  # never torch's advice to load unsafely
    for w in words:
        assert w in err, err


@pytest.fixture
def inputs(face_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    rel = face_tree.relpaths
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"{rel[0]},{rel[1]},1\n{rel[0]},{rel[3]},0\n")
    return face_tree, pairs


def _commands(ckpt, face_tree, pairs, tmp_path):
    a, b = (str(face_tree.root / r) for r in face_tree.relpaths[:2])
    return {
        "eval": ["eval", "-c", ckpt, "--pairs", str(pairs), "--root", str(face_tree.root), "--device", "cpu"],
        "verify": ["verify", a, b, "-c", ckpt, "--device", "cpu"],
        "embed": ["embed", str(face_tree.root), "-c", ckpt, "-o", str(tmp_path / "e.npy"), "--device", "cpu"],
        "export-onnx": ["export-onnx", "-c", ckpt, "-o", str(tmp_path / "m.onnx")],
    }


@pytest.mark.filterwarnings("ignore:skipped")
@pytest.mark.parametrize("kind", BAD)
def test_every_command_refuses_a_bad_checkpoint_in_one_line(kind, inputs, tmp_path, capsys):
    face_tree, pairs = inputs
    ckpt = tmp_path / "bad.pt"
    _write_bad(ckpt, kind)
    for name, argv in _commands(str(ckpt), face_tree, pairs, tmp_path).items():
        rc = main(argv)
        _assert_clean_error(rc, capsys.readouterr().err, str(ckpt))
    run = tmp_path / "run"
    run.mkdir()
    _write_bad(run / "last.pt", kind)
    rc = main(["train", "--config", "base", "--root", str(face_tree.root), "--out", str(run), "--resume", "--quiet"])
    _assert_clean_error(rc, capsys.readouterr().err, "last.pt")
    assert not (tmp_path / "PWNED").exists() and not (run / "PWNED").exists()  # the pickled code never ran
    assert not (tmp_path / "e.npy").exists() and not (tmp_path / "m.onnx").exists()


def test_bad_checkpoint_reasons_name_the_fault(tmp_path):
    reasons = {"empty": "not a readable checkpoint: the file is empty or truncated", "pickle-with-code": "refused to unpickle it",
               "missing-key": "lacks a 'model' state dict and a 'meta' dict",
               "wrong-size": "weights do not fit iresnet18: size mismatch for fc.weight",
               "nan-weights": "weight 'fc.weight' holds NaN", "nan-threshold": "threshold nan is not a finite number"}
    for kind, reason in reasons.items():
        _write_bad(tmp_path / f"{kind}.pt", kind)
        with pytest.raises(CheckpointError, match=reason):
            load_for_inference(tmp_path / f"{kind}.pt")
    save_checkpoint(tmp_path / "good.pt", _good_state())
    model, meta, pre, threshold = load_for_inference(tmp_path / "good.pt")
    assert threshold == 0.3 and pre == Preprocess(16, 150) and not model.training


def test_train_resume_without_config_is_a_clean_error(face_tree, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "last.pt", _good_state())  # best.pt-like: model and meta, no config
    rc = main(["train", "--config", "base", "--root", str(face_tree.root), "--out", str(run), "--resume"])
    _assert_clean_error(rc, capsys.readouterr().err, "cannot resume", "'config'")


def test_verify_refuses_a_nan_threshold(inputs, tmp_path, capsys):
    face_tree, _ = inputs
    save_checkpoint(tmp_path / "good.pt", _good_state())
    a = str(face_tree.root / face_tree.relpaths[0])
    rc = main(["verify", a, a, "-c", str(tmp_path / "good.pt"), "--threshold", "nan", "--device", "cpu"])
    _assert_clean_error(rc, capsys.readouterr().err, "--threshold must be a finite number")


def test_output_paths_are_checked_before_the_work(inputs, tmp_path, capsys, monkeypatch):
    import fastconv.face.cli_eval as cli_eval

    face_tree, pairs = inputs

    def never(path, device):
        raise AssertionError("the checkpoint was opened before the output path was checked")
    monkeypatch.setattr(cli_eval, "_open_checkpoint", never)
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc = main(["embed", str(face_tree.root), "-c", "x.pt", "-o", str(afile / "x.npy")])
    _assert_clean_error(rc, capsys.readouterr().err, "is not a folder")
    (tmp_path / "dir.npy").mkdir()
    rc = main(["embed", str(face_tree.root), "-c", "x.pt", "-o", str(tmp_path / "dir.npy")])
    _assert_clean_error(rc, capsys.readouterr().err, "it is a folder")
    rc = main(["export-onnx", "-c", "x.pt", "-o", str(afile / "m.onnx")])
    _assert_clean_error(rc, capsys.readouterr().err, "is not a folder")
    rc = main(["eval", "-c", "x.pt", "--pairs", str(pairs), "--out", str(afile / "ev")])
    _assert_clean_error(rc, capsys.readouterr().err, "is not a folder")
    rc = main(["throughput", "--config", "base", "--out", str(afile / "t.json")])
    _assert_clean_error(rc, capsys.readouterr().err, "is not a folder")


def test_embed_decode_error_is_a_clean_error(inputs, tmp_path, capsys, monkeypatch):
    import fastconv.face.preprocess as preprocess  # the decoder lives in the torch-free module

    face_tree, _ = inputs
    save_checkpoint(tmp_path / "good.pt", _good_state())

    def broken(path):
        raise OSError("decoder exploded")
    monkeypatch.setattr(preprocess, "_decode", broken)
    rc = main(["embed", str(face_tree.root), "-c", str(tmp_path / "good.pt"), "-o", str(tmp_path / "e.npy"),
               "--device", "cpu"])
    _assert_clean_error(rc, capsys.readouterr().err, "none of the 10 images")


def test_embeddings_are_private_files(inputs, tmp_path, capsys):
    face_tree, _ = inputs
    save_checkpoint(tmp_path / "good.pt", _good_state())
    out = tmp_path / "e.npy"
    assert main(["embed", str(face_tree.root), "-c", str(tmp_path / "good.pt"), "-o", str(out),
                 "--device", "cpu"]) == 0
    assert out.stat().st_mode & 0o777 == 0o600 and (tmp_path / "e.json").stat().st_mode & 0o777 == 0o600
    os.chmod(out, 0o640)  # a mode the owner chose is kept on rewrite
    assert main(["embed", str(face_tree.root), "-c", str(tmp_path / "good.pt"), "-o", str(out),
                 "--device", "cpu"]) == 0
    assert out.stat().st_mode & 0o777 == 0o640


# ----------------------------------------------------------------------------- pair lists


def test_pairs_csv_first_row_with_a_bad_label_is_an_error_not_a_header(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("a.jpg,b.jpg,2\nc.jpg,d.jpg,1\n")
    with pytest.raises(ValueError, match=r"p.csv:1: label must be .* got '2'"):
        read_pairs_csv(path)
    path.write_text("x,y,z\nc.jpg,d.jpg,1\n")  # not a header: the third column is not named label
    with pytest.raises(ValueError, match=r"p.csv:1: label"):
        read_pairs_csv(path)


def test_pairs_csv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffa.jpg,b.jpg,1\nc.jpg,d.jpg,0\n".encode())
    assert read_pairs_csv(path) == [Pair("a.jpg", "b.jpg", True), Pair("c.jpg", "d.jpg", False)]
    path.write_bytes("\ufeffpath_a,path_b,label\na.jpg,b.jpg,1\n".encode())
    pairs = read_pairs_csv(path)
    assert pairs == [Pair("a.jpg", "b.jpg", True)] and pairs.skipped_rows == [(1, "header")]


def test_pairs_csv_counts_every_skipped_row_and_eval_reports_them(inputs, tmp_path, capsys):
    face_tree, _ = inputs
    rel = face_tree.relpaths
    path = tmp_path / "p.csv"
    path.write_text(f"path_a,path_b,label\n{rel[0]},{rel[1]},1\n\n{rel[0]},{rel[3]},0\n,,\n")
    pairs = read_pairs_csv(path)
    assert len(pairs) == 2 and pairs.skipped_rows == [(1, "header"), (3, "blank"), (5, "blank")]
    assert pairs.describe_skipped() == "skipped 1 header row (line 1) and 2 blank rows (lines 3, 5)"
    save_checkpoint(tmp_path / "good.pt", _good_state())
    assert main(["eval", "-c", str(tmp_path / "good.pt"), "--pairs", str(path), "--root", str(face_tree.root),
                 "--device", "cpu"]) == 0
    assert "(2 pairs; skipped 1 header row (line 1) and 2 blank rows (lines 3, 5))" in capsys.readouterr().out


def test_unreadable_text_inputs_name_the_file(tmp_path, capsys):
    binary = tmp_path / "pairs.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    _assert_clean_error(main(["eval", "-c", "x.pt", "--pairs", str(binary)]), capsys.readouterr().err,
                        "pairs.csv is not UTF-8 text")
    toml = tmp_path / "bad.toml"
    toml.write_text("[[[")
    _assert_clean_error(main(["train", "--config", str(toml)]), capsys.readouterr().err, "bad.toml")
    _assert_clean_error(main(["info", "--input-size", "0"]), capsys.readouterr().err, "input_size")
