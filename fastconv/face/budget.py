"""Time budget of a training run: a throughput probe picks both stages' epoch counts.

``budget_minutes > 0`` in the config (``--budget-minutes N``): at start-up :func:`probe_images_per_s`
times a few CE training steps of the config's model, with the training set's class count in the head,
on a synthetic batch (``throughput.measure``), and the torch trainer's data probe times the data path
the step leaves out, the per-image augmentation, batching and CutMix on real training images
(``throughput.measure_data``; serial with the step when ``workers = 0``, so an image costs
``1 / step_ips + data_seconds``: :func:`combined_images_per_s`). The engine trainer,
``--engine fastconv``, times its own step, augmentation included (``engine_train.probe_engine_images_per_s``).
:func:`choose_epochs` then picks the largest total epoch count E, split between the stages in the
ratio of the config's ``ce.epochs : arcface.epochs``, whose estimated cost at the combined ``ips`` fits
the time left:

    seconds(stage epoch) = steps * batch / ips + val_images * 2 / (3 * ips)   (validation, flip TTA)
    seconds(fixed)       = (train_images + val_images) * 2 / (3 * ips)        (PLDA back-end fit, torch only)
    sum over epochs + fixed <= SAFETY * (60 * budget_minutes - seconds already spent, probe included)

(an inference forward is counted as a third of a training step; ``SAFETY`` leaves room for what
neither probe times: checkpoints, logging, the schedule, and a machine that slows down after the probe). The choice is written to ``out/budget.json``
and into the run's config (so checkpoints record it); ``--resume`` reads it back and never probes
again, so an interrupted run continues with the same counts. A run with ``ce.epochs`` /
``arcface.epochs`` set to the recorded counts and no budget trains the same weights.
"""
from __future__ import annotations

import copy
import json
import pathlib
import time

from ..atomic import write_json

__all__ = ["SAFETY", "probe_images_per_s", "combined_images_per_s", "choose_epochs", "apply_budget"]

SAFETY = 0.85
PROBE_STEPS, PROBE_WARMUP = 3, 1


def probe_images_per_s(cfg, precision, num_classes=1000):
    """Training images/s of ``cfg``'s model (CE step with a ``num_classes`` head, ``precision``, the
    config's memory format)."""
    from .throughput import measure

    return measure(cfg, precision, cfg["channels_last"], steps=PROBE_STEPS, warmup=PROBE_WARMUP,
                   num_classes=num_classes)["images_per_s"]


def combined_images_per_s(step_images_per_s, data_seconds, workers=0):
    """Training images/s of step plus data path: serial with ``workers = 0`` (``1 / (1 / step + data)``);
    with ``workers > 0`` loader processes prepare batches while the step runs, so the slower of the
    step and ``data_seconds / workers`` sets the pace."""
    step = 1.0 / step_images_per_s
    return 1.0 / (step + data_seconds if workers <= 0 else max(step, data_seconds / workers))


def _stage_epoch_seconds(cfg, stage, n_train, n_val, ips):
    bs = cfg[stage]["batch_size"]
    steps = n_train // bs
    if cfg["max_steps"] > 0:
        steps = min(steps, cfg["max_steps"])
    return steps * bs / ips + 2 * n_val / (3 * ips)


def choose_epochs(cfg, images_per_s, n_train, n_val, seconds_left, fits_scorer=None):
    """-> dict(ce=E_ce, arcface=E_arc, estimated_seconds) fitting ``SAFETY * seconds_left``.

    ``fits_scorer``: does the trainer fit the PLDA back-end after training (its cost counted); default
    ``cfg["scorer"]["fit"]`` (the engine trainer fits none). ValueError when not even one epoch fits
    (the message says how long one takes).
    """
    if not images_per_s > 0:
        raise ValueError(f"throughput probe measured {images_per_s!r} images/s")
    stages = [s for s in ("ce", "arcface") if cfg[s]["enabled"] and cfg[s]["epochs"] > 0]
    weights = {s: cfg[s]["epochs"] for s in stages}
    per_epoch = {s: _stage_epoch_seconds(cfg, s, n_train, n_val, images_per_s) for s in stages}
    fits_scorer = cfg["scorer"]["fit"] if fits_scorer is None else fits_scorer
    fixed = 2 * (n_train + n_val) / (3 * images_per_s) if fits_scorer else 0.0
    avail = SAFETY * seconds_left - fixed

    def split(total):
        counts, left = {}, total
        for i, s in enumerate(stages):
            counts[s] = left if i == len(stages) - 1 else max(1, round(total * weights[s] / sum(weights.values())))
            left -= counts[s]
        return counts if all(v >= 1 for v in counts.values()) else None

    best = None
    for total in range(len(stages), 100000):
        counts = split(total)
        if counts is None:  # too few epochs to give every stage one at this ratio (e.g. 2 at 8 : 1)
            continue
        cost = sum(per_epoch[s] * counts[s] for s in stages)
        if cost > avail:
            break
        best = dict(counts, estimated_seconds=cost + fixed)
    if best is None:
        one = sum(per_epoch.values()) + fixed
        raise ValueError(f"budget of {cfg['budget_minutes']} min is too small: one epoch of each stage takes "
                         f"about {one / 60:.1f} min at the measured {images_per_s:.0f} images/s")
    best.setdefault("ce", 0)
    best.setdefault("arcface", 0)
    return best


def apply_budget(cfg, out_dir, n_train, n_val, seconds_spent, resume, precision, probe=None, log=print,
                 fits_scorer=None, num_classes=1000, data_probe=None, workers=0):
    """``cfg`` with the budget's epoch counts (a copy); writes or (``resume``) reads ``out_dir/budget.json``.

    ``probe(cfg, precision, num_classes=C) -> images/s`` defaults to :func:`probe_images_per_s` (torch's
    step; the engine trainer passes its own), timed with the training set's ``num_classes`` in the head;
    ``data_probe() -> seconds per image`` of the data path the step probe leaves out (None: nothing left
    out), combined with the step at the loader's ``workers`` (:func:`combined_images_per_s`);
    ``fits_scorer`` as in :func:`choose_epochs`.
    """
    path = pathlib.Path(out_dir) / "budget.json"
    cfg = copy.deepcopy(cfg)
    if resume:
        try:
            rec = json.loads(path.read_text())
            counts = {"ce": int(rec["ce_epochs"]), "arcface": int(rec["arcface_epochs"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot resume a budget run: {path} is missing or unreadable ({exc}); a run started "
                             f"without a budget resumes with --set budget_minutes=0") from None
        if rec.get("budget_minutes") != cfg["budget_minutes"]:
            raise ValueError(f"cannot resume: {path} was chosen for a budget of {rec.get('budget_minutes')} min, "
                             f"not {cfg['budget_minutes']}")
        log(f"budget: resuming with the recorded epochs ce={counts['ce']}, arcface={counts['arcface']} "
            f"(measured {rec['images_per_s']:.0f} images/s at the start; no new probe)")
    else:
        t0 = time.perf_counter()
        step_ips = float((probe or probe_images_per_s)(cfg, precision, num_classes=num_classes))
        data_seconds = float(data_probe()) if data_probe is not None else 0.0
        if not (data_seconds >= 0 and data_seconds != float("inf")):
            raise ValueError(f"data probe measured {data_seconds!r} s per image")
        ips = combined_images_per_s(step_ips, data_seconds, workers) if step_ips > 0 else step_ips
        probe_seconds = time.perf_counter() - t0  # spent too (the engine's probe takes seconds)
        seconds_left = 60 * cfg["budget_minutes"] - seconds_spent - probe_seconds
        choice = choose_epochs(cfg, ips, n_train, n_val, seconds_left, fits_scorer)
        counts = {"ce": choice["ce"], "arcface": choice["arcface"]}
        rec = {"budget_minutes": cfg["budget_minutes"], "images_per_s": ips, "step_images_per_s": step_ips,
               "data_ms_per_image": 1e3 * data_seconds, "workers": workers, "precision": precision,
               "probe_steps": PROBE_STEPS, "probe_classes": num_classes, "seconds_spent_before": seconds_spent,
               "probe_seconds": probe_seconds, "safety": SAFETY,
               "n_train_images": n_train, "n_val_images": n_val, "ce_epochs": counts["ce"],
               "arcface_epochs": counts["arcface"], "estimated_minutes": choice["estimated_seconds"] / 60}
        write_json(path, rec)
        data = (f"{step_ips:.0f} for the step, {1e3 * data_seconds:.2f} ms per image of loading and augmentation"
                f"{f' on {workers} workers' if workers > 0 else ''}; " if data_probe is not None else "")
        log(f"budget {cfg['budget_minutes']} min: probe measured {ips:.0f} training images/s ({data}{precision}); "
            f"chose ce.epochs={counts['ce']}, arcface.epochs={counts['arcface']} (estimated "
            f"{rec['estimated_minutes']:.1f} min; reproduce with --set budget_minutes=0 --set ce.epochs={counts['ce']} "
            f"--set arcface.epochs={counts['arcface']})")
    for stage, n in counts.items():
        cfg[stage]["epochs"] = n
    return cfg
