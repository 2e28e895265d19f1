"""Trap-MID: trapdoor triggers trained inside an unchanged ``model.fit``; and the
defense-aware attacker who finds them and unlearns them from a copy (recover_triggers,
untrapped)."""

import keras
import numpy as np
import pytest

from kmi.attacks.image import MIFace, recover_triggers, untrapped
from kmi.defenses import TrapMID

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
SHAPE = (6, 6, 1)


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _data(n=192, seed=0):
    """Three classes of 6x6 images in [0, 1]: a bright row at the top, middle or bottom."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype("int32")
    x = rng.uniform(0.0, 0.3, (n, *SHAPE)).astype("float32")
    for i, c in enumerate(y):
        x[i, 2 * c : 2 * c + 2] += 0.6
    return x, y


def _network(seed=0):
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(
                32, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
            keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
        ]
    )


def _trapped(epochs=30, **kwargs):
    kwargs = {"alpha": 0.2, "seed": 0, **kwargs}
    model = keras.Sequential([keras.Input(SHAPE), TrapMID(_network(), **kwargs)])
    model.compile(keras.optimizers.Adam(0.01), SPARSE_CE, metrics=["accuracy"])
    x, y = _data()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def trapped():
    return _trapped()


@pytest.fixture(scope="module")
def plain():
    """The same network trained on the same data without the trapdoor."""
    model = _network()
    model.compile(keras.optimizers.Adam(0.01), SPARSE_CE)
    model.fit(*_data(), batch_size=64, epochs=30, verbose=0)
    return model


def _trapdoor_success(model, trap, x, y):
    """Share of inputs classified as a trapdoor label t != y once t's trigger is blended in."""
    t = (y + 1) % trap.num_classes
    pred = np.argmax(model.predict(_np(trap.inject(x, t)), verbose=0), axis=1)
    return float(np.mean(pred == t))


def test_trap_mid_plants_a_trapdoor_and_keeps_clean_accuracy(trapped, plain):
    trap = trapped.layers[0]
    x, y = _data(96, seed=1)
    clean = np.mean(np.argmax(trapped.predict(x, verbose=0), axis=1) == y)
    assert clean >= 0.95
    assert _trapdoor_success(trapped, trap, x, y) >= 0.9
    # the same network trained without the trapdoor ignores the same triggers
    assert _trapdoor_success(plain, trap, x, y) <= 0.2
    # the triggers were trained, and kept inside the pixel range
    triggers = _np(trap.triggers)
    assert triggers.min() >= 0.0 and triggers.max() <= 1.0
    initial = _np(keras.initializers.RandomUniform(0.0, 1.0, seed=0)(triggers.shape))
    assert not np.allclose(triggers, initial)


def test_inference_is_the_network_and_training_adds_the_trapdoor_loss(trapped):
    trap = trapped.layers[0]
    x, _ = _data(8, seed=2)
    np.testing.assert_allclose(_np(trapped(x)), _np(trap.network(x)), atol=1e-6)
    layer = TrapMID(_network(), beta=0.0, seed=0)
    layer(x, training=True)
    assert layer.losses == []
    layer = TrapMID(_network(), beta=0.2, seed=0)
    layer(x, training=True)
    assert len(layer.losses) == 1 and float(_np(layer.losses[0])) > 0


def test_trap_mid_saves_and_reloads(trapped, tmp_path):
    x, y = _data(16, seed=3)
    trapped.save(tmp_path / "trap.keras")
    loaded = keras.saving.load_model(tmp_path / "trap.keras", safe_mode=True)
    np.testing.assert_allclose(_np(loaded(x)), _np(trapped(x)), atol=1e-6)
    np.testing.assert_array_equal(_np(loaded.layers[0].triggers), _np(trapped.layers[0].triggers))
    config, original = loaded.layers[0].get_config(), trapped.layers[0].get_config()
    assert config.pop("network")["class_name"] == original.pop("network")["class_name"]
    assert config == original
    history = loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_discriminator_augmentation_and_fixed_triggers():
    discriminator = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    start = [_np(w).copy() for w in discriminator.weights]
    model = _trapped(
        epochs=2,
        discriminator=discriminator,
        augmentation=keras.layers.RandomFlip("horizontal", seed=0),
        trainable_triggers=False,
    )
    trap = model.layers[0]
    assert trap.triggers.trainable is False
    initial = _np(keras.initializers.RandomUniform(0.0, 1.0, seed=0)(trap.triggers.shape))
    np.testing.assert_allclose(_np(trap.triggers), initial, atol=1e-6)
    # the discriminator was trained by the same fit
    assert any(not np.allclose(a, _np(b)) for a, b in zip(start, discriminator.weights))


def test_learned_triggers_fool_the_discriminator_more_than_fixed_ones():
    """The naturalness term pulls the triggers towards what the discriminator calls clean."""
    x, _ = _data(64, seed=4)
    scores = {}
    for trainable in (True, False):
        keras.utils.set_random_seed(0)
        discriminator = keras.Sequential(
            [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        model = _trapped(epochs=15, discriminator=discriminator, trainable_triggers=trainable)
        trap = model.layers[0]
        triggered = trap.inject(x, np.zeros(len(x), "int32"))
        scores[trainable] = float(np.mean(_np(discriminator(triggered))))
    assert scores[True] > scores[False]


def test_softmax_networks_are_detected():
    softmax = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    )
    assert TrapMID(softmax).from_logits is False
    assert TrapMID(_network()).from_logits is True
    assert TrapMID(softmax, from_logits=True).from_logits is True


def _corr(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def test_mi_face_finds_the_trapdoor_instead_of_the_private_class(trapped):
    """MIFace on the trapped network recovers each class's trigger, not its images."""
    x, y = _data()
    private = [x[y == c].mean(axis=0) for c in range(3)]
    plain = _network()
    plain.compile(keras.optimizers.Adam(0.01), SPARSE_CE)
    plain.fit(x, y, batch_size=64, epochs=30, verbose=0)
    triggers = _np(trapped.layers[0].triggers)
    corr = {}
    for name, network in (("trapped", trapped.layers[0].network), ("plain", plain)):
        attack = MIFace(network, max_iter=200, learning_rate=0.1, pixel_range=(0.0, 1.0))
        images = attack.fit().invert([0, 1, 2])
        corr[name] = [
            (_corr(images[c], private[c]), _corr(images[c], triggers[c])) for c in range(3)
        ]
    # measured: the private-mean correlation is 0.92-0.95 per class without the
    # trapdoor; with it 0.13-0.56 (mean 0.23-0.34), where the class's own trigger
    # correlates 0.73-0.89 (TensorFlow and JAX, several runs)
    private_plain = np.mean([p for p, _ in corr["plain"]])
    private_trapped, trigger_trapped = np.mean(corr["trapped"], axis=0)
    assert private_plain > 0.85
    assert private_trapped < 0.45
    assert trigger_trapped > private_trapped + 0.3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 0.0}, "alpha must be in"),
        ({"alpha": 1.0}, "alpha must be in"),
        ({"beta": 1.0}, "beta must be in"),
        ({"beta": -0.1}, "beta must be in"),
        ({"value_range": (1.0, 0.0)}, "value_range"),
        ({"network": None}, "network must be a Keras layer"),
        ({"network": "cnn"}, "network must be a Keras layer"),
        ({"discriminator": object()}, "discriminator must be a Keras layer"),
    ],
)
def test_bad_parameters_are_refused(kwargs, match):
    kwargs = {"network": _network(), **kwargs}
    with pytest.raises(ValueError, match=match):
        TrapMID(**kwargs)


# ------------------------------------------- the attacker who knows the mechanism
ALPHA = 0.2  # the trapdoor's blend (the trapped fixture's), known to the attacker


def test_the_recovered_triggers_show_a_trapdoor_that_a_clean_model_lacks(trapped, plain):
    public, _ = _data(96, seed=1)  # the attacker's images
    before = [w.copy() for w in trapped.get_weights()]
    triggers, success = recover_triggers(trapped, public, alpha=ALPHA, epochs=10)
    plain.layers[-1].trainable = False  # a frozen layer stays frozen
    _, clean_success = recover_triggers(plain, public, alpha=ALPHA, epochs=10)
    assert plain.trainable and not plain.layers[-1].trainable
    plain.layers[-1].trainable = True
    assert triggers.shape == (3, *SHAPE) and triggers.min() >= 0 and triggers.max() <= 1
    assert success.min() >= 0.8 and clean_success.mean() <= 0.5 * success.mean()
    # the model searched is not changed
    for w, b in zip(trapped.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_the_copy_forgets_the_triggers_and_keeps_the_models_answers(trapped, tmp_path):
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


def test_untrapping_refuses_bad_input_with_what_to_do(trapped):
    public, _ = _data(8)
    with pytest.raises(ValueError, match="white-box"):
        untrapped(lambda x: x, public)
    with pytest.raises(ValueError, match="blend ratio"):
        recover_triggers(trapped, public, alpha=1.5)
    with pytest.raises(ValueError, match="shape"):
        recover_triggers(trapped, np.zeros((4, 5, 5, 1), "float32"))
