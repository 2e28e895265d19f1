import pickle

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression

from kmi.targets import AccessError, QueryBudgetExceededError, Target, as_target


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X, y, LogisticRegression(max_iter=1000).fit(X, y)


def test_sklearn_target_probabilities_and_counts(iris):
    X, y, model = iris
    target = Target(model, batch_size=32)
    p = target.query(X)
    np.testing.assert_allclose(p, model.predict_proba(X))
    assert target.n_queries_ == len(X)
    assert target.n_calls_ == int(np.ceil(len(X) / 32))  # batched, not one row per call
    assert target.access == "white-box"
    np.testing.assert_array_equal(target.classes_, [0, 1, 2])


def test_outputs(iris):
    X, _, model = iris
    p = model.predict_proba(X[:10])
    np.testing.assert_array_equal(Target(model, output="label").query(X[:10]), p.argmax(1))
    np.testing.assert_allclose(Target(model, output="logits").query(X[:10]), np.log(p), rtol=1e-6)
    top = Target(model, output="top-k", top_k=2).query(X[:10])
    assert np.all((top > 0).sum(axis=1) == 2)
    np.testing.assert_allclose(top.max(axis=1), p.max(axis=1), rtol=1e-6)
    rounded = Target(model, output="rounded", decimals=1).query(X[:10])
    np.testing.assert_allclose(rounded, np.round(p, 1), atol=1e-6)


def test_label_only_target_answers_labels(iris):
    X, _, model = iris
    target = Target(model, access="label-only")
    assert target.output == "label"
    assert target.query(X[:3]).shape == (3,)
    with pytest.raises(ValueError, match="label-only target can only answer with labels"):
        Target(model, access="label-only", output="probabilities")


def test_full_scores_are_refused_below_white_box(iris):
    """A label-only or black-box target answers through query (and predict) alone:
    Target.scores, the scores before the output rules, needs white-box access."""
    X, _, model = iris
    for access, output in [("label-only", "label"), ("black-box", "rounded")]:
        target = Target(model, access=access, output=output)
        with pytest.raises(AccessError, match=f"target is {access}"):
            target.scores(X[:3])
        assert target.n_queries_ == 0  # refused before anything is asked
        np.testing.assert_array_equal(target.predict(X[:3]), model.predict(X[:3]))
    np.testing.assert_allclose(Target(model).scores(X[:3]), model.predict_proba(X[:3]))


def test_keras_target_with_logits_and_softmax():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4)).astype("float32")
    logits_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    target = Target(logits_model)
    assert target.from_logits and target.task == "classification"
    p = target.query(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits_model(X)))
    np.testing.assert_allclose(p, expected, rtol=1e-4, atol=1e-6)
    softmax_model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]
    )
    assert not Target(softmax_model).from_logits
    sigmoid_model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")]
    )
    assert Target(sigmoid_model).query(X).shape == (20, 2)


def test_regression_targets():
    X = np.arange(20, dtype=float).reshape(10, 2)
    model = LinearRegression().fit(X, X.sum(axis=1))
    target = Target(model)
    assert target.task == "regression" and target.classes_ is None
    np.testing.assert_allclose(target.query(X), X.sum(axis=1))
    keras_reg = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert Target(keras_reg).task == "regression"


def test_callable_target_must_return_probabilities():
    target = Target(lambda X: np.asarray(X)[:, :2] * 10.0)
    assert target.access == "black-box"
    with pytest.raises(ValueError, match="from_logits=True"):
        target.query(np.ones((3, 2)))
    ok = Target(lambda X: np.asarray(X)[:, :2], from_logits=True).query(np.ones((3, 2)))
    np.testing.assert_allclose(ok, 0.5)


def test_query_budget(iris):
    X, _, model = iris
    target = Target(model, query_budget=100)
    target.query(X[:60])
    with pytest.raises(QueryBudgetExceededError, match="Query budget exhausted") as info:
        target.query(X[:60])
    assert info.value.n_queries == 60 and info.value.requested == 60
    assert target.n_queries_ == 60  # the refused query was not made
    target.reset_queries().query(X[:100])


def test_access_levels(iris):
    _, _, model = iris
    target = Target(model, access="black-box")
    assert target.allows("label-only") and target.allows("black-box")
    assert not target.allows("white-box")
    with pytest.raises(AccessError, match="needs white-box access.*lacks the model's weights"):
        target.require("white-box", attack="MIFace")


def test_label_index_mismatch(iris):
    _, _, model = iris
    target = Target(model)
    np.testing.assert_array_equal(target.label_index([2, 0]), [2, 0])
    with pytest.raises(ValueError, match="do not match the target's output"):
        target.label_index([0, 5])


def test_clone_shares_and_pickle_keeps(iris):
    X, _, model = iris
    target = Target(model, access="black-box", query_budget=10)
    assert clone(target) is target
    copy = pickle.loads(pickle.dumps(target))
    np.testing.assert_allclose(copy.query(X[:2]), target.query(X[:2]))
    assert as_target(target) is target


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"access": "grey-box"}, "access must be one of"),
        ({"output": "scores"}, "output must be one of"),
        ({"output": "top-k", "top_k": 0}, "top_k must be a positive integer"),
        ({"query_budget": -1}, "query_budget must be"),
        ({"batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_arguments(iris, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Target(iris[2], **kwargs)


def test_not_a_model():
    with pytest.raises(ValueError, match="Target needs a keras.Model"):
        Target(42)
    with pytest.raises(ValueError, match="No target"):
        as_target(None)


def test_embedding_task_returns_vectors_of_a_callable_on_strings():
    def encoder(texts):
        return np.array([[len(t), -1.5] for t in texts])

    target = Target(encoder, task="embedding")
    out = target.query(["ab", "abcd", "a"])
    np.testing.assert_array_equal(out, [[2, -1.5], [4, -1.5], [1, -1.5]])
    assert target.n_queries_ == 3 and target.classes_ is None
    rounded = Target(lambda t: np.full((len(t), 2), 0.123), task="embedding", output="rounded")
    np.testing.assert_array_equal(rounded.query(["x"]), [[0.12, 0.12]])
    with pytest.raises(ValueError, match="non-finite"):
        Target(lambda t: np.full((len(t), 2), np.nan), task="embedding").query(["x"])
    with pytest.raises(ValueError, match="Received: task='vectors'"):
        Target(encoder, task="vectors")


def test_sequence_probabilities_are_checked_on_the_last_axis():
    probs = np.full((2, 3, 4), 0.25)
    target = Target(lambda x: probs[: len(x)])
    assert target.query(np.zeros((2, 3))).shape == (2, 3, 4)
    assert target.predict(np.zeros((2, 3))).shape == (2, 3)


def test_as_target_wraps_with_options_and_refuses_options_for_a_target(iris):
    _, _, model = iris
    target = as_target(model, access="label-only")
    assert isinstance(target, Target) and target.output == "label"
    with pytest.raises(ValueError, match=r"set the options on the Target itself.*Received:"):
        as_target(target, access="black-box")


def test_access_error_is_a_value_error_ending_with_received(iris):
    _, _, model = iris
    assert issubclass(AccessError, ValueError)
    with pytest.raises(ValueError, match=r"Received: access='label-only'$"):
        Target(model, access="label-only").require("black-box", attack="MyAttack")
    assert Target(model, access="white-box").require("label-only") is not None


def test_record_queries_counts_within_the_budget(iris):
    _, _, model = iris
    target = Target(model, query_budget=5)
    target.record_queries(3)
    assert (target.n_queries_, target.n_calls_) == (3, 1)
    with pytest.raises(QueryBudgetExceededError, match=r"Received: query_budget=5$") as info:
        target.record_queries(3)
    assert issubclass(QueryBudgetExceededError, RuntimeError)
    assert (info.value.n_queries, info.value.query_budget, info.value.requested) == (3, 5, 3)
    assert target.n_queries_ == 3  # nothing counted for the refused rows
