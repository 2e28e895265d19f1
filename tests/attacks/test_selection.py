"""Result selection (Plug & Play Attacks): ranking an attack's candidate images."""

import keras
import numpy as np
import pytest

from kmi.attacks import GMI, KEDMI
from kmi.attacks.image import select_candidates
from kmi.models import softmax_regression
from kmi.targets import QueryBudgetExceededError, Target


@pytest.fixture(scope="module")
def model():
    return softmax_regression((8, 8, 1), 3, seed=0)


def test_same_seed_same_ranking_and_never_fewer_than_asked(model):
    candidates = np.random.default_rng(0).uniform(size=(3, 6, 8, 8, 1)).astype("float32")
    labels = [0, 2, 1]
    first = select_candidates(Target(model), candidates, labels, n_keep=4, random_state=0)
    again = select_candidates(Target(model), candidates, labels, n_keep=4, random_state=0)
    other = select_candidates(Target(model), candidates, labels, n_keep=4, random_state=1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[1], other[1])  # other crops, other scores
    flipped = select_candidates(
        Target(model), candidates, labels, n_keep=4, flip=True, random_state=0
    )
    assert not np.allclose(first[1], flipped[1])  # mirrored crops: other scores
    index, score = first
    assert index.shape == (3, 4) and score.shape == (3, 6)
    for row, kept in enumerate(index):  # distinct, best first, the best ones
        assert len(set(kept)) == 4
        assert np.all(np.diff(score[row, kept]) <= 0)
        assert score[row, kept[-1]] >= np.delete(score[row], kept).max()
    # a candidate scored NaN (by a scorer that is not a Target, which would
    # refuse it) ranks last but still fills its place
    candidates[2, 2] = np.nan
    index, score = select_candidates(_MeanPixel(), candidates, labels, n_keep=6)
    assert np.isnan(score[2, 2]) and index[2, -1] == 2
    assert all(sorted(row) == list(range(6)) for row in index)


def test_robust_selection_prefers_the_candidate_that_survives_crops():
    # The target's class 1 fires on the top-left pixel (weight 20) or, more weakly,
    # on brightness everywhere (0.5 a pixel); class 0 is a constant 4. Candidate A
    # lights only the top-left pixel: the surest on its own, gone from most crops.
    # Candidate B is a uniform grey: a little less sure, the same under any crop.
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    net = keras.Model(inputs, keras.layers.Softmax()(logits))
    w = np.zeros((64, 2), "float32")
    w[:, 1] = 0.5
    w[0, 1] = 20.0
    net.layers[2].set_weights([w, np.array([4.0, 0.0], "float32")])
    a = np.zeros((8, 8, 1), "float32")
    a[0, 0] = 1.0
    b = np.full((8, 8, 1), 0.3, "float32")
    candidates = np.stack([a, b])[None]
    by_loss, loss_score = select_candidates(Target(net), candidates, [1], selection="loss")
    target = Target(net)
    by_crops, crop_score = select_candidates(target, candidates, [1], random_state=0)
    assert by_loss[0, 0] == 0 and loss_score[0, 0] > loss_score[0, 1]
    assert by_crops[0, 0] == 1 and crop_score[0, 1] > 0.99 > crop_score[0, 0]
    assert target.n_queries_ == 2 * 16  # every crop of every candidate, counted


def test_select_candidates_errors_and_budget(model):
    candidates = np.zeros((2, 3, 8, 8, 1), "float32")
    target = Target(model, query_budget=40)
    with pytest.raises(ValueError, match=r"n_keep must be an integer from 1 to .* \(3\)"):
        select_candidates(target, candidates, [0, 1], n_keep=4)
    with pytest.raises(ValueError, match=r"shape \(n_labels, n_candidates, height"):
        select_candidates(target, candidates[0], [0, 1])
    with pytest.raises(ValueError, match="one label per row of images"):
        select_candidates(target, candidates, [0])
    with pytest.raises(ValueError, match="selection must be one of"):
        select_candidates(target, candidates, [0, 1], selection="best")
    # 2 x 3 candidates x 16 crops = 96 rows: refused before any is scored
    with pytest.raises(QueryBudgetExceededError, match="asks for 96 more"):
        select_candidates(target, candidates, [0, 1])
    assert target.n_queries_ == 0


@pytest.mark.parametrize(
    "Attack, params, many",
    [
        (GMI, {"n_restarts": 3, "max_iter": 3}, "restart"),
        (KEDMI, {"n_draws": 3, "n_samples": 2, "max_iter": 3}, "draw"),
    ],
)
def test_attacks_pick_by_their_selection_from_the_same_candidates(model, Attack, params, many):
    public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    gan = {"gan_steps": 2, "gan_width": 4, "latent_dim": 4, "random_state": 0}
    runs = {}
    for selection in ("loss", "robust"):
        target = Target(model)
        attack = Attack(target, **gan, **params, selection=selection).fit(public)
        before = target.n_queries_
        images = attack.invert([0, 2])
        runs[selection] = (attack, images, target.n_queries_ - before)
    (plain, plain_images, plain_queries), (robust, robust_images, robust_queries) = (
        runs["loss"],
        runs["robust"],
    )
    assert robust.selection_scores_.shape == (2, 3)
    # "loss" returns the candidate of the lowest identity loss
    np.testing.assert_allclose(plain.selection_scores_.max(axis=1), -plain.loss_, rtol=1e-5)
    # the same seed gives the same candidates; only the pick differs
    best = robust.selection_scores_.argmax(axis=1)
    if many == "restart":
        np.testing.assert_allclose(plain.restart_latents_, robust.restart_latents_)
        np.testing.assert_allclose(robust.loss_, robust.restart_losses_[[0, 1], best])
        np.testing.assert_allclose(robust.latents_, robust.restart_latents_[[0, 1], best])
    else:
        np.testing.assert_allclose(plain.mu_, robust.mu_)
    assert robust_queries == plain_queries + 2 * 3 * 16  # 16 crops of every candidate
    assert robust_images.shape == plain_images.shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="selection"):
        Attack(Target(model), **gan, selection="best").fit(public)


class _MeanPixel:
    """Scores an image by its mean pixel (class 1) and one minus it (class 0)."""

    def scores(self, X):
        m = np.asarray(X).reshape(len(X), -1).mean(axis=1)
        return np.stack([1 - m, m, np.zeros_like(m)], axis=1)
