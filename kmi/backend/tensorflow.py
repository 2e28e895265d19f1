"""TensorFlow implementations of kmi's backend operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def value_and_grad(fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
    """See :func:`kmi.backend.value_and_grad`."""
    from kmi.backend import _check_scalar

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(x)
    _check_scalar(value)
    return value, tape.gradient(value, x)


def value_and_grad_with_aux(fn: Callable[[Any], tuple[Any, Any]], x: Any) -> tuple[Any, Any, Any]:
    """See :func:`kmi.backend.value_and_grad_with_aux`."""
    from kmi.backend import _check_scalar

    with tf.GradientTape() as tape:
        tape.watch(x)
        value, aux = fn(x)
    _check_scalar(value)
    grad = tape.gradient(value, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value, aux, grad


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """See :func:`kmi.backend.jit`."""
    return tf.function(fn, reduce_retracing=True, autograph=False)


def per_example_value_and_grad(
    fn: Callable[[Any, Any], tuple[Any, Any]], params: list[Any], batch: Any
) -> tuple[Any, Any, list[Any]]:
    """See :func:`kmi.backend.per_example_value_and_grad`."""

    def one_example(example):
        with tf.GradientTape() as tape:
            tape.watch(params)
            value, aux = fn(params, example)
        grads = tape.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # pfor cannot return variables or tensors it did not compute (inputs passed through)
        return value, tf.nest.map_structure(tf.identity, aux), grads

    # Ops without a vectorisation rule (rare: some random ops) fall back to a
    # while loop for that op alone; everything else is vectorised by pfor.
    values, aux, grads = tf.vectorized_map(one_example, batch, fallback_to_while_loop=True)
    return values, aux, list(grads)


def value_and_tap_grads(
    fn: Callable[[Callable[[Any, Any], Any]], tuple[Any, Any]],
) -> tuple[Any, Any, dict[Any, Any]]:
    """See :func:`kmi.backend.value_and_tap_grads`."""
    from kmi.backend import _check_scalar

    tapped = {}
    with tf.GradientTape() as tape:

        def tap(key, z):
            # a tape differentiates with respect to any tensor it recorded: no probe
            z = tf.convert_to_tensor(z)
            tape.watch(z)
            tapped[key] = z
            return z

        value, aux = fn(tap)
    _check_scalar(value)
    grads = tape.gradient(value, tapped, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value, aux, grads


def gram(x: Any) -> Any:
    """See :func:`kmi.backend.gram`."""
    global _xla_gram
    if _xla_gram is None:
        _xla_gram = tf.function(
            lambda t: tf.matmul(t, t, transpose_b=True), jit_compile=True, reduce_retracing=False
        )
    return _xla_gram(x)


_xla_gram = None


def conv_patches(
    x: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...],
) -> Any:
    """See :func:`kmi.backend.conv_patches`."""
    # tf.image.extract_patches is one kernel (64 strided slices cost 3x more here)
    one_d = len(kernel_size) == 1
    if one_d:
        x = x[:, None]
        kernel_size, strides = (1, *kernel_size), (1, *strides)
        dilation_rate = (1, *dilation_rate)
    patches = tf.image.extract_patches(
        x,
        sizes=[1, *kernel_size, 1],
        strides=[1, *strides, 1],
        rates=[1, *dilation_rate, 1],
        padding=padding.upper(),
    )
    rows, cols = patches.shape[1], patches.shape[2]
    if rows is None or cols is None:
        return tf.reshape(patches, [tf.shape(patches)[0], -1, patches.shape[-1]])
    # static positions (the batch axis may be unknown when fit traces the step)
    return tf.reshape(patches, [-1, rows * cols, patches.shape[-1]])


def per_example_conv_kernel_grads(
    x: Any,
    grads: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...],
) -> Any:
    """See :func:`kmi.backend.per_example_conv_kernel_grads`."""
    if None in x.shape[1:] or None in grads.shape[1:]:
        # spatial sizes known only at run time: extract_patches and one product
        patches = conv_patches(x, kernel_size, strides, padding, dilation_rate)
        flat = tf.reshape(grads, [tf.shape(grads)[0], -1, grads.shape[-1]])
        return tf.einsum("npk,npo->nko", patches, flat)
    # One product per kernel offset, compiled by XLA on its own (the rest of the
    # step stays in the ordinary graph): 3x faster here than extract_patches and
    # one batched product, which is 3x faster than the same slices without XLA.
    # Traced once per shape: retracing with relaxed shapes would lose the static
    # spatial sizes the slices need.
    global _xla_conv_kernel_grads
    if _xla_conv_kernel_grads is None:
        from kmi.backend import sliced_per_example_conv_kernel_grads

        _xla_conv_kernel_grads = tf.function(
            sliced_per_example_conv_kernel_grads, jit_compile=True, reduce_retracing=False
        )
    return _xla_conv_kernel_grads(x, grads, kernel_size, strides, padding, dilation_rate)


_xla_conv_kernel_grads = None


def custom_train_step(model: Any, grad_fn: Callable[..., Any]) -> Callable[..., Any]:
    """See :func:`kmi.backend.custom_train_step`."""
    import keras

    from kmi.backend import update_output_losses

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        trainable = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
        non_trainable = [tf.convert_to_tensor(v.value) for v in model.non_trainable_variables]
        loss, y_pred, grads, non_trainable = grad_fn(
            trainable,
            non_trainable,
            tf.convert_to_tensor(model.optimizer.iterations.value),
            x,
            y,
            sample_weight,
        )
        for variable, value in zip(model.non_trainable_variables, non_trainable):
            variable.assign(value)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        batch_size = tf.shape(next(t for t in keras.tree.flatten(x) if t is not None))[0]
        model._loss_tracker.update_state(loss, sample_weight=batch_size)
        update_output_losses(model, y, y_pred, sample_weight)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def limit_threads(n: int) -> bool:
    """TensorFlow's intra- and inter-op thread pools at ``n`` threads."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # the runtime has started: its pools are fixed
        return tf.config.threading.get_intra_op_parallelism_threads() == n
    return True
