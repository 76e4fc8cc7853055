"""Ablation of a training recipe on LFW View 1 DevTest, every variant on the same epoch budget.

Each variant is the base preset plus a few ``--set`` overrides, trained by its own
``fastconv face train`` process on View 1 DevTrain and scored on the 1,000 DevTest pairs after
its *last* epoch (no checkpoint is picked by its test score). Up to ``jobs`` variants run at
once, each with the preset's thread count. A variant whose ``result.json`` already exists is not
trained again, and one interrupted mid-training resumes from its ``last.pt``: an interrupted
ablation continues where it stopped, with the results an uninterrupted one would give.

Writes ``out/ablation.json`` (one record per variant) and ``out/ablation.md`` (a table).
"""
import concurrent.futures
import json
import pathlib
import subprocess
import sys
import time

from ..atomic import write_json, write_text

VARIANT_NAMES = ("recipe", "ce-only", "cutmix", "mixup", "perspective", "label-smoothing", "dropblock")


def _toggle(name, param, key, current, on_value, where=""):
    """A variant that switches one regulariser: on at ``on_value`` when the recipe lacks it, else off."""
    param = f"{param} " if param else ""
    if current > 0:
        return f"- {name} ({param}{current} -> 0){where}", [f"{key}=0"]
    return f"+ {name} ({param}{on_value}){where}", [f"{key}={on_value}"]


def variants(cfg):
    """name -> (what it changes, overrides) for the recipe ``cfg``.

    Every variant trains as many epochs as the recipe and changes one thing: ``ce-only`` drops
    the margin stage (its epochs go to CE); the others switch one regulariser on when the recipe
    has it off, or off when it has it on.
    """
    ce, arc = cfg["ce"], cfg["arcface"]
    ce_epochs = ce["epochs"] if ce["enabled"] else 0
    arc_epochs = arc["epochs"] if arc["enabled"] else 0
    total = ce_epochs + arc_epochs
    in_ce = " in the CE stage"
    return {
        "recipe": (f"the preset as it is: CE {ce_epochs} epochs, then {arc['head']} {arc_epochs}", []),
        "ce-only": (f"CE alone for {total} epochs, no margin stage", ["arcface.enabled=false", "ce.enabled=true",
                                                                      f"ce.epochs={total}"]),
        "cutmix": _toggle("CutMix", "alpha", "ce.cutmix", ce["cutmix"], 1.0, in_ce),
        "mixup": _toggle("MixUp", "alpha", "ce.mixup", ce["mixup"], 0.2, in_ce),
        "perspective": _toggle("RandomPerspective", "distortion", "augment.perspective",
                               cfg["augment"]["perspective"], 0.2, ", p 0.5"),
        "label-smoothing": _toggle("label smoothing", "", "ce.label_smoothing", ce["label_smoothing"], 0.1, in_ce),
        "dropblock": _toggle("DropBlock", "p", "model.dropblock", cfg["model"]["dropblock"], 0.1,
                             ", block 3, last two stages"),
    }


def _epoch_records(run_dir):
    """The per-epoch records (those with validation scores) of ``run_dir/metrics.jsonl``, one per
    (stage, epoch): an epoch logged again after a resume keeps its last record."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    by_epoch = {(rec["stage"], rec["epoch"]): rec for rec in records if "val_eer" in rec}
    return list(by_epoch.values())


def _last_line(path):
    try:
        lines = [line for line in pathlib.Path(path).read_text().splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _command(config, overrides, run_dir):
    """The training command of one variant; it resumes an interrupted run (bit-exactly) from last.pt."""
    cmd = [sys.executable, "-m", "fastconv.face", "train", "--config", config, "--protocol", "view1",
           "--out", str(run_dir), "--quiet", "--set", "data.val_devtest=true",
           "--set", "budget_minutes=0"]  # the preset's epoch counts: equal for every variant, no probe each
    if (pathlib.Path(run_dir) / "last.pt").is_file():
        cmd.append("--resume")
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def _train_variant(config, out, name, variant, extra):
    """Train one variant in its own ``fastconv face train`` process; write its result.json. -> success."""
    change, overrides = variant
    run_dir = out / name
    run_dir.mkdir(exist_ok=True)
    cmd = _command(config, extra + overrides, run_dir)
    print(f"[ablation] start {name}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.time()
    with open(run_dir / "train.log", "a") as log:
        returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    epochs = _epoch_records(run_dir)
    if returncode != 0 or not epochs:
        print(f"[ablation] {name} failed (exit {returncode}): {_last_line(run_dir / 'train.log')} "
              f"(log: {run_dir / 'train.log'})", flush=True)
        return False
    rec = epochs[-1]
    write_json(run_dir / "result.json", {
        "variant": name, "change": change, "overrides": overrides, "devtest_eer": rec["val_eer"],
        "devtest_accuracy": rec["val_accuracy"], "epochs": len(epochs), "minutes": rec["minutes_total"],
        "wall_minutes": (time.time() - t0) / 60})
    print(f"[ablation] done {name}: DevTest EER {rec['val_eer']:.4f}, accuracy "
          f"{rec['val_accuracy']:.4f}, {rec['minutes_total']:.1f} min", flush=True)
    return True


def run_ablation(config, out, names=None, jobs=1, extra=()):
    """Train the variants ``names`` (default all of :data:`VARIANT_NAMES`) of preset ``config``.

    ``extra``: overrides applied to every variant (e.g. ``max_steps=5`` for a smoke run).
    Returns the list of result records, in the order of ``names``.
    """
    from .config import load_config

    names = list(VARIANT_NAMES) if names is None else list(names)
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; expected some of {list(VARIANT_NAMES)}")
    table = variants(load_config(config, list(extra)))
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if not (out / n / "result.json").is_file()]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on one process
        outcomes = list(pool.map(lambda n: _train_variant(config, out, n, table[n], list(extra)), todo))
    failed = [name for name, ok in zip(todo, outcomes) if not ok]
    results = [json.loads((out / n / "result.json").read_text()) for n in names
               if (out / n / "result.json").is_file()]
    write_json(out / "ablation.json", {"config": config, "extra": list(extra), "results": results,
                                        "failed": failed})
    write_text(out / "ablation.md", markdown_table(results))
    if failed:
        raise RuntimeError(f"ablation variants failed: {failed}")
    return results


def markdown_table(results):
    """A README table of ``results`` (EER and accuracy in percent, difference to ``recipe``)."""
    base = next((r for r in results if r["variant"] == "recipe"), None)
    lines = ["| variant | change | DevTest EER | accuracy | EER vs recipe | minutes |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        delta = "" if base is None or r is base else f"{100 * (r['devtest_eer'] - base['devtest_eer']):+.1f}"
        lines.append(f"| {r['variant']} | {r['change']} | {100 * r['devtest_eer']:.1f} % | "
                     f"{100 * r['devtest_accuracy']:.1f} % | {delta} | {r['minutes']:.1f} |")
    return "\n".join(lines) + "\n"
