"""Training the face backbones on fastconv's engine: ``fastconv face train --engine fastconv``.

The recipe of ``fastconv.face.train`` (softmax CE with label smoothing and CutMix, then a margin
head fine-tune from class-centre weights; SGD with Nesterov momentum, weight decay on weights
and the head but not on 1-D parameters, linear warm-up then cosine per step, gradient-norm
clipping), with the backbone (``engine_models``), heads (``engine_heads``), optimiser and
augmentation (flip, mild resized crop, colour jitter, CutMix, in NumPy) all on fastconv; float32.
Writes ``model.npz`` (best validation EER; the runtime's format), ``metrics.jsonl`` and, after
every epoch, ``last.npz`` (``engine_checkpoint``), from which ``resume`` continues bit for bit.
Torch-free from the image files on (``prepare`` decodes with Pillow + NumPy). Progress: a tqdm bar
per epoch in a terminal, one line per epoch otherwise (``progress``).

Time budget (``budget_minutes > 0``, ``--budget-minutes N``): :func:`probe_engine_images_per_s` times
the engine's own training step (augmentation, forward, backward, SGD step) on a synthetic batch, and
``budget.apply_budget`` picks, records (``budget.json``) and on ``resume`` reads back the epoch counts,
as for the torch trainer; the probe leaves fastconv's generator as it found it.

Options the engine does not implement (AdamW, MixUp, RandomPerspective, framing jitter, DropBlock,
head warm-up, bf16/fp16, CUDA, TensorBoard, several processes) are refused with a message naming
them (:func:`check_engine_config`).
"""
import json
import math
import pathlib
import time
from dataclasses import dataclass

import numpy as np

from .. import nn, optim
from .. import random as fc_random
from .config import STAGES
from .engine_checkpoint import EngineCheckpointError, load_engine_checkpoint, restore_optimizer, save_engine_checkpoint
from .engine_heads import build_engine_head
from .engine_models import build_engine_model
from .runtime import embed_images
from .progress import epoch_line, progress_bar
from .schedule import lr_factor

__all__ = ["param_groups", "StageOptimizer", "clip_grad_norm", "train_step", "augment_batch", "cutmix",
           "check_engine_config", "probe_engine_images_per_s", "train_engine"]


# ----------------------------------------------------------------------------- one step
def param_groups(backbone, head):
    """[(params, decay?)]: backbone weights (>= 2-D), backbone 1-D params, head; frozen params left out."""
    frozen = set(getattr(backbone, "frozen", ()))
    bb = [p for name, p in backbone.named_parameters() if name not in frozen]
    return [([p for p in bb if p.data.ndim > 1], True), ([p for p in bb if p.data.ndim <= 1], False),
            (head.parameters(), True)]


class StageOptimizer:
    """SGD (Nesterov when momentum > 0) per parameter group with a shared, scheduled learning rate."""

    def __init__(self, groups, lr, momentum, weight_decay):
        self.base_lr = lr
        self.sgds = [optim.SGD(params, lr, momentum=momentum, weight_decay=weight_decay if decay else 0.0,
                               nesterov=momentum > 0) for params, decay in groups if params]
        self.params = [p for s in self.sgds for p in s.params]

    def set_factor(self, factor):
        for s in self.sgds:
            s.lr = self.base_lr * factor

    @property
    def lr(self):
        return self.sgds[-1].lr

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def step(self):
        for s in self.sgds:
            s.step()


def clip_grad_norm(params, max_norm):
    """torch's ``clip_grad_norm_``: scale every gradient by min(1, max_norm / (||g||_2 + 1e-6))."""
    total = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params))
    coef = min(1.0, max_norm / (total + 1e-6))
    for p in params:
        p.grad *= p.grad.dtype.type(coef)
    return total


def train_step(backbone, head, x, target, opt, clip=0.0):
    """Forward, backward, clipping and an SGD step on one batch; returns (loss, embeddings)."""
    emb = backbone(x)
    loss = head(emb, target)
    opt.zero_grad()
    backbone.backward(head.backward())
    if clip > 0:
        clip_grad_norm(opt.params, clip)
    opt.step()
    return loss, emb


# ----------------------------------------------------------------------------- augmentation (NumPy)
def _resize_bilinear(img, size):
    """(3, h, w) float -> (3, size, size), bilinear with half-pixel centres (align_corners=False)."""
    _, h, w = img.shape

    def axis(n_in):
        pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top = img[:, y0][:, :, x0] * (1 - fx) + img[:, y0][:, :, x1] * fx
    bottom = img[:, y1][:, :, x0] * (1 - fx) + img[:, y1][:, :, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def _resized_crop_box(h, w, scale, rng):
    """torchvision RandomResizedCrop box (scale (scale, 1), ratio (0.9, 1.1)): (top, left, ch, cw)."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    return 0, 0, h, w


def _grey(img):
    return 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]


def _jitter(img, strength, rng):
    """Brightness, contrast, saturation factors in [1 - s, 1 + s], applied in random order (float 0..255)."""
    for op in rng.permutation(3):
        f = rng.uniform(max(0.0, 1 - strength), 1 + strength)
        if op == 0:
            img = img * f
        elif op == 1:
            img = img * f + (1 - f) * _grey(img).mean()
        else:
            img = img * f + (1 - f) * _grey(img)[None]
        img = np.clip(img, 0, 255)
    return img


def augment_batch(images, aug, rng):
    """uint8 (B, 3, S, S) -> uint8 (B, 3, S, S): flip (p 0.5), resized crop, colour jitter, per image."""
    out = np.empty_like(images)
    size = images.shape[-1]
    for i, img in enumerate(images):
        x = img.astype(np.float32)
        if aug.get("flip", False) and rng.random() < 0.5:
            x = x[:, :, ::-1]
        if aug.get("resized_crop", False):
            top, left, ch, cw = _resized_crop_box(size, size, float(aug.get("crop_scale", 0.8)), rng)
            x = _resize_bilinear(x[:, top:top + ch, left:left + cw], size)
        if float(aug.get("color_jitter", 0.0)) > 0:
            x = _jitter(x, float(aug["color_jitter"]), rng)
        out[i] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def cutmix(x, labels, num_classes, alpha, rng):
    """CutMix (torchvision v2 semantics): paste a box of the batch rolled by one; -> (x, (B, C) soft targets)."""
    n, _, h, w = x.shape
    lam = rng.beta(alpha, alpha)
    r = math.sqrt(1 - lam)
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    y1, y2 = max(cy - int(r * h / 2), 0), min(cy + int(r * h / 2), h)
    x1, x2 = max(cx - int(r * w / 2), 0), min(cx + int(r * w / 2), w)
    x = x.copy()
    x[:, :, y1:y2, x1:x2] = np.roll(x, 1, axis=0)[:, :, y1:y2, x1:x2]
    lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    onehot = np.eye(num_classes, dtype=x.dtype)[labels]
    return x, lam * onehot + (1 - lam) * np.roll(onehot, 1, axis=0)


# ----------------------------------------------------------------------------- the loop
def check_engine_config(cfg):
    """ValueError naming the options of ``cfg`` the fastconv engine does not train with.

    Ignored because they change no result: ``channels_last``, ``workers``, ``precision = "auto"``
    (the engine trains in float32, what auto picks on a CPU without native bf16)."""
    bad = []
    if cfg["model"]["dropblock"] > 0:
        bad.append("model.dropblock")
    if cfg["augment"].get("perspective", 0) > 0:
        bad.append("augment.perspective")
    if cfg["augment"].get("framing", False):
        bad.append("augment.framing")
    if cfg["precision"] in ("bf16", "fp16"):
        bad.append(f"precision={cfg['precision']} (the engine trains in float32)")
    if cfg["device"] == "cuda":
        bad.append("device=cuda (the engine runs on the CPU)")
    if cfg["tensorboard"]:
        bad.append("tensorboard")
    for stage in STAGES:
        st = cfg[stage]
        if not st["enabled"]:
            continue
        if st["optimizer"] != "sgd":
            bad.append(f"{stage}.optimizer={st['optimizer']}")
        if st["mixup"] > 0:
            bad.append(f"{stage}.mixup")
        if st["head_warmup_epochs"] > 0:
            bad.append(f"{stage}.head_warmup_epochs")
        if st["cutmix"] > 0 and st["head"] != "softmax":
            bad.append(f"{stage}.cutmix with a margin head")
    if bad:
        raise ValueError(f"--engine fastconv does not implement {', '.join(bad)}; turn them off with --set "
                         f"or train with the torch engine")


def probe_engine_images_per_s(cfg, precision="fp32", num_classes=1000):
    """Training images/s of ``cfg``'s backbone on the engine: median of ``budget.PROBE_STEPS`` CE steps
    (after ``budget.PROBE_WARMUP``), each the loop's augmentation (``augment_batch``) and ``train_step``
    on a synthetic uint8 batch of ``ce.batch_size`` with a ``num_classes`` softmax head. ``precision`` is
    float32 on the engine (the budget records it). Draws from fastconv's generator (weight init): the
    caller restores it."""
    import statistics

    from . import budget

    st, size = cfg["ce"], cfg["data"]["size"]
    rng = np.random.default_rng(cfg["seed"])
    images = rng.integers(0, 256, (st["batch_size"], 3, size, size), dtype=np.uint8)
    labels = rng.integers(0, num_classes, st["batch_size"])
    backbone = build_engine_model(cfg["model"]["name"], cfg["model"]["embedding_size"], np.float32,
                                  **_model_kwargs(cfg))
    head = build_engine_head("softmax", cfg["model"]["embedding_size"], num_classes, np.float32,
                             label_smoothing=st["label_smoothing"])
    opt = StageOptimizer(param_groups(backbone, head), st["lr"], st["momentum"], st["weight_decay"])
    backbone.train()
    times = []
    for i in range(budget.PROBE_WARMUP + budget.PROBE_STEPS):
        t0 = time.perf_counter()
        train_step(backbone, head, nn_input(augment_batch(images, cfg["augment"], rng)), labels, opt,
                   st["clip_grad"])
        if i >= budget.PROBE_WARMUP:
            times.append(time.perf_counter() - t0)
    return st["batch_size"] / statistics.median(times)


def _apply_budget(cfg, out_dir, data, resume, seconds_spent):
    """``cfg`` with the epochs of ``cfg["budget_minutes"]`` (``budget.apply_budget`` with the engine's probe;
    on ``resume`` read back from budget.json, ``data`` unused); fastconv's generator is left as it was."""
    from . import budget

    saved = fc_random.rng().bit_generator.state
    try:
        n_train, n_val, n_classes = (0, 0, 0) if data is None else (  # data is None on resume: no probe
            len(data["labels"]), len(data["val_images"]), len(data["classes"]))
        return budget.apply_budget(cfg, out_dir, n_train, n_val, seconds_spent, resume, "fp32",
                                   probe=probe_engine_images_per_s, log=lambda m: print(m, flush=True),
                                   fits_scorer=False, num_classes=n_classes)  # the engine fits no PLDA back-end
    finally:
        fc_random.rng().bit_generator.state = saved


def validate(backbone, data):
    """EER, best-threshold accuracy and threshold on the validation pairs (flip TTA), or None."""
    from .metrics import best_threshold, eer

    if len(data["val_pairs"]) == 0 or data["val_same"].all() or not data["val_same"].any():
        return None
    backbone.eval()
    emb = embed_images(backbone, np.asarray(data["val_images"]), np.float32)
    a, b = data["val_pairs"][:, 0], data["val_pairs"][:, 1]
    scores = np.sum(emb[a].astype(np.float64) * emb[b], axis=1)
    same = data["val_same"].astype(np.int64)
    e, _ = eer(scores, same)
    thr, acc = best_threshold(scores, same)
    return {"val_eer": float(e), "val_accuracy": float(acc), "threshold": float(thr)}


def class_centres(backbone, images, labels, num_classes):
    """(C, D) normalised class-mean embeddings (no flip), the margin head's starting weights."""
    backbone.eval()
    emb = embed_images(backbone, np.asarray(images), np.float32, flip=False)
    centres = np.zeros((num_classes, emb.shape[1]), np.float64)
    np.add.at(centres, labels, emb)
    return nn.functional.normalize(centres).astype(np.float32)


def _save(out_dir, backbone, cfg, data, threshold):
    from .model_file import describe_model, save_model_file

    kw = _model_kwargs(cfg)
    meta = describe_model(cfg["model"]["name"], kw, cfg["model"]["embedding_size"], data["preprocess"].to_dict(),
                          threshold, "validation pairs of the engine training run")
    save_model_file(out_dir / "model.npz", backbone.state_dict(), meta)


def _model_kwargs(cfg):
    m = cfg["model"]
    return {"input_size": cfg["data"]["size"], "width": m["width"], "dropout": m["dropout"],
            "stem_stride": m["stem_stride"], "dropblock": m["dropblock"]}


def _load_weights(module, state, what, path):
    try:
        module.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise EngineCheckpointError(f"cannot resume: {path}: the {what} weights do not fit: {exc}") from None


def _set_rng_state(state, path):
    try:
        fc_random.rng().bit_generator.state = state
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineCheckpointError(f"cannot resume: {path}: unusable RNG state ({exc})") from None


@dataclass
class _Stage:
    """One stage (``ce`` or ``arcface``) ready to run its epochs."""

    index: int
    name: str
    st: dict
    head: object
    opt: StageOptimizer
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    first_epoch: int = 0


def _build_stage(cfg, si, stage_name, backbone, data, state=None, path=None):
    """Head, optimiser and schedule of stage ``si``; with ``state`` (``last.npz`` of a run that stopped at
    this stage) the RNG, and within the stage the head and momentum buffers, are restored."""
    st, images, labels = cfg[stage_name], data["images"], data["labels"]
    num_classes = len(data["classes"])
    if state is not None:  # the uninterrupted run drew the head's initial weights from this state
        _set_rng_state(state["rng"], path)
    head = build_engine_head(st["head"], cfg["model"]["embedding_size"], num_classes, np.float32,
                             label_smoothing=st["label_smoothing"], s=st["s"], m=st["m"])
    mid_stage = state is not None and state["epoch"] > 0
    if st["head"] != "softmax" and st["init_centres"] and not mid_stage:
        head.weight.data[...] = class_centres(backbone, images, labels, num_classes)
    batch = st["batch_size"]
    steps_per_epoch = len(images) // batch
    if steps_per_epoch == 0:
        raise ValueError(f"{stage_name}: batch_size {batch} exceeds the {len(images)} training images")
    total = steps_per_epoch * st["epochs"]
    if cfg["max_steps"] > 0:
        total = min(total, cfg["max_steps"] * st["epochs"])
    opt = StageOptimizer(param_groups(backbone, head), st["lr"], st["momentum"], st["weight_decay"])
    stage = _Stage(si, stage_name, st, head, opt, steps_per_epoch, total, int(st["warmup_epochs"] * steps_per_epoch))
    if mid_stage:
        _load_weights(head, state["head"], "head", path)
        restore_optimizer(opt, state["momentum"], path)
        _set_rng_state(state["rng"], path)  # as it was at the end of the saved epoch
        stage.first_epoch = state["epoch"]
    return stage


def _run_epoch(cfg, stage, epoch, backbone, data, progress):
    """The steps of one epoch (progress bar in a terminal) -> the epoch record without validation."""
    import fastconv as fc

    st, batch, images, labels = stage.st, stage.st["batch_size"], data["images"], data["labels"]
    rng = np.random.default_rng(cfg["seed"] * 1000003 + stage.index * 10007 + epoch)
    order = rng.permutation(len(images))
    backbone.train()
    steps = stage.steps_per_epoch if cfg["max_steps"] <= 0 else min(stage.steps_per_epoch, cfg["max_steps"])
    bar = progress_bar(steps, f"{stage.name} {epoch + 1}/{st['epochs']}", unit="step", enabled=progress,
                       line_when_piped=False)  # the caller prints the epoch's line
    t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
    for k in range(steps):
        idx = order[k * batch:(k + 1) * batch]
        x = nn_input(augment_batch(images[idx], cfg["augment"], rng))
        y = labels[idx]
        target = y
        if st["cutmix"] > 0:
            x, target = cutmix(x, y, len(data["classes"]), st["cutmix"], rng)
        stage.opt.set_factor(lr_factor(epoch * stage.steps_per_epoch + k, stage.total_steps, stage.warmup_steps,
                                       st["min_lr"] / st["lr"]))
        loss, emb = train_step(backbone, stage.head, x, target, stage.opt, st["clip_grad"])
        pred = (stage.head.logits(emb) if st["head"] == "softmax" else stage.head.cosine(emb)).argmax(1)
        correct += int((pred == y).sum())
        loss_sum += loss
        seen += len(idx)
        if k % 10 == 0 or k + 1 == steps:
            bar.set_postfix(loss=f"{loss_sum / (k + 1):.3f}", acc=f"{correct / seen:.3f}", lr=f"{stage.opt.lr:.4f}",
                            img_s=f"{seen / max(1e-9, time.time() - t0):.0f}")
        bar.update(1)
    bar.close()
    seconds = time.time() - t0
    return {"stage": stage.name, "epoch": epoch + 1, "loss": loss_sum / max(1, steps),
            "train_accuracy": correct / max(1, seen), "lr": stage.opt.lr, "epoch_seconds": seconds,
            "images_per_s": seen / max(1e-9, seconds), "engine": "fastconv", "backend": fc.get_backend()}


def train_engine(cfg, out_dir, data=None, progress=True, resume=False, stop_after_epochs=None):
    """Train ``cfg`` on fastconv's engine; returns a summary (best validation EER, epochs, paths, backbone).

    After every epoch ``out_dir/last.npz`` (:mod:`.engine_checkpoint`) is written; ``resume`` continues
    from it exactly (the same weights as an uninterrupted run, bit for bit). ``stop_after_epochs``
    ends this call after that many epochs (to test ``resume``). ``data``: prepared arrays (see
    :func:`fastconv.face.prepare.prepare_data`, torch-free).
    """
    import fastconv as fc

    check_engine_config(cfg)
    t_start = time.time()
    out_dir = pathlib.Path(out_dir)
    ckpt_path = out_dir / "last.npz"
    budget = cfg["budget_minutes"] > 0
    if budget and resume:  # the recorded epochs, which the checkpoint's config holds
        cfg = _apply_budget(cfg, out_dir, None, True, 0.0)
    state = load_engine_checkpoint(ckpt_path, cfg) if resume else None  # before the (long) data preparation
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg["threads"] > 0:
        fc.set_num_threads(cfg["threads"])
    fc.manual_seed(cfg["seed"])
    if data is None:
        from .prepare import prepare_data

        data = prepare_data(cfg, progress=progress)
    if budget and not resume:
        cfg = _apply_budget(cfg, out_dir, data, False, time.time() - t_start)
    backbone = build_engine_model(cfg["model"]["name"], cfg["model"]["embedding_size"], np.float32,
                                  **_model_kwargs(cfg))
    init = cfg.get("init_state")  # a state dict (the torch run's initial weights, for comparisons)
    if init is not None:
        backbone.load_state_dict(init)
    if state is not None:
        _load_weights(backbone, state["backbone"], "backbone", ckpt_path)
    metrics = out_dir / "metrics.jsonl"
    if state is None:
        metrics.unlink(missing_ok=True)
    history = list(state["history"]) if state else []
    best_eer = state["best_eer"] if state else float("inf")
    if progress and cfg["scorer"]["fit"]:
        print("note: --engine fastconv fits no PLDA scorer (scorer.fit); model.npz scores by cosine", flush=True)
    start_stage, epochs_done, stopped = (state["stage_index"] if state else 0), 0, False
    for si, stage_name in enumerate(STAGES):
        st = cfg[stage_name]
        if si < start_stage or not st["enabled"] or st["epochs"] == 0 or stopped:
            continue
        stage = _build_stage(cfg, si, stage_name, backbone, data, state if si == start_stage else None, ckpt_path)
        for epoch in range(stage.first_epoch, st["epochs"]):
            if stop_after_epochs is not None and epochs_done >= stop_after_epochs:
                stopped = True
                break
            record = _run_epoch(cfg, stage, epoch, backbone, data, progress)
            record["minutes_total"] = (time.time() - t_start) / 60
            val = validate(backbone, data)
            if val:
                record.update(val)
            history.append(record)
            with open(metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
            if progress:
                print(epoch_line(record), flush=True)
            if val is None or val["val_eer"] <= best_eer:
                best_eer = val["val_eer"] if val else best_eer
                _save(out_dir, backbone, cfg, data, val["threshold"] if val else None)
            done = epoch + 1 == st["epochs"]  # a finished stage resumes at the next one
            save_engine_checkpoint(ckpt_path, backbone=backbone, head=stage.head, optimizer=stage.opt, cfg=cfg,
                                   stage_index=si + 1 if done else si, epoch=0 if done else epoch + 1,
                                   best_eer=best_eer, history=history, rng=fc_random.rng())
            epochs_done += 1
    return {"out_dir": str(out_dir), "model": str(out_dir / "model.npz"), "checkpoint": str(ckpt_path),
            "engine": "fastconv", "best_val_eer": None if best_eer == float("inf") else best_eer,
            "epochs": len(history), "stopped": stopped, "last": history[-1] if history else None,
            "minutes": (time.time() - t_start) / 60, "backbone": backbone}


def nn_input(images_uint8):
    """uint8 (B, 3, S, S) -> float32 network input ``x/127.5 - 1``."""
    from .preprocess import normalize_images

    return normalize_images(images_uint8, np.float32)
