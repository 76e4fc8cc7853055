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


def test_framing_variant_switches_the_detector_like_jitter_and_names_its_ranges():
    on = variants(load_config("cpu-small"))["framing"]
    assert on == ("+ framing jitter (scale x[0.9, 1.1], shift <= 0.06 of the side, rotation <= 8 deg)",
                  ["augment.framing=true"])
    assert load_config("cpu-small", on[1])["augment"]["framing"] is True
    off = variants(load_config("cpu-small", ["augment.framing=true", "augment.framing_rotation=5"]))["framing"]
    assert off == ("- framing jitter (scale x[0.9, 1.1], shift <= 0.06 of the side, rotation <= 5 deg)",
                   ["augment.framing=false"])


def test_the_recipe_row_and_the_table_name_the_overrides_every_variant_trained_with():
    extra = ["ce.epochs=30", "augment.framing=true"]
    recipe = variants(load_config("cpu-small", extra), extra)["recipe"]
    assert recipe == ("the preset with `--set ce.epochs=30 --set augment.framing=true`: CE 30 epochs, then "
                      "arcface 12", [])
    assert variants(load_config("cpu-small"))["recipe"][0].startswith("the preset as it is: CE 16 epochs")
    # an override the ablation pins anyway is not repeated as the recipe's own
    pinned_too = ["scorer.fit=false", *extra]
    assert variants(load_config("cpu-small", pinned_too), pinned_too)["recipe"] == recipe
    row = {"variant": "recipe", "change": recipe[0], "devtest_eer": 0.1, "devtest_accuracy": 0.9, "minutes": 1.0}
    lines = markdown_table([row], "cpu-small", ["scorer.fit=false", *extra]).splitlines()
    assert lines[0] == ("Every variant: preset `cpu-small` with `--set ce.epochs=30 --set augment.framing=true` "
                        "(and `--set data.val_devtest=true --set budget_minutes=0 --set scorer.fit=false`).")
    assert lines[1] == "" and lines[2].startswith("| variant | change |")
    assert markdown_table([row], "cpu-small").splitlines()[0] == (
        "Every variant: preset `cpu-small` (and `--set data.val_devtest=true --set budget_minutes=0 "
        "--set scorer.fit=false`).")


def _scores(cos, plda, cos_j, plda_j):
    return {w: {"eer": e} for w, e in zip(("cosine", "plda", "cosine_jitter", "plda_jitter"), (cos, plda, cos_j, plda_j))}


def test_markdown_table_has_the_four_eers_and_the_difference_to_recipe():
    rows = [{"variant": "recipe", "change": "r", "devtest_eer": 0.12, "devtest_accuracy": 0.88, "minutes": 8.0,
             "scores": _scores(0.12, 0.1, 0.2, 0.18)},
            {"variant": "cutmix", "change": "c", "devtest_eer": 0.135, "devtest_accuracy": 0.87, "minutes": 8.5,
             "scores": _scores(0.135, 0.111, 0.25, 0.2)},
            {"variant": "old", "change": "o", "devtest_eer": 0.1, "devtest_accuracy": 0.9, "minutes": 7.0}]
    lines = markdown_table(rows).splitlines()
    assert lines[0] == ("| variant | change | DevTest EER cosine | EER PLDA | EER cosine under jitter | "
                        "EER PLDA under jitter | accuracy | EER vs recipe | minutes |")
    assert all(line.count("|") == 10 for line in lines)
    assert "| recipe | r | 12.0 % | 10.0 % | 20.0 % | 18.0 % | 88.0 % |  | 8.0 |" in lines
    assert "| cutmix | c | 13.5 % | 11.1 % | 25.0 % | 20.0 % | 87.0 % | +1.5 | 8.5 |" in lines
    assert "| old | o | 10.0 % |  |  |  | 90.0 % | -2.0 | 7.0 |" in lines  # a result.json from before the scores


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
        _check_scores(r)
    table = (out / "ablation.md").read_text()
    assert "| ce-only |" in table and table.startswith("Every variant: preset `base` with `--set ")
    assert all(r["extra"] == sets[1::2] for r in report["results"])
    assert report["results"][0]["change"].startswith("the preset with `--set ")
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


def _check_scores(result):
    """The four ways of a result.json: EERs in [0, 1], last.pt's weights, no DevTest-chosen threshold."""
    scores = result["scores"]
    for way in ("cosine", "plda", "cosine_jitter", "plda_jitter"):
        assert 0 <= scores[way]["eer"] <= 1 and 0 <= scores[way]["best_threshold_accuracy"] <= 1, way
        # validated on DevTest: the stored cosine threshold was chosen there, and the PLDA fit has no pairs
        assert scores[way]["stored_threshold"] is None and scores[way]["stored_threshold_accuracy"] is None
    assert scores["weights"].startswith("last.pt")
    assert scores["jitter"] == {"scale_shift_rotation": [0.1, 0.06, 8.0], "seed": 0}
    assert scores["plda_fit"]["images"] == 63 and scores["plda_fit"]["identities"] == 21  # all of DevTrain
    # the last epoch's own DevTest validation (cosine, flip TTA) is the plain cosine way
    assert scores["cosine"]["eer"] == pytest.approx(result["last_epoch_val_eer"], abs=1e-9)


def test_finished_training_is_scored_without_training_again(tmp_path, monkeypatch):
    """A variant trained outside `ablate` by its exact command (the lead's runs) and one with a result.json from
    before the scores: `ablate --names` scores both from last.pt and never starts `train`."""
    from fastconv.face import ablation

    lfw = tmp_path / "lfw"
    fake_lfw(lfw)
    monkeypatch.setenv("FASTCONV_LFW", str(lfw))
    monkeypatch.setenv("FASTCONV_CACHE", str(tmp_path / "cache"))
    extra = TINY + ["ce.batch_size=8", "arcface.batch_size=8", "ce.epochs=2", "arcface.epochs=1", "scorer.fit=false"]
    out = tmp_path / "abl"
    for name, overrides in (("recipe", []), ("framing", ["augment.framing=true"])):
        cmd = ["train", "--config", "base", "--protocol", "view1", "--out", str(out / name), "--quiet",
               "--set", "data.val_devtest=true", "--set", "budget_minutes=0"]
        assert main(cmd + [a for kv in extra + overrides for a in ("--set", kv)]) == 0
    (out / "framing" / "result.json").write_text(json.dumps({"variant": "framing", "devtest_eer": 0.5}))
    before = {p: p.read_bytes() for n in ("recipe", "framing") for p in (out / n / "metrics.jsonl", out / n / "last.pt")}

    def no_training(*args, **kwargs):
        raise AssertionError(f"ablate started a process for a finished run: {args}")
    monkeypatch.setattr(ablation.subprocess, "run", no_training)
    sets = [a for kv in extra for a in ("--set", kv)]
    assert main(["ablate", "--config", "base", "--names", "recipe,framing", "--out", str(out), *sets]) == 0
    assert all(p.read_bytes() == b for p, b in before.items())
    results = json.loads((out / "ablation.json").read_text())["results"]
    assert [r["variant"] for r in results] == ["recipe", "framing"] and [r["epochs"] for r in results] == [3, 3]
    for r in results:
        _check_scores(r)
    assert results[1]["overrides"] == ["augment.framing=true"]
    table = (out / "ablation.md").read_text()
    assert "| framing | + framing jitter" in table and "EER PLDA under jitter" in table
    # a run that has not finished is not taken for a finished one
    assert not ablation._finished(out / "recipe", load_config("base", extra + ["arcface.epochs=2"]))

    # the four ways go through eval's own evaluate_pairs: the scorers, `eval --jitter`'s bare default, seed 0
    import fastconv.face.evaluate as evaluate
    from fastconv.face.ablation_scoring import score_last_epoch
    from fastconv.face.cli import build_parser
    from fastconv.face.jitter import REALISTIC, parse_jitter

    eval_parser = build_parser()._subparsers._group_actions[0].choices["eval"]
    assert parse_jitter(next(a.const for a in eval_parser._actions if a.dest == "jitter")) == REALISTIC
    calls, real = [], evaluate.evaluate_pairs

    def recording(model, pairs, root, pre, **kw):
        calls.append((kw["scorer"].name, kw["jitter"], kw["threshold"], len(pairs)))
        return real(model, pairs, root, pre, **kw)
    monkeypatch.setattr(evaluate, "evaluate_pairs", recording)
    score_last_epoch(out / "framing", log=lambda m: None)
    assert calls == [("cosine", None, None, 6), ("cosine", (REALISTIC, 0), None, 6),
                     ("plda", None, None, 6), ("plda", (REALISTIC, 0), None, 6)]
