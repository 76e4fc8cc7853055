"""CLI smoke: train, info, eval, verify, embed, export-onnx via main([...]) on the synthetic tree."""
import json
import os
import sys

import numpy as np
import pytest

from fastconv.face.cli import main

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY  # noqa: E402

TRAIN_SET = [a for kv in TINY + ["ce.epochs=2", "arcface.epochs=1", "ce.batch_size=4", "arcface.batch_size=4",
                                 "data.val_people=0"] for a in ("--set", kv)]


@pytest.fixture
def trained(face_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        rc = main(["train", "--config", "base", "--root", str(face_tree.root), "--out", str(out), "--quiet",
                   *TRAIN_SET])
    assert rc == 0
    return out


def test_train_eval_verify_embed_export(trained, face_tree, tmp_path, capsys):
    assert (trained / "best.pt").is_file() and (trained / "last.pt").is_file()
    ckpt = str(trained / "best.pt")
    rel = face_tree.relpaths
    csv = tmp_path / "pairs.csv"
    csv.write_text("\n".join([f"{rel[0]},{rel[1]},1", f"{rel[0]},{rel[3]},0", f"{rel[4]},{rel[5]},1",
                              f"{rel[2]},{rel[7]},0"]) + "\n")
    assert main(["eval", "-c", ckpt, "--pairs", str(csv), "--root", str(face_tree.root), "--device", "cpu",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["n_pairs"] == 4
    a, b = (str(face_tree.root / r) for r in rel[:2])
    assert main(["verify", a, b, "-c", ckpt, "--threshold", "0.5", "--device", "cpu"]) == 0
    npy = tmp_path / "emb.npy"
    assert main(["embed", str(face_tree.root), "-c", ckpt, "-o", str(npy), "--device", "cpu"]) == 0
    emb = np.load(npy)
    assert emb.shape == (len(rel), 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    assert main(["export-onnx", "-c", ckpt, "-o", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()


@pytest.mark.filterwarnings("ignore:skipped 1 unreadable")
def test_resume_finished_run_is_noop(trained, face_tree, capsys):
    before = (trained / "metrics.jsonl").read_text()
    assert main(["train", "--config", "base", "--root", str(face_tree.root), "--out", str(trained), "--resume",
                 "--quiet", *TRAIN_SET]) == 0
    assert (trained / "metrics.jsonl").read_text() == before


def test_info_and_bad_input(capsys, tmp_path):
    assert main(["info", "--model", "iresnet_small", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "iresnet_small" in out and "GFLOPs" in out
    assert main(["info", "--model", "nope"]) == 2
    assert main(["train", "--config", "base", "--set", "ce.nope=1", "--out", str(tmp_path)]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["train", "--config", "base", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert main(["train", "--config", "base", "--fold", "3"]) == 2
    assert main(["benchmark-lfw", "--folds", "0,11"]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--protocol", "view3"])


def _fake_lfw(root, size=40):
    """LFW-shaped folder: 10 people folds of 3 people x 3 images, pairs.txt with 1 + 1 pairs per fold."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img_root = root / "lfw-deepfunneled"
    people_lines, pair_lines = ["10"], ["10\t1"]
    for f in range(10):
        names = [f"P{f}_{i}" for i in range(3)]
        people_lines.append("3")
        for name in names:
            (img_root / name).mkdir(parents=True)
            colour = rng.integers(0, 256, 3)
            for k in range(1, 4):
                arr = np.clip(colour + rng.normal(0, 20, (250, 250, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(img_root / name / f"{name}_{k:04d}.jpg", quality=80)
            people_lines.append(f"{name}\t3")
        pair_lines += [f"{names[0]}\t1\t2", f"{names[1]}\t1\t{names[2]}\t2"]
    (root / "people.txt").write_text("\n".join(people_lines) + "\n")
    (root / "pairs.txt").write_text("\n".join(pair_lines) + "\n")


def test_benchmark_lfw_writes_summary(tmp_path, monkeypatch, capsys):
    lfw = tmp_path / "lfw"
    _fake_lfw(lfw)
    monkeypatch.setenv("FASTCONV_LFW", str(lfw))
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    sets = [a for kv in TINY + ["ce.epochs=1", "arcface.epochs=1", "data.val_people=4", "data.val_pairs=20",
                                "ce.batch_size=8", "arcface.batch_size=8"] for a in ("--set", kv)]
    out = tmp_path / "bench"
    assert main(["benchmark-lfw", "--config", "base", "--folds", "2,5", "--out", str(out), "--quiet", *sets]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [2, 5]
    for f in summary["folds"]:
        assert set(f) >= {"fold", "accuracy", "eer", "tar_at_far_1e-3", "minutes"}
        assert f["n_pairs"] == 2 and 0 <= f["accuracy"] <= 1 and f["threshold"] is not None
    assert summary["mean_accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in summary["folds"]]))
    assert summary["std_accuracy"] >= 0 and 0 <= summary["mean_eer"] <= 1
    assert (out / "fold02" / "best.pt").is_file()
    meta = json.loads((out / "fold02" / "test_fold.json").read_text())
    assert meta["fold"] == 2


def _summary_dir(path, folds, cfg):
    path.mkdir()
    runs = [{"fold": k, "accuracy": 0.8 + k / 100, "accuracy_best_threshold": 0.9, "threshold": 0.3,
             "eer": 0.1, "tar_at_far_1e-3": 0.4, "n_pairs": 600, "minutes": 2.0} for k in folds]
    (path / "summary.json").write_text(json.dumps({"folds": runs, "config": cfg}))


def test_benchmark_lfw_merge_combines_split_runs(tmp_path, capsys):
    _summary_dir(tmp_path / "a", [3, 1], {"seed": 0})
    _summary_dir(tmp_path / "b", [2], {"seed": 0})
    out = tmp_path / "all"
    assert main(["benchmark-lfw", "--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [1, 2, 3]
    assert summary["mean_accuracy"] == pytest.approx(0.82)
    assert summary["total_minutes"] == pytest.approx(6.0)


def test_benchmark_lfw_merge_refuses_mismatches(tmp_path, capsys):
    _summary_dir(tmp_path / "a", [1], {"seed": 0})
    _summary_dir(tmp_path / "b", [1], {"seed": 0})
    _summary_dir(tmp_path / "c", [2], {"seed": 1})
    assert main(["benchmark-lfw", "--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o")]) == 2
    assert "share folds" in capsys.readouterr().err
    assert main(["benchmark-lfw", "--merge", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 2
    assert "different config" in capsys.readouterr().err
    assert main(["benchmark-lfw", "--merge", str(tmp_path / "a")]) == 2
