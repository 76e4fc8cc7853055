"""Engine training checkpoints: ``last.npz`` after every epoch and an exact ``--resume``.

* 3 epochs in one go == 1 (or 2) epochs, then resume, bit for bit: weights of last.npz and
  model.npz, and every epoch record but the timings (float32, dropout and CutMix on, so the
  RNG state, the momentum buffers and the head are all needed); mid-stage and at the stage boundary;
* a truncated, tampered, foreign or other-config last.npz is refused with one line (CLI exit 2);
* the rewrite keeps the file's permissions; the cpu-small preset passes the engine's check and
  trains as it is (only its epoch counts and steps cut down).
"""
import json
import os
import stat
import sys

import numpy as np
import pytest

from fastconv.face.cli import main
from fastconv.face.config import load_config
from fastconv.face.engine_checkpoint import EngineCheckpointError, load_engine_checkpoint
from fastconv.face.engine_train import check_engine_config, train_engine
from fastconv.face.model_file import load_model_file

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY, make_data  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_blas_thread")

SETS = TINY + ["ce.epochs=2", "arcface.epochs=1", "ce.cutmix=1.0", "model.dropout=0.2", "augment.color_jitter=0.2",
               "arcface.warmup_epochs=0.5"]
_TIMINGS = ("epoch_seconds", "images_per_s", "minutes_total")


def _cfg(*extra):
    return load_config("base", SETS + list(extra))


def _records(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in _TIMINGS} for r in rows]


def _arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    summary = train_engine(_cfg(), run, data=make_data(), progress=False)
    assert summary["epochs"] == 3 and not summary["stopped"]
    return run


@pytest.mark.parametrize("first", [1, 2], ids=["mid-stage", "stage-boundary"])
def test_resume_equals_an_uninterrupted_run_bit_for_bit(full_run, tmp_path, first):
    part = train_engine(_cfg(), tmp_path, data=make_data(), progress=False, stop_after_epochs=first)
    assert part["stopped"] and part["epochs"] == first
    saved = load_engine_checkpoint(tmp_path / "last.npz", _cfg())
    assert (saved["stage_index"], saved["epoch"]) == ((0, 1) if first == 1 else (1, 0))
    if first == 1:
        assert saved["momentum"], "momentum buffers were not saved"
    rest = train_engine(_cfg(), tmp_path, data=make_data(), progress=False, resume=True)
    assert rest["epochs"] == 3 and not rest["stopped"]
    assert _records(tmp_path) == _records(full_run)
    for name in ("last.npz", "model.npz"):
        got, want = _arrays(tmp_path / name), _arrays(full_run / name)
        assert got.keys() == want.keys()
        for key in want:
            assert np.array_equal(got[key], want[key]), f"{name} {key} differs after resume"
    assert load_model_file(tmp_path / "model.npz")[1]["threshold"] == load_model_file(full_run / "model.npz")[1]["threshold"]


def test_a_lost_rng_state_would_be_noticed(full_run, tmp_path):
    """Control for the test above: resuming with a fresh fastconv RNG (dropout masks) changes the weights."""
    import fastconv.face.engine_train as et

    train_engine(_cfg(), tmp_path, data=make_data(), progress=False, stop_after_epochs=1)
    real = et._set_rng_state
    et._set_rng_state = lambda state, path: None
    try:
        train_engine(_cfg(), tmp_path, data=make_data(), progress=False, resume=True)
    finally:
        et._set_rng_state = real
    got, want = _arrays(tmp_path / "last.npz"), _arrays(full_run / "last.npz")
    assert any(not np.array_equal(got[k], want[k]) for k in want)


def test_checkpoint_keeps_permissions(tmp_path):
    cfg = _cfg("ce.epochs=1", "arcface.epochs=1")
    train_engine(cfg, tmp_path, data=make_data(), progress=False, stop_after_epochs=1)
    os.chmod(tmp_path / "last.npz", 0o640)
    train_engine(cfg, tmp_path, data=make_data(), progress=False, resume=True)
    assert stat.S_IMODE(os.stat(tmp_path / "last.npz").st_mode) == 0o640
    assert load_engine_checkpoint(tmp_path / "last.npz", cfg)["stage_index"] == 2


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    run = tmp_path_factory.mktemp("one")
    train_engine(_cfg(), run, data=make_data(), progress=False, stop_after_epochs=1)
    return run / "last.npz"


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(dst, **arrays)


def _tamper_weight(a):
    key = next(k for k in a if k.startswith("backbone:"))
    a[key] = a[key] + np.float32(1e-3)


def _tamper_epoch(a):
    meta = json.loads(a["meta"].tobytes())
    meta["epoch"] = 0
    a["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


def _foreign(a):
    a["meta"] = np.frombuffer(json.dumps({"format": "something-else"}).encode(), np.uint8)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:3000]), "not a readable .npz"),
    (lambda p: p.write_bytes(b""), "not a readable .npz"),
    (lambda p: _rewrite(p, p, _tamper_weight), "does not match its checksum"),
    (lambda p: _rewrite(p, p, _tamper_epoch), "does not match its checksum"),
    (lambda p: _rewrite(p, p, _foreign), "not a fastconv engine checkpoint"),
    (lambda p: _rewrite(p, p, lambda a: a.pop("meta")), "not an engine checkpoint"),
], ids=["truncated", "empty", "edited-weight", "edited-epoch", "foreign", "no-meta"])
def test_a_damaged_checkpoint_is_refused_in_one_line(one_epoch, tmp_path, damage, message):
    bad = tmp_path / "last.npz"
    bad.write_bytes(one_epoch.read_bytes())
    damage(bad)
    with pytest.raises(EngineCheckpointError, match=message) as err:
        train_engine(_cfg(), tmp_path, data=make_data(), progress=False, resume=True)
    assert "\n" not in str(err.value) and str(err.value).startswith("cannot resume")


def test_an_other_config_checkpoint_is_refused_naming_the_difference(one_epoch, tmp_path):
    (tmp_path / "last.npz").write_bytes(one_epoch.read_bytes())
    with pytest.raises(EngineCheckpointError, match=r"another config \(ce.lr: 0.1 -> 0.05\)"):
        train_engine(_cfg("ce.lr=0.05"), tmp_path, data=make_data(), progress=False, resume=True)


def test_cli_resume_errors_exit_2(one_epoch, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    args = ["train", "--engine", "fastconv", "--config", "base", "--protocol", "view1", "--out", str(run),
            "--resume", "--quiet"] + [a for kv in SETS for a in ("--set", kv)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: --resume: {run / 'last.npz'} does not exist\n"
    (run / "last.npz").write_bytes(one_epoch.read_bytes()[:5000])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume:") and err.count("\n") == 1 and "Traceback" not in err
    (run / "last.npz").write_bytes(one_epoch.read_bytes())
    assert main(args + ["--set", "arcface.m=0.4"]) == 2  # the saved run used base's arcface.m = 0.3
    assert "another config (arcface.m: 0.3 -> 0.4)" in capsys.readouterr().err


def test_engine_check_accepts_cpu_small_and_names_what_it_lacks():
    check_engine_config(load_config("cpu-small"))
    check_engine_config(load_config("cpu-small", ["budget_minutes=5"]))  # the engine has its own probe
    for key, shown in [("augment.framing=true", "augment.framing"),
                       ("precision=bf16", "precision=bf16"), ("tensorboard=true", "tensorboard"),
                       ("device=cuda", "device=cuda")]:
        with pytest.raises(ValueError, match=f"does not implement {shown}"):
            check_engine_config(load_config("cpu-small", [key]))


def test_cpu_small_preset_trains_on_the_engine(tmp_path):
    """The preset as shipped (64 px iresnet_small, batch 128, CutMix, ArcFace s=32 m=0.4) for one step
    per stage: only the epoch counts and max_steps are cut (and its budget, so no probe)."""
    cfg = load_config("cpu-small", ["budget_minutes=0", "ce.epochs=1", "arcface.epochs=1", "max_steps=1"])
    data = make_data(n_classes=16, per_class=8, size=64)
    s = train_engine(cfg, tmp_path, data=data, progress=False)
    records = _records(tmp_path)
    assert [(r["stage"], r["epoch"]) for r in records] == [("ce", 1), ("arcface", 1)]
    assert all(np.isfinite(r["loss"]) for r in records) and s["best_val_eer"] is not None
    _, meta = load_model_file(tmp_path / "model.npz")
    assert meta["model_name"] == "iresnet_small" and meta["input_size"] == 64 and meta["embedding_size"] == 256


def test_progress_is_one_line_per_epoch_off_a_terminal_and_a_bar_per_epoch_on_one(tmp_path, capsys, monkeypatch):
    import fastconv.face.engine_train as et

    cfg = _cfg("ce.epochs=1", "arcface.epochs=1")
    train_engine(cfg, tmp_path / "piped", data=make_data(), progress=True)
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in lines if line.startswith("stage=")]
    assert [line.split(", ")[:2] for line in epoch_lines] == [["stage=ce", "epoch=1"], ["stage=arcface", "epoch=1"]]
    assert len(lines) == len(epoch_lines) + 1 and lines[0].startswith("note: --engine fastconv fits no PLDA")
    bars = []

    class Bar:
        def __init__(self, total, desc, **kw):
            self.total, self.desc, self.n, self.kw, self.closed = total, desc, 0, kw, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix(self, **kw):
            self.postfix = kw

        def close(self):
            self.closed = True

    monkeypatch.setattr(et, "progress_bar", Bar)
    train_engine(cfg, tmp_path / "tty", data=make_data(), progress=True)
    assert [(b.desc, b.total, b.n, b.closed) for b in bars] == [("ce 1/1", 3, 3, True), ("arcface 1/1", 3, 3, True)]
    assert set(bars[0].postfix) == {"loss", "acc", "lr", "img_s"}
