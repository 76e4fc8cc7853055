"""Training loop of fastconv.face: two stages (softmax CE, then a margin-head fine-tune).

``train(cfg, out_dir, resume=False)`` trains the backbone of ``cfg["model"]`` on the training side
of the protocol in ``cfg["data"]`` (prepared by :mod:`.prepare`), validates every epoch on pairs of
held-out training-side people (or View 1 DevTest when ``data.val_devtest``), and writes ``last.pt``
/ ``best.pt`` (by validation EER) plus ``metrics.jsonl`` into ``out_dir``. Launched by ``torchrun``
(WORLD_SIZE > 1) it uses DistributedDataParallel (NCCL on CUDA, gloo on CPU) with rank-0-only
logging and checkpoints.

The loop is three parts: :func:`build_stage` (head, loader, optimiser, schedule of one stage),
:func:`run_epoch` (the steps, progress and step logs) and :func:`end_epoch` (validation, the epoch
record, checkpoints); :func:`train` sets up the run and calls them.
"""
import json
import os
import pathlib
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .augment import build_batch_mix, build_training_augment
from .checkpoint import CheckpointError, check_finite_weights, load_checkpoint, save_checkpoint
from .config import STAGES
from .data import FaceDataset, normalize
from .device import resolve_device, resolve_precision
from .heads import build_head
from .schedule import lr_factor  # noqa: F401 (fastconv.face.train.lr_factor)
from .models import get_model
from .progress import epoch_line, progress_bar

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


# ----------------------------------------------------------------------------- validation


def validate(model, data, device, calibration="best"):
    """Validation report on the held-out pairs, or None: EER, best-threshold accuracy, and the
    ``threshold`` chosen by ``calibration`` (``fastconv.face.calibrate``: best | cv-median)."""
    from .calibrate import calibrate_threshold
    from .metrics import best_threshold, eer

    if len(data["val_pairs"]) == 0 or data["val_same"].all() or not data["val_same"].any():
        return None
    from .evaluate import embed

    emb = embed(model, data["val_images"], device=device)
    a, b = data["val_pairs"][:, 0], data["val_pairs"][:, 1]
    scores = np.sum(emb[a] * emb[b], axis=1)
    e, _ = eer(scores, data["val_same"].astype(np.int64))
    _, acc = best_threshold(scores, data["val_same"].astype(np.int64))
    thr = calibrate_threshold(scores, data["val_same"], data["val_pairs"], calibration)
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
def class_centres(backbone, images, labels, num_classes, device):
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


@dataclass
class _Run:
    """What every stage and epoch of one ``train`` call shares."""

    cfg: dict
    out_dir: pathlib.Path
    data: dict
    device: torch.device
    precision: str
    world: int
    rank: int
    backbone: nn.Module
    logger: _Logger
    progress: bool
    t_start: float
    history: list = field(default_factory=list)
    best_eer: float = float("inf")
    last_val: "dict | None" = None
    epochs_done: int = 0
    prepare_batch: object = normalize  # uint8 batch -> normalised float (augment.build_training_augment)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world > 1


@dataclass
class _Stage:
    """One training stage (``ce`` or ``arcface``) ready to run its epochs."""

    index: int
    name: str
    st: dict
    head: nn.Module
    module: TrainModule
    train_module: nn.Module  # ``module``, or its DDP wrapper
    loader: torch.utils.data.DataLoader
    sampler: object
    gen: torch.Generator
    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    mix: object
    first_epoch: int = 0


_RESUME_KEYS = ("config", "model", "head", "optimizer", "scheduler", "rng", "stage_index", "epoch", "best_eer",
                "history")


def _resume_state(path, cfg, device):
    """The ``last.pt`` of an interrupted run, checked before anything uses it (ValueError when unusable)."""
    state = load_checkpoint(path, map_location=device)
    missing = [k for k in _RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"cannot resume from {path}: it lacks {missing} (not a last.pt of `fastconv face "
                              f"train`)")
    if not isinstance(state["config"], dict) or state["config"].get("model") != cfg["model"]:
        theirs = state["config"].get("model") if isinstance(state["config"], dict) else None
        raise ValueError(f"cannot resume: checkpoint model {theirs} != config {cfg['model']}")
    check_finite_weights(state["model"], path)
    return state


def build_stage(run, si, stage_name, dataset, workers, state=None):
    """Head, loader, optimiser, LR schedule, scaler and batch mix of stage ``si``; with ``state`` (the
    checkpoint of a run interrupted inside this stage) their states and the RNGs are restored."""
    cfg, st, device = run.cfg, run.cfg[stage_name], run.device
    data, num_classes = run.data, len(run.data["classes"])
    head_kw = {"label_smoothing": st["label_smoothing"], "s": st["s"], "m": st["m"]}
    head = build_head(st["head"], cfg["model"]["embedding_size"], num_classes, **head_kw).to(device)
    if state is None and st["head"] != "softmax" and st["init_centres"]:
        head.weight.data.copy_(class_centres(run.backbone, data["images"], data["labels"], num_classes, device))
    module = TrainModule(run.backbone, head)
    sampler = None
    if run.distributed:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(dataset, num_replicas=run.world, rank=run.rank, shuffle=True,
                                     seed=cfg["seed"] + si, drop_last=True)
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
    if run.distributed:
        train_module = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    optim = _optimizer(run.backbone, head, st)
    min_ratio = st["min_lr"] / st["lr"]
    head_warm = int(st["head_warmup_epochs"] * steps_per_epoch)  # backbone lr 0 while the head warms up

    def backbone_factor(s):
        return 0.0 if s < head_warm else lr_factor(s - head_warm, total - head_warm, warmup, min_ratio)

    def head_factor(s):
        return lr_factor(s, total, warmup, min_ratio) if s >= head_warm else 1.0
    sched = torch.optim.lr_scheduler.LambdaLR(optim, [backbone_factor, backbone_factor, head_factor])
    scaler = torch.amp.GradScaler("cuda", enabled=run.precision == "fp16" and device.type == "cuda")
    stage = _Stage(si, stage_name, st, head, module, train_module, loader, sampler, gen, optim, sched, scaler,
                   build_batch_mix(st, num_classes))
    if state is not None:
        head.load_state_dict(state["head"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        stage.first_epoch = state["epoch"]
    return stage


def run_epoch(run, stage, epoch):
    """Train one epoch of ``stage``: steps, progress bar (terminal only) and step log records.

    Returns the epoch record (loss, train accuracy, lr, images/s, seconds, minutes so far).
    """
    cfg, device, st = run.cfg, run.device, stage.st
    steps_per_epoch = len(stage.loader)
    epoch_seed = cfg["seed"] * 1000003 + stage.index * 10007 + epoch
    stage.gen.manual_seed(epoch_seed)
    torch.manual_seed(epoch_seed + run.rank)
    if stage.sampler is not None:
        stage.sampler.set_epoch(epoch)
    stage.module.train()
    t0, seen, n_batches = time.time(), 0, 0
    loss_t, correct_t = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
    bar = progress_bar(steps_per_epoch, f"{stage.name} {epoch + 1}/{st['epochs']}", unit="step",
                       enabled=run.progress and run.is_main, line_when_piped=False)  # end_epoch prints the line
    for step_in_epoch, (x, y) in enumerate(stage.loader):
        if cfg["max_steps"] > 0 and step_in_epoch >= cfg["max_steps"]:
            break
        x = run.prepare_batch(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        if cfg["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y
        if stage.mix is not None:
            x, target = stage.mix(x, y)
        with _autocast(device, run.precision):
            loss, emb = stage.train_module(x, target)
        stage.optim.zero_grad(set_to_none=True)
        stage.scaler.scale(loss).backward()
        if st["clip_grad"] > 0:
            stage.scaler.unscale_(stage.optim)
            torch.nn.utils.clip_grad_norm_(stage.module.parameters(), st["clip_grad"])
        stage.scaler.step(stage.optim)
        stage.scaler.update()
        stage.sched.step()
        with torch.no_grad():  # running sums stay on the device: no per-step host sync
            e = emb.detach().float()
            pred = stage.head.logits(e, y).argmax(1) if st["head"] == "softmax" else stage.head.cosine(e).argmax(1)
            correct_t += (pred == y).sum()
            loss_t += loss.detach().float()
        n_batches += 1
        seen += x.shape[0]
        show = step_in_epoch % 10 == 0 or step_in_epoch + 1 == steps_per_epoch
        log_now = cfg["log_every"] > 0 and (step_in_epoch + 1) % cfg["log_every"] == 0
        if show or log_now:
            lr = stage.optim.param_groups[-1]["lr"]
            ips = seen * run.world / max(1e-9, time.time() - t0)
        if show:
            bar.set_postfix(loss=f"{float(loss_t) / n_batches:.3f}", acc=f"{int(correct_t) / seen:.3f}",
                            lr=f"{lr:.4f}", img_s=f"{ips:.0f}")
        bar.update(1)
        if log_now:
            run.logger.log({"stage": stage.name, "epoch": epoch + 1, "step": step_in_epoch + 1,
                            "global_step": epoch * steps_per_epoch + step_in_epoch, "loss": float(loss.detach()),
                            "lr": lr, "images_per_s": ips})
    bar.close()
    if run.distributed:  # BN running stats drift per rank after DDP's last buffer broadcast: take rank 0's
        for buf in stage.module.buffers():
            dist.broadcast(buf, 0)
    epoch_time = time.time() - t0
    return {"stage": stage.name, "epoch": epoch + 1, "loss": float(loss_t) / max(1, n_batches),
            "train_accuracy": int(correct_t) / max(1, seen), "lr": stage.optim.param_groups[-1]["lr"],
            "images_per_s": seen * run.world / max(1e-9, epoch_time), "epoch_seconds": epoch_time,
            "minutes_total": (time.time() - run.t_start) / 60}


def end_epoch(run, stage, epoch, record):
    """Rank 0: validate, log and print the epoch record, write ``last.pt`` and (when better) ``best.pt``."""
    run.epochs_done += 1
    if run.is_main:
        val = validate(run.backbone, run.data, run.device, run.cfg.get("calibration", "best"))
        if val:
            record.update(val)
            run.last_val = val
        run.history.append(record)
        run.logger.log(record)
        if run.progress:
            print(epoch_line(record), flush=True)
        threshold = run.last_val["threshold"] if run.last_val else None
        ckpt = {"model": run.backbone.state_dict(), "head": stage.head.state_dict(),
                "optimizer": stage.optim.state_dict(), "scheduler": stage.sched.state_dict(),
                "scaler": stage.scaler.state_dict() if stage.scaler.is_enabled() else {},
                "rng": rng_state(), "stage_index": stage.index, "stage": stage.name, "epoch": epoch + 1,
                "best_eer": run.best_eer, "history": run.history, "config": run.cfg,
                "meta": _meta(run.cfg, run.data, threshold)}
        improved = val is not None and val["val_eer"] <= run.best_eer
        if improved:
            run.best_eer = val["val_eer"]
            ckpt["best_eer"] = run.best_eer
        if epoch + 1 == stage.st["epochs"]:  # stage finished: a resume starts the next stage
            ckpt["stage_index"], ckpt["epoch"] = stage.index + 1, 0
        save_checkpoint(run.out_dir / "last.pt", ckpt)
        if improved or val is None:
            save_checkpoint(run.out_dir / "best.pt", {"model": ckpt["model"], "meta": ckpt["meta"],
                                                      "stage": stage.name, "epoch": epoch + 1, "val": val or {}})
    if run.distributed:
        dist.barrier()


def _set_up_runtime(cfg, world, local_rank):
    """Device, process group, threads and precision of a run -> (device, precision, why that precision)."""
    device = resolve_device(cfg["device"], local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    elif cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    precision, why = resolve_precision(cfg["precision"], device)
    _autocast(device, precision)  # validates fp16-on-CPU early
    return device, precision, why


def train(cfg, out_dir, resume=False, split=None, progress=True, stop_after_epochs=None, data=None,
          return_model=False):
    """Run the enabled stages of ``cfg``; returns a summary dict (best/last validation, paths, minutes).

    ``split``: a protocols.Split to train on instead of ``cfg["data"]``; ``data``: prepared arrays (see
    :func:`fastconv.face.prepare.prepare_data`); ``stop_after_epochs`` ends this run after that many
    epochs (to test ``resume``); ``return_model`` adds the trained backbone under ``"model"``.
    """
    t_start = time.time()
    world, rank, local_rank = _dist_info()
    device, precision, why = _set_up_runtime(cfg, world, local_rank)
    out_dir = pathlib.Path(out_dir)
    state = _resume_state(out_dir / "last.pt", cfg, device) if resume else None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"precision {precision} ({why}); device {device}", flush=True)
    seed_everything(cfg["seed"])
    if data is None:
        from .prepare import prepare_data

        data = prepare_data(cfg, split=split, progress=progress and rank == 0)
    workers = _loader_workers(cfg, device)
    if cfg["budget_minutes"] > 0:
        cfg = _apply_budget(cfg, out_dir, data, resume, precision, world, time.time() - t_start, workers)
    backbone = get_model(cfg["model"]["name"], cfg["model"]["embedding_size"], **model_kwargs(cfg)).to(device)
    if cfg["channels_last"]:
        backbone = backbone.to(memory_format=torch.channels_last)
    if state:
        backbone.load_state_dict(state["model"])
    logger = _Logger(out_dir, rank == 0, cfg["tensorboard"], fresh=not resume)
    if not resume:
        logger.log({"event": "start", "precision": precision, "precision_reason": why, "device": str(device)})
    run = _Run(cfg, out_dir, data, device, precision, world, rank, backbone, logger, progress, t_start,
               history=list(state["history"]) if state else [],
               best_eer=state["best_eer"] if state else float("inf"))
    run.last_val = run.history[-1] if run.history else None
    transform, run.prepare_batch = build_training_augment(cfg["augment"], cfg["data"]["size"])
    dataset = FaceDataset(data["images"], data["labels"], transform=transform)
    start_stage = state["stage_index"] if state else 0
    for si, stage_name in enumerate(STAGES):
        st = cfg[stage_name]
        if si < start_stage or not st["enabled"] or st["epochs"] == 0:
            continue
        resuming_here = state is not None and si == start_stage and state["epoch"] > 0
        stage = build_stage(run, si, stage_name, dataset, workers, state if resuming_here else None)
        for epoch in range(stage.first_epoch, st["epochs"]):
            if stop_after_epochs is not None and run.epochs_done >= stop_after_epochs:
                logger.close()
                return _summary(run, True, return_model)
            end_epoch(run, stage, epoch, run_epoch(run, stage, epoch))
        state = None
    if run.is_main and cfg["scorer"]["fit"]:
        _fit_scorer(run)
    logger.close()
    return _summary(run, False, return_model)


def _loader_workers(cfg, device):
    """DataLoader workers: ``cfg["workers"]``, or for -1 min(8, cores) on CUDA and 0 (the main process) on CPU."""
    workers = cfg["workers"]
    if workers < 0:
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    return workers


def _apply_budget(cfg, out_dir, data, resume, precision, world, seconds_spent, workers):
    """``cfg`` with the epoch counts of ``cfg["budget_minutes"]`` (:mod:`.budget`): torch's step probe plus
    the data probe (this run's transform and batch mix on its training images, ``workers`` as the
    loader will have them). The probes leave the RNGs as they found them, so the run equals one given
    those counts directly."""
    from . import budget
    from .throughput import measure_data

    if world > 1:
        raise ValueError("budget_minutes is not supported under torchrun; set ce.epochs / arcface.epochs")
    saved = rng_state()
    try:
        return budget.apply_budget(cfg, out_dir, len(data["labels"]), len(data["val_images"]), seconds_spent,
                                   resume, precision, log=lambda m: print(m, flush=True),
                                   num_classes=len(data["classes"]), workers=workers,
                                   data_probe=lambda: measure_data(cfg, data["images"], data["labels"],
                                                                   len(data["classes"])))
    finally:
        set_rng_state(saved)


def _fit_scorer(run):
    """Fit the PLDA back-end with best.pt's weights and store it in best.pt's ``meta["scorer"]``."""
    from .scoring import fit_training_side, state_as_tensors

    path = run.out_dir / "best.pt"
    best = load_checkpoint(path, map_location=run.device)
    if run.epochs_done == 0 and "scorer" in best["meta"]:  # a resumed run that had already finished
        return
    model = get_model(run.cfg["model"]["name"], run.cfg["model"]["embedding_size"], **model_kwargs(run.cfg))
    model.load_state_dict(best["model"])
    scorer = fit_training_side(model.to(run.device), run.data, run.device, dim=run.cfg["scorer"]["dim"],
                               calibration=run.cfg.get("calibration", "best"))
    best["meta"]["scorer"] = state_as_tensors(scorer.to_state())
    save_checkpoint(path, best)
    run.logger.log({"event": "scorer", "name": scorer.name, "dim": int(scorer.psi.shape[0]),
                    "llr_threshold": scorer.threshold})


def _summary(run, stopped, return_model):
    out = {"out_dir": str(run.out_dir), "best_val_eer": None if run.best_eer == float("inf") else run.best_eer,
           "last": run.history[-1] if run.history else None, "epochs": len(run.history), "stopped": stopped,
           "minutes": (time.time() - run.t_start) / 60}
    if return_model:
        out["model"] = run.backbone
    return out
