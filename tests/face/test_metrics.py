"""Verification metrics against hand-computed cases and sklearn."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fastconv.face.metrics import (
    accuracy_at,
    auc,
    best_threshold,
    eer,
    kfold_accuracy,
    mean_tpr,
    roc,
    tar_at_far,
    verification_report,
)


def test_roc_hand_case():
    s = [0.9, 0.6, 0.4, 0.1]
    y = [1, 0, 1, 0]
    fpr, tpr, thr = roc(s, y)
    assert np.allclose(fpr, [0, 0, 0.5, 0.5, 1])
    assert np.allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert np.isinf(thr[0]) and np.allclose(thr[1:], [0.9, 0.6, 0.4, 0.1])


def test_mean_tpr_is_vertical_average_of_step_curves():
    a = ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    b = ([0.0, 0.25, 0.25, 1.0], [0.0, 0.0, 0.75, 1.0])
    # FAR 0.1: a reaches 0.5, b 0; FAR 0.25: a 0.5, b 0.75 (the higher of its tied points); FAR 1: both 1
    np.testing.assert_allclose(mean_tpr([a, b], [0.1, 0.25, 0.5, 1.0]), [0.25, 0.625, 0.875, 1.0])
    fpr, tpr, _ = roc([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0])
    np.testing.assert_allclose(mean_tpr([(fpr, tpr)], [0.0, 0.49, 0.5]), [0.5, 0.5, 1.0])


def test_eer_exact_point():
    # ROC points (fpr, fnr): (0,.5) at 0.9, (.5,.5) at 0.6 -> EER exactly 0.5 at 0.6
    assert eer([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx((0.5, 0.6))


def test_eer_interpolated():
    # positives 0.8, 0.7; negatives 0.75, 0.1
    # points: thr .8 (fpr 0, fnr .5); thr .75 (fpr .5, fnr .5) -> crossing at the point: EER .5
    assert eer([0.8, 0.7, 0.75, 0.1], [1, 1, 0, 0])[0] == pytest.approx(0.5)
    # a tie between a positive and a negative (0.5) moves fpr and fnr in one step:
    # points (fpr, fnr) = (0, .5) at 0.9 and (.5, 0) at 0.5; the segment crosses
    # fpr = fnr halfway: EER 0.25 at threshold 0.7
    rate, thr = eer([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.7)


def test_eer_separable_and_inverted():
    assert eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])[0] == pytest.approx(0.0)
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == pytest.approx(1.0)


def test_auc_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y * 0.8
    s[::7] = np.round(s[::7], 1)  # ties
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert verification_report(s, y)["auc"] == pytest.approx(roc_auc_score(y, s))


def test_tar_at_far():
    s = np.r_[np.linspace(0.5, 1.0, 10), np.linspace(0.0, 0.45, 99), 0.55]
    y = np.r_[np.ones(10), np.zeros(100)].astype(int)
    # exactly one negative (0.55) is above the lowest positive (0.5)
    assert tar_at_far(s, y, 0.01) == pytest.approx(1.0)
    assert tar_at_far(s, y, 0.001) == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        tar_at_far(s, y, 0.0)


def test_best_threshold_hand_case():
    s = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]
    y = [1, 1, 0, 1, 0, 0]
    thr, acc = best_threshold(s, y)
    # Best cuts: above 0.7 (5/6... no: predicts 0.3 wrong -> 5/6) or above 0.3 (0.7 wrong -> 5/6);
    # the first (strictest) is kept: midway between 0.8 and 0.7.
    assert acc == pytest.approx(5 / 6)
    assert thr == pytest.approx(0.75)
    assert accuracy_at(s, y, thr) == pytest.approx(acc)


def test_best_threshold_ties_never_split():
    s = [0.5, 0.5, 0.5, 0.5]
    y = [1, 0, 1, 1]
    thr, acc = best_threshold(s, y)
    assert acc == pytest.approx(0.75)
    assert accuracy_at(s, y, thr) == pytest.approx(0.75)


def test_best_threshold_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = rng.integers(2, 30)
        s = np.round(rng.normal(size=n), 1)
        y = rng.integers(0, 2, n)
        cand = np.r_[np.unique(s), np.inf]
        brute = max(np.mean((s >= t) == (y == 1)) for t in cand)
        thr, acc = best_threshold(s, y)
        assert acc == pytest.approx(brute)
        assert accuracy_at(s, y, thr) == pytest.approx(acc)


def test_kfold_uses_other_folds_threshold():
    # fold 0 alone would be perfect with threshold 0.15 (its positives 0.2, negatives 0.1);
    # folds 1 and 2 demand a threshold near 0.6, which rejects fold 0's positives.
    s = np.array([0.2, 0.2, 0.1, 0.1,
                  0.9, 0.8, 0.4, 0.3, 0.25,
                  0.9, 0.7, 0.45, 0.35, 0.25])
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0])
    folds = np.array([0] * 4 + [1] * 5 + [2] * 5)
    thr0, acc0 = best_threshold(s[folds == 0], y[folds == 0])
    assert acc0 == 1.0  # own-fold threshold would give 100%
    mean, std, per = kfold_accuracy(s, y, folds)
    assert per == pytest.approx([0.5, 1.0, 1.0])
    assert mean == pytest.approx(2.5 / 3)
    assert std == pytest.approx(np.std([0.5, 1.0, 1.0]))


def test_report_keys_and_kfold():
    rng = np.random.default_rng(0)
    y = np.tile([1, 0], 50)
    s = rng.normal(size=100) + y
    folds = np.repeat(np.arange(10), 10)
    r = verification_report(s, y, folds)
    for key in ("eer", "eer_threshold", "auc", "tar_at_far_1e-3", "tar_at_far_1e-2", "best_threshold",
                "accuracy", "kfold_accuracy_mean", "kfold_accuracy_std", "kfold_accuracies"):
        assert key in r
    assert r["n_pairs"] == 100 and r["n_same"] == 50 and len(r["kfold_accuracies"]) == 10
    assert r["kfold_accuracy_mean"] <= r["accuracy"] + 1e-12  # held-out thresholds can't beat the best


@pytest.mark.parametrize(
    "scores, labels, exc, pattern",
    [
        ([0.1, 0.2], [1], ValueError, "same length"),
        ([0.1, 0.2], [1, 1], ValueError, "both"),
        ([0.1, float("nan")], [1, 0], ValueError, "NaN"),
        ([0.1, 0.2], [1, 2], ValueError, "0/1"),
        ([[0.1, 0.2]], [[1, 0]], ValueError, "1-D"),
        (["a", "b"], [1, 0], TypeError, "numeric"),
    ],
)
def test_bad_inputs(scores, labels, exc, pattern):
    with pytest.raises(exc, match=pattern):
        eer(scores, labels)


def test_kfold_bad_folds():
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_accuracy([0.1, 0.9], [0, 1], np.array([0, 0]))
    with pytest.raises(ValueError, match="shape"):
        kfold_accuracy([0.1, 0.9], [0, 1], np.array([0]))


@pytest.mark.parametrize("seed", range(6))
def test_roc_matches_sklearn(seed):
    """The NumPy ROC equals sklearn's roc_curve(drop_intermediate=False), ties included."""
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    s = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # rounding makes ties
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    for got, want in zip(roc(s, y), roc_curve(y, s, drop_intermediate=False)):
        assert np.array_equal(got, want)
