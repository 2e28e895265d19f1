"""JAX implementations of kmi's backend operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def value_and_grad(fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
    """See :func:`kmi.backend.value_and_grad`."""
    from kmi.backend import _check_scalar

    def checked(t):
        value = fn(t)
        _check_scalar(value)
        return value

    return jax.value_and_grad(checked)(x)


def value_and_grad_with_aux(fn: Callable[[Any], tuple[Any, Any]], x: Any) -> tuple[Any, Any, Any]:
    """See :func:`kmi.backend.value_and_grad_with_aux`."""
    from kmi.backend import _check_scalar

    def checked(t):
        value, aux = fn(t)
        _check_scalar(value)
        return value, aux

    (value, aux), grad = jax.value_and_grad(checked, has_aux=True)(x)
    return value, aux, grad


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """See :func:`kmi.backend.jit`."""
    return jax.jit(fn)


def per_example_value_and_grad(
    fn: Callable[[Any, Any], tuple[Any, Any]], params: list[Any], batch: Any
) -> tuple[Any, Any, list[Any]]:
    """See :func:`kmi.backend.per_example_value_and_grad`."""
    (values, aux), grads = jax.vmap(jax.value_and_grad(fn, has_aux=True), in_axes=(None, 0))(
        params, batch
    )
    return values, aux, list(grads)


def value_and_tap_grads(
    fn: Callable[[Callable[[Any, Any], Any]], tuple[Any, Any]],
) -> tuple[Any, Any, dict[Any, Any]]:
    """See :func:`kmi.backend.value_and_tap_grads`."""
    from kmi.backend import _check_scalar

    shapes = {}

    def record(key, z):
        shapes[key] = jax.ShapeDtypeStruct(z.shape, z.dtype)
        return z

    # Shapes of the tapped tensors, from an abstract evaluation (no computation).
    jax.eval_shape(lambda: fn(record))
    probes = {key: jax.numpy.zeros(s.shape, s.dtype) for key, s in shapes.items()}

    def probed(p):
        value, aux = fn(lambda key, z: z + p[key])
        _check_scalar(value)
        return value, aux

    (value, aux), grads = jax.value_and_grad(probed, has_aux=True)(probes)
    return value, aux, grads


def gram(x: Any) -> Any:
    """See :func:`kmi.backend.gram`."""
    # an einsum: XLA's CPU dot for it is 2x faster than matmul with swapped axes
    return jax.numpy.einsum("...pk,...qk->...pq", x, x)


def conv_patches(
    x: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...],
) -> Any:
    """See :func:`kmi.backend.conv_patches`."""
    # strided slices fuse well under XLA (faster here than conv_general_dilated_patches)
    from kmi.backend import sliced_conv_patches

    return sliced_conv_patches(x, kernel_size, strides, padding, dilation_rate)


def per_example_conv_kernel_grads(
    x: Any,
    grads: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...],
) -> Any:
    """See :func:`kmi.backend.per_example_conv_kernel_grads`."""
    # one small product per kernel offset: about 2x faster under XLA on CPU than
    # forming the patches and one batched product
    from kmi.backend import sliced_per_example_conv_kernel_grads

    return sliced_per_example_conv_kernel_grads(
        x, grads, kernel_size, strides, padding, dilation_rate
    )


def custom_train_step(model: Any, grad_fn: Callable[..., Any]) -> Callable[..., Any]:
    """See :func:`kmi.backend.custom_train_step`."""
    import keras

    from kmi.backend import update_output_losses

    optimizer = model.optimizer
    iterations_index = next(
        i for i, v in enumerate(optimizer.variables) if v is optimizer.iterations
    )

    def train_step(state, data):
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, y_pred, grads, non_trainable = grad_fn(
            trainable,
            non_trainable,
            optimizer_vars[iterations_index],
            x,
            y,
            sample_weight,
        )
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        mapping = list(zip(model.metrics_variables, metrics_vars))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            batch_size = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
            model._loss_tracker.update_state(loss, sample_weight=batch_size)
            update_output_losses(model, y, y_pred, sample_weight)
            logs = model.compute_metrics(x, y, y_pred, sample_weight)
        metrics_vars = [
            v if (new := scope.get_current_value(ref)) is None else new
            for ref, v in zip(model.metrics_variables, metrics_vars)
        ]
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    return train_step


def limit_threads(n: int) -> bool:
    """One thread for XLA's CPU operations (``--xla_cpu_multi_thread_eigen=false``
    in ``XLA_FLAGS``, read when the client starts); XLA has no flag for 2 or more,
    so those leave the client as it is and return False."""
    import os

    from jax._src import xla_bridge

    flag = "--xla_cpu_multi_thread_eigen=false"
    if n != 1:
        return False
    if getattr(xla_bridge, "_backends", None):  # the client has started
        return flag in os.environ.get("XLA_FLAGS", "").split()
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_cpu_multi_thread_eigen")]
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])
    return True
