"""Identification on a hand-made embedding set: gallery split, rank-1/rank-5, open-set DIR at FAR."""
import numpy as np
import pytest

from fastconv.face.identify import identification_report, open_set_threshold, split_gallery
from fastconv.face.scoring import CosineScorer, plda_from_covariances


def _unit(deg):
    r = np.radians(deg)
    return np.array([np.cos(r), np.sin(r)])


def test_split_gallery_first_image_per_person_and_singletons_as_impostors():
    g, p, imp = split_gallery(["a", "b", "a", "c", "b", "a"])
    assert g.tolist() == [0, 1] and p.tolist() == [2, 4, 5] and imp.tolist() == [3]


def test_rank_k_and_dir_by_hand():
    # gallery: people A..F at 0, 60, ..., 300 degrees on the unit circle (first image of each)
    angles = [0, 60, 120, 180, 240, 300]
    emb, labels = [_unit(a) for a in angles], list("ABCDEF")
    # probes: A at 5 deg (rank 1), B at 85 deg (closer to C at 120? no: |85-60|=25 < 35 -> rank 1),
    # C at 95 deg (60 is 35 away, 120 is 25 away -> rank 1), D at 215 deg (240 is 25 away, 180 is 35: rank 2)
    # E and F exactly on their gallery images (cosine 1)
    for lab, a in [("A", 5), ("B", 85), ("C", 95), ("D", 215), ("E", 240), ("F", 300)]:
        emb.append(_unit(a))
        labels.append(lab)
    # impostors (one image each): one near A at 2 deg (score cos 2 deg), one between at 30 deg
    for lab, a in [("X", 2), ("Y", 30)]:
        emb.append(_unit(a))
        labels.append(lab)
    rep = identification_report(np.array(emb), labels, CosineScorer(), far=0.5)
    assert rep["n_gallery"] == 6 and rep["n_probes"] == 6 and rep["n_impostors"] == 2
    assert rep["rank1"] == pytest.approx(5 / 6) and rep["rank5"] == pytest.approx(1.0)
    # FAR 0.5 of 2 impostors: one may pass, so t = the lower impostor best score, cos(30 deg);
    # genuine rank-1 probes above it: A (cos 5), B, C (cos 25), E, F (cos 0) -> 5 of 6
    assert rep["open_set_threshold"] == pytest.approx(np.cos(np.radians(30)))
    assert rep["dir_at_far_0.5"] == pytest.approx(5 / 6)
    # FAR 1 %: no impostor may pass, t = cos 2 deg: only E and F (cos 0) are above it
    rep = identification_report(np.array(emb), labels, CosineScorer(), far=0.01)
    assert rep["dir_at_far_0.01"] == pytest.approx(2 / 6)


def test_report_works_with_plda_scores_and_without_impostors():
    rng = np.random.default_rng(0)
    ids = rng.normal(size=(5, 3)) * 3
    emb = np.repeat(ids, 3, 0) + 0.1 * rng.normal(size=(15, 3))
    labels = np.repeat(np.arange(5), 3)
    plda = plda_from_covariances(np.zeros(3), 9 * np.eye(3), 0.01 * np.eye(3))
    rep = identification_report(emb, labels, plda)
    assert rep["rank1"] == 1.0 and rep["dir_at_far_0.01"] is None and rep["scorer"] == "plda"


def test_open_set_threshold_and_bad_input():
    assert open_set_threshold([0.9, 0.1, 0.5, 0.3], 0.25) == 0.5  # one of four may be above
    assert open_set_threshold([0.9, 0.1], 0.0) == 0.9
    with pytest.raises(ValueError, match=">= 2 people"):
        identification_report(np.zeros((2, 2)), ["a", "b"], CosineScorer())
