"""Training equivalence: the same small CNN trained in fastconv and in PyTorch from identical
initial weights on identical batches (synthetic, float64) for 50 SGD steps (momentum 0.9,
weight decay) gives the same loss curve, final weights and BatchNorm running statistics
(``assert_close``, float64: 1e-12), under every available backend (conftest's ``backend``
fixture). The torch network is ``fastconv.bench.twins.torch_twin``, the benchmark's translator.
Under every convolution algorithm: im2col as above; Winograd F(2x2), F(4x4) and "auto" (which
rounds differently) to 1e-9 relative, max|diff| / max|ref|."""
import numpy as np
import pytest

import fastconv as fc
from engine_helpers import assert_close, import_installed
from fastconv.models import CNN

torch = pytest.importorskip("torch")
twins = import_installed("fastconv.bench.twins")

STEPS, BATCH, SIZE, CLASSES = 50, 8, 16, 5
LR, MOMENTUM, WD = 0.05, 0.9, 1e-3
WINOGRAD_RTOL = 1e-9  # the bound for algorithms that round differently from a direct sum


def _plain_net():
    return fc.nn.Sequential(
        fc.nn.Conv2d(1, 4, 3, stride=2, padding=1), fc.nn.ReLU(), fc.nn.MaxPool2d(2),
        fc.nn.Conv2d(4, 8, 3), fc.nn.ReLU(), fc.nn.Flatten(), fc.nn.Linear(8 * 2 * 2, CLASSES))


def _bn_net():  # the CNN model class, with BatchNorm (its conv padding is k // 2)
    return CNN(1, SIZE, CLASSES, channels=(4, 8), kernel_sizes=3, strides=(2, 1), pool=(2, None),
               batchnorm=True).net


def _batches(seed):
    """A learnable task: each class adds its own fixed random pattern to the noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((CLASSES, 1, SIZE, SIZE))
    batches = []
    for _ in range(STEPS):
        labels = rng.integers(0, CLASSES, BATCH)
        batches.append((rng.standard_normal((BATCH, 1, SIZE, SIZE)) + patterns[labels], labels))
    return batches


@pytest.mark.parametrize("algo", ["im2col", "auto", "winograd_f2", "winograd_f4", "winograd_batched_f4"])
@pytest.mark.parametrize("make", [_plain_net, _bn_net], ids=["plain", "batchnorm"])
def test_sgd_training_matches_torch(backend, make, algo):
    """``algo`` is the process-wide convolution algorithm: Winograd runs the stride-1 3x3 layers."""
    with fc.use_conv_algo(algo):
        _train_and_compare(make, algo)


def _close(actual, expected, algo, what):
    if algo == "im2col":
        assert_close(actual, expected, np.float64, what)
        return
    expected = np.asarray(expected.detach() if hasattr(expected, "detach") else expected, dtype=np.float64)
    rel = np.abs(np.asarray(actual) - expected).max() / max(np.abs(expected).max(), 1e-300)
    assert rel <= WINOGRAD_RTOL, f"{what}: relative error {rel:.3g} > {WINOGRAD_RTOL:g} ({algo})"


def _train_and_compare(make, algo):
    fc.manual_seed(0)
    net = make()
    initial = net.state_dict()
    twin = twins.torch_twin(net)
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
    _close(np.array(fc_losses), np.array(t_losses), algo, "loss curve")
    assert np.mean(fc_losses[-10:]) < 0.5 * np.mean(fc_losses[:10]), "the network did not learn the task"
    t_state = twin.state_dict()
    for key, value in net.state_dict().items():
        _close(value, t_state[key], algo, key)
        # every parameter and running statistic moved: the comparison is not of untouched copies
        assert np.abs(value - initial[key]).max() > 1e-3, f"{key} did not change in training"
