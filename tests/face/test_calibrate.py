"""Threshold calibration on validation pairs: best accuracy vs the median over disjoint groups of people."""
import numpy as np
import pytest

from fastconv.face.calibrate import calibrate_threshold, people_of_pairs
from fastconv.face.metrics import best_threshold


def test_people_are_the_components_of_the_same_pairs():
    pairs = np.array([[0, 1], [1, 2], [3, 4], [0, 3], [5, 6]])
    same = np.array([True, True, True, False, False])
    person = people_of_pairs(pairs, same)
    assert person[0] == person[1] == person[2] and person[3] == person[4]
    assert len({person[0], person[3], person[5], person[6]}) == 4  # different pairs join no one


def _hand_made():
    """4 people, each with one same pair and one different pair (image indices 10 p + k). Person 3's
    pairs are odd: its same pair scores 0.2, below its different pair's 0.35."""
    same_s = {0: 0.8, 1: 0.7, 2: 0.6, 3: 0.2}
    diff_s = {0: 0.1, 1: 0.3, 2: 0.0, 3: 0.35}
    pairs, same, scores = [], [], []
    for p in range(4):
        pairs += [[10 * p, 10 * p + 1], [10 * p, 10 * ((p + 1) % 4) + 5]]
        same += [True, False]
        scores += [same_s[p], diff_s[p]]
    return np.array(scores), np.array(same), np.array(pairs)


def test_cv_median_is_the_median_of_the_groups_best_thresholds():
    scores, same, pairs = _hand_made()
    # 4 people in 4 groups (folds=4): each group = one person's two pairs, best threshold midway between them
    # when separable: person 0 (0.8 / 0.1) -> 0.45, 1 (0.7 / 0.3) -> 0.5, 2 (0.6 / 0.0) -> 0.3; person 3 has
    # its same pair below its different pair: best is "all different" above 0.35 -> nextafter(0.35)
    per_person = [0.45, 0.5, 0.3, float(np.nextafter(0.35, np.inf))]
    want = float(np.median(per_person))
    assert calibrate_threshold(scores, same, pairs, "cv-median", folds=4) == pytest.approx(want, abs=1e-12)
    # best on all 8 pairs: cut between 0.35 and 0.3 gets 7/8 right
    thr, acc = best_threshold(scores, same.astype(np.int64))
    assert calibrate_threshold(scores, same, pairs, "best") == thr and acc == 7 / 8
    assert thr != pytest.approx(want)


def test_cv_median_holds_on_new_people_where_the_best_threshold_overfits():
    """Scores of new people: same ~ N(0.5, 0.15), different ~ N(0.1, 0.15) -> the accuracy-optimal
    threshold is 0.3. With 40 validation people (80 pairs), the median of five groups' thresholds lands
    nearer 0.3 than the all-pairs best threshold on most draws, and never far from it."""
    rng = np.random.default_rng(0)
    err_best, err_cv = [], []
    for _ in range(200):
        n = 40
        scores = np.r_[rng.normal(0.5, 0.15, n), rng.normal(0.1, 0.15, n)]
        same = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        pairs = np.r_[np.c_[10 * np.arange(n), 10 * np.arange(n) + 1],
                      np.c_[10 * np.arange(n), 10 * ((np.arange(n) + 1) % n) + 5]]
        err_best.append(abs(calibrate_threshold(scores, same, pairs, "best") - 0.3))
        err_cv.append(abs(calibrate_threshold(scores, same, pairs, "cv-median", folds=5, seed=1) - 0.3))
    assert np.mean(err_cv) < np.mean(err_best)
    assert max(err_cv) < 0.2


def test_bad_calibration_arguments():
    scores, same, pairs = _hand_made()
    with pytest.raises(ValueError, match="best, cv-median"):
        calibrate_threshold(scores, same, pairs, "magic")
    with pytest.raises(ValueError, match="needs the pairs"):
        calibrate_threshold(scores, same, None, "cv-median")
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        calibrate_threshold(scores, same, pairs, "cv-median", folds=1)
