import keras
import numpy as np
import pytest

from kmi.defenses import (
    ConfidenceNoise,
    LabelOnly,
    ReverseSigmoid,
    RoundConfidence,
    TopK,
    confidence_noise,
    reverse_sigmoid,
)


def _probs(n=32, c=5, seed=0):
    z = np.random.default_rng(seed).normal(size=(n, c)) * 2
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype("float32")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_reverse_sigmoid_is_a_distribution_that_flattens_confidence():
    p = _probs()
    out = _np(reverse_sigmoid(p, beta=1.0, gamma=0.1))
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(out, p)
    np.testing.assert_allclose(_np(reverse_sigmoid(p, beta=0.0)), p, atol=1e-6)


def test_reverse_sigmoid_matches_the_formula():
    p = np.array([[0.7, 0.2, 0.1]], dtype="float32")
    beta, gamma = 0.5, 0.3
    r = beta * (1 / (1 + np.exp(-gamma * np.log(p / (1 - p)))) - 0.5)
    expected = np.maximum(p - r, 0)
    expected /= expected.sum()
    np.testing.assert_allclose(_np(reverse_sigmoid(p, beta, gamma)), expected, rtol=1e-5)


def test_confidence_noise_is_a_distribution_and_seeded():
    p = _probs()
    a = _np(confidence_noise(p, 0.5, seed=3))
    b = _np(confidence_noise(p, 0.5, seed=3))
    np.testing.assert_array_equal(a, b)
    assert np.all(a >= 0)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(a, p, atol=1e-3)
    np.testing.assert_allclose(_np(confidence_noise(p, 0.0)), p, atol=1e-5)


@pytest.mark.parametrize(
    "layer, sums_to_one",
    [
        (RoundConfidence(1, renormalize=True), True),
        (TopK(2, renormalize=True), True),
        (TopK(2), False),
        (ConfidenceNoise(0.3, seed=0), True),
        (ReverseSigmoid(0.8, 0.2), True),
        (LabelOnly(one_hot=True), True),
    ],
)
def test_layers_return_valid_outputs(layer, sums_to_one):
    p = _probs()
    out = _np(layer(p))
    assert out.shape == p.shape and np.all(out >= 0)
    if sums_to_one:
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)


def test_label_only_layer_and_top_k():
    p = _probs()
    np.testing.assert_array_equal(_np(LabelOnly()(p)), p.argmax(1))
    top = _np(TopK(2)(p))
    assert np.all((top > 0).sum(1) == 2)
    np.testing.assert_array_equal(top.argmax(1), p.argmax(1))


def _served(layer):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, activation="softmax"), layer]
    )
    return model


@pytest.mark.parametrize(
    "layer",
    [
        RoundConfidence(2),
        TopK(3, renormalize=True),
        LabelOnly(),
        LabelOnly(one_hot=True),
        ConfidenceNoise(0.2, seed=5),
        ReverseSigmoid(0.7, 0.4),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layer_config_and_save_load_round_trip(layer, tmp_path):
    again = type(layer).from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    model = _served(layer)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    path = tmp_path / "served.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.layers[-1]) is type(layer)
    assert loaded.layers[-1].get_config() == layer.get_config()
    if isinstance(layer, ConfidenceNoise):
        out = loaded.predict(x, verbose=0)
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)
    else:
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
        )


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: RoundConfidence(-1), "decimals"),
        (lambda: TopK(0), "k must"),
        (lambda: ConfidenceNoise(-0.1), "stddev"),
        (lambda: ReverseSigmoid(beta=-1.0), "beta"),
        (lambda: ReverseSigmoid(gamma=0.0), "gamma"),
    ],
)
def test_layer_errors(factory, match):
    with pytest.raises(ValueError, match=f"{match}.*Received"):
        factory()
