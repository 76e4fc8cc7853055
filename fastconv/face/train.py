"""Training loop of fastconv.face: two stages (softmax CE, then a margin-head fine-tune).

``train(cfg, out_dir, resume=False)`` trains the backbone of ``cfg["model"]`` on the training side
of the protocol in ``cfg["data"]``, validates every epoch on pairs of held-out training-side people
(or View 1 DevTest when ``data.val_devtest``), and writes ``last.pt`` / ``best.pt`` (by validation
EER) plus ``metrics.jsonl`` into ``out_dir``. Launched by ``torchrun`` (WORLD_SIZE > 1) it uses
DistributedDataParallel (NCCL on CUDA, gloo on CPU) with rank-0-only logging and checkpoints.
"""
import json
import math
import os
import pathlib
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .augment import build_batch_mix, build_transform
from .checkpoint import load_checkpoint, save_checkpoint
from .config import STAGES
from .heads import build_head
from .evaluate import resolve_device
from .models import get_model

# ----------------------------------------------------------------------------- set-up helpers


def _dist_info():
    """(world_size, rank, local_rank) from the torchrun environment (1, 0, 0 on a plain launch)."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return ws, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def seed_everything(seed):
    """Seed python ``random``, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id):
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def rng_state():
    """RNG states as tensors (weights_only-safe)."""
    st = {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
        "python_pos": int(random.getstate()[1][-1]),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st):
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(st["torch"])
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(int(v) for v in st["python"].tolist()), None))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def model_kwargs(cfg):
    """Keyword arguments of ``get_model`` from the ``[model]`` and ``[data]`` sections."""
    m = cfg["model"]
    kw = {"input_size": cfg["data"]["size"], "width": m["width"], "dropout": m["dropout"]}
    if m["name"].startswith(("iresnet", "se_iresnet")):
        kw.update(stem_stride=m["stem_stride"], dropblock=m["dropblock"])
    elif m["stem_stride"] != 1 or m["dropblock"] > 0:
        raise ValueError(f"model {m['name']!r} takes neither stem_stride nor dropblock "
                         f"(got stem_stride={m['stem_stride']}, dropblock={m['dropblock']})")
    return kw


class TrainModule(nn.Module):
    """Backbone + head: ``(x (B,3,S,S), y) -> (loss, embeddings (B,D))`` (one module for DDP)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x, y):
        emb = self.backbone(x)
        return self.head(emb, y), emb


def lr_factor(step, total, warmup, min_ratio=0.0):
    """Linear warm-up over ``warmup`` steps then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _autocast(device, precision):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA (GradScaler); use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _optimizer(backbone, head, st):
    """Param groups: backbone weights (decay), backbone 1-D params (no decay), head (decay)."""
    bb = [p for p in backbone.parameters() if p.requires_grad]
    groups = [{"params": [p for p in bb if p.dim() > 1], "weight_decay": st["weight_decay"]},
              {"params": [p for p in bb if p.dim() <= 1], "weight_decay": 0.0},
              {"params": list(head.parameters()), "weight_decay": st["weight_decay"]}]
    if st["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=st["lr"], momentum=st["momentum"], nesterov=st["momentum"] > 0)
    return torch.optim.AdamW(groups, lr=st["lr"])


# ----------------------------------------------------------------------------- data


def _people_of_folder(root):
    from .data import scan_identity_folder

    rel, labels, classes = scan_identity_folder(root)
    counts = np.bincount(labels, minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, counts)}


def _val_pairs(people, n_pairs, rng):
    """Pairs (relpath_a, relpath_b, same) among ``people`` {name: [relpaths]} (half same, half different)."""
    names = sorted(people)
    multi = [n for n in names if len(people[n]) >= 2]
    if len(names) < 2 or not multi:
        return []
    pairs, seen = [], set()
    half = n_pairs // 2
    tries = 0
    while len(pairs) < half and tries < 50 * n_pairs:
        tries += 1
        n = multi[rng.integers(len(multi))]
        a, b = rng.choice(len(people[n]), 2, replace=False)
        key = (n, min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            pairs.append((people[n][a], people[n][b], True))
    while len(pairs) < n_pairs and tries < 100 * n_pairs:
        tries += 1
        i, j = rng.choice(len(names), 2, replace=False)
        a = people[names[i]][rng.integers(len(people[names[i]]))]
        b = people[names[j]][rng.integers(len(people[names[j]]))]
        if (a, b) not in seen:
            seen.add((a, b))
            pairs.append((a, b, False))
    return pairs


def prepare_data(cfg, split=None, progress=True):
    """Training arrays and validation pairs for ``cfg``.

    Returns dict: images uint8 (M,3,S,S), labels int64 (M,), classes, val_images uint8 (V,3,S,S),
    val_pairs int64 (P,2) into val_images, val_same bool (P,), split (or None), image_root.
    """
    from fastconv.paths import cache_dir, image_dir, lfw_root

    from .data import ImageCache, Preprocess, scan_identity_folder, training_set
    from .protocols import check_disjoint, view1, view2_fold

    d = cfg["data"]
    pre = Preprocess(size=d["size"], crop=d["crop"])
    if split is None and d["protocol"] in ("view1", "view2"):
        root = lfw_root()
        split = view1(root) if d["protocol"] == "view1" else view2_fold(root, d["fold"])
        check_disjoint(split)
        image_root = image_dir(root)
    elif split is not None:
        image_root = image_dir(d["root"] or None)
    else:
        image_root = pathlib.Path(d["root"])
    people = dict(split.train_people) if split is not None else _people_of_folder(image_root)
    rng = np.random.default_rng(cfg["seed"])
    val_rel, val_idx, val_same = [], np.zeros((0, 2), np.int64), np.zeros(0, bool)
    val_people = {}
    if d["val_devtest"]:
        if d["protocol"] != "view1":
            raise ValueError("data.val_devtest is only allowed with the view1 protocol (never View 2 test folds)")
        raw = [(p.a, p.b, p.same) for p in split.test_pairs]
    elif d["val_people"] > 0:
        rel, labels, classes = scan_identity_folder(image_root, people)
        by = {c: [] for c in classes}
        for r, lab in zip(rel, labels):
            by[classes[lab]].append(r)
        multi = sorted(c for c in classes if len(by[c]) >= 2)
        k = min(d["val_people"], len(multi) // 2)
        chosen = [multi[i] for i in sorted(rng.choice(len(multi), k, replace=False))] if k >= 2 else []
        val_people = {c: by[c] for c in chosen}
        raw = _val_pairs(val_people, d["val_pairs"], rng)
    else:
        raw = []
    if raw:
        val_rel = sorted({r for a, b, _ in raw for r in (a, b)})
        cache = ImageCache(image_root, pre, cache_dir=cache_dir() / "images", progress=progress)
        val_images, kept = cache.load(val_rel)
        pos = np.full(len(val_rel), -1, np.int64)
        pos[kept] = np.arange(len(kept))
        where = {r: pos[i] for i, r in enumerate(val_rel)}
        good = [(where[a], where[b], s) for a, b, s in raw if where[a] >= 0 and where[b] >= 0]
        val_idx = np.array([(a, b) for a, b, _ in good], np.int64).reshape(-1, 2)
        val_same = np.array([s for _, _, s in good], bool)
        val_images = np.asarray(val_images)
    else:
        val_images = np.zeros((0, 3, d["size"], d["size"]), np.uint8)
    train_people = {n: c for n, c in people.items() if n not in val_people}
    images, labels, classes = training_set(image_root, train_people, pre, min_images=d["min_images"],
                                           cache_dir=cache_dir() / "images", progress=progress)
    if d["max_classes"] > 0 and len(classes) > d["max_classes"]:
        keep = labels < d["max_classes"]
        images, labels, classes = images[keep], labels[keep], classes[:d["max_classes"]]
    if len(classes) < 2:
        raise ValueError(f"need at least 2 training identities, got {len(classes)} "
                         f"(min_images={d['min_images']}, people={len(train_people)})")
    return {"images": np.array(images, copy=True), "labels": labels, "classes": classes,
            "val_images": val_images, "val_pairs": val_idx, "val_same": val_same,
            "split": split, "image_root": str(image_root), "preprocess": pre}


# ----------------------------------------------------------------------------- validation


def validate(model, data, device, channels_last=False):
    """Validation report (EER, best-threshold accuracy and threshold) on the held-out pairs, or None."""
    from .metrics import best_threshold, eer

    if len(data["val_pairs"]) == 0 or data["val_same"].all() or not data["val_same"].any():
        return None
    from .evaluate import embed

    emb = embed(model, data["val_images"], device=device)
    a, b = data["val_pairs"][:, 0], data["val_pairs"][:, 1]
    scores = np.sum(emb[a] * emb[b], axis=1)
    e, _ = eer(scores, data["val_same"].astype(np.int64))
    thr, acc = best_threshold(scores, data["val_same"].astype(np.int64))
    return {"val_eer": float(e), "val_accuracy": float(acc), "threshold": float(thr)}


# ----------------------------------------------------------------------------- the loop


class _Logger:
    """JSON lines in ``out_dir/metrics.jsonl`` (+ TensorBoard scalars when enabled); rank 0 only."""

    def __init__(self, out_dir, enabled, tensorboard, fresh=True):
        self.enabled = enabled
        self.path = pathlib.Path(out_dir) / "metrics.jsonl"
        if enabled and fresh:  # a new run in an old folder starts a new log; --resume appends
            self.path.unlink(missing_ok=True)
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(pathlib.Path(out_dir) / "tb"))
            except ImportError:
                print("tensorboard is not installed; logging JSON lines only")

    def log(self, record):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('stage', '')}/{k}", v, record.get("global_step", 0))

    def close(self):
        if self.tb is not None:
            self.tb.close()


@torch.no_grad()
def class_centres(backbone, images, labels, num_classes, device, channels_last=False):
    """``(C, D)`` normalised mean embedding of every class (margin-head initialisation)."""
    from .evaluate import embed

    emb = torch.from_numpy(embed(backbone, images, flip=False, device=device))
    centres = torch.zeros(num_classes, emb.shape[1])
    centres.index_add_(0, torch.from_numpy(labels), emb)
    return torch.nn.functional.normalize(centres, dim=1)


def _meta(cfg, data, threshold):
    return {"model_name": cfg["model"]["name"], "model_kwargs": model_kwargs(cfg),
            "embedding_size": cfg["model"]["embedding_size"], "preprocess": data["preprocess"].to_dict(),
            "threshold": threshold, "num_classes": len(data["classes"]), "config": cfg}


def train(cfg, out_dir, resume=False, split=None, progress=True, stop_after_epochs=None, data=None,
          return_model=False):
    """Run the enabled stages of ``cfg``; returns a summary dict (best/last validation, paths, minutes).

    ``split``: a protocols.Split to train on instead of ``cfg["data"]``; ``data``: prepared arrays (see
    :func:`prepare_data`); ``stop_after_epochs`` ends this run after that many epochs (to test
    ``resume``); ``return_model`` adds the trained backbone under ``"model"``.
    """
    t_start = time.time()
    world, rank, local_rank = _dist_info()
    distributed = world > 1
    device = resolve_device(cfg["device"], local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    elif cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    is_main = rank == 0
    out_dir = pathlib.Path(out_dir)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed = cfg["seed"]
    seed_everything(seed)
    if data is None:
        data = prepare_data(cfg, split=split, progress=progress and is_main)
    images, labels = data["images"], data["labels"]
    num_classes = len(data["classes"])
    precision = cfg["precision"]
    _autocast(device, precision)  # validates fp16-on-CPU early
    channels_last = cfg["channels_last"]

    backbone = get_model(cfg["model"]["name"], cfg["model"]["embedding_size"], **model_kwargs(cfg)).to(device)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)

    state = load_checkpoint(out_dir / "last.pt", map_location=device) if resume else None
    if resume and state.get("config", {}).get("model") != cfg["model"]:
        raise ValueError(f"cannot resume: checkpoint model {state['config']['model']} != config {cfg['model']}")
    start_stage = state["stage_index"] if state else 0
    start_epoch = state["epoch"] if state else 0
    best_eer = state["best_eer"] if state else float("inf")
    history = list(state["history"]) if state else []
    if state:
        backbone.load_state_dict(state["model"])
    logger = _Logger(out_dir, is_main, cfg["tensorboard"], fresh=not resume)

    from .data import FaceDataset, normalize
    dataset = FaceDataset(images, labels, transform=build_transform(cfg["augment"], cfg["data"]["size"]))
    workers = cfg["workers"]
    if workers < 0:
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    epochs_done_this_run = 0
    last_val = history[-1] if history else None

    for si, stage_name in enumerate(STAGES):
        st = cfg[stage_name]
        if si < start_stage or not st["enabled"] or st["epochs"] == 0:
            continue
        resuming_here = state is not None and si == start_stage and start_epoch > 0
        head_kw = {"label_smoothing": st["label_smoothing"], "s": st["s"], "m": st["m"]}
        head = build_head(st["head"], cfg["model"]["embedding_size"], num_classes, **head_kw).to(device)
        if not resuming_here and st["head"] != "softmax" and st["init_centres"]:
            head.weight.data.copy_(class_centres(backbone, images, labels, num_classes, device, channels_last))
        module = TrainModule(backbone, head)
        sampler = None
        if distributed:
            from torch.utils.data.distributed import DistributedSampler
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed + si,
                                         drop_last=True)
        gen = torch.Generator()
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=st["batch_size"], shuffle=sampler is None, sampler=sampler, drop_last=True,
            num_workers=workers, pin_memory=device.type == "cuda", generator=gen, worker_init_fn=_worker_init,
            persistent_workers=workers > 0)
        steps_per_epoch = len(loader)
        if steps_per_epoch == 0:
            raise ValueError(f"{stage_name}: batch_size {st['batch_size']} exceeds the {len(dataset)} training "
                             f"images per process; lower {stage_name}.batch_size")
        total = steps_per_epoch * st["epochs"]
        if cfg["max_steps"] > 0:
            total = min(total, cfg["max_steps"] * st["epochs"])
        warmup = int(st["warmup_epochs"] * steps_per_epoch)
        train_module = module
        if distributed:
            train_module = nn.parallel.DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None)
        optim = _optimizer(backbone, head, st)
        min_ratio = st["min_lr"] / st["lr"]
        head_warm = int(st["head_warmup_epochs"] * steps_per_epoch)  # backbone lr 0 while the head warms up

        def backbone_factor(s):
            return 0.0 if s < head_warm else lr_factor(s - head_warm, total - head_warm, warmup, min_ratio)

        def head_factor(s):
            return lr_factor(s, total, warmup, min_ratio) if s >= head_warm else 1.0
        sched = torch.optim.lr_scheduler.LambdaLR(optim, [backbone_factor, backbone_factor, head_factor])
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")
        mix = build_batch_mix(st, num_classes)
        first_epoch = 0
        if resuming_here:
            head.load_state_dict(state["head"])
            optim.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if "scaler" in state and state["scaler"]:
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            first_epoch = start_epoch
        for epoch in range(first_epoch, st["epochs"]):
            if stop_after_epochs is not None and epochs_done_this_run >= stop_after_epochs:
                logger.close()
                return _summary(out_dir, history, best_eer, t_start, True, backbone if return_model else None)
            epoch_seed = seed * 1000003 + si * 10007 + epoch
            gen.manual_seed(epoch_seed)
            torch.manual_seed(epoch_seed + rank)
            if sampler is not None:
                sampler.set_epoch(epoch)
            module.train()
            t0, seen, n_batches = time.time(), 0, 0
            loss_t, correct_t = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
            bar = None
            if progress and is_main:
                from tqdm.auto import tqdm
                bar = tqdm(total=steps_per_epoch, desc=f"{stage_name} {epoch + 1}/{st['epochs']}", leave=False)
            for step_in_epoch, (x, y) in enumerate(loader):
                if cfg["max_steps"] > 0 and step_in_epoch >= cfg["max_steps"]:
                    break
                global_step = epoch * steps_per_epoch + step_in_epoch
                x = normalize(x.to(device, non_blocking=True))
                y = y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                target = y
                if mix is not None:
                    x, target = mix(x, y)
                with _autocast(device, precision):
                    loss, emb = train_module(x, target)
                optim.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if st["clip_grad"] > 0:
                    scaler.unscale_(optim)
                    torch.nn.utils.clip_grad_norm_(module.parameters(), st["clip_grad"])
                scaler.step(optim)
                scaler.update()
                sched.step()
                with torch.no_grad():  # running sums stay on the device: no per-step host sync
                    pred = head.logits(emb.detach().float(), y).argmax(1) if st["head"] == "softmax" else \
                        head.cosine(emb.detach().float()).argmax(1)
                    correct_t += (pred == y).sum()
                    loss_t += loss.detach().float()
                n_batches += 1
                seen += x.shape[0]
                show = bar is not None and (step_in_epoch % 10 == 0 or step_in_epoch + 1 == steps_per_epoch)
                log_now = cfg["log_every"] > 0 and (step_in_epoch + 1) % cfg["log_every"] == 0
                if show or log_now:
                    lr = optim.param_groups[-1]["lr"]
                    ips = seen * world / max(1e-9, time.time() - t0)
                    loss_sum, correct = float(loss_t), int(correct_t)
                if show:
                    bar.set_postfix(loss=f"{loss_sum / n_batches:.3f}", acc=f"{correct / seen:.3f}",
                                    lr=f"{lr:.4f}", img_s=f"{ips:.0f}")
                if bar is not None:
                    bar.update(1)
                if log_now:
                    logger.log({"stage": stage_name, "epoch": epoch + 1, "step": step_in_epoch + 1,
                                "global_step": global_step, "loss": float(loss.detach()), "lr": lr,
                                "images_per_s": ips})
            loss_sum, correct = float(loss_t), int(correct_t)
            if bar is not None:
                bar.close()
            if distributed:  # BN running stats drift per rank after DDP's last buffer broadcast: take rank 0's
                for buf in module.buffers():
                    dist.broadcast(buf, 0)
            epoch_time = time.time() - t0
            record = {"stage": stage_name, "epoch": epoch + 1, "loss": loss_sum / max(1, n_batches),
                      "train_accuracy": correct / max(1, seen), "lr": optim.param_groups[-1]["lr"],
                      "images_per_s": seen * world / max(1e-9, epoch_time), "epoch_seconds": epoch_time,
                      "minutes_total": (time.time() - t_start) / 60}
            epochs_done_this_run += 1
            if is_main:
                val = validate(backbone, data, device, channels_last)
                if val:
                    record.update(val)
                    last_val = val
                history.append(record)
                logger.log(record)
                if progress:
                    msg = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
                    print(msg, flush=True)
                threshold = last_val["threshold"] if last_val else None
                ckpt = {"model": backbone.state_dict(), "head": head.state_dict(), "optimizer": optim.state_dict(),
                        "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "rng": rng_state(), "stage_index": si, "stage": stage_name, "epoch": epoch + 1,
                        "best_eer": best_eer, "history": history, "config": cfg,
                        "meta": _meta(cfg, data, threshold)}
                improved = val is not None and val["val_eer"] <= best_eer
                if improved:
                    best_eer = val["val_eer"]
                    ckpt["best_eer"] = best_eer
                if epoch + 1 == st["epochs"]:  # stage finished: a resume starts the next stage
                    ckpt["stage_index"], ckpt["epoch"] = si + 1, 0
                save_checkpoint(out_dir / "last.pt", ckpt)
                if improved or (val is None):
                    save_checkpoint(out_dir / "best.pt", {"model": ckpt["model"], "meta": ckpt["meta"],
                                                          "stage": stage_name, "epoch": epoch + 1,
                                                          "val": val or {}})
            if distributed:
                dist.barrier()
        state = None
    logger.close()
    return _summary(out_dir, history, best_eer, t_start, False, backbone if return_model else None)


def _summary(out_dir, history, best_eer, t_start, stopped, model=None):
    out = {"out_dir": str(out_dir), "best_val_eer": None if best_eer == float("inf") else best_eer,
            "last": history[-1] if history else None, "epochs": len(history), "stopped": stopped,
            "minutes": (time.time() - t_start) / 60}
    if model is not None:
        out["model"] = model
    return out
