import keras
import numpy as np
import pytest

from kmi.backend import get_backend_module, value_and_grad


def test_value_and_grad_quadratic():
    x = np.array([[1.0, -2.0], [3.0, 0.5]], dtype="float32")
    value, grad = value_and_grad(lambda t: keras.ops.sum(t**2), x)
    assert float(value) == pytest.approx(np.sum(x**2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grad), 2 * x, rtol=1e-6)


def test_value_and_grad_through_keras_model_matches_finite_differences():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")

    def fn(t):
        return keras.ops.sum(keras.ops.softmax(model(t))[:, 1])

    value, grad = value_and_grad(fn, x)
    grad = keras.ops.convert_to_numpy(grad)
    eps = 1e-3
    for i, j in [(0, 0), (1, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[i, j] += eps
        xm[i, j] -= eps
        fd = (float(fn(xp)) - float(fn(xm))) / (2 * eps)
        assert grad[i, j] == pytest.approx(fd, abs=1e-3)


def test_value_and_grad_rejects_non_scalar():
    with pytest.raises(ValueError, match="returning a scalar"):
        value_and_grad(lambda t: t * 2.0, np.ones(3))


def test_backend_module_matches_keras_backend():
    assert get_backend_module().__name__ == f"kmi.backend.{keras.backend.backend()}"
