"""Image model-inversion attacks on tiny 8x8-digits targets (both backends)."""

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from kmi.attacks import DeepInversion, MIFace
from kmi.datasets import load_digits
from kmi.metrics.image import attack_accuracy
from kmi.models import cnn_classifier, evaluation_classifier, softmax_regression
from kmi.targets import AccessError, Target

CHANCE = 0.1


def _train(model, X, y, epochs, from_logits=True):
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )
    model.fit(X, y, epochs=epochs, batch_size=64, verbose=0, shuffle=False)
    return model


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def softmax_target(digits):
    keras.utils.set_random_seed(1)
    X, y = digits
    return _train(softmax_regression((8, 8, 1), 10), X[::2], y[::2], 30, from_logits=False)


@pytest.fixture(scope="module")
def cnn_target(digits):
    keras.utils.set_random_seed(2)
    X, y = digits
    model = cnn_classifier((8, 8, 1), 10, filters=(16, 32), dense_units=64)
    return _train(model, X[::2], y[::2], 25)


@pytest.fixture(scope="module")
def eval_model(digits):
    keras.utils.set_random_seed(3)
    X, y = digits
    model = evaluation_classifier((8, 8, 1), 10, width=8, augment=False, seed=3)
    return _train(model, X, y, 25)


def test_eval_model_is_accurate(digits, eval_model):
    X, y = digits
    scores = keras.ops.convert_to_numpy(eval_model(X[1::2], training=False))
    assert (scores.argmax(1) == y[1::2]).mean() > 0.8


# ----------------------------------------------------------------------------- MIFace
def test_miface_end_to_end_beats_chance(digits, softmax_target, eval_model):
    X, y = digits
    attack = MIFace(softmax_target, max_iter=200, learning_rate=1.0, contrast="stretch")
    images = attack.fit(X).invert(np.arange(10))
    assert images.shape == (10, 8, 8, 1) and 0 <= images.min() and images.max() <= 1
    assert attack.loss_.max() < 0.05
    acc = attack_accuracy(eval_model, images, np.arange(10), top_k=1)
    assert acc > 2 * CHANCE
    attack.set_params(eval_model=eval_model)
    assert attack.score(X, y) == acc


def test_miface_stopping_rule_and_keep_best(softmax_target):
    attack = MIFace(softmax_target, max_iter=500, learning_rate=1.0, gamma=0.5).fit()
    attack.invert([0, 1])
    assert attack.n_iter_ < 500 and (attack.loss_ <= 0.5).all()
    attack = MIFace(softmax_target, max_iter=300, learning_rate=1e-9, patience=5).fit()
    attack.invert([3])
    assert attack.n_iter_ < 300


def test_miface_processing_hook_and_inits(digits, softmax_target):
    X, _ = digits
    calls = []

    def process(images):
        calls.append(images.shape)
        return images

    attack = MIFace(softmax_target, max_iter=20, process=process, process_every=5, init="mean")
    attack.fit(X).invert([1, 2])
    assert calls == [(2, 8, 8, 1)] * 4
    a = MIFace(softmax_target, max_iter=5, init="random", random_state=0).fit().invert([4])
    b = MIFace(softmax_target, max_iter=5, init="random", random_state=0).fit().invert([4])
    np.testing.assert_array_equal(a, b)
    start = np.full((8, 8, 1), 0.5, "float32")
    out = MIFace(softmax_target, max_iter=0, init=start).fit().invert([0])
    np.testing.assert_array_equal(out[0], start)


def test_miface_errors(digits, softmax_target):
    X, _ = digits
    with pytest.raises(AccessError):
        MIFace(Target(softmax_target, access="black-box")).fit()
    with pytest.raises(NotFittedError):
        MIFace(softmax_target).invert([0])
    attack = MIFace(softmax_target, max_iter=2).fit()
    with pytest.raises(ValueError, match="Received: y values"):
        attack.invert([10])
    with pytest.raises(ValueError, match="Received: y.shape"):
        attack.invert([[0]])
    with pytest.raises(ValueError, match="Received: X.shape"):
        attack.fit(X[:, :4])
    bad = X[:3].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        attack.fit(bad)
    for params in (
        {"max_iter": -1},
        {"learning_rate": 0},
        {"optimizer": "rmsprop"},
        {"init": "mean"},
        {"contrast": "x"},
        {"patience": 0},
    ):
        with pytest.raises(ValueError, match="Received"):
            MIFace(softmax_target, **params).fit()


def test_miface_estimator_contract(softmax_target):
    target = Target(softmax_target)
    attack = MIFace(target, max_iter=3)
    assert attack.fit() is attack
    cloned = clone(attack)
    assert cloned.target is target and cloned.get_params()["max_iter"] == 3
    cloned.set_params(max_iter=4, optimizer="adam")
    assert cloned.fit().max_iter == 4
    assert cloned.invert([0]).shape == (1, 8, 8, 1)


def test_miface_deterministic(softmax_target):
    a = MIFace(softmax_target, max_iter=30, optimizer="adam", learning_rate=0.05).fit()
    np.testing.assert_array_equal(a.invert([0, 5]), a.invert([0, 5]))


# ----------------------------------------------------------------------------- DeepInversion
def test_deepinversion_end_to_end_beats_chance(digits, cnn_target, eval_model):
    X, y = digits
    attack = DeepInversion(cnn_target, max_iter=200, random_state=0, eval_model=eval_model)
    images = attack.fit().invert(np.arange(10))
    assert images.shape == (10, 8, 8, 1) and attack.n_batchnorm_ == 2
    assert attack.score(X, y) > 2 * CHANCE
    np.testing.assert_array_equal(images, attack.invert(np.arange(10)))


def test_deepinversion_errors(softmax_target, cnn_target):
    with pytest.raises(ValueError, match="BatchNormalization"):
        DeepInversion(softmax_target).fit()
    with pytest.raises(AccessError):
        DeepInversion(Target(cnn_target, access="label-only")).fit()
    with pytest.raises(ValueError, match="Received: jitter"):
        DeepInversion(cnn_target, jitter=-1).fit()
    with pytest.raises(NotFittedError):
        DeepInversion(cnn_target).invert([0])
