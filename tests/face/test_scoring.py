"""PLDA back-end: scores equal the Gaussian log-likelihood ratio on a hand-made model, fit recovers a
known model, and a checkpoint stores it as plain arrays that load with weights_only=True."""
import numpy as np
import pytest
import torch

from fastconv.face.scoring import (CosineScorer, PLDAScorer, choose_scorer, fit_plda, plda_from_covariances,
                                   scorer_from_state, state_as_tensors, stored_scorer)


def _log_normal(x, cov):
    """log N(x; 0, cov) for x (P, n) written out (slogdet + solve), independent of the scorer's algebra."""
    _, logdet = np.linalg.slogdet(cov)
    quad = np.einsum("pi,pi->p", x, np.linalg.solve(cov, x.T).T)
    return -0.5 * (x.shape[1] * np.log(2 * np.pi) + logdet + quad)


def test_plda_score_is_the_gaussian_likelihood_ratio_of_a_hand_made_model():
    mean = np.array([1.0, -2.0, 0.5])
    between = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]])
    within = np.array([[0.5, 0.1, 0.0], [0.1, 0.4, 0.0], [0.0, 0.0, 0.3]])
    scorer = plda_from_covariances(mean, between, within)
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(7, 3)) * 2 + mean, rng.normal(size=(7, 3)) * 2 + mean
    tot = between + within
    same = np.block([[tot, between], [between, tot]])
    diff = np.block([[tot, np.zeros((3, 3))], [np.zeros((3, 3)), tot]])
    joint = np.hstack([x1 - mean, x2 - mean])
    expected = _log_normal(joint, same) - _log_normal(joint, diff)
    np.testing.assert_allclose(scorer.score(x1, x2), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(scorer.score(x1, x2), scorer.score(x2, x1), atol=1e-12)  # symmetric


def test_plda_one_dimension_by_hand():
    # x = y + e, y ~ N(0, 3), e ~ N(0, 1): for u = v = 1 the ratio is
    # N2([1,1]; [[4,3],[3,4]]) / N(1; 4)^2 = exp(-1/7 + 1/4) * 4 / sqrt(7)
    scorer = plda_from_covariances([0.0], [[3.0]], [[1.0]])
    expected = -1 / 7 + 1 / 4 + np.log(4 / np.sqrt(7))
    assert scorer.score([[1.0]], [[1.0]])[0] == pytest.approx(expected, abs=1e-12)


def test_fit_recovers_a_known_model_and_separates_identities():
    rng = np.random.default_rng(1)
    d, n_id, per = 4, 400, 6
    b_true, w_true = np.diag([4.0, 2.0, 1.0, 0.5]), np.diag([0.5, 0.5, 1.0, 1.0])
    ids = rng.multivariate_normal(np.zeros(d), b_true, n_id)
    x = np.repeat(ids, per, 0) + rng.multivariate_normal(np.zeros(d), w_true, n_id * per) + 3.0
    y = np.repeat(np.arange(n_id), per)
    fitted = fit_plda(x, y, reg=0.0)
    truth = plda_from_covariances(np.full(d, 3.0), b_true, w_true)
    np.testing.assert_allclose(np.sort(fitted.psi), np.sort(truth.psi), rtol=0.2)
    a, b = x[0::per][:200], x[1::per][:200]  # same-identity pairs
    c = x[0::per][200:400]  # different identities
    assert (fitted.score(a, b).mean() > 0) and (fitted.score(a, c).mean() < 0)
    np.testing.assert_allclose(fitted.score(a, c), truth.score(a, c), atol=0.35 * np.abs(truth.score(a, c)).max())


def test_fit_rejects_unusable_input():
    with pytest.raises(ValueError, match=">= 2 identities"):
        fit_plda(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        fit_plda(np.array([[np.nan, 0.0], [1, 1], [2, 2]]), np.array([0, 0, 1]))


def test_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    scorer = plda_from_covariances([0.0, 1.0], [[2.0, 0.0], [0.0, 1.0]], [[1.0, 0.2], [0.2, 1.0]])
    scorer.threshold = -0.25
    path = tmp_path / "ckpt.pt"
    torch.save({"meta": {"scorer": state_as_tensors(scorer.to_state())}}, path)
    meta = torch.load(path, weights_only=True)["meta"]
    back = stored_scorer(meta)
    x = np.array([[0.3, 0.1], [1.0, -1.0]])
    np.testing.assert_array_equal(back.score(x, x[::-1]), scorer.score(x, x[::-1]))
    assert back.threshold == -0.25


def test_bad_stored_scorer_and_scorer_choice():
    with pytest.raises(ValueError, match="do not fit"):
        scorer_from_state({"name": "plda", "mean": np.zeros(2), "transform": np.zeros((1, 3)), "psi": np.ones(1)})
    with pytest.raises(ValueError, match="bad stored scorer"):
        stored_scorer({"scorer": {"name": "plda", "mean": np.zeros(2)}})
    assert stored_scorer({}) is None
    assert isinstance(choose_scorer("auto", None), CosineScorer)
    plda = PLDAScorer(np.zeros(1), np.ones((1, 1)), np.ones(1))
    assert choose_scorer("auto", plda) is plda and isinstance(choose_scorer("cosine", plda), CosineScorer)
    with pytest.raises(ValueError, match="stores no PLDA"):
        choose_scorer("plda", None)
    e = np.array([[0.6, 0.8], [1.0, 0.0]])
    np.testing.assert_allclose(CosineScorer().score(e, e[::-1]), [0.6, 0.6])
