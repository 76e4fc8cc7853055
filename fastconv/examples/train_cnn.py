"""``fastconv train-cnn``: train a fastconv CNN (no PyTorch) on the LFW people with >= 20 images.

62 people, 3,023 grey 32x32 face crops, a fixed stratified 75/25 split. Augmentation: random
horizontal flip and a random shift of up to ``--shift`` pixels (edge padding). Prints held-out
accuracy after every epoch and at the end, and the total time.
"""
import argparse
import sys
import time

import numpy as np

import fastconv as fc
from fastconv.datasets import load_lfw_people, stratified_split
from fastconv.models import CNN


def _ints(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def build_parser():
    p = argparse.ArgumentParser(prog="fastconv train-cnn", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (cosine schedule)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    p.add_argument("--backend", default=None, help="kernel backend (default: fastest available; "
                   "see `fastconv backends`)")
    p.add_argument("--algo", default="im2col", choices=fc.conv_algo.CHOICES,
                   help="convolution algorithm of the 3x3 layers (default im2col; auto = fastest measured)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for kernels and BLAS (default 1: the per-sample GEMMs are small, and "
                        "2 threads on a busy 2-core machine ran 5-100x slower)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--time-limit", type=float, default=10.0,
                   help="minutes; training stops after the epoch that crosses it")
    p.add_argument("--size", type=int, default=32, help="image side after resizing")
    p.add_argument("--crop", type=int, default=100, help="centre crop of the 250x250 image, px")
    p.add_argument("--min-faces", type=int, default=20)
    p.add_argument("--channels", type=_ints, default=(16, 32, 64))
    p.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--shift", type=int, default=2, help="max random shift in pixels (0: none)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--max-train", type=int, default=None, help="use only this many training images")
    p.add_argument("--max-test", type=int, default=None, help="use only this many test images")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def augment(x, rng, shift, flip):
    """x: (N, C, H, W) -> randomly flipped (left-right) and shifted copy, same shape."""
    if flip:
        mask = rng.random(len(x)) < 0.5
        x = x.copy()
        x[mask] = x[mask, :, :, ::-1]
    if shift:
        n, _, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)), mode="edge")
        dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
        x = np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return np.ascontiguousarray(x)


def accuracy(model, x, y):
    """Fraction of x (N, C, H, W) classified as y (N,)."""
    return float((model.predict(x) == y).mean())


def prepare_data(args):
    """-> (x_train, y_train, x_test, y_test, num_classes), standardised with the training stats."""
    data = load_lfw_people(min_faces=args.min_faces, size=args.size, crop=args.crop)
    train_idx, test_idx = stratified_split(data.labels, 0.25, seed=0)
    if args.max_train:
        train_idx = np.sort(np.random.default_rng(1).permutation(train_idx)[:args.max_train])
    if args.max_test:
        test_idx = np.sort(np.random.default_rng(2).permutation(test_idx)[:args.max_test])
    x_train, x_test = data.images[train_idx], data.images[test_idx]
    mean, std = float(x_train.mean()), float(x_train.std())
    dtype = np.dtype(args.dtype)
    x_train = ((x_train - mean) / std).astype(dtype)
    x_test = ((x_test - mean) / std).astype(dtype)
    return x_train, data.labels[train_idx], x_test, data.labels[test_idx], data.num_classes


def _progress(total, desc, disable):
    """A tqdm bar in a terminal; nothing when stdout is not one (CI, nohup, a log: the epoch line suffices)."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but training must not need it
        disable = True
    if not sys.stdout.isatty():
        disable = True
    if disable:
        class _Quiet:
            def update(self, n): pass
            def set_postfix(self, **kw): pass
            def close(self): pass
        return _Quiet()
    return tqdm(total=total, desc=desc, unit="img", leave=False, file=sys.stderr)


def main(argv=None):
    """Train and evaluate; returns 0. ``argv``: the options (default ``sys.argv[1:]``)."""
    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError(f"--epochs and --batch-size must be >= 1, got {args.epochs}, {args.batch_size}")
    if args.threads:
        fc.set_num_threads(args.threads)
    if args.backend:
        fc.set_backend(args.backend)
    fc.set_conv_algo(args.algo)
    fc.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test, k = prepare_data(args)
    print(f"data: {len(x_train)} train / {len(x_test)} test images of {k} people, "
          f"{args.size}x{args.size} grey ({time.perf_counter() - start:.1f}s); "
          f"backend {fc.get_backend()}, conv algo {fc.get_conv_algo()}, {args.dtype}")
    model = CNN(1, args.size, k, channels=args.channels, batchnorm=args.batchnorm, dropout=args.dropout,
                dtype=np.dtype(args.dtype), label_smoothing=args.label_smoothing)
    opt_kwargs = dict(lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "sgd":
        opt_kwargs.update(momentum=args.momentum, nesterov=args.momentum > 0)
    optimizer = model.configure_optimizer(args.optimizer, **opt_kwargs)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    schedule = fc.optim.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch,
                                          warmup=steps_per_epoch)
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        bar = _progress(len(x_train), f"epoch {epoch}/{args.epochs}", args.no_progress)
        order = rng.permutation(len(x_train))
        t0, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            xb = augment(x_train[idx], rng, args.shift, not args.no_flip)
            model.zero_grad()
            loss = model.loss(xb, y_train[idx])
            model.backward()
            model.step()
            schedule.step()
            seen += len(idx)
            loss_sum += loss * len(idx)
            correct += int((model._logits.argmax(axis=1) == y_train[idx]).sum())
            bar.update(len(idx))
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        bar.close()
        acc = accuracy(model, x_test, y_test)
        elapsed = (time.perf_counter() - start) / 60
        print(f"epoch {epoch:3d}  loss {loss_sum / seen:.4f}  train acc {correct / seen:.3f}  "
              f"held-out acc {acc:.3f}  {seen / (time.perf_counter() - t0):.0f} img/s  "
              f"{elapsed:.2f} min", flush=True)
        if elapsed > args.time_limit and epoch < args.epochs:
            print(f"time limit of {args.time_limit} min reached: stopping after epoch {epoch}")
            break
    total = time.perf_counter() - start
    print(f"final held-out accuracy {acc:.4f} ({int(round(acc * len(y_test)))}/{len(y_test)}); "
          f"total time {total / 60:.2f} min ({fc.get_backend()} backend)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
