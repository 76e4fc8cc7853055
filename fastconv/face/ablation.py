"""Ablation of a training recipe on LFW View 1 DevTest, every variant on the same epoch budget.

Each variant is the base preset plus a few ``--set`` overrides, trained by its own
``fastconv face train`` process on View 1 DevTrain and scored on the 1,000 DevTest pairs with the
weights of its *last* epoch (``last.pt``; no checkpoint is picked by its test score), four ways
(:mod:`.ablation_scoring`): cosine and the PLDA back-end (fit on DevTrain), each on plain and on
framing-jittered crops. Up to ``jobs`` variants run at once, each with the preset's thread count.
A variant whose ``result.json`` holds these scores is kept; one whose training finished (the last
epoch of every stage in ``metrics.jsonl`` and a ``last.pt``) is scored without training again; one
interrupted mid-training resumes from its ``last.pt``: an interrupted ablation continues where it
stopped, with the results an uninterrupted one would give.

Writes ``out/ablation.json`` (one record per variant) and ``out/ablation.md`` (a table).
"""
import concurrent.futures
import json
import pathlib
import subprocess
import sys
import threading

from ..atomic import write_json, write_text
from .ablation_scoring import WAYS, score_last_epoch
from .config import STAGES, load_config

VARIANT_NAMES = ("recipe", "ce-only", "cutmix", "mixup", "perspective", "label-smoothing", "dropblock", "framing")

# every variant: validated on DevTest (the tuning view), the preset's epoch counts (equal for every
# variant, no probe), no PLDA fit in training (the scoring fits its own on last.pt's weights)
PINNED = ("data.val_devtest=true", "budget_minutes=0", "scorer.fit=false")

# one variant is scored at a time (in this process): two at once raced on the decoded-image cache of
# DevTrain / DevTest (one rebuilt what the other was writing) and on torch's thread setting
_SCORING = threading.Lock()


def _toggle(name, param, key, current, on_value, where=""):
    """A variant that switches one regulariser: on at ``on_value`` when the recipe lacks it, else off."""
    param = f"{param} " if param else ""
    if current > 0:
        return f"- {name} ({param}{current} -> 0){where}", [f"{key}=0"]
    return f"+ {name} ({param}{on_value}){where}", [f"{key}={on_value}"]


def variants(cfg, extra=()):
    """name -> (what it changes, overrides) for the recipe ``cfg`` (the preset with ``extra``, the
    ``--set`` overrides every variant gets, applied).

    Every variant trains as many epochs as the recipe and changes one thing: ``ce-only`` drops
    the margin stage (its epochs go to CE); the others switch one regulariser on when the recipe
    has it off, or off when it has it on.
    """
    ce, arc = cfg["ce"], cfg["arcface"]
    ce_epochs = ce["epochs"] if ce["enabled"] else 0
    arc_epochs = arc["epochs"] if arc["enabled"] else 0
    total = ce_epochs + arc_epochs
    in_ce = " in the CE stage"
    own = _own_overrides(extra)
    base = f"the preset with {_set_flags(own)}" if own else "the preset as it is"
    return {
        "recipe": (f"{base}: CE {ce_epochs} epochs, then {arc['head']} {arc_epochs}", []),
        "ce-only": (f"CE alone for {total} epochs, no margin stage", ["arcface.enabled=false", "ce.enabled=true",
                                                                      f"ce.epochs={total}"]),
        "cutmix": _toggle("CutMix", "alpha", "ce.cutmix", ce["cutmix"], 1.0, in_ce),
        "mixup": _toggle("MixUp", "alpha", "ce.mixup", ce["mixup"], 0.2, in_ce),
        "perspective": _toggle("RandomPerspective", "distortion", "augment.perspective",
                               cfg["augment"]["perspective"], 0.2, ", p 0.5"),
        "label-smoothing": _toggle("label smoothing", "", "ce.label_smoothing", ce["label_smoothing"], 0.1, in_ce),
        "dropblock": _toggle("DropBlock", "p", "model.dropblock", cfg["model"]["dropblock"], 0.1,
                             ", block 3, last two stages"),
        "framing": _framing(cfg["augment"]),
    }


def _set_flags(extra):
    """``["a=1", "b=2"]`` -> ``"`--set a=1 --set b=2`"``, as the command line gave them."""
    return "`" + " ".join(f"--set {kv}" for kv in extra) + "`"


def _own_overrides(extra):
    """``extra`` without the overrides :data:`PINNED` sets anyway (they are named once, on their own)."""
    return [kv for kv in extra if kv not in PINNED]


def _framing(aug):
    """The framing-jitter variant (face/jitter.py): switched on when the recipe lacks it, else off."""
    ranges = (f"scale x[{1 - aug['framing_scale']:g}, {1 + aug['framing_scale']:g}], shift <= "
              f"{aug['framing_shift']:g} of the side, rotation <= {aug['framing_rotation']:g} deg")
    if aug["framing"]:
        return f"- framing jitter ({ranges})", ["augment.framing=false"]
    return f"+ framing jitter ({ranges})", ["augment.framing=true"]


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
           "--out", str(run_dir), "--quiet"]
    if (pathlib.Path(run_dir) / "last.pt").is_file():
        cmd.append("--resume")
    for o in (*PINNED, *overrides):
        cmd += ["--set", o]
    return cmd


def _finished(run_dir, cfg):
    """Has the training of ``cfg`` in ``run_dir`` ended: a ``last.pt`` and the last epoch of every stage?"""
    run_dir = pathlib.Path(run_dir)
    done = {(rec["stage"], rec["epoch"]) for rec in _epoch_records(run_dir)}
    stages = [(s, cfg[s]["epochs"]) for s in STAGES if cfg[s]["enabled"] and cfg[s]["epochs"] > 0]
    return (run_dir / "last.pt").is_file() and all(st in done for st in stages)


def _has_scores(run_dir):
    try:
        rec = json.loads((pathlib.Path(run_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return False
    return all(way in rec.get("scores", {}) for way in WAYS)


def _train_variant(config, out, name, variant, extra):
    """Train one variant in its own ``fastconv face train`` process (unless its training already ended),
    score its last epoch and write its result.json. -> success."""
    change, overrides = variant
    run_dir = out / name
    run_dir.mkdir(exist_ok=True)
    if _finished(run_dir, load_config(config, [*PINNED, *extra, *overrides])):
        print(f"[ablation] {name}: training already finished; scoring its last.pt", flush=True)
    else:
        cmd = _command(config, extra + overrides, run_dir)
        print(f"[ablation] start {name}: {' '.join(cmd[2:])}", flush=True)
        with open(run_dir / "train.log", "a") as log:
            returncode = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        if returncode != 0 or not _epoch_records(run_dir):
            print(f"[ablation] {name} failed (exit {returncode}): {_last_line(run_dir / 'train.log')} "
                  f"(log: {run_dir / 'train.log'})", flush=True)
            return False
    rec = _epoch_records(run_dir)[-1]
    try:
        with _SCORING:
            scores = score_last_epoch(run_dir, log=lambda m: print(m, flush=True))
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"[ablation] {name}: scoring {run_dir / 'last.pt'} failed: {exc}", flush=True)
        return False
    write_json(run_dir / "result.json", {
        "variant": name, "change": change, "overrides": overrides, "extra": list(extra),
        "devtest_eer": scores["cosine"]["eer"],
        "devtest_accuracy": scores["cosine"]["best_threshold_accuracy"], "last_epoch_val_eer": rec["val_eer"],
        "epochs": len(_epoch_records(run_dir)), "minutes": rec["minutes_total"], "scores": scores})
    print(f"[ablation] done {name}: DevTest EER cosine {scores['cosine']['eer']:.4f}, PLDA "
          f"{scores['plda']['eer']:.4f}, under jitter {scores['cosine_jitter']['eer']:.4f} / "
          f"{scores['plda_jitter']['eer']:.4f}; {rec['minutes_total']:.1f} min of training", flush=True)
    return True


def run_ablation(config, out, names=None, jobs=1, extra=()):
    """Train the variants ``names`` (default all of :data:`VARIANT_NAMES`) of preset ``config``.

    ``extra``: overrides applied to every variant (e.g. ``max_steps=5`` for a smoke run).
    Returns the list of result records, in the order of ``names``.
    """
    names = list(VARIANT_NAMES) if names is None else list(names)
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; expected some of {list(VARIANT_NAMES)}")
    table = variants(load_config(config, list(extra)), list(extra))
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if not _has_scores(out / n)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on one process
        outcomes = list(pool.map(lambda n: _train_variant(config, out, n, table[n], list(extra)), todo))
    failed = [name for name, ok in zip(todo, outcomes) if not ok]
    results = [json.loads((out / n / "result.json").read_text()) for n in names
               if (out / n / "result.json").is_file()]
    write_json(out / "ablation.json", {"config": config, "extra": list(extra), "results": results,
                                        "failed": failed})
    write_text(out / "ablation.md", markdown_table(results, config, extra))
    if failed:
        raise RuntimeError(f"ablation variants failed: {failed}")
    return results


def markdown_table(results, config=None, extra=()):
    """A README table of ``results``: DevTest EERs of the four ways (a result without scores shows the cosine
    EER only), the best-threshold cosine accuracy and the cosine EER's difference to ``recipe``, in percent.

    With ``config`` the table opens with a line naming the preset and the ``--set`` overrides (``extra``)
    that every variant trained with, so a table read on its own says what its recipe was."""
    base = next((r for r in results if r["variant"] == "recipe"), None)
    head = []
    if config is not None:
        own = _own_overrides(extra)
        head = [f"Every variant: preset `{config}`" + (f" with {_set_flags(own)}" if own else "")
                + f" (and {_set_flags(PINNED)}).", ""]
    lines = [*head,
             "| variant | change | DevTest EER cosine | EER PLDA | EER cosine under jitter | EER PLDA under jitter "
             "| accuracy | EER vs recipe | minutes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        delta = "" if base is None or r is base else f"{100 * (r['devtest_eer'] - base['devtest_eer']):+.1f}"
        scores = r.get("scores", {})
        others = [f"{100 * scores[w]['eer']:.1f} %" if w in scores else "" for w in WAYS[1:]]
        lines.append(f"| {r['variant']} | {r['change']} | {100 * r['devtest_eer']:.1f} % | {' | '.join(others)} | "
                     f"{100 * r['devtest_accuracy']:.1f} % | {delta} | {r['minutes']:.1f} |")
    return "\n".join(lines) + "\n"
