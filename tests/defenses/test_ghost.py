"""Ghost clipping gives the per-example norms and clipped sums of the vectorised route."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from kmi.defenses import DPSGD, _ghost, per_example_gradients
from kmi.defenses._ghost import ghost_layers, ghost_norms, ghost_unsupported

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _compiled(model, loss=LOSS):
    model.compile(keras.optimizers.SGD(0.1), loss)
    return model


def _models():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 9, 9, 2)).astype("float32")
    labels = np.arange(12) % 3
    same_cnn = keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            keras.layers.Conv2D(4, 4, strides=2, padding="same", activation="tanh"),
            keras.layers.MaxPooling2D(2, 1),
            keras.layers.Conv2D(5, 3, strides=1, padding="valid", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    seq = rng.normal(size=(12, 7, 3)).astype("float32")
    conv1d = keras.Sequential(
        [
            keras.Input((7, 3)),
            keras.layers.Conv1D(4, 3, strides=2, padding="same", activation="tanh"),
            keras.layers.Dense(6, activation="tanh"),  # a Dense over positions
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    tokens = rng.integers(0, 9, size=(12, 6)).astype("int32")
    tokens[:, 4:] = 0
    text = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(9, 4, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    inp = keras.Input((5,))
    shared = keras.layers.Dense(5, activation="tanh")
    out = keras.layers.Dense(3)(shared(shared(inp)))
    shared_model = keras.Model(inp, out)
    frozen = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(3)])
    frozen.layers[0].kernel.trainable = False
    vectors = rng.normal(size=(12, 5)).astype("float32")
    return {
        "cnn": (same_cnn, images, labels),
        "conv1d": (conv1d, seq, labels),
        "embedding": (text, tokens, labels),
        "shared_layer": (shared_model, vectors, labels),
        "frozen_kernel": (frozen, vectors, labels),
    }


@pytest.mark.parametrize("route", ["materialize", "ghost_norm"])
@pytest.mark.parametrize("name", ["cnn", "conv1d", "embedding", "shared_layer", "frozen_kernel"])
def test_ghost_norms_and_clipped_sum_match_per_example_gradients(name, route, monkeypatch):
    if route == "ghost_norm":  # the route of layers too large to form per-example gradients
        monkeypatch.setattr(_ghost, "_materialize", lambda *args: False)
    model, x, y = _models()[name]
    _compiled(model)
    weight = np.ones(len(x), "float32")
    weight[3] = 0.0  # a padding example: contributes nothing
    weight[5] = 2.0
    clip = 0.3
    per_example = per_example_gradients(model, x, y, sample_weight=weight)
    norms = np.sqrt(sum((g.reshape(len(x), -1) ** 2).sum(1) for g in per_example))
    assert np.median(norms) > clip  # clipping is active, the test is not vacuous
    factors = np.minimum(1.0, clip / np.maximum(norms, 1e-12)) * (weight != 0)
    expected = [np.tensordot(factors, g, axes=(0, 0)) for g in per_example]

    layers, slots = ghost_layers(model)
    trainable = [ops.convert_to_tensor(v.value) for v in model.trainable_variables]
    non_trainable = [ops.convert_to_tensor(v.value) for v in model.non_trainable_variables]
    got_norms, clipped_sum, loss_sum, _, _ = ghost_norms(
        model, layers, slots, trainable, non_trainable,
        ops.convert_to_tensor(x), ops.convert_to_tensor(y), ops.convert_to_tensor(weight),
    )  # fmt: skip
    np.testing.assert_allclose(ops.convert_to_numpy(got_norms), norms, rtol=1e-4, atol=1e-6)
    summed = clipped_sum(ops.convert_to_tensor(factors.astype("float32")))
    for got, want in zip(summed, expected):
        np.testing.assert_allclose(ops.convert_to_numpy(got), want, rtol=1e-4, atol=1e-6)
    batch_loss = model.compute_loss(
        x=x, y=y, y_pred=model(x), sample_weight=ops.convert_to_tensor(weight)
    )
    np.testing.assert_allclose(float(loss_sum), float(batch_loss) * len(x), rtol=1e-5)


def test_fit_with_ghost_equals_fit_with_vectorized():
    model_a, x, y = _models()["cnn"]
    model_b = keras.models.clone_model(model_a)
    model_b.set_weights(model_a.get_weights())
    weights = []
    for model, clipping in ((model_a, "ghost"), (model_b, "vectorized")):
        _compiled(model)
        dp = DPSGD(0.3, 1.0, num_examples=len(x), seed=4, clipping=clipping)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.fit(x, y, batch_size=6, epochs=2, callbacks=[dp], shuffle=False, verbose=0)
        assert dp.clipping_ == clipping
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_auto_falls_back_and_ghost_refuses_with_the_reason():
    x = np.zeros((8, 4), "float32")
    y = np.zeros(8, "int32")
    model = _compiled(
        keras.Sequential(
            [keras.Input((4,)), keras.layers.LayerNormalization(), keras.layers.Dense(2)]
        )
    )
    reason = ghost_unsupported(model)
    assert "layer_normalization" in reason and "Dense, Conv1D, Conv2D and Embedding" in reason
    dp = DPSGD(1.0, 1.0, num_examples=8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, batch_size=4, callbacks=[dp], verbose=0)
    assert dp.clipping_ == "vectorized" and dp.clipping_reason_ == reason
    for clipping, message in (("ghost", "clipping='vectorized'"), ("x", "must be one of")):
        with pytest.raises(ValueError, match=message):
            dp = DPSGD(1.0, 1.0, num_examples=8, clipping=clipping)
            model.fit(x, y, batch_size=4, callbacks=[dp], verbose=0)


@pytest.mark.parametrize(
    "change, words",
    [
        ("regularizer", "weight regularizer"),
        ("reduction", "reduction='sum'"),
        ("dilation", "dilated"),
    ],
)
def test_what_ghost_clipping_cannot_handle_is_named(change, words):
    conv = {"dilation_rate": 2} if change == "dilation" else {}
    dense = {"kernel_regularizer": "l2"} if change == "regularizer" else {}
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, **conv),
            keras.layers.Flatten(),
            keras.layers.Dense(2, **dense),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    _compiled(model, loss if change == "reduction" else LOSS)
    assert words in ghost_unsupported(model)
