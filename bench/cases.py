"""The benchmark cases: fastconv layers and models with identical PyTorch twins.

A case builds a fresh fastconv runner (same seed, so every backend starts from the same
weights) and a PyTorch twin that loads those weights. A runner has ``reset()`` (untimed),
``forward()`` and ``backward()``; for training steps forward is zero_grad + model + loss and
backward is the loss gradient + model backward + SGD step.
"""
import numpy as np
import torch
import torch.nn.functional as TF

import fastconv as fc
from fastconv import nn as fnn

from .twins import torch_twin

SEED = 0


# ----------------------------------------------------------------------------- runners
class FcLayerRunner:
    def __init__(self, module, x):
        self.module, self.x, self.dy = module, x, None

    def reset(self):
        pass

    def forward(self):
        self.y = self.module(self.x)
        if self.dy is None:  # a fixed upstream gradient, drawn once (untimed after warm-up)
            self.dy = np.random.default_rng(SEED + 1).standard_normal(self.y.shape).astype(self.y.dtype)

    def backward(self):
        self.module.backward(self.dy)


class TorchLayerRunner:
    def __init__(self, module, x):
        self.module = module
        self.x = torch.from_numpy(np.array(x, copy=True)).requires_grad_(True)
        self.dy = None

    def reset(self):
        self.x.grad = None
        self.module.zero_grad(set_to_none=True)

    def forward(self):
        self.y = self.module(self.x)
        if self.dy is None:
            self.dy = torch.from_numpy(np.random.default_rng(SEED + 1).standard_normal(
                tuple(self.y.shape)).astype(np.dtype(str(self.y.dtype).replace("torch.", ""))))

    def backward(self):
        self.y.backward(self.dy)


class FcTrainRunner:
    def __init__(self, model, x, labels, lr=0.01, momentum=0.9):
        self.model, self.x, self.labels = model, x, labels
        self.loss = fnn.CrossEntropyLoss()
        self.opt = fc.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        model.train()

    def reset(self):
        pass

    def forward(self):
        self.opt.zero_grad()
        self.value = self.loss(self.model(self.x), self.labels)

    def backward(self):
        self.model.backward(self.loss.backward())
        self.opt.step()


class TorchTrainRunner:
    def __init__(self, model, x, labels, lr=0.01, momentum=0.9):
        self.model = model.train()
        self.x = torch.from_numpy(np.array(x, copy=True))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    def reset(self):
        pass

    def forward(self):
        self.opt.zero_grad(set_to_none=True)
        self.value = TF.cross_entropy(self.model(self.x), self.labels)

    def backward(self):
        self.value.backward()
        self.opt.step()


# ----------------------------------------------------------------------------- cases
class Case:
    """One benchmark: ``build()`` -> (fastconv module, input, labels or None)."""

    def __init__(self, id, group, title, shape, build, train=False, note=""):
        self.id, self.group, self.title, self.shape = id, group, title, shape
        self._build, self.train, self.note = build, train, note

    def build(self):
        fc.manual_seed(SEED)
        return self._build()

    def fc_runner(self):
        module, x, labels = self.build()
        if self.train:
            return FcTrainRunner(module, x, labels)
        return FcLayerRunner(module, x)

    def torch_runner(self):
        module, x, labels = self.build()
        twin = torch_twin(module)
        if self.train:
            return TorchTrainRunner(twin, x, labels)
        return TorchLayerRunner(twin, x)

    def info(self):
        """(multiply-accumulates of one forward pass in convolutions and linear layers, dtype name)."""
        module, x, _ = self.build()
        twin = torch_twin(module)
        total = [0]

        def hook(mod, inputs, out):
            if isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d)):
                k = int(np.prod(mod.kernel_size))
                total[0] += out.numel() * (mod.in_channels // mod.groups) * k
            elif isinstance(mod, torch.nn.Linear):
                total[0] += out.numel() * mod.in_features

        handles = [m.register_forward_hook(hook) for m in twin.modules()]
        with torch.no_grad():
            twin(torch.from_numpy(x))
        for h in handles:
            h.remove()
        return total[0], x.dtype.name


def _data(shape, dtype):
    return np.random.default_rng(SEED).standard_normal(shape).astype(dtype)


def _layer(make, shape, dtype):
    return lambda: (make(), _data(shape, dtype), None)


def _seq(*layers):
    return fnn.Sequential(*layers)


def lfw_cnn(classes=62, dtype=np.float32):
    """Engine-style LFW CNN: 1x32x32 -> 3 x (conv3x3 p1, ReLU, maxpool 2) -> Linear."""
    return _seq(fnn.Conv2d(1, 16, 3, padding=1, dtype=dtype), fnn.ReLU(), fnn.MaxPool2d(2),
                fnn.Conv2d(16, 32, 3, padding=1, dtype=dtype), fnn.ReLU(), fnn.MaxPool2d(2),
                fnn.Conv2d(32, 64, 3, padding=1, dtype=dtype), fnn.ReLU(), fnn.MaxPool2d(2),
                fnn.Flatten(), fnn.Linear(64 * 4 * 4, classes, dtype=dtype))


def face_cnn(classes=62, dtype=np.float32):
    """Small face CNN: 1x64x64 -> 4 x (conv3x3 p1, BatchNorm, ReLU, maxpool 2) -> Linear."""
    layers, c = [], 1
    for width in (32, 64, 128, 256):
        layers += [fnn.Conv2d(c, width, 3, padding=1, bias=False, dtype=dtype),
                   fnn.BatchNorm2d(width, dtype=dtype), fnn.ReLU(), fnn.MaxPool2d(2)]
        c = width
    return _seq(*layers, fnn.Flatten(), fnn.Linear(256 * 4 * 4, classes, dtype=dtype))


def _train(make, shape, classes=62):
    def build():
        model = make(classes)
        labels = np.random.default_rng(SEED + 2).integers(0, classes, shape[0])
        return model, _data(shape, np.float32), labels
    return build


def all_cases(quick=False):
    """Every case; ``quick`` keeps them all but shrinks the batches (CI smoke runs)."""
    f64, f32 = np.float64, np.float32
    rb = 2 if quick else 32      # ResNet-18 layer batch
    pb = 4 if quick else 32      # pooling / resampling batch
    lb = 8 if quick else 64     # LFW CNN training batch
    fb = 4 if quick else 32      # face CNN training batch
    cases = []

    def add(*args, **kw):
        cases.append(Case(*args, **kw))

    # --- 11-785 sized 1-D layers (float64) -------------------------------------------------
    g = "11-785 Conv1d (float64)"
    for n, cin, cout, k, s, p, w in ((1, 24, 8, 8, 4, 0, 128), (4, 24, 8, 8, 4, 0, 300),
                                     (4, 24, 32, 5, 2, 0, 300), (2, 24, 16, 3, 1, 1, 200)):
        pad = f", p{p}" if p else ""
        add(f"conv1d_{cin}_{cout}_k{k}s{s}p{p}_n{n}_w{w}", g, f"Conv1d({cin},{cout},{k},s{s}{pad})",
            f"{n}x{cin}x{w}", _layer(lambda cin=cin, cout=cout, k=k, s=s, p=p:
                                     fnn.Conv1d(cin, cout, k, s, p, dtype=f64), (n, cin, w), f64))
    add("scan_simple_n4_w128", g, "simple scanning CNN", "4x24x128",
        _layer(lambda: _seq(fnn.Conv1d(24, 8, 8, 4, dtype=f64), fnn.ReLU(),
                            fnn.Conv1d(8, 16, 1, 1, dtype=f64), fnn.ReLU(),
                            fnn.Conv1d(16, 4, 1, 1, dtype=f64)), (4, 24, 128), f64),
        note="Conv1d(24,8,8,4)-ReLU-Conv1d(8,16,1,1)-ReLU-Conv1d(16,4,1,1)")
    add("scan_distributed_n4_w128", g, "distributed scanning CNN", "4x24x128",
        _layer(lambda: _seq(fnn.Conv1d(24, 2, 2, 2, dtype=f64), fnn.ReLU(),
                            fnn.Conv1d(2, 8, 2, 2, dtype=f64), fnn.ReLU(),
                            fnn.Conv1d(8, 4, 2, 1, dtype=f64)), (4, 24, 128), f64),
        note="Conv1d(24,2,2,2)-ReLU-Conv1d(2,8,2,2)-ReLU-Conv1d(8,4,2,1)")

    # --- ResNet-18 layers (float32) --------------------------------------------------------
    g = f"ResNet-18 layers (float32, batch {rb})"
    for cid, title, cin, cout, k, s, p, hw in (
            ("stem7x7s2", "stem conv 7x7/2, 3->64", 3, 64, 7, 2, 3, 112),
            ("conv3x3_64_56", "conv 3x3, 64->64", 64, 64, 3, 1, 1, 56),
            ("conv3x3_128_28", "conv 3x3, 128->128", 128, 128, 3, 1, 1, 28),
            ("conv3x3_256_14", "conv 3x3, 256->256", 256, 256, 3, 1, 1, 14),
            ("conv3x3s2_64_128_56", "conv 3x3/2, 64->128 (downsample)", 64, 128, 3, 2, 1, 56),
            ("conv1x1s2_64_128_56", "conv 1x1/2, 64->128 (shortcut)", 64, 128, 1, 2, 0, 56)):
        add(f"resnet_{cid}", g, title, f"{rb}x{cin}x{hw}x{hw}",
            _layer(lambda cin=cin, cout=cout, k=k, s=s, p=p:
                   fnn.Conv2d(cin, cout, k, s, p, bias=False, dtype=f32), (rb, cin, hw, hw), f32))
    add("resnet_maxpool3x3s2p1_64_56", g, "stem max pool 3x3/2 p1", f"{rb}x64x56x56",
        _layer(lambda: fnn.MaxPool2d(3, 2, 1), (rb, 64, 56, 56), f32),
        note="on the stem's 64x56x56 output (112x112 input)")

    # --- pooling and resampling (float32) ---------------------------------------------------
    g = f"pooling / resampling (float32, batch {pb})"
    shape = (pb, 64, 56, 56)
    for cid, title, make, note in (
            ("maxpool2x2", "max pool 2x2", lambda: fnn.MaxPool2d(2), "torch: nn.MaxPool2d"),
            ("maxpool3x3s2", "max pool 3x3/2", lambda: fnn.MaxPool2d(3, 2), "torch: nn.MaxPool2d"),
            ("meanpool2x2", "mean pool 2x2", lambda: fnn.MeanPool2d(2), "torch: nn.AvgPool2d"),
            ("meanpool3x3s2", "mean pool 3x3/2", lambda: fnn.MeanPool2d(3, 2), "torch: nn.AvgPool2d"),
            ("upsample2", "Upsample2d x2 (zero insertion)", lambda: fnn.Upsample2d(2),
             "torch: new_zeros + y[..., ::2, ::2] = x"),
            ("downsample2", "Downsample2d x2", lambda: fnn.Downsample2d(2),
             "torch: x[..., ::2, ::2].contiguous()")):
        add(f"pool_{cid}", g, title, "x".join(map(str, shape)), _layer(make, shape, f32), note=note)

    # --- training steps (float32) ------------------------------------------------------------
    g = "training step (float32, SGD momentum 0.9)"
    add("train_lfw_cnn", g, "LFW CNN train step", f"{lb}x1x32x32", _train(lfw_cnn, (lb, 1, 32, 32)),
        train=True, note="3 x (conv3x3-ReLU-maxpool2) + Linear(1024, 62)")
    add("train_face_cnn", g, "face CNN train step", f"{fb}x1x64x64", _train(face_cnn, (fb, 1, 64, 64)),
        train=True, note="4 x (conv3x3-BN-ReLU-maxpool2) + Linear(4096, 62)")
    return cases


def select(cases, patterns):
    """Cases whose id contains any of ``patterns`` (all cases when there are none)."""
    if not patterns:
        return cases
    chosen = [c for c in cases if any(p in c.id for p in patterns)]
    if not chosen:
        raise SystemExit(f"no case matches {patterns}; ids: {', '.join(c.id for c in cases)}")
    return chosen
