"""recover_triggers() and untrapped(): a defense-aware attacker finds a trapdoor and
unlearns it from a copy of the model."""

import keras
import numpy as np
import pytest

from kmi.attacks.image import recover_triggers, untrapped
from kmi.defenses import TrapMID

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
SHAPE = (6, 6, 1)
ALPHA = 0.2  # the trapdoor's blend, known to the attacker


def _data(n=192, seed=0):
    """Three classes of 6x6 images in [0, 1]: a bright row at the top, middle or bottom."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype("int32")
    x = rng.uniform(0.0, 0.3, (n, *SHAPE)).astype("float32")
    for i, c in enumerate(y):
        x[i, 2 * c : 2 * c + 2] += 0.6
    return x, y


def _network(seed=0):
    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", kernel_initializer=init(seed)),
            keras.layers.Dense(3, kernel_initializer=init(seed + 1)),
        ]
    )


def _fit(model):
    model.compile(keras.optimizers.Adam(0.01), SPARSE_CE)
    model.fit(*_data(), batch_size=64, epochs=30, verbose=0)
    return model


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    trapped = _fit(
        keras.Sequential([keras.Input(SHAPE), TrapMID(_network(), alpha=ALPHA, seed=0)])
    )
    return trapped, _fit(_network())


def test_the_recovered_triggers_show_a_trapdoor_that_a_clean_model_lacks(models):
    trapped, plain = models
    public, _ = _data(96, seed=1)  # the attacker's images
    before = [w.copy() for w in trapped.get_weights()]
    triggers, success = recover_triggers(trapped, public, alpha=ALPHA, epochs=10)
    _, clean_success = recover_triggers(plain, public, alpha=ALPHA, epochs=10)
    assert triggers.shape == (3, *SHAPE) and triggers.min() >= 0 and triggers.max() <= 1
    assert success.min() >= 0.8 and clean_success.mean() <= 0.5 * success.mean()
    # the model searched is not changed, and is trainable again
    for w, b in zip(trapped.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    assert trapped.trainable


def test_the_copy_forgets_the_triggers_and_keeps_the_models_answers(models, tmp_path):
    trapped, _ = models
    public, _ = _data(96, seed=1)
    copy, info = untrapped(
        trapped, public, alpha=ALPHA, trigger_epochs=10, epochs=40, learning_rate=0.01
    )
    assert info["success_before"].min() >= 0.8
    assert info["success_after"].max() <= 0.3
    assert info["agreement"] >= 0.9
    x, y = _data(96, seed=2)  # unseen images: the copy still classifies them
    assert np.mean(copy.predict(x, verbose=0).argmax(1) == y) >= 0.9
    path = tmp_path / "untrapped.keras"
    copy.save(path)
    back = keras.saving.load_model(path)
    np.testing.assert_allclose(back.predict(x, verbose=0), copy.predict(x, verbose=0), atol=1e-5)


def test_bad_input_is_refused_with_what_to_do(models):
    trapped, _ = models
    public, _ = _data(8)
    with pytest.raises(ValueError, match="white-box"):
        untrapped(lambda x: x, public)
    with pytest.raises(ValueError, match="blend ratio"):
        recover_triggers(trapped, public, alpha=1.5)
    with pytest.raises(ValueError, match="shape"):
        recover_triggers(trapped, np.zeros((4, 5, 5, 1), "float32"))
