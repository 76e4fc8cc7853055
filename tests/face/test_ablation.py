"""`fastconv face ablate`: variants on one epoch budget, run as separate processes, resumable."""
import json
import os
import sys

import pytest

from fastconv.face.ablation import VARIANT_NAMES, markdown_table, variants
from fastconv.face.cli import main
from fastconv.face.config import load_config

sys.path.insert(0, os.path.dirname(__file__))
from face_synth import TINY, fake_lfw  # noqa: E402


def _total_epochs(cfg):
    return sum(cfg[s]["epochs"] for s in ("ce", "arcface") if cfg[s]["enabled"])


@pytest.mark.parametrize("preset", ["cpu-small", "gpu-r18"])
def test_every_variant_has_the_recipe_budget_and_changes_one_thing(preset):
    base = load_config(preset)
    table = variants(base)
    assert tuple(table) == VARIANT_NAMES
    for name, (change, overrides) in table.items():
        cfg = load_config(preset, overrides)
        assert _total_epochs(cfg) == _total_epochs(base), name
        assert change
        if name == "recipe":
            assert cfg == base
        else:
            assert cfg != base, f"{name} changes nothing"
    assert not load_config(preset, table["ce-only"][1])["arcface"]["enabled"]


def test_regulariser_variants_switch_off_what_the_recipe_has_and_on_what_it_lacks():
    on = variants(load_config("base", ["ce.cutmix=1.0", "augment.perspective=0.3"]))
    off = variants(load_config("base", ["ce.cutmix=0", "ce.label_smoothing=0"]))
    assert on["cutmix"] == ("- CutMix (alpha 1.0 -> 0) in the CE stage", ["ce.cutmix=0"])
    assert on["perspective"][1] == ["augment.perspective=0"]
    assert off["cutmix"] == ("+ CutMix (alpha 1.0) in the CE stage", ["ce.cutmix=1.0"])
    assert off["label-smoothing"][1] == ["ce.label_smoothing=0.1"]


def test_markdown_table_reports_difference_to_recipe():
    rows = [{"variant": "recipe", "change": "r", "devtest_eer": 0.12, "devtest_accuracy": 0.88, "minutes": 8.0},
            {"variant": "cutmix", "change": "c", "devtest_eer": 0.135, "devtest_accuracy": 0.87, "minutes": 8.5}]
    text = markdown_table(rows)
    assert "| cutmix | c | 13.5 % | 87.0 % | +1.5 | 8.5 |" in text
    assert "| recipe | r | 12.0 % | 88.0 % |  | 8.0 |" in text


def test_ablate_cli_runs_variants_and_resumes(tmp_path, monkeypatch, capsys):
    lfw = tmp_path / "lfw"
    fake_lfw(lfw)
    monkeypatch.setenv("FASTCONV_LFW", str(lfw))
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    sets = [a for kv in TINY + ["ce.epochs=1", "arcface.epochs=1", "ce.batch_size=8", "arcface.batch_size=8"]
            for a in ("--set", kv)]
    out = tmp_path / "abl"
    assert main(["ablate", "--config", "base", "--variants", "recipe,ce-only", "--jobs", "2", "--out", str(out),
                 *sets]) == 0
    report = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in report["results"]] == ["recipe", "ce-only"]
    for r in report["results"]:
        assert r["epochs"] == 2 and 0 <= r["devtest_eer"] <= 1 and 0 <= r["devtest_accuracy"] <= 1
    assert "| ce-only |" in (out / "ablation.md").read_text()
    # finished variants are kept: a second call trains nothing and reports the same numbers
    before = (out / "recipe" / "metrics.jsonl").stat().st_mtime_ns
    assert main(["ablate", "--config", "base", "--variants", "recipe,ce-only", "--out", str(out), *sets]) == 0
    assert (out / "recipe" / "metrics.jsonl").stat().st_mtime_ns == before
    assert json.loads((out / "ablation.json").read_text())["results"] == report["results"]


def test_ablate_refuses_unknown_variant(tmp_path, capsys):
    assert main(["ablate", "--variants", "recipe,nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["ablate", "--jobs", "0", "--out", str(tmp_path)]) == 2


def test_interrupted_variant_resumes_and_counts_each_epoch_once(tmp_path):
    from fastconv.face.ablation import _command, _epoch_records

    assert "--resume" not in _command("cpu-small", [], tmp_path)
    (tmp_path / "last.pt").write_bytes(b"")
    assert "--resume" in _command("cpu-small", [], tmp_path)
    recs = [{"stage": "ce", "epoch": 1, "val_eer": 0.3}, {"stage": "ce", "epoch": 2, "step": 5, "loss": 1.0},
            {"stage": "ce", "epoch": 2, "val_eer": 0.25}, {"stage": "ce", "epoch": 2, "val_eer": 0.2},
            {"stage": "arcface", "epoch": 1, "val_eer": 0.15}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    got = _epoch_records(tmp_path)
    assert [(r["stage"], r["epoch"], r["val_eer"]) for r in got] == [("ce", 1, 0.3), ("ce", 2, 0.2),
                                                                    ("arcface", 1, 0.15)]
