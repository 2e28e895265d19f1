"""Reference image architectures: shapes, errors, save/load round trip."""

import keras
import numpy as np
import pytest

from kmi.models import (
    cnn_classifier,
    dcgan_critic,
    dcgan_generator,
    evaluation_classifier,
    feature_extractor,
    mlp_classifier,
    pca_prior,
    softmax_regression,
)

BUILDERS = [
    lambda: softmax_regression((8, 8, 1), 10),
    lambda: mlp_classifier((8, 8, 1), 10, hidden_units=(16,)),
    lambda: cnn_classifier((8, 8, 1), 10, filters=(4, 8), dense_units=16),
    lambda: evaluation_classifier((8, 8, 1), 10, width=4),
    lambda: evaluation_classifier((8, 8, 1), 10, width=4, standardize=True),
    lambda: dcgan_generator(8, (16, 16, 1), width=8),
    lambda: dcgan_critic((16, 16, 1), width=8),
    lambda: dcgan_critic((16, 16, 1), width=8, n_classes=3),
    lambda: pca_prior(np.random.default_rng(0).random((12, 8, 8, 1)), 4)[0],
    lambda: pca_prior(np.random.default_rng(0).random((12, 8, 8, 1)), 4)[1],
]


@pytest.mark.parametrize("build", BUILDERS)
def test_save_load_round_trip(build, tmp_path):
    model = build()
    shape = model.inputs[0].shape[1:]
    x = np.random.default_rng(0).random((3, *shape)).astype("float32")
    before = keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    after = keras.tree.map_structure(keras.ops.convert_to_numpy, loaded(x, training=False))
    for a, b in zip(keras.tree.flatten(before), keras.tree.flatten(after)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_output_shapes_and_activation():
    assert softmax_regression((8, 8, 1), 10).output_shape == (None, 10)
    probs = softmax_regression((8, 8, 1), 10)(np.zeros((2, 8, 8, 1), "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs).sum(1), 1.0, rtol=1e-5)
    gen = dcgan_generator(8, (32, 32, 1), width=8)
    images = keras.ops.convert_to_numpy(gen(np.zeros((2, 8), "float32")))
    assert images.shape == (2, 32, 32, 1) and images.min() >= 0 and images.max() <= 1
    critic, logits = dcgan_critic((32, 32, 1), width=8, n_classes=5).output_shape
    assert critic == (None, 1) and logits == (None, 5)
    feats = feature_extractor(evaluation_classifier((8, 8, 1), 10, width=4))
    assert feats.output_shape == (None, 16)


def test_standardized_evaluator_ignores_brightness_and_contrast():
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    shifted = 0.3 * x + 0.5  # lower contrast, brighter

    def logits(model, images):
        return keras.ops.convert_to_numpy(model(images, training=False))

    keras.utils.set_random_seed(0)
    model = evaluation_classifier((8, 8, 1), 3, width=4, standardize=True)
    np.testing.assert_allclose(logits(model, shifted), logits(model, x), atol=1e-4)
    keras.utils.set_random_seed(0)
    plain = evaluation_classifier((8, 8, 1), 3, width=4)
    assert np.abs(logits(plain, shifted) - logits(plain, x)).max() > 1e-2


def test_errors():
    with pytest.raises(ValueError, match="Received: input_shape="):
        softmax_regression((8, 8), 10)
    with pytest.raises(ValueError, match="Received: n_classes=1"):
        cnn_classifier((8, 8, 1), 1)
    with pytest.raises(ValueError, match="Received: image_shape="):
        dcgan_generator(8, (28, 28, 1))
    with pytest.raises(ValueError, match="Received: output_activation="):
        mlp_classifier((8, 8, 1), 3, output_activation="relu")
    with pytest.raises(ValueError, match="Received: hidden_units="):
        mlp_classifier((8, 8, 1), 3, hidden_units=())
    with pytest.raises(ValueError, match="Received: layer='nope'"):
        feature_extractor(softmax_regression((8, 8, 1), 3), "nope")


def test_pca_prior_generator_and_critic():
    X = np.random.default_rng(0).random((30, 8, 8, 1)).astype("float32")
    generator, critic = pca_prior(X, 5, prior_weight=2.0)
    assert generator.output_shape == (None, 8, 8, 1) and critic.output_shape == (None, 1)
    assert not generator.trainable_weights and not critic.trainable_weights
    mean = keras.ops.convert_to_numpy(generator(np.zeros((1, 5), "float32")))[0]
    np.testing.assert_allclose(mean, X.mean(0), atol=1e-5)
    # Small codes stay inside [0, 1], so the critic reads the code back exactly.
    codes = 0.1 * np.random.default_rng(1).standard_normal((4, 5)).astype("float32")
    images = keras.ops.convert_to_numpy(generator(codes))
    assert images.min() >= 0 and images.max() <= 1
    scores = keras.ops.convert_to_numpy(critic(images))[:, 0]
    np.testing.assert_allclose(scores, -2.0 * (codes**2).sum(1), rtol=1e-3, atol=1e-5)
    # Codes are in standard-deviation units: the public images' codes have unit variance.
    c = -keras.ops.convert_to_numpy(pca_prior(X, 5, prior_weight=1.0)[1](X))[:, 0]
    np.testing.assert_allclose(c.mean(), 5.0, rtol=1e-3)
    # Big codes are clipped to valid images.
    big = keras.ops.convert_to_numpy(generator(100 * codes))
    assert big.min() == 0 and big.max() == 1


def test_pca_prior_errors():
    X = np.random.default_rng(0).random((6, 4, 4, 1))
    with pytest.raises(ValueError, match="from 1 to 5 .*Received: n_components=6"):
        pca_prior(X, 6)  # 6 centred images span 5 directions
    with pytest.raises(ValueError, match="Received: n_components=0"):
        pca_prior(X, 0)
    with pytest.raises(ValueError, match="Received: X.shape=.6, 4, 4."):
        pca_prior(X[..., 0], 2)
    with pytest.raises(ValueError, match="Received: prior_weight=-1"):
        pca_prior(X, 2, prior_weight=-1)
    X[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pca_prior(X, 2)
    with pytest.raises(ValueError, match="at least 2 images"):
        pca_prior(X[:1], 1)
    with pytest.raises(ValueError, match="X contains only NaN"):
        pca_prior(np.full((3, 2, 2, 1), np.nan), 1)
