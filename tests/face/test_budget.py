"""--budget-minutes: epochs chosen from a (mocked) throughput, logged and recorded; exact resume without a new
probe; the run equals one given the chosen counts directly."""
import json
import os
import sys

import pytest
import torch

from fastconv.face import budget, throughput
from fastconv.face.budget import SAFETY, choose_epochs
from fastconv.face.config import load_config
from fastconv.face.train import train

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY, make_data  # noqa: E402

IPS = 24.0  # mocked images/s: with make_data (48 training, 12 validation images, batch 16) one epoch costs
# 48 / 24 + 2 * 12 / (3 * 24) = 2.333 s and the PLDA fit 2 * 60 / 72 = 1.667 s


def _cfg(*extra):
    return load_config("base", TINY + ["ce.epochs=4", "arcface.epochs=2", *extra])


def test_choose_epochs_fills_the_budget_in_the_config_ratio():
    cfg = _cfg("budget_minutes=1")
    per_epoch, fixed = 48 / IPS + 2 * 12 / (3 * IPS), 2 * 60 / (3 * IPS)
    seconds = (7 * per_epoch + fixed) / SAFETY + 0.01  # room for 7 epochs, not 8
    got = choose_epochs(cfg, IPS, 48, 12, seconds)
    assert (got["ce"], got["arcface"]) == (5, 2)  # 7 split 4:2 -> round(4.67) = 5 and 2
    assert got["estimated_seconds"] == pytest.approx(7 * per_epoch + fixed)
    got = choose_epochs(cfg, 2 * IPS, 48, 12, seconds)  # twice the speed: (17.17 s left) / 1.17 s -> 14 epochs
    assert (got["ce"], got["arcface"]) == (9, 5)
    no_scorer = choose_epochs(_cfg("budget_minutes=1", "scorer.fit=false"), IPS, 48, 12, seconds)
    assert no_scorer["ce"] + no_scorer["arcface"] == 7  # 1.67 s freed is less than one more epoch
    with pytest.raises(ValueError, match="too small: one epoch of each stage takes"):
        choose_epochs(cfg, IPS, 48, 12, 2.0)
    # a lopsided ratio: small totals leave the short stage no epoch (2 at 8 : 1 -> 2 + 0) and are skipped
    lopsided = choose_epochs(_cfg("budget_minutes=1", "ce.epochs=8", "arcface.epochs=1"), IPS, 48, 12, seconds)
    assert (lopsided["ce"], lopsided["arcface"]) == (6, 1)  # 7 epochs: round(7 * 8 / 9) = 6, then 1


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_budget_run_logs_its_choice_resumes_exactly_and_is_reproducible(tmp_path, monkeypatch, capsys):
    data = make_data()
    probed, data_probed = [], []

    def probe(cfg, precision, num_classes):
        probed.append(num_classes)
        return 3 * IPS  # the step alone; the data path costs twice the step, so together IPS

    def data_probe(cfg, images, labels, num_classes):
        data_probed.append((images is data["images"], num_classes, cfg["augment"]["flip"]))
        return 2 / (3 * IPS)
    monkeypatch.setattr(budget, "probe_images_per_s", probe)
    monkeypatch.setattr(throughput, "measure_data", data_probe)
    cfg = _cfg("budget_minutes=0.2")  # 12 s: 0.85 * 12 - 1.67 = 8.5 s -> 3 epochs (7 s), split 2 + 1
    full = train(cfg, tmp_path / "full", progress=False, data=data, return_model=True)
    rec = json.loads((tmp_path / "full" / "budget.json").read_text())
    assert (rec["ce_epochs"], rec["arcface_epochs"]) == (2, 1)
    assert rec["images_per_s"] == pytest.approx(IPS) and rec["step_images_per_s"] == 3 * IPS
    assert rec["data_ms_per_image"] == pytest.approx(1e3 * 2 / (3 * IPS)) and rec["workers"] == 0
    assert probed == [len(data["classes"])] == [rec["probe_classes"]]  # timed with the run's own head
    assert data_probed == [(True, len(data["classes"]), True)]  # the run's own images and transform
    out = capsys.readouterr().out
    assert (f"probe measured {IPS:.0f} training images/s ({3 * IPS:.0f} for the step, 27.78 ms per image of "
            "loading and augmentation; fp32)") in out
    assert "ce.epochs=2, arcface.epochs=1" in out
    assert full["epochs"] == 3

    run = tmp_path / "part"
    assert train(cfg, run, progress=False, data=data, stop_after_epochs=1)["stopped"]

    def no_probe(cfg, precision, num_classes):
        raise AssertionError("resume must not probe again")
    monkeypatch.setattr(budget, "probe_images_per_s", no_probe)
    resumed = train(cfg, run, resume=True, progress=False, data=data, return_model=True)
    assert "resuming with the recorded epochs ce=2, arcface=1" in capsys.readouterr().out
    a, b = _weights(full["model"]), _weights(resumed["model"])
    assert all(torch.equal(a[k], b[k]) for k in a)

    direct = train(_cfg("ce.epochs=2", "arcface.epochs=1"), tmp_path / "direct", progress=False, data=data,
                   return_model=True)
    c = _weights(direct["model"])
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_combined_images_per_s_is_serial_without_workers_and_overlapped_with_them():
    # step 100 images/s (10 ms), data 5 ms per image: serial 15 ms; 2 workers prepare at 2.5 ms < 10 ms
    assert budget.combined_images_per_s(100.0, 0.005) == pytest.approx(1 / 0.015)
    assert budget.combined_images_per_s(100.0, 0.005, workers=2) == pytest.approx(100.0)
    assert budget.combined_images_per_s(100.0, 0.05, workers=2) == pytest.approx(1 / 0.025)  # data-bound
    assert budget.combined_images_per_s(100.0, 0.0) == pytest.approx(100.0)


def test_data_probe_times_the_real_pipeline_and_the_run_stays_reproducible(tmp_path, monkeypatch):
    """The real data probe (the run's transform and CutMix on its images) costs time per image, and the
    budget run still equals a run given its recorded counts directly: the probe leaves torch's RNG alone."""
    data = make_data()
    cfg = _cfg("budget_minutes=0.2", "ce.cutmix=1.0", "augment.framing=true")
    plain = throughput.measure_data(cfg, data["images"], data["labels"], len(data["classes"]), n_images=32)
    assert 0 < plain < 1  # seconds per 16 px image
    monkeypatch.setattr(budget, "probe_images_per_s", lambda cfg, precision, num_classes: 3 * IPS)
    full = train(cfg, tmp_path / "full", progress=False, data=data, return_model=True)
    rec = json.loads((tmp_path / "full" / "budget.json").read_text())
    assert rec["data_ms_per_image"] > 0 and rec["images_per_s"] < rec["step_images_per_s"] == 3 * IPS
    direct = train(_cfg("ce.cutmix=1.0", "augment.framing=true", f"ce.epochs={rec['ce_epochs']}",
                        f"arcface.epochs={rec['arcface_epochs']}"), tmp_path / "direct", progress=False,
                   data=data, return_model=True)
    a, b = _weights(full["model"]), _weights(direct["model"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="n_images >= 1"):
        throughput.measure_data(cfg, data["images"], data["labels"], len(data["classes"]), n_images=0)


@pytest.mark.parametrize("engine", ["torch", "fastconv"])
def test_budget_resume_refuses_another_budget_or_a_missing_record(tmp_path, monkeypatch, engine):
    import fastconv.face.engine_train as et

    if engine == "torch":
        monkeypatch.setattr(budget, "probe_images_per_s", lambda cfg, precision, num_classes: IPS)
        trainer = train
    else:  # --engine fastconv probes its own step
        monkeypatch.setattr(et, "probe_engine_images_per_s", lambda cfg, precision, num_classes: IPS)
        trainer = et.train_engine
    data = make_data()
    trainer(_cfg("budget_minutes=0.2"), tmp_path, progress=False, data=data, stop_after_epochs=1)
    with pytest.raises(ValueError, match="budget of 0.2 min, not 0.5"):
        trainer(_cfg("budget_minutes=0.5"), tmp_path, resume=True, progress=False, data=data)
    (tmp_path / "budget.json").unlink()
    with pytest.raises(ValueError, match="missing or unreadable"):
        trainer(_cfg("budget_minutes=0.2"), tmp_path, resume=True, progress=False, data=data)


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_bad_budget_is_one_error_line(value, capsys):
    from fastconv.face.cli import main

    assert main(["train", "--config", "base", "--budget-minutes", value]) == 2
    assert "--budget-minutes must be a positive number" in capsys.readouterr().err
    with pytest.raises(ValueError, match="budget_minutes must be >= 0"):
        load_config("base", ["budget_minutes=-2"])


@pytest.mark.parametrize("preset,minutes", [("cpu-small", 10.0), ("cpu-large", 60.0)])
def test_cpu_presets_are_defined_by_their_budget(preset, minutes):
    """Both presets load with their budget (set in the preset file), and budget mode picks the epochs
    from a mocked throughput in the preset's CE : ArcFace ratio. The 60-minute preset trains cpu-small's
    network with framing jitter: at the same speed its 6x budget buys about 6x the epochs, nearly all of
    them CE (ArcFace overfit past about 15 epochs on View 2; cpu-large.toml)."""
    from fastconv.face.config import preset_names

    assert preset in preset_names()  # --config cpu-large, like cpu-small
    cfg = load_config(preset)
    assert cfg["budget_minutes"] == minutes
    n_train, n_val = 7000, 600  # about a View 2 training side
    ips = 423.0  # training images/s of the network (README: width 0.375, 2 threads, 2-core AMD EPYC)
    got = choose_epochs(cfg, ips, n_train, n_val, 60 * minutes)
    per_epoch = {s: (n_train // cfg[s]["batch_size"]) * cfg[s]["batch_size"] / ips + 2 * n_val / (3 * ips)
                 for s in ("ce", "arcface")}
    fixed = 2 * (n_train + n_val) / (3 * ips)
    cost = got["ce"] * per_epoch["ce"] + got["arcface"] * per_epoch["arcface"] + fixed
    assert cost == pytest.approx(got["estimated_seconds"]) and cost <= SAFETY * 60 * minutes
    assert cost + min(per_epoch.values()) > SAFETY * 60 * minutes * 0.95  # fills the budget, nearly
    total = got["ce"] + got["arcface"]
    assert got["ce"] == round(total * cfg["ce"]["epochs"] / (cfg["ce"]["epochs"] + cfg["arcface"]["epochs"]))
    if preset == "cpu-large":
        small = load_config("cpu-small")
        assert cfg["model"] == small["model"] and cfg["data"] == small["data"]
        assert cfg["augment"]["framing"] and not small["augment"]["framing"]
        small_total = sum(choose_epochs(small, ips, n_train, n_val, 600).get(s) for s in ("ce", "arcface"))
        assert 5.5 * small_total <= total <= 6.5 * small_total
        assert got["arcface"] <= 20 < 7 * got["arcface"] <= got["ce"]  # the extra epochs go to CE (8 : 1 split)

