"""Training throughput of a config's backbone + CE head, per precision and memory format.

:func:`measure` times the training step alone (forward under autocast, backward, GradScaler with
fp16, SGD step) on a synthetic batch already on the device: data loading and augmentation are
excluded, so its numbers are an upper bound for ``fastconv face train`` with the same settings.
Warm-up steps first, then the median of the timed steps. :func:`measure_data` times what the step
leaves out: the training loader's per-image transform (``augment.py``), batching, normalisation and
the CE stage's CutMix/MixUp, on real training images. With ``workers = 0`` (the CPU default) the two
run one after the other, so a training image costs ``1 / step_ips + data_seconds``
(``budget.combined_images_per_s``).
"""
import statistics
import time

import torch

from .device import resolve_device
from .heads import build_head
from .models import get_model
from .train import _autocast, _optimizer, model_kwargs

PRECISIONS = ("fp32", "bf16", "fp16")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg, precision, channels_last, steps=10, warmup=3, num_classes=1000, batch_size=None):
    """Images per second of one CE training step of ``cfg``'s model; returns a result dict."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    device = resolve_device(cfg["device"])
    _autocast(device, precision)  # refuses fp16 without CUDA before anything is built
    if device.type == "cpu" and cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    st = cfg["ce"]
    bs = batch_size or st["batch_size"]
    size = cfg["data"]["size"]
    backbone = get_model(cfg["model"]["name"], cfg["model"]["embedding_size"], **model_kwargs(cfg)).to(device)
    head = build_head("softmax", cfg["model"]["embedding_size"], num_classes).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    backbone = backbone.to(memory_format=fmt)
    optim = _optimizer(backbone, head, st)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (bs,), device=device)
    backbone.train()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with _autocast(device, precision):
            loss = head(backbone(x), y)
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"device": str(device), "precision": precision, "channels_last": bool(channels_last),
            "batch_size": bs, "input_size": size, "images_per_s": bs / med, "step_ms": 1e3 * med,
            "steps": steps, "threads": torch.get_num_threads() if device.type == "cpu" else None}


def measure_data(cfg, images, labels, num_classes, n_images=256, warmup=16):
    """Seconds per image of the training data path of ``cfg`` on ``images`` uint8 ``(M, 3, S, S)``.

    The loader of ``train.build_stage`` with ``workers = 0`` (FaceDataset with the config's per-image
    transform, or none with ``augment.batched``; shuffled batches of ``ce.batch_size``), then what
    ``train.run_epoch`` does to a batch before the step: the batched augmentation or ``normalize``,
    channels_last when set, the CE stage's batch mix. Uses torch's RNG (callers that need
    it unchanged save and restore it). ``warmup`` images first (lazy imports, first-call set-up), then
    up to ``n_images`` timed: the median over batches of seconds / images.
    """
    from .augment import build_batch_mix, build_training_augment
    from .data import FaceDataset

    if n_images < 1 or warmup < 0:
        raise ValueError(f"need n_images >= 1 and warmup >= 0, got n_images={n_images}, warmup={warmup}")
    transform, prepare_batch = build_training_augment(cfg["augment"], cfg["data"]["size"])
    dataset = FaceDataset(images, labels, transform=transform)
    mix = build_batch_mix(cfg["ce"], num_classes)
    bs = max(1, min(cfg["ce"]["batch_size"], n_images, len(dataset)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=True, drop_last=True, num_workers=0)
    for i in range(min(warmup, len(dataset))):
        dataset[i]
    if len(dataset):
        prepare_batch(torch.from_numpy(images[:bs]))
    per_image, seen, it = [], 0, iter(loader)
    while seen < n_images:
        t0 = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            break
        x, y = batch
        x = prepare_batch(x)
        if cfg["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        if mix is not None:
            mix(x, y)
        per_image.append((time.perf_counter() - t0) / x.shape[0])
        seen += x.shape[0]
    if not per_image:
        raise ValueError(f"no training batch to time: {len(dataset)} images")
    return statistics.median(per_image)


def default_grid(device):
    """(precision, channels_last) pairs worth comparing on ``device``: fp32 vs bf16 on CPU, plus fp16 on CUDA."""
    precisions = ("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16")
    return [(p, cl) for p in precisions for cl in (False, True)]


def format_table(results):
    """Markdown table of :func:`measure` results, with each row's speed relative to the first."""
    base = results[0]["images_per_s"] if results else 1.0
    lines = ["| device | precision | channels_last | batch | images/s | step (ms) | vs first row |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['device']} | {r['precision']} | {'yes' if r['channels_last'] else 'no'} | "
                     f"{r['batch_size']} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | "
                     f"{r['images_per_s'] / base:.2f}x |")
    return "\n".join(lines) + "\n"
