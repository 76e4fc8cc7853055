"""Training equivalence: the same small CNN trained in fastconv and in PyTorch from identical
initial weights on identical batches (synthetic, float64) for 50 SGD steps (momentum 0.9,
weight decay) gives the same loss curve and final weights to 1e-9 relative, under every
available backend (conftest's ``backend`` fixture) and convolution algorithm (im2col, Winograd
F(2x2) and F(4x4), and "auto")."""
import numpy as np
import pytest

import fastconv as fc
from fastconv.models import CNN

torch = pytest.importorskip("torch")

STEPS, BATCH, SIZE, CLASSES = 50, 8, 16, 5
LR, MOMENTUM, WD = 0.05, 0.9, 1e-3
RTOL = 1e-9


def _torch_twin(seq):
    """A torch.nn.Sequential mirroring a fastconv Sequential (same layer kinds and settings)."""
    tnn, layers = torch.nn, []
    for m in seq:
        if isinstance(m, fc.nn.Conv2d):
            layers.append(tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                     bias=m.bias is not None, dtype=torch.float64))
        elif isinstance(m, fc.nn.BatchNorm2d):
            layers.append(tnn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum, dtype=torch.float64))
        elif isinstance(m, fc.nn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(m, fc.nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, fc.nn.Flatten):
            layers.append(tnn.Flatten())
        elif isinstance(m, fc.nn.Linear):
            layers.append(tnn.Linear(m.in_features, m.out_features, dtype=torch.float64))
        else:
            raise TypeError(f"no torch twin for {type(m).__name__}")
    net = tnn.Sequential(*layers)
    state = seq.state_dict()
    net.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    return net


def _plain_net():
    return fc.nn.Sequential(
        fc.nn.Conv2d(1, 4, 3, stride=2, padding=1), fc.nn.ReLU(), fc.nn.MaxPool2d(2),
        fc.nn.Conv2d(4, 8, 3), fc.nn.ReLU(), fc.nn.Flatten(), fc.nn.Linear(8 * 2 * 2, CLASSES))


def _bn_net():  # the CNN model class, with BatchNorm (its conv padding is k // 2)
    return CNN(1, SIZE, CLASSES, channels=(4, 8), kernel_sizes=3, strides=(2, 1), pool=(2, None),
               batchnorm=True).net


def _batches(seed):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((BATCH, 1, SIZE, SIZE)), rng.integers(0, CLASSES, BATCH))
            for _ in range(STEPS)]


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("algo", ["im2col", "auto", "winograd_f2", "winograd_f4"])
@pytest.mark.parametrize("make", [_plain_net, _bn_net], ids=["plain", "batchnorm"])
def test_sgd_training_matches_torch(backend, make, algo):
    """``algo`` is the process-wide convolution algorithm: Winograd runs the stride-1 3x3 layers."""
    with fc.use_conv_algo(algo):
        _train_and_compare(make)


def _train_and_compare(make):
    fc.manual_seed(0)
    net = make()
    twin = _torch_twin(net)
    fc_opt = fc.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    t_opt = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    criterion, t_criterion = fc.nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    fc_losses, t_losses = [], []
    for x, y in _batches(1):
        net.zero_grad()
        fc_losses.append(criterion(net(x), y))
        net.backward(criterion.backward())
        fc_opt.step()
        t_opt.zero_grad()
        loss = t_criterion(twin(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        t_opt.step()
        t_losses.append(loss.item())
    fc_losses, t_losses = np.array(fc_losses), np.array(t_losses)
    assert _rel(fc_losses, t_losses) <= RTOL
    assert fc_losses[-10:].mean() < fc_losses[:10].mean()  # it did train
    t_state = twin.state_dict()
    for key, value in net.state_dict().items():
        expected = t_state[key].numpy()
        assert _rel(value, expected) <= RTOL, key
        assert np.abs(value - net.state_dict()[key]).max() == 0
    # and the trained weights moved: the comparison is not of two untouched copies
    assert _rel(net.state_dict()["0.weight"], make().state_dict()["0.weight"]) > 1e-3
