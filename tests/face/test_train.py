"""Training loop: loss goes down, exact resume, checkpoints, DDP with gloo on 2 CPU processes."""
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fastconv.face.checkpoint import CheckpointError, load_checkpoint, load_for_inference, save_checkpoint
from fastconv.face.config import load_config
from fastconv.face.train import lr_factor, train

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY, make_data  # noqa: E402


def _cfg(*extra):
    return load_config("base", TINY + list(extra))


def test_smoke_training_lowers_loss(tmp_path):
    cfg = _cfg("ce.epochs=4", "arcface.epochs=1", "ce.lr=0.05")
    res = train(cfg, tmp_path, progress=False, data=make_data())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "train_accuracy" in r and r["stage"] == "ce"]
    assert len(epochs) == 4
    assert epochs[-1]["loss"] < 0.8 * epochs[0]["loss"]
    assert res["last"]["stage"] == "arcface" and "val_eer" in res["last"]
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    model, meta, pre, threshold = load_for_inference(tmp_path / "best.pt")
    assert not model.training and meta["embedding_size"] == 16 and meta["model_name"] == "iresnet18"
    assert meta["preprocess"] == {"size": 16, "crop": 150}
    assert isinstance(meta["threshold"], float) and -1 <= meta["threshold"] <= 1
    assert threshold == meta["threshold"] and pre.size == 16
    step_records = [r for r in records if "step" in r]
    assert step_records and {"loss", "lr", "images_per_s"} <= set(step_records[0])


def test_resume_is_exact(tmp_path):
    cfg = _cfg("ce.epochs=2", "arcface.epochs=2", "model.dropout=0.2", "augment.color_jitter=0.2")
    data = make_data()
    full = train(cfg, tmp_path / "full", progress=False, data=data, return_model=True)["model"]
    for k in (1, 2):  # interrupted inside the CE stage, then at the CE -> ArcFace boundary
        run = tmp_path / f"part{k}"
        first = train(cfg, run, progress=False, data=data, stop_after_epochs=k)
        assert first["stopped"] and first["epochs"] == k
        resumed = train(cfg, run, resume=True, progress=False, data=data, return_model=True)["model"]
        a, b = full.state_dict(), resumed.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    ra = load_checkpoint(tmp_path / "full" / "last.pt")["head"]
    rb = load_checkpoint(tmp_path / "part2" / "last.pt")["head"]
    assert all(torch.equal(ra[k], rb[k]) for k in ra)


def test_differs_without_same_seed(tmp_path):
    data = make_data()
    a = train(_cfg("ce.epochs=1", "arcface.enabled=false"), tmp_path / "a", progress=False, data=data,
              return_model=True)["model"]
    b = train(_cfg("ce.epochs=1", "arcface.enabled=false", "seed=1"), tmp_path / "b", progress=False,
              data=data, return_model=True)["model"]
    assert not torch.equal(a.fc.weight, b.fc.weight)


def test_resume_refuses_other_model(tmp_path):
    data = make_data()
    train(_cfg("ce.epochs=1", "arcface.enabled=false"), tmp_path, progress=False, data=data)
    with pytest.raises(ValueError, match="cannot resume"):
        train(_cfg("ce.epochs=1", "arcface.enabled=false", "model.width=0.25"), tmp_path, resume=True,
              progress=False, data=data)


def _stage_losses(run_dir, stage):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "train_accuracy" in r and r["stage"] == stage]


def test_cutmix_stage_and_bf16_run_learn(tmp_path):
    # CutMix + MixUp in the CE stage under bf16 autocast and channels_last: the loss must fall below
    # that of the same seeded run whose learning rate is too small to learn anything
    data = make_data()
    common = ["ce.epochs=4", "ce.cutmix=1.0", "ce.mixup=0.2", "arcface.epochs=1", "precision=bf16",
              "channels_last=true", "augment.resized_crop=false"]
    res = train(_cfg(*common, "ce.lr=0.05"), tmp_path / "learn", progress=False, data=data)
    train(_cfg(*common, "ce.lr=1e-7"), tmp_path / "baseline", progress=False, data=data)
    learned, baseline = _stage_losses(tmp_path / "learn", "ce"), _stage_losses(tmp_path / "baseline", "ce")
    assert len(learned) == len(baseline) == 4
    assert learned[0] == pytest.approx(baseline[0], rel=0.2)  # same start, same seed
    assert learned[-1] < 0.85 * baseline[-1], (learned, baseline)
    assert res["last"]["stage"] == "arcface" and np.isfinite(res["last"]["loss"])


def test_precision_auto_is_resolved_and_logged(tmp_path, capsys, monkeypatch):
    import fastconv.face.device as device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: (False, "no native bf16 (test)"))
    train(_cfg("precision=auto", "ce.epochs=1", "arcface.enabled=false", "max_steps=1"), tmp_path,
          progress=False, data=make_data())
    assert "precision fp32 (auto: no native bf16 (test)" in capsys.readouterr().out
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["event"] == "start" and first["precision"] == "fp32" and "no native bf16" in first["precision_reason"]


def test_progress_off_a_terminal_prints_one_line_per_epoch(tmp_path, capsys):
    train(_cfg("ce.epochs=2", "arcface.epochs=1"), tmp_path, progress=True, data=make_data())
    out = capsys.readouterr()
    assert "\r" not in out.out + out.err  # no carriage-return bar updates in a log
    epoch_lines = [line for line in out.out.splitlines() if line.startswith("stage=")]
    assert [line.split(",")[0:2] for line in epoch_lines] == [["stage=ce", " epoch=1"], ["stage=ce", " epoch=2"],
                                                               ["stage=arcface", " epoch=1"]]


def test_resume_refuses_a_checkpoint_it_cannot_use(tmp_path):
    from fastconv.face.checkpoint import CheckpointError

    cfg = _cfg("ce.epochs=1", "arcface.enabled=false")
    save_checkpoint(tmp_path / "last.pt", {"model": {}, "meta": {}})  # an inference checkpoint: no config
    with pytest.raises(CheckpointError, match=r"cannot resume .* lacks \['config'"):
        train(cfg, tmp_path, resume=True, progress=False, data=make_data())
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        train(cfg, tmp_path, resume=True, progress=False, data=make_data())


def test_fp16_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train(_cfg("precision=fp16"), tmp_path, progress=False, data=make_data())


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_checkpoint_atomic_and_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"a": torch.ones(2), "b": {"x": [1, 2.5, "s"]}})
    assert load_checkpoint(path)["b"]["x"] == [1, 2.5, "s"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left

    class Obj:
        pass
    with pytest.raises((pickle.PicklingError, AttributeError), match="(?i)pickle"):
        save_checkpoint(path, {"a": Obj(), "b": (lambda: 0)})
    assert load_checkpoint(path)["a"].tolist() == [1.0, 1.0]  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    import pathlib
    torch.save({"obj": pathlib.PurePosixPath("x")}, tmp_path / "bad.pt")  # arbitrary class: refused
    with pytest.raises(CheckpointError, match="refused to unpickle it .*PurePosixPath") as info:
        load_checkpoint(tmp_path / "bad.pt")
    assert "weights_only" not in str(info.value)  # torch's advice to load unsafely never reaches a user


_DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {here!r})
    from face_synth import TINY, make_data
    from fastconv.face.config import load_config
    from fastconv.face.train import train
    cfg = load_config("base", TINY + ["ce.epochs=1", "arcface.epochs=1", "max_steps=3", "ce.batch_size=8",
                                      "arcface.batch_size=8"])
    res = train(cfg, {out!r}, progress=False, data=make_data(), return_model=True)
    torch.save(res["model"].state_dict(), os.path.join({out!r}, "rank%s.pt" % os.environ["RANK"]))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_ranks_agree(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_SCRIPT.format(here=os.path.dirname(__file__), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    from fastconv.face.models import get_model  # weights really moved away from a fresh model
    from fastconv.face.train import model_kwargs
    cfg = load_config("base", TINY)
    torch.manual_seed(cfg["seed"])
    fresh = get_model("iresnet18", 16, **model_kwargs(cfg)).state_dict()
    assert not torch.equal(fresh["fc.weight"], a["fc.weight"])
    assert (tmp_path / "last.pt").is_file()  # rank 0 wrote the checkpoint
