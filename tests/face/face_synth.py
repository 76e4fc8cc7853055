"""Synthetic face-like data for the training tests: each identity is a fixed random colour grid."""
import numpy as np
import torch


def identity_images(n_classes, per_class, size, seed):
    """-> (images uint8 (n_classes*per_class, 3, size, size), labels int64); noisy copies of a class pattern."""
    rng = np.random.default_rng(seed)
    grids = rng.integers(0, 256, size=(n_classes, 3, 4, 4)).astype(np.float32)
    base = torch.nn.functional.interpolate(torch.from_numpy(grids), size=(size, size), mode="bilinear",
                                           align_corners=False).numpy()
    imgs = np.repeat(base, per_class, axis=0) + rng.normal(0, 25, size=(n_classes * per_class, 3, size, size))
    labels = np.repeat(np.arange(n_classes), per_class).astype(np.int64)
    return np.clip(imgs, 0, 255).astype(np.uint8), labels


def make_data(n_classes=6, per_class=8, size=16, n_val_classes=4, seed=0):
    """A ``train(data=...)`` dict: training identities plus validation pairs of other identities."""
    from fastconv.face.data import Preprocess

    images, labels = identity_images(n_classes, per_class, size, seed)
    vimg, vlab = identity_images(n_val_classes, 3, size, seed + 1)
    pairs, same = [], []
    for i in range(len(vlab)):
        for j in range(i + 1, len(vlab)):
            pairs.append((i, j))
            same.append(vlab[i] == vlab[j])
    return {"images": images, "labels": labels, "classes": [f"id{i}" for i in range(n_classes)],
            "val_images": vimg, "val_pairs": np.array(pairs, np.int64), "val_same": np.array(same, bool),
            "split": None, "image_root": "", "preprocess": Preprocess(size=size, crop=150)}


TINY = ["model.name=iresnet18", "model.width=0.125", "model.embedding_size=16", "data.size=16",
        "threads=1", "ce.batch_size=16", "arcface.batch_size=16", "ce.warmup_epochs=0", "log_every=1",
        "augment.color_jitter=0"]


def fake_lfw(root, size=40):
    """LFW-shaped folder under ``root``: 10 people folds of 3 people x 3 images, pairs.txt with 1 + 1 pairs
    per fold, and View 1 files (peopleDevTrain.txt, pairsDevTest.txt)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img_root = root / "lfw-deepfunneled"
    people_lines, pair_lines = ["10"], ["10\t1"]
    for f in range(10):
        names = [f"P{f}_{i}" for i in range(3)]
        people_lines.append("3")
        for name in names:
            (img_root / name).mkdir(parents=True)
            colour = rng.integers(0, 256, 3)
            for k in range(1, 4):
                arr = np.clip(colour + rng.normal(0, 20, (250, 250, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(img_root / name / f"{name}_{k:04d}.jpg", quality=80)
            people_lines.append(f"{name}\t3")
        pair_lines += [f"{names[0]}\t1\t2", f"{names[1]}\t1\t{names[2]}\t2"]
    (root / "people.txt").write_text("\n".join(people_lines) + "\n")
    (root / "pairs.txt").write_text("\n".join(pair_lines) + "\n")
    # View 1: DevTrain = the people of folds 0-6, DevTest pairs = folds 7-9 (disjoint)
    dev_train = [line for line in people_lines[1:] if "\t" in line][:21]
    (root / "peopleDevTrain.txt").write_text("\n".join([str(len(dev_train))] + dev_train) + "\n")
    same, diff = pair_lines[1 + 14::2], pair_lines[2 + 14::2]
    (root / "pairsDevTest.txt").write_text("\n".join([str(len(same))] + same + diff) + "\n")


def calibrated_model(name, embedding_size=32, seed=0, batches=2, images=None, **kw):
    """A random-init backbone of ``fastconv.face.models`` whose BatchNorm running statistics were
    set on ``batches`` random batches (or on ``images``, normalised float (N, 3, S, S), in batches
    of 12; cumulative average), in eval mode: a stand-in for a trained model whose activations
    stay O(1) through every layer."""
    from fastconv.face.models import get_model

    torch.manual_seed(seed)
    model = get_model(name, embedding_size, **kw)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if images is not None:
            for start in range(0, len(images), 12):
                model(torch.as_tensor(images[start:start + 12]))
        for _ in range(batches if images is None else 0):
            model(torch.rand(12, 3, model.input_size, model.input_size, generator=g) * 2 - 1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1  # back to the default, which the fastconv twin uses too
    with torch.no_grad():  # non-trivial PReLU slopes and BN affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.05, 0.4, generator=g)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
    return model.eval()
