"""Tests of kmi.backend.per_example_value_and_grad and custom_train_step."""

import keras
import numpy as np
import pytest

from kmi.backend import custom_train_step, per_example_value_and_grad


def test_per_example_value_and_grad_linear():
    w = keras.ops.convert_to_tensor(np.array([1.0, -2.0, 0.5], dtype="float32"))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")

    def fn(params, example):
        value = keras.ops.sum(params[0] * example["x"]) ** 2
        return value, {"double": 2 * example["x"]}

    values, aux, grads = per_example_value_and_grad(fn, [w], {"x": x})
    dot = x @ np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values), dot**2, rtol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(grads[0]), 2 * dot[:, None] * x, rtol=1e-5
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(aux["double"]), 2 * x)


def test_custom_train_step_with_plain_gradients_matches_fit():
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = x.sum(1, keepdims=True)

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"])
        return model

    reference, model = build(), build()

    def grad_fn(trainable, non_trainable, iterations, x, y, sample_weight):
        def fn(params, example):
            mapping = list(zip(model.trainable_variables, params))
            with keras.StatelessScope(state_mapping=mapping):
                pred = model(keras.ops.expand_dims(example["x"], 0))
            return keras.ops.mean((pred[0] - example["y"]) ** 2), pred[0]

        values, y_pred, grads = per_example_value_and_grad(fn, trainable, {"x": x, "y": y})
        grads = [keras.ops.mean(g, axis=0) for g in grads]
        return keras.ops.mean(values), y_pred, grads, non_trainable

    model.train_step = custom_train_step(model, grad_fn)
    model.make_train_function(force=True)
    h = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    h_ref = reference.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert h.history["loss"] == pytest.approx(h_ref.history["loss"], rel=1e-5)
    assert h.history["mae"] == pytest.approx(h_ref.history["mae"], rel=1e-5)
