"""``fastconv train-cnn`` smoke run and the LFW-people split (the LFW tests skip without the data)."""
import re

import numpy as np
import pytest

from fastconv.datasets import load_lfw_people, stratified_split
from fastconv.examples import train_cnn
from fastconv.models import CNN
from fastconv.paths import lfw_root

needs_lfw = pytest.mark.skipif(not (lfw_root() / "lfw-deepfunneled").is_dir(),
                               reason=f"LFW not found at {lfw_root()} (set FASTCONV_LFW)")


def test_split_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(5), [20, 21, 40, 100, 7])
    train, test = stratified_split(labels, 0.25, seed=3)
    again = stratified_split(labels, 0.25, seed=3)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    for c, n in enumerate([20, 21, 40, 100, 7]):
        assert (labels[test] == c).sum() == round(n * 0.25)
    other = stratified_split(labels, 0.25, seed=4)[1]
    assert not np.array_equal(test, other)  # the seed matters


def test_split_rejects_bad_input():
    with pytest.raises(TypeError, match="integer"):
        stratified_split(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(np.array([0, 1]), test_fraction=1.5)


def test_cnn_model_steps_and_validates():
    rng = np.random.default_rng(0)
    model = CNN(1, 12, 3, channels=(4, 6), batchnorm=True, dropout=0.1)
    x, y = rng.standard_normal((6, 1, 12, 12)), rng.integers(0, 3, 6)
    assert model.forward(x).shape == (6, 3)
    with pytest.raises(RuntimeError, match="optimizer"):
        model.step()
    model.configure_optimizer("sgd", lr=0.1, momentum=0.9)
    losses = []
    for _ in range(20):
        model.zero_grad()
        losses.append(model.loss(x, y))
        assert model.backward().shape == x.shape
        model.step()
    assert losses[-1] < 0.5 * losses[0]
    assert set(model.state_dict()) >= {"net.0.weight", "net.1.running_mean"}
    with pytest.raises(ValueError, match="one entry per conv block"):
        CNN(1, 12, 3, channels=(4, 6), kernel_sizes=(3,))
    with pytest.raises(ValueError, match="activation"):
        CNN(1, 12, 3, channels=(4,), activations="nope")
    with pytest.raises(ValueError, match="too small"):
        CNN(1, 4, 3, channels=(4, 4, 4))


@needs_lfw
def test_lfw_people_counts():
    data = load_lfw_people()
    assert data.num_classes == 62 and len(data.labels) == 3023 - data.skipped
    assert data.images.shape == (len(data.labels), 1, 32, 32) and data.images.dtype == np.float32
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    train, test = stratified_split(data.labels)
    assert len(test) == 755 and len(train) == 2268


@needs_lfw
def test_train_cnn_smoke_lowers_loss(capsys):
    code = train_cnn.main(["--epochs", "3", "--batch-size", "16", "--max-train", "160", "--max-test", "64",
                           "--channels", "4,8", "--lr", "0.05", "--no-progress", "--backend", "reference"])
    assert code == 0
    out = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"epoch +\d+ +loss ([0-9.]+)", out)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert re.search(r"final held-out accuracy [0-9.]+ \(\d+/64\); total time", out)


def test_train_cnn_rejects_bad_options():
    with pytest.raises(SystemExit):
        train_cnn.main(["--dtype", "float16"])
    with pytest.raises(ValueError, match="--epochs"):
        train_cnn.main(["--epochs", "0"])
