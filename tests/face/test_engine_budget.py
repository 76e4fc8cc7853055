"""--budget-minutes on the engine (``train --engine fastconv``): the engine's own step is probed, face/budget.py
picks the epochs (mocked throughput), records them, and a resume reads them back without probing and
continues bit for bit; the run equals one given the chosen counts directly; the probe is torch-free.
(The refusal of a resume with another budget or without budget.json is tested for both trainers in
test_budget.py.)"""
import json
import os
import sys

import numpy as np
import pytest

import fastconv.face.engine_train as et
from fastconv.face.config import load_config
from fastconv.face.engine_train import probe_engine_images_per_s, train_engine

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY, make_data  # noqa: E402
from test_engine_torch_free import _identity_tree, _train_args  # noqa: E402
from torch_block import NO_TORCH  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_blas_thread")

IPS = 2.4  # mocked images/s: make_data (48 training, 12 validation images, batch 16): an epoch is
# 48 / 2.4 + 2 * 12 / (3 * 2.4) = 23.33 s; the engine fits no PLDA back-end, so nothing fixed is added.
# The real probe runs first and its seconds count against the budget: the budgets below leave it 25 s


def _cfg(*extra):
    return load_config("base", TINY + ["ce.epochs=4", "arcface.epochs=2", "ce.cutmix=1.0", "model.dropout=0.2",
                                       *extra])


def _arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _probe_then(ips):
    """The real engine probe (it draws weights from fastconv's generator, which must be restored), then ``ips``."""
    def probe(cfg, precision, num_classes):
        assert precision == "fp32" and probe_engine_images_per_s(cfg, precision, num_classes) > 0
        probe.classes.append(num_classes)
        return ips
    probe.classes = []
    return probe


def test_engine_budget_picks_records_resumes_exactly_and_equals_the_direct_run(tmp_path, monkeypatch, capsys):
    probe = _probe_then(IPS)
    monkeypatch.setattr(et, "probe_engine_images_per_s", probe)
    cfg = _cfg("budget_minutes=2.25")  # 135 s: 0.85 * (135 - probe) fits 4 epochs (93.3 s), never 5 (116.7 s);
    # 4 split 4:2 -> 3 + 1
    data = make_data()
    full = train_engine(cfg, tmp_path / "full", data=data, progress=False)
    rec = json.loads((tmp_path / "full" / "budget.json").read_text())
    assert (rec["ce_epochs"], rec["arcface_epochs"], rec["images_per_s"], rec["precision"]) == (3, 1, IPS, "fp32")
    assert rec["estimated_minutes"] == pytest.approx(4 * (48 / IPS + 2 * 12 / (3 * IPS)) / 60)
    out = capsys.readouterr().out
    assert f"probe measured {IPS:.0f} training images/s (fp32)" in out and "ce.epochs=3, arcface.epochs=1" in out
    assert full["epochs"] == 4
    assert probe.classes == [len(data["classes"])] == [rec["probe_classes"]]  # the run's own head size

    for first in (2, 3):  # mid-CE, and at the CE -> ArcFace boundary
        run = tmp_path / f"part{first}"
        assert train_engine(cfg, run, data=data, progress=False, stop_after_epochs=first)["stopped"]

        def no_probe(cfg, precision, num_classes):
            raise AssertionError("resume must not probe again")
        monkeypatch.setattr(et, "probe_engine_images_per_s", no_probe)
        resumed = train_engine(cfg, run, data=data, progress=False, resume=True)
        assert "resuming with the recorded epochs ce=3, arcface=1" in capsys.readouterr().out
        assert resumed["epochs"] == 4
        for name in ("last.npz", "model.npz"):
            assert _same(_arrays(tmp_path / "full" / name), _arrays(run / name)), (first, name)
        monkeypatch.setattr(et, "probe_engine_images_per_s", _probe_then(IPS))

    train_engine(_cfg("ce.epochs=3", "arcface.epochs=1"), tmp_path / "direct", data=data, progress=False)
    assert _same(_arrays(tmp_path / "full" / "model.npz"), _arrays(tmp_path / "direct" / "model.npz"))


def test_engine_budget_run_is_torch_free_from_the_command_line(tmp_path):
    """`train --engine fastconv --budget-minutes` where torch cannot be imported: the real probe runs (its
    measurement is then replaced by 1.2 images/s so the choice does not depend on this machine)."""
    import subprocess

    _identity_tree(tmp_path / "faces")  # 16 images, batch 8: an epoch is 16 / 1.2 = 13.3 s at 1.2 images/s
    code = NO_TORCH.replace("from fastconv.cli import main", (
        "import fastconv.face.engine_train as et\n"
        "real = et.probe_engine_images_per_s\n"
        "et.probe_engine_images_per_s = lambda cfg, precision, num_classes: (\n"
        "    1.2 if real(cfg, precision, num_classes) > 0 else 0.0)\n"
        "from fastconv.cli import main"))
    sets = TINY + ["ce.epochs=1", "arcface.epochs=1", "ce.batch_size=8", "arcface.batch_size=8", "data.val_people=0"]
    # 62.4 s: 0.85 * (62.4 - start-up and probe) fits 3 epochs (40 s) with up to 15 s spent, never 4 (53.3 s);
    # 3 split 1:1 -> 2 + 1
    args = _train_args(tmp_path / "run", "--root", tmp_path / "faces", "--budget-minutes", "1.04", sets=sets)
    env = dict(os.environ, FASTCONV_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((tmp_path / "run" / "budget.json").read_text())
    assert (rec["ce_epochs"], rec["arcface_epochs"]) == (2, 1)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["epoch"]) for x in records] == [("ce", 1), ("ce", 2), ("arcface", 1)]
