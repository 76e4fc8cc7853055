"""CLI smoke: train, info, eval, verify, embed, export-onnx via main([...]) on the synthetic tree."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from fastconv.face.cli import main

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY, fake_lfw  # noqa: E402

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


@pytest.mark.filterwarnings("ignore:skipped 1 unreadable")
def test_fresh_run_in_an_old_folder_starts_a_new_log(trained, face_tree, capsys):
    first = (trained / "metrics.jsonl").read_text().splitlines()
    assert main(["train", "--config", "base", "--root", str(face_tree.root), "--out", str(trained), "--quiet",
                 *TRAIN_SET]) == 0
    again = (trained / "metrics.jsonl").read_text().splitlines()
    assert len(again) == len(first)  # replaced, not appended to
    strip = [{k: v for k, v in json.loads(line).items() if "minutes" not in k and "second" not in k
              and "per_s" not in k} for line in again]
    assert strip == [{k: v for k, v in json.loads(line).items() if "minutes" not in k and "second" not in k
                      and "per_s" not in k} for line in first]  # and the seeded run repeats itself


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


def test_benchmark_lfw_writes_summary(tmp_path, monkeypatch, capsys):
    lfw = tmp_path / "lfw"
    fake_lfw(lfw)
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
    for f in summary["folds"]:  # the PLDA back-end is fit by default; identification on the fold's 3 people
        assert f["scorer"] == "plda" and 0 <= f["rank1"] <= f["rank5"] == 1.0 and f["dir_at_far_1e-2"] is None
    assert summary["mean_rank1"] == pytest.approx(np.mean([f["rank1"] for f in summary["folds"]]))
    assert "identification: mean rank-1" in capsys.readouterr().out
    assert (out / "fold02" / "best.pt").is_file() and (out / "roc.png").stat().st_size > 1000
    meta = json.loads((out / "fold02" / "test_fold.json").read_text())
    assert meta["fold"] == 2
    with np.load(out / "fold02" / "scores.npz") as z:
        assert z["scores"].shape == (2,) and list(z["labels"]) == [1, 0]

    # a merge of split runs finds the fold folders, draws the pooled ROC, and agrees with the run
    (out / "roc.png").unlink()
    merged = tmp_path / "merged"
    assert main(["benchmark-lfw", "--merge", str(out), "--out", str(merged)]) == 0
    again = json.loads((merged / "summary.json").read_text())
    assert again["mean_eer"] == summary["mean_eer"] and (merged / "roc.png").is_file()


def test_scorer_jitter_and_identify_options(trained, face_tree, tmp_path, capsys, monkeypatch):
    from fastconv.face.scoring import stored_scorer

    ckpt = str(trained / "best.pt")
    meta = torch.load(ckpt, weights_only=True)["meta"]  # the back-end is plain tensors
    plda = stored_scorer(meta)
    assert plda is not None and plda.T.shape[1] == 16 and plda.threshold is None  # no validation pairs
    rel = face_tree.relpaths
    csv = tmp_path / "pairs.csv"
    csv.write_text("\n".join([f"{rel[0]},{rel[1]},1", f"{rel[0]},{rel[3]},0", f"{rel[4]},{rel[5]},1",
                              f"{rel[2]},{rel[7]},0"]) + "\n")
    base = ["eval", "-c", ckpt, "--pairs", str(csv), "--root", str(face_tree.root), "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache")]

    def scores(*extra):
        out = tmp_path / f"ev{len(list(tmp_path.iterdir()))}"
        assert main([*base, "--out", str(out), *extra]) == 0
        return json.loads((out / "metrics.json").read_text()), (out / "scores.csv").read_text()

    rep_plda, s_plda = scores()  # auto = the stored PLDA
    rep_cos, s_cos = scores("--scorer", "cosine")
    assert rep_plda["scorer"] == "plda" and rep_plda["score_unit"] == "log-likelihood ratio"
    assert rep_cos["scorer"] == "cosine" and s_plda != s_cos
    j1, j2, j3 = (scores("--scorer", "cosine", "--jitter", "--jitter-seed", str(k))[1] for k in (1, 1, 2))
    assert j1 == j2 and j1 != j3 and j1 != s_cos  # deterministic given a seed
    assert main([*base, "--jitter", "2,0,0"]) == 2 and "0 <= scale < 1" in capsys.readouterr().err
    assert main([*base, "--identify"]) == 2 and "--identify needs --protocol view2" in capsys.readouterr().err

    a, b = (str(face_tree.root / r) for r in rel[:2])
    capsys.readouterr()
    assert main(["verify", a, b, "-c", ckpt, "--threshold", "0", "--device", "cpu"]) == 0
    assert "PLDA log-likelihood ratio:" in capsys.readouterr().out
    cos_npy, plda_npy = tmp_path / "cos.npy", tmp_path / "plda.npy"
    assert main(["embed", str(face_tree.root), "-c", ckpt, "-o", str(cos_npy), "--device", "cpu"]) == 0
    assert main(["embed", str(face_tree.root), "-c", ckpt, "-o", str(plda_npy), "--device", "cpu",
                 "--scorer", "plda"]) == 0
    e, u = np.load(cos_npy), np.load(plda_npy)
    side = json.loads((tmp_path / "plda.json").read_text())["scorer"]
    assert u.shape == (len(rel), plda.T.shape[0]) and side["name"] == "plda"
    # the rows are T (e - m) stored as float32: within float32 rounding of e (amplified by |T|) and of u
    # itself; the LLR of a small, ill-conditioned fit can amplify that rounding past any fixed tolerance,
    # so the sidecar's formula is checked on the float64 features of the stored embeddings
    u64 = plda.transform(e)
    bound = 2 * 2.0 ** -24 * (np.abs(plda.T).sum(1) * np.abs(e).max() + np.abs(u64))
    assert (np.abs(u - u64) <= bound).all()
    llr = (u64[0] ** 2 + u64[1] ** 2) @ np.array(side["a"]) + (u64[0] * u64[1]) @ np.array(side["b"]) + side["c"]
    assert llr == pytest.approx(plda.score(e[:1], e[1:2])[0], rel=1e-9, abs=1e-9)


def test_fit_scorer_refits_the_training_side_back_end(trained, tmp_path, capsys):
    from fastconv.face.scoring import stored_scorer

    ckpt, out = trained / "best.pt", tmp_path / "refit.pt"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert main(["fit-scorer", "-c", str(ckpt), "-o", str(out), "--device", "cpu", "--dim", "1"]) == 0
    assert "PLDA back-end fit on 9 training images of 3 people: 1 dimensions" in capsys.readouterr().out
    old = stored_scorer(torch.load(ckpt, weights_only=True)["meta"])
    new = stored_scorer(torch.load(out, weights_only=True)["meta"])
    assert new.T.shape == (1, 16) and old.T.shape == (2, 16)  # --dim 1 keeps the first LDA direction
    np.testing.assert_allclose(new.psi, old.psi[:1], rtol=1e-6)
    assert main(["fit-scorer", "-c", str(ckpt), "--dim", "-1"]) == 2


def test_eval_identify_on_a_view2_fold(trained, tmp_path, capsys):
    lfw = tmp_path / "lfw"
    fake_lfw(lfw)
    out = tmp_path / "ident"
    assert main(["eval", "-c", str(trained / "best.pt"), "--protocol", "view2", "--fold", "3", "--lfw", str(lfw),
                 "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--identify", "--out", str(out)]) == 0
    ident = json.loads((out / "metrics.json").read_text())["identification"]
    assert (ident["n_gallery"], ident["n_probes"], ident["n_impostors"], ident["fold"]) == (3, 6, 0, 3)
    assert 0 <= ident["rank1"] <= 1 and ident["rank5"] == 1.0  # 3 gallery people: rank 5 always holds
    assert "identification   rank-1" in capsys.readouterr().out


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
    (tmp_path / "d").mkdir()
    for text, reason in (("[]", "not a benchmark summary"), ('{"config": {}, "folds": [{"fold": 1}]}', "lacks"),
                         ("{not json", "cannot read")):
        (tmp_path / "d" / "summary.json").write_text(text)
        assert main(["benchmark-lfw", "--merge", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
        assert reason in capsys.readouterr().err


def test_throughput_times_each_precision_and_format(tmp_path, capsys):
    sets = [a for kv in TINY for a in ("--set", kv)]
    out = tmp_path / "thr.json"
    assert main(["throughput", "--config", "base", "--steps", "2", "--warmup", "1", "--batch-size", "4",
                 "--out", str(out), *sets]) == 0
    rec = json.loads(out.read_text())
    results = rec["results"]
    assert 0 < rec["data_ms_per_image"] < 1000  # the augmentation the step leaves out, timed too
    assert [(r["precision"], r["channels_last"]) for r in results] == [
        ("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    assert all(r["images_per_s"] > 0 and r["batch_size"] == 4 and r["device"] == "cpu" for r in results)
    text = capsys.readouterr().out
    assert "| cpu | bf16 | yes | 4 |" in text
    assert "config precision 'fp32': training would use fp32 (set in the config)" in text
    fastest = max(r["images_per_s"] for r in results)
    together = float(text.split("training runs at about ")[1].split()[0])
    assert together == pytest.approx(1 / (1 / fastest + rec["data_ms_per_image"] / 1e3), abs=0.51)
    assert main(["throughput", "--config", "base", "--precision", "fp32", "--channels-last", "no", "--steps", "1",
                 "--warmup", "0", "--batch-size", "2", *sets]) == 0
    assert main(["throughput", "--config", "base", "--precision", "fp8", *sets]) == 2
    assert "fp32,bf16,fp16" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["throughput", "--config", "base", "--precision", "fp16", *sets]) == 2
        assert "needs CUDA" in capsys.readouterr().err
