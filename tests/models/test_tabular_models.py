import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from kmi.models import KerasMLPClassifier
from kmi.targets import Target


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    return X, np.where(X[:, 0] + X[:, 1] > 0, "a", "b")


def test_keras_mlp_classifier_learns_and_is_a_target():
    X, y = _data()
    model = KerasMLPClassifier((16,), epochs=40, learning_rate=1e-2, random_state=0).fit(X, y)
    assert model.score(X, y) > 0.9
    np.testing.assert_array_equal(model.classes_, ["a", "b"])
    proba = model.predict_proba(X[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    target = Target(model)
    assert target.task == "classification" and list(target.classes_) == ["a", "b"]
    assert "loss" in model.history_


def test_keras_mlp_classifier_is_seeded_and_clonable():
    X, y = _data()
    a = KerasMLPClassifier((8,), epochs=3, random_state=1).fit(X, y).predict_proba(X)
    b = KerasMLPClassifier((8,), epochs=3, random_state=1).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    est = KerasMLPClassifier((8,), epochs=3)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.predict(X)
    with pytest.raises(ValueError, match="NaN"):
        est.fit(np.full((4, 2), np.nan), [0, 1, 0, 1])
