"""Training the face backbones on fastconv's engine: ``fastconv face train --engine fastconv``.

The recipe of ``fastconv.face.train`` (softmax CE with label smoothing and CutMix, then a margin
head fine-tune from class-centre weights; SGD with Nesterov momentum, weight decay on weights
and the head but not on 1-D parameters, linear warm-up then cosine per step, gradient-norm
clipping), with the backbone (``engine_models``), heads (``engine_heads``), optimiser and
augmentation (flip, mild resized crop, colour jitter, CutMix, in NumPy) all on fastconv; float32.
Writes ``model.npz`` (best validation EER; the runtime's format) and ``metrics.jsonl``.

Options the engine does not implement (AdamW, MixUp, RandomPerspective, DropBlock, head warm-up,
resume, several processes) are refused with a message naming them.
"""
import json
import math
import pathlib
import time

import numpy as np

from .. import nn, optim
from .engine_heads import build_engine_head
from .engine_models import build_engine_model
from .runtime import embed_images
from .schedule import lr_factor

__all__ = ["param_groups", "StageOptimizer", "clip_grad_norm", "train_step", "augment_batch", "cutmix",
           "check_engine_config", "train_engine"]


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
    """ValueError naming the options of ``cfg`` the fastconv engine does not train with."""
    bad = []
    if cfg["model"]["dropblock"] > 0:
        bad.append("model.dropblock")
    if cfg["augment"].get("perspective", 0) > 0:
        bad.append("augment.perspective")
    for stage in ("ce", "arcface"):
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


def train_engine(cfg, out_dir, data=None, progress=True, log=print):
    """Train ``cfg`` on fastconv's engine; returns a summary (best validation EER, s/epoch, paths)."""
    import fastconv as fc

    check_engine_config(cfg)
    t_start = time.time()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg["threads"] > 0:
        fc.set_num_threads(cfg["threads"])
    fc.manual_seed(cfg["seed"])
    if data is None:
        from .prepare import prepare_data

        data = prepare_data(cfg, progress=progress)
    images, labels = data["images"], data["labels"]
    num_classes = len(data["classes"])
    backbone = build_engine_model(cfg["model"]["name"], cfg["model"]["embedding_size"], np.float32,
                                  **_model_kwargs(cfg))
    init = cfg.get("init_state")  # a state dict (the torch run's initial weights, for comparisons)
    if init is not None:
        backbone.load_state_dict(init)
    metrics = out_dir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    history, best_eer = [], float("inf")
    for si, stage_name in enumerate(("ce", "arcface")):
        st = cfg[stage_name]
        if not st["enabled"] or st["epochs"] == 0:
            continue
        head = build_engine_head(st["head"], cfg["model"]["embedding_size"], num_classes, np.float32,
                                 label_smoothing=st["label_smoothing"], s=st["s"], m=st["m"])
        if st["head"] != "softmax" and st["init_centres"]:
            head.weight.data[...] = class_centres(backbone, images, labels, num_classes)
        batch = st["batch_size"]
        steps_per_epoch = len(images) // batch
        if steps_per_epoch == 0:
            raise ValueError(f"{stage_name}: batch_size {batch} exceeds the {len(images)} training images")
        total = steps_per_epoch * st["epochs"]
        if cfg["max_steps"] > 0:
            total = min(total, cfg["max_steps"] * st["epochs"])
        warmup = int(st["warmup_epochs"] * steps_per_epoch)
        opt = StageOptimizer(param_groups(backbone, head), st["lr"], st["momentum"], st["weight_decay"])
        for epoch in range(st["epochs"]):
            rng = np.random.default_rng(cfg["seed"] * 1000003 + si * 10007 + epoch)
            order = rng.permutation(len(images))
            backbone.train()
            t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
            for k in range(steps_per_epoch):
                if cfg["max_steps"] > 0 and k >= cfg["max_steps"]:
                    break
                idx = order[k * batch:(k + 1) * batch]
                x = nn_input(augment_batch(images[idx], cfg["augment"], rng))
                y = labels[idx]
                target = y
                if st["cutmix"] > 0:
                    x, target = cutmix(x, y, num_classes, st["cutmix"], rng)
                opt.set_factor(lr_factor(epoch * steps_per_epoch + k, total, warmup, st["min_lr"] / st["lr"]))
                loss, emb = train_step(backbone, head, x, target, opt, st["clip_grad"])
                pred = (head.logits(emb) if st["head"] == "softmax" else head.cosine(emb)).argmax(1)
                correct += int((pred == y).sum())
                loss_sum += loss
                seen += len(idx)
                if progress and k % 10 == 0:
                    log(f"{stage_name} {epoch + 1}/{st['epochs']} step {k}/{steps_per_epoch} loss {loss:.3f}")
            seconds = time.time() - t0
            record = {"stage": stage_name, "epoch": epoch + 1, "loss": loss_sum / max(1, seen // batch),
                      "train_accuracy": correct / max(1, seen), "lr": opt.lr, "epoch_seconds": seconds,
                      "images_per_s": seen / max(1e-9, seconds), "engine": "fastconv",
                      "backend": fc.get_backend(), "minutes_total": (time.time() - t_start) / 60}
            val = validate(backbone, data)
            if val:
                record.update(val)
            history.append(record)
            with open(metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
            if progress:
                log(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            if val is None or val["val_eer"] <= best_eer:
                best_eer = val["val_eer"] if val else best_eer
                _save(out_dir, backbone, cfg, data, val["threshold"] if val else None)
    return {"out_dir": str(out_dir), "model": str(out_dir / "model.npz"), "engine": "fastconv",
            "best_val_eer": None if best_eer == float("inf") else best_eer, "epochs": len(history),
            "last": history[-1] if history else None, "minutes": (time.time() - t_start) / 60,
            "backbone": backbone}


def nn_input(images_uint8):
    """uint8 (B, 3, S, S) -> float32 network input ``x/127.5 - 1``."""
    from .preprocess import normalize_images

    return normalize_images(images_uint8, np.float32)
