"""purified(): a defense-aware attacker's view of a trapdoored model."""

import keras
import numpy as np
import pytest

from kmi.attacks import MIFace
from kmi.attacks.image import purified
from kmi.attacks.image._purify import gaussian_kernel
from kmi.models import softmax_regression
from kmi.targets import Target


def _blur_of(images, sigma=1.0):
    """What the model behind purified() sees: the blur alone (an identity model)."""
    identity = keras.Sequential([keras.Input(images.shape[1:]), keras.layers.Identity()])
    blurred = purified(identity, sigma)
    return np.asarray(blurred.predict(images, verbose=0))


def test_the_blur_keeps_flat_images_and_removes_a_fine_trigger():
    flat = np.full((1, 12, 12, 1), 0.7, dtype="float32")
    np.testing.assert_allclose(_blur_of(flat)[0, 3:9, 3:9], 0.7, rtol=1e-5)
    # a checkerboard trigger, the finest pattern there is, loses over 90% of itself
    board = (np.indices((12, 12)).sum(0) % 2 - 0.5).astype("float32")[None, :, :, None]
    assert np.abs(_blur_of(board)[0, 3:9, 3:9]).max() < 0.05
    assert gaussian_kernel(1.0, 3).shape == (5, 5, 3, 1)
    np.testing.assert_allclose(gaussian_kernel(2.0, 1).sum(), 1.0, rtol=1e-6)


def test_it_saves_and_an_attack_inverts_through_it(tmp_path):
    model = softmax_regression((8, 8, 1), 3, seed=0)
    wrapped = purified(model)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    path = tmp_path / "purified.keras"
    wrapped.save(path)
    back = keras.saving.load_model(path)
    np.testing.assert_allclose(back.predict(x, verbose=0), wrapped.predict(x, verbose=0))
    assert not back.get_layer("purify_blur").trainable_weights
    attack = MIFace(Target(wrapped), max_iter=20, random_state=0).fit()
    images = attack.invert([0, 2])
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    # the search moved the images: the gradient reached them through the blur
    start = MIFace(Target(wrapped), max_iter=0, random_state=0).fit()
    start.invert([0, 2])
    assert attack.loss_.mean() < start.loss_.mean()


def test_bad_input_is_refused_with_what_to_do():
    model = softmax_regression((8, 8, 1), 3, seed=0)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        purified(model, sigma=0)
    with pytest.raises(ValueError, match="must be a Keras model"):
        purified(lambda x: x)
    flat = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="height, width, channels"):
        purified(flat)
