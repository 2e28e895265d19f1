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


@pytest.mark.parametrize(
    "shape, kernel, strides, padding, dilation",
    [
        ((2, 9, 9, 3), (4, 4), (2, 2), "same", (1, 1)),
        ((2, 9, 8, 3), (3, 2), (1, 2), "valid", (1, 1)),
        ((2, 11, 3), (3,), (2,), "same", (1,)),
        ((2, 10, 9, 3), (3, 2), (1, 1), "same", (2, 3)),
        ((2, 11, 3), (3,), (1,), "valid", (2,)),
    ],
)
def test_conv_patches_reproduce_the_convolution(shape, kernel, strides, padding, dilation):
    from kmi.backend import conv_patches, per_example_conv_kernel_grads, sliced_conv_patches

    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    conv = (keras.layers.Conv2D if len(kernel) == 2 else keras.layers.Conv1D)(
        5, kernel, strides=strides, padding=padding, dilation_rate=dilation, use_bias=False
    )
    out = keras.ops.convert_to_numpy(conv(x))
    patches = keras.ops.convert_to_numpy(conv_patches(x, kernel, strides, padding, dilation))
    flat_kernel = keras.ops.convert_to_numpy(conv.kernel).reshape(-1, 5)
    np.testing.assert_allclose(patches @ flat_kernel, out.reshape(2, -1, 5), atol=1e-5)
    sliced = keras.ops.convert_to_numpy(sliced_conv_patches(x, kernel, strides, padding, dilation))
    np.testing.assert_allclose(sliced, patches, atol=1e-6)
    g = np.random.default_rng(1).normal(size=out.shape).astype("float32")
    want = np.einsum("npk,npo->nko", patches, g.reshape(2, -1, 5))
    got = per_example_conv_kernel_grads(x, g, kernel, strides, padding, dilation)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, atol=1e-4)


def test_value_and_tap_grads_inside_a_compiled_function():
    from kmi.backend import jit, value_and_tap_grads

    @jit
    def f(w, x):
        def fn(tap):
            h = tap("h", keras.ops.matmul(x, w))
            return keras.ops.sum(keras.ops.tanh(h)), h

        return value_and_tap_grads(fn)

    w = np.random.default_rng(1).normal(size=(3, 2)).astype("float32")
    x = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    value, h, grads = f(w, x)
    expected_h = x @ w
    np.testing.assert_allclose(keras.ops.convert_to_numpy(h), expected_h, rtol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(grads["h"]), 1 - np.tanh(expected_h) ** 2, rtol=1e-5
    )
    assert float(value) == pytest.approx(np.tanh(expected_h).sum(), rel=1e-5)


def test_per_example_conv_kernel_grads_across_many_shapes():
    # one compiled function serves every layer: shapes must not be relaxed away
    from kmi.backend import conv_patches, jit, per_example_conv_kernel_grads

    rng = np.random.default_rng(0)
    configs = [
        ((3, 9, 9, 2), (3, 3), (2, 2), "same"),
        ((4, 7, 6, 1), (2, 2), (1, 1), "valid"),
        ((2, 12, 12, 2), (3, 3), (2, 2), "same"),  # same layer settings, other sizes
        ((3, 10, 10, 2), (3, 3), (2, 2), "same"),
        ((5, 8, 2), (3,), (1,), "valid"),
    ]
    for _ in range(2):
        for shape, kernel, strides, padding in configs:
            x = rng.normal(size=shape).astype("float32")
            patches = keras.ops.convert_to_numpy(conv_patches(x, kernel, strides, padding))
            g = rng.normal(size=(shape[0], patches.shape[1], 3)).astype("float32")
            out_spatial = keras.ops.convert_to_numpy(
                keras.layers.Conv1D(3, kernel, strides=strides, padding=padding)(x)
                if len(kernel) == 1
                else keras.layers.Conv2D(3, kernel, strides=strides, padding=padding)(x)
            ).shape[1:-1]
            g_map = g.reshape(shape[0], *out_spatial, 3)
            compiled = jit(
                lambda a, b, k=kernel, s=strides, p=padding: per_example_conv_kernel_grads(
                    a, b, k, s, p
                )
            )
            got = compiled(x, g_map)
            want = np.einsum("npk,npo->nko", patches, g)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, atol=1e-4)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF graphs of unknown size")
def test_per_example_conv_kernel_grads_of_unknown_spatial_size():
    import tensorflow as tf

    from kmi.backend import conv_patches, per_example_conv_kernel_grads

    spec = [tf.TensorSpec((None, None, None, 2)), tf.TensorSpec((None, None, None, 3))]
    compiled = tf.function(
        lambda a, b: per_example_conv_kernel_grads(a, b, (3, 3), (2, 2), "same"),
        input_signature=spec,
    )
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 2)).astype("float32")
    g = np.random.default_rng(1).normal(size=(2, 5, 5, 3)).astype("float32")
    patches = keras.ops.convert_to_numpy(conv_patches(x, (3, 3), (2, 2), "same"))
    want = np.einsum("npk,npo->nko", patches, g.reshape(2, 25, 3))
    np.testing.assert_allclose(compiled(x, g).numpy(), want, atol=1e-4)


def test_get_backend_module_refuses_an_unsupported_backend(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(NotImplementedError, match=r"set KERAS_BACKEND.*Received: backend='torch'"):
        get_backend_module()


def test_value_and_grad_with_aux_of_a_structure_inside_jit():
    from kmi.backend import jit, value_and_grad_with_aux

    params = {
        "w": np.array([1.0, -2.0], dtype="float32"),
        "b": np.array(0.5, dtype="float32"),
    }

    @jit
    def f(params, x):
        def fn(p):
            out = keras.ops.matmul(x, p["w"]) + p["b"]
            return keras.ops.sum(out**2), out

        return value_and_grad_with_aux(fn, params)

    x = np.array([[1.0, 1.0], [0.0, 2.0]], dtype="float32")
    value, out, grads = f(params, x)
    expected_out = x @ params["w"] + params["b"]  # [-0.5, -3.5]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected_out, rtol=1e-6)
    assert float(value) == pytest.approx(np.sum(expected_out**2))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(grads["w"]), 2 * expected_out @ x, rtol=1e-6
    )
    assert float(grads["b"]) == pytest.approx(2 * expected_out.sum())


def test_value_and_grad_with_aux_rejects_non_scalar():
    from kmi.backend import value_and_grad_with_aux

    x = keras.ops.convert_to_tensor(np.ones(3, dtype="float32"))
    with pytest.raises(ValueError, match=r"returning a scalar.*Received: output shape=\(3,\)"):
        value_and_grad_with_aux(lambda t: (t * 2.0, ()), x)


def test_jit_retraces_for_new_shapes():
    from kmi.backend import jit

    total = jit(lambda t: keras.ops.sum(t, axis=0))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(total(np.ones((2, 3), dtype="float32"))), [2.0, 2.0, 2.0]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(total(np.ones((4, 2), dtype="float32"))), [4.0, 4.0]
    )


def test_gram_matches_numpy():
    from kmi.backend import gram

    x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
    got = keras.ops.convert_to_numpy(gram(x))
    np.testing.assert_allclose(got, x @ x.transpose(0, 2, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape, kernel, padding, match",
    [
        ((2, 5, 5, 1), (3,), "valid", r"1-D or 2-D.*Received: x.shape=\(2, 5, 5, 1\)"),
        ((2, 4, 4, 4, 1), (2, 2, 2), "valid", r"Received: x.shape=\(2, 4, 4, 4, 1\)"),
        ((2, 5, 1), (3,), "causal", r"'valid' or 'same'. Received: padding='causal'"),
    ],
)
def test_conv_patches_refusals(shape, kernel, padding, match):
    from kmi.backend import conv_patches

    with pytest.raises(ValueError, match=match):
        conv_patches(np.zeros(shape, dtype="float32"), kernel, (1,) * len(kernel), padding)


def test_predict_matches_the_plain_call_follows_new_weights_and_compiles_few_sizes():
    from kmi import backend as kb

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    x = np.random.default_rng(0).normal(size=(300, 4)).astype("float32")
    for n in (1, 5, 8, 9, 300):  # buckets of 8, 8, 8, 16 and 256 + 64 rows
        got = kb.predict(model, x[:n], batch_size=256)
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x[:n])), atol=1e-5)
    # the weights are passed in at each call: a model trained later is seen
    model.layers[-1].kernel.assign(np.zeros((8, 3), "float32"))
    np.testing.assert_allclose(kb.predict(model, x[:5]), np.zeros((5, 3)), atol=1e-6)
    assert [kb._bucket(n) for n in (0, 1, 8, 9, 100, 256)] == [8, 8, 8, 16, 128, 256]


def test_predict_falls_back_to_the_plain_call_for_a_model_that_cannot_be_traced():
    from kmi import backend as kb

    class NumpyInside(keras.Model):
        def call(self, x, training=False):
            return keras.ops.convert_to_tensor(np.asarray(x) * 2.0)  # fails under tracing

    model = NumpyInside()
    x = np.ones((3, 2), "float32")
    np.testing.assert_allclose(kb.predict(model, x), 2 * x)
    assert kb._FORWARDS[model] is None  # not traced again


def test_predict_stays_compiled_after_rows_the_model_cannot_take():
    from kmi import backend as kb

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.ones((5, 4), "float32")
    kb.predict(model, x)
    with pytest.raises(ValueError):  # the plain call's own error for a wrong shape
        kb.predict(model, np.ones((5, 7), "float32"))
    assert kb._FORWARDS[model] is not None  # the model is not marked untraceable
    np.testing.assert_allclose(kb.predict(model, x), keras.ops.convert_to_numpy(model(x)))


def test_predict_returns_every_output_of_a_model_with_several():
    from kmi import backend as kb

    inp = keras.Input((2,))
    model = keras.Model(inp, [keras.layers.Dense(1)(inp), keras.layers.Dense(3)(inp)])
    first, second = kb.predict(model, np.ones((5, 2), "float32"))
    assert first.shape == (5, 1) and second.shape == (5, 3)


def test_limit_threads_holds_in_a_fresh_process_and_refuses_nonsense():
    """A parallel audit's worker runs on its share of the cores: set before the
    backend's runtime starts, the limit holds."""
    import subprocess
    import sys

    from kmi.backend import limit_threads

    with pytest.raises(ValueError, match="positive number of threads"):
        limit_threads(0)
    check = {
        "tensorflow": "import tensorflow as tf; "
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 1",
        "jax": "import os; assert '--xla_cpu_multi_thread_eigen=false' in os.environ['XLA_FLAGS']",
    }[keras.backend.backend()]
    code = (
        "from kmi.backend import limit_threads; assert limit_threads(1); "
        f"import keras; keras.ops.add(1, 1); {check}; "
        "assert limit_threads(1); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]
