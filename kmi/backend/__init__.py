"""The few operations Keras 3 leaves to each backend.

Everything else in kmi is written with ``keras.ops``. The functions here dispatch
on ``keras.backend.backend()`` to one module per backend (:mod:`kmi.backend.tensorflow`,
:mod:`kmi.backend.jax`).
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax")

__all__ = [
    "SUPPORTED_BACKENDS",
    "conv_patches",
    "custom_train_step",
    "get_backend_module",
    "gram",
    "jit",
    "limit_threads",
    "per_example_conv_kernel_grads",
    "per_example_value_and_grad",
    "predict",
    "value_and_grad",
    "value_and_grad_with_aux",
    "value_and_tap_grads",
]


def get_backend_module() -> ModuleType:
    """Return the kmi module implementing the active Keras backend.

    Returns
    -------
    module
        :mod:`kmi.backend.tensorflow` or :mod:`kmi.backend.jax`, following
        ``keras.backend.backend()``.

    Raises
    ------
    NotImplementedError
        If the active Keras backend is not one kmi supports.

    Examples
    --------
    >>> import keras
    >>> from kmi.backend import get_backend_module
    >>> get_backend_module().__name__ == f"kmi.backend.{keras.backend.backend()}"
    True
    """
    name = keras.backend.backend()
    if name not in SUPPORTED_BACKENDS:
        raise NotImplementedError(
            "kmi supports the Keras backends "
            f"{', '.join(SUPPORTED_BACKENDS)}; set KERAS_BACKEND to one of them "
            f"before importing keras. Received: backend={name!r}"
        )
    return importlib.import_module(f"kmi.backend.{name}")


def value_and_grad(fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
    """Value of a scalar function and its gradient with respect to its input.

    Parameters
    ----------
    fn : callable
        Maps a tensor shaped like ``x`` to a scalar tensor. It may call Keras
        models and ``keras.ops``.
    x : array-like
        The point at which to differentiate (an input batch, a latent code, an
        adjacency matrix...). It is converted to a float32 tensor.

    Returns
    -------
    value : tensor
        ``fn(x)``, a scalar tensor of the active backend.
    grad : tensor
        ``d fn / d x``, a tensor of the active backend with the shape of ``x``.

    Raises
    ------
    ValueError
        If ``fn`` does not return a scalar.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import value_and_grad
    >>> value, grad = value_and_grad(lambda t: keras.ops.sum(t ** 2), np.array([1.0, 2.0]))
    >>> float(value), keras.ops.convert_to_numpy(grad).tolist()
    (5.0, [2.0, 4.0])
    """
    x = keras.ops.convert_to_tensor(x, dtype="float32")
    return get_backend_module().value_and_grad(fn, x)


def value_and_grad_with_aux(fn: Callable[[Any], tuple[Any, Any]], x: Any) -> tuple[Any, Any, Any]:
    """Value, auxiliary output and gradient of ``fn`` with respect to ``x``.

    Like :func:`value_and_grad`, but ``fn`` returns ``(value, aux)`` and ``x`` may
    be a nested structure (list, tuple, dict) of tensors, e.g. the values of a
    model's trainable variables. It may be called inside a function compiled with
    :func:`jit`, and nested (a gradient penalty differentiates a gradient).

    Parameters
    ----------
    fn : callable
        ``fn(x) -> (value, aux)``: ``value`` a scalar tensor, ``aux`` any
        structure of tensors that is returned but not differentiated.
    x : tensor or structure of tensors
        The point at which to differentiate. Tensors are used as given.

    Returns
    -------
    value : tensor
    aux : structure of tensors
    grad : tensor or structure of tensors shaped like ``x``

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import value_and_grad_with_aux
    >>> x = keras.ops.convert_to_tensor(np.array([1.0, 2.0], dtype="float32"))
    >>> value, aux, grad = value_and_grad_with_aux(lambda t: (keras.ops.sum(t**2), t**2), x)
    >>> keras.ops.convert_to_numpy(aux).tolist(), keras.ops.convert_to_numpy(grad).tolist()
    ([1.0, 4.0], [2.0, 4.0])
    """
    return get_backend_module().value_and_grad_with_aux(fn, x)


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Compile ``fn`` for the active backend (``jax.jit``, ``tf.function``).

    ``fn`` takes and returns tensors (or structures of them) and is written with
    ``keras.ops``; Keras models it calls are called with ``training=False`` or
    through ``stateless_call``, so that nothing is assigned while tracing. It is
    retraced when input shapes change.

    Parameters
    ----------
    fn : callable
        A function of tensors, written with ``keras.ops``.

    Returns
    -------
    callable
        The compiled function: ``jax.jit(fn)`` on JAX, ``tf.function(fn,
        reduce_retracing=True, autograph=False)`` on TensorFlow.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import jit
    >>> double_sum = jit(lambda t: keras.ops.sum(2.0 * t))
    >>> float(double_sum(np.ones(3, dtype="float32")))
    6.0
    """
    return get_backend_module().jit(fn)


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def limit_threads(n: int) -> bool:
    """Run this process's compiled operations on at most ``n`` threads.

    For a worker that shares the machine's cores with other workers (a parallel
    audit's units): each worker then uses its share instead of every core, and the
    workers do not fight over them. It must be called before the backend's runtime
    starts (before the first operation runs); afterwards the thread pools are fixed.

    Parameters
    ----------
    n : int
        Threads: TensorFlow's intra- and inter-op pools. On JAX only ``n=1`` can
        be set (XLA's CPU operations single-threaded); XLA has no flag for 2 or
        more.

    Returns
    -------
    bool
        Whether the limit holds: False when the runtime had already started with
        another number of threads, or on JAX for ``n > 1``.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of threads. Received: n={n!r}")
    return bool(get_backend_module().limit_threads(int(n)))


def _bucket(n: int) -> int:
    """The padded batch size of ``n`` rows: the next power of two, at least 8."""
    return max(8, 1 << (int(n) - 1).bit_length())


def predict(model: keras.Model, x: Any, batch_size: int = 256) -> Any:
    """A Keras model's inference outputs for one array of rows, compiled once per size.

    Calling ``model(x, training=False)`` runs op by op, and on JAX every new
    number of rows compiles every op again. Here the forward pass is compiled
    (:func:`jit` of ``model.stateless_call`` with the current weights passed in, so
    training the model later is seen) and each batch is padded to a power of two
    of rows, so that a model is compiled for a handful of sizes at most. Rows do
    not interact at inference, so the padding rows are computed and dropped.

    Parameters
    ----------
    model : keras.Model
        Takes a single array input.
    x : array of shape (n, ...)
    batch_size : int, default=256
        Most rows per compiled call.

    Returns
    -------
    numpy array or list of numpy arrays
        The outputs for the ``n`` rows (a list for a model with several outputs).

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import predict
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> out = predict(model, np.ones((5, 3), "float32"))
    >>> out.shape, bool(np.allclose(out, keras.ops.convert_to_numpy(model(np.ones((5, 3))))))
    ((5, 2), True)
    """
    import numpy as np

    x = np.asarray(x)
    if not model.built:  # variables must exist before tracing
        model(x[:1], training=False)
    if model not in _FORWARDS:
        _FORWARDS[model] = jit(
            lambda trainable, non_trainable, rows: model.stateless_call(
                trainable, non_trainable, rows, training=False
            )[0]
        )
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    outs = []
    for start in range(0, max(len(x), 1), int(batch_size)):
        rows = x[start : start + int(batch_size)]
        n = len(rows)
        forward = _FORWARDS[model]
        if forward is None:  # a model that cannot be traced: op by op
            out = model(rows, training=False)
        else:
            pad = np.zeros((_bucket(n) - n, *rows.shape[1:]), rows.dtype)
            try:
                out = forward(trainable, non_trainable, np.concatenate([rows, pad]))
            except Exception:  # noqa: BLE001 - e.g. NumPy or Python control flow in call()
                # the plain call raises the error of rows the model cannot take (a wrong
                # shape); if it runs, the model itself cannot be traced: op by op from now
                out = model(rows, training=False)
                _FORWARDS[model] = None
        outs.append([keras.ops.convert_to_numpy(o)[:n] for o in keras.tree.flatten(out)])
    joined = [np.concatenate(parts) for parts in zip(*outs)]
    return joined[0] if len(joined) == 1 else joined


def per_example_value_and_grad(
    fn: Callable[[Any, Any], tuple[Any, Any]], params: Any, batch: Any
) -> tuple[Any, Any, list[Any]]:
    """Per-example values and gradients of ``fn``, vectorised over a batch.

    ``fn`` is evaluated on each example of ``batch`` separately and
    differentiated with respect to ``params``, in one vectorised computation
    (``jax.vmap`` on JAX, ``tf.vectorized_map`` on TensorFlow); there is no
    Python loop over examples.

    Parameters
    ----------
    fn : callable
        ``fn(params, example) -> (value, aux)``. ``example`` has the structure of
        ``batch`` with the leading batch axis removed; ``value`` is a scalar and
        ``aux`` any structure of tensors (not differentiated). Tensors ``fn``
        closes over are shared by every example.
    params : list of tensors
        What to differentiate with respect to (e.g. the values of a model's
        trainable variables). Shared by every example.
    batch : structure of tensors
        Nested structure (dict, list, tuple) of tensors sharing a leading batch
        axis. It must not contain ``None``.

    Returns
    -------
    values : tensor of shape (batch_size,)
    aux : structure of tensors
        ``aux`` of every example, stacked along a new leading axis.
    grads : list of tensors
        ``grads[j]`` has shape ``(batch_size, *params[j].shape)``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import per_example_value_and_grad
    >>> w = keras.ops.convert_to_tensor(np.array([1.0, 2.0], dtype="float32"))
    >>> x = np.array([[1.0, 0.0], [0.0, 3.0]], dtype="float32")
    >>> fn = lambda p, ex: (keras.ops.sum(p[0] * ex["x"]), ())
    >>> values, _, grads = per_example_value_and_grad(fn, [w], {"x": x})
    >>> keras.ops.convert_to_numpy(values).tolist(), keras.ops.convert_to_numpy(grads[0]).tolist()
    ([1.0, 6.0], [[1.0, 0.0], [0.0, 3.0]])
    """
    return get_backend_module().per_example_value_and_grad(fn, list(params), batch)


def value_and_tap_grads(
    fn: Callable[[Callable[[Any, Any], Any]], tuple[Any, Any]],
) -> tuple[Any, Any, dict[Any, Any]]:
    """Value of ``fn`` and its gradients with respect to tapped intermediate tensors.

    ``fn(tap) -> (value, aux)`` computes a scalar; wherever it calls
    ``z = tap(key, z)`` the gradient ``d value / d z`` is returned under ``key``.
    ``tap`` returns a tensor equal to ``z`` (``z`` plus a zero "probe" that is
    differentiated). This is what ghost clipping needs: the gradient of the loss
    with respect to each layer's pre-activation output, for every example at once,
    from one ordinary backward pass.

    Parameters
    ----------
    fn : callable
        ``fn(tap) -> (value, aux)``; ``value`` a scalar tensor, ``aux`` any
        structure of tensors (returned, not differentiated). ``fn`` may be called
        more than once (JAX first traces it for the probes' shapes) and must call
        ``tap`` with the same keys each time, each key once.

    Returns
    -------
    value : tensor
    aux : structure of tensors
    tap_grads : dict
        ``{key: d value / d z}``, each shaped like the tapped ``z``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import value_and_tap_grads
    >>> x = keras.ops.convert_to_tensor(np.array([1.0, 2.0], dtype="float32"))
    >>> fn = lambda tap: (keras.ops.sum(tap("h", 3.0 * x) ** 2), ())
    >>> value, _, grads = value_and_tap_grads(fn)
    >>> float(value), keras.ops.convert_to_numpy(grads["h"]).tolist()
    (45.0, [6.0, 12.0])
    """
    return get_backend_module().value_and_tap_grads(fn)


def gram(x: Any) -> Any:
    """Gram matrices of rows: ``x @ x^T`` over the last two axes.

    Ghost clipping's main extra product. On TensorFlow it is compiled by XLA on
    its own (the rest of the step stays in the ordinary graph): about 3x faster
    on a CPU than the graph's batched matmul.

    Parameters
    ----------
    x : tensor of shape (..., rows, width)

    Returns
    -------
    tensor of shape (..., rows, rows)

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import gram
    >>> keras.ops.convert_to_numpy(gram(np.array([[[1.0, 2.0], [0.0, 1.0]]]))).tolist()
    [[[5.0, 2.0], [2.0, 1.0]]]
    """
    return get_backend_module().gram(keras.ops.convert_to_tensor(x))


def conv_patches(
    x: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...] | None = None,
) -> Any:
    """The input windows a convolution sees ("im2col"), one row per output position.

    Parameters
    ----------
    x : tensor of shape (batch, *spatial, channels)
        Channels-last input of a 1-D or 2-D convolution.
    kernel_size, strides : tuple of int
        One entry per spatial axis.
    padding : {"valid", "same"}
        As in ``keras.layers.Conv2D`` (``"same"`` pads like TensorFlow and XLA:
        the extra row or column, if any, goes after).
    dilation_rate : tuple of int, optional
        One entry per spatial axis (default: no dilation).

    Returns
    -------
    tensor of shape (batch, output_positions, prod(kernel_size) * channels)
        Window entries in the order of a Keras convolution kernel
        ``(*kernel_size, channels)``, so that ``patches @ kernel.reshape(-1,
        filters)`` is the convolution.

    Raises
    ------
    ValueError
        If ``x`` is not the input of a 1-D or 2-D convolution with ``kernel_size``,
        or ``padding`` is neither ``"valid"`` nor ``"same"``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.backend import conv_patches
    >>> x = np.arange(5, dtype="float32").reshape(1, 5, 1)
    >>> keras.ops.convert_to_numpy(conv_patches(x, (3,), (2,), "valid"))[0].tolist()
    [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]
    """
    x = keras.ops.convert_to_tensor(x)
    if len(x.shape) != len(kernel_size) + 2 or len(kernel_size) not in (1, 2):
        raise ValueError(
            "conv_patches takes (batch, *spatial, channels) inputs of 1-D or 2-D "
            f"convolutions. Received: x.shape={tuple(x.shape)}, kernel_size={kernel_size}"
        )
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}")
    dilation_rate = _dilation(dilation_rate, kernel_size)
    return get_backend_module().conv_patches(
        x, tuple(kernel_size), tuple(strides), padding, dilation_rate
    )


def _dilation(dilation_rate, kernel_size):
    return (1,) * len(kernel_size) if dilation_rate is None else tuple(dilation_rate)


def _output_size(size, k, s, padding, d=1):
    span = (k - 1) * d + 1
    return -(-size // s) if padding == "same" else (size - span) // s + 1


def _same_padding(x, out_spatial, kernel_size, strides, dilation_rate):
    pads = []
    for size, out, k, s, d in zip(x.shape[1:-1], out_spatial, kernel_size, strides, dilation_rate):
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append([total // 2, total - total // 2])
    return keras.ops.pad(x, [[0, 0], *pads, [0, 0]])


def _windows(x, kernel_size, strides, padding, out_spatial, dilation_rate):
    """For each kernel offset, the strided slice of ``x`` it multiplies."""
    import itertools

    if padding == "same":
        x = _same_padding(x, out_spatial, kernel_size, strides, dilation_rate)
    for offsets in itertools.product(*[range(k) for k in kernel_size]):
        index = (slice(None),)
        for o, out, s, d in zip(offsets, out_spatial, strides, dilation_rate):
            index += (slice(o * d, o * d + (out - 1) * s + 1, s),)
        yield x[index + (slice(None),)]


def sliced_conv_patches(
    x: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...] | None = None,
) -> Any:
    """:func:`conv_patches` by strided slicing, in ``keras.ops`` (any backend)."""
    import math

    dilation_rate = _dilation(dilation_rate, kernel_size)
    out_spatial = [
        _output_size(n, k, s, padding, d)
        for n, k, s, d in zip(x.shape[1:-1], kernel_size, strides, dilation_rate)
    ]
    columns = list(_windows(x, kernel_size, strides, padding, out_spatial, dilation_rate))
    stacked = keras.ops.stack(columns, axis=-2)  # (n, *out, kernel positions, channels)
    return keras.ops.reshape(stacked, (-1, math.prod(out_spatial), len(columns) * x.shape[-1]))


def per_example_conv_kernel_grads(
    x: Any,
    grads: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...] | None = None,
) -> Any:
    """Each example's gradient of a convolution kernel, from the layer's input and output gradient.

    Ghost clipping and per-example clipping need it for every convolution: example
    ``i``'s kernel gradient is ``patches[i]^T @ grads[i]``, the windows of its input
    (:func:`conv_patches`) times its output gradient, computed here without forming
    a gradient of the whole batch.

    Parameters
    ----------
    x : tensor of shape (batch, *spatial, in_channels)
        The convolution's (channels-last) input.
    grads : tensor of shape (batch, *output_spatial, filters)
        Gradient of the loss with respect to the convolution's output
        (before bias and activation), each example's own.
    kernel_size, strides, padding, dilation_rate
        As in :func:`conv_patches`.

    Returns
    -------
    tensor of shape (batch, prod(kernel_size) * in_channels, filters)
        Example ``i``'s kernel gradient, flattened like
        ``kernel.reshape(-1, filters)``.

    See Also
    --------
    conv_patches : The windows of the input that the gradient multiplies.

    Examples
    --------
    Two 1-D examples of length 5, a kernel of width 3 and stride 2 (two output
    positions), and an output gradient of ones: each example's kernel gradient is
    the sum of its two windows, ``[0, 1, 2] + [2, 3, 4]`` for the first.

    >>> import numpy as np, keras
    >>> from kmi.backend import per_example_conv_kernel_grads
    >>> x = np.arange(10, dtype="float32").reshape(2, 5, 1)
    >>> grads = np.ones((2, 2, 1), dtype="float32")
    >>> kernel_grads = per_example_conv_kernel_grads(x, grads, (3,), (2,), "valid")
    >>> tuple(kernel_grads.shape)
    (2, 3, 1)
    >>> keras.ops.convert_to_numpy(kernel_grads)[..., 0].tolist()
    [[2.0, 4.0, 6.0], [12.0, 14.0, 16.0]]
    """
    return get_backend_module().per_example_conv_kernel_grads(
        keras.ops.convert_to_tensor(x),
        keras.ops.convert_to_tensor(grads),
        tuple(kernel_size),
        tuple(strides),
        padding,
        _dilation(dilation_rate, kernel_size),
    )


def sliced_per_example_conv_kernel_grads(
    x: Any,
    grads: Any,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    dilation_rate: tuple[int, ...] | None = None,
) -> Any:
    """:func:`per_example_conv_kernel_grads` as one batched product per kernel offset."""
    dilation_rate = _dilation(dilation_rate, kernel_size)
    out_spatial = tuple(grads.shape[1:-1])
    letters = "hwd"[: len(out_spatial)]
    spec = f"n{letters}c,n{letters}o->nco"
    blocks = [
        keras.ops.einsum(spec, window, grads)
        for window in _windows(x, kernel_size, strides, padding, out_spatial, dilation_rate)
    ]
    stacked = keras.ops.stack(blocks, axis=1)  # (n, kernel positions, channels, filters)
    return keras.ops.reshape(stacked, (-1, len(blocks) * x.shape[-1], grads.shape[-1]))


def custom_train_step(model: keras.Model, grad_fn: Callable[..., Any]) -> Callable[..., Any]:
    """A ``train_step`` for ``model`` whose gradients come from ``grad_fn``.

    Keras' ``Model.train_step`` has a different signature on each backend
    (stateless ``(state, data)`` on JAX, ``(data)`` on TensorFlow). This builds
    the right one around a backend-neutral, stateless gradient function, so that
    a defense can change how gradients are computed (per-example clipping, noise)
    and keep everything else ``model.fit`` does: the compiled optimizer, the loss
    tracker, the compiled metrics, ``keras.distribution`` on JAX.

    Parameters
    ----------
    model : keras.Model
        A compiled model.
    grad_fn : callable
        ``grad_fn(trainable_values, non_trainable_values, iterations, x, y,
        sample_weight) -> (loss, y_pred, grads, non_trainable_values)``, written
        with ``keras.ops``. ``iterations`` is the optimizer's step counter (a
        scalar tensor), so that randomness can be derived from it statelessly.
        ``loss`` is the unscaled batch loss shown in the logs.

    Returns
    -------
    callable
        A function with the signature of the active backend's
        ``Model.train_step``; assign it to ``model.train_step`` and rebuild the
        train function with ``model.make_train_function(force=True)``.

    Examples
    --------
    Plain gradient descent on the mean squared error, written as a stateless
    ``grad_fn``; ``fit`` runs it with the compiled optimizer and logs its loss.

    >>> import numpy as np, keras
    >>> from kmi.backend import custom_train_step, value_and_grad_with_aux
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")]
    ... )
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> def grad_fn(trainable, non_trainable, iterations, x, y, sample_weight):
    ...     def loss_fn(values):
    ...         y_pred, _ = model.stateless_call(values, non_trainable, x)
    ...         return keras.ops.mean((y_pred - y) ** 2), y_pred
    ...     loss, y_pred, grads = value_and_grad_with_aux(loss_fn, trainable)
    ...     return loss, y_pred, grads, non_trainable
    >>> model.train_step = custom_train_step(model, grad_fn)
    >>> model.make_train_function(force=True)
    >>> history = model.fit(np.ones((4, 2)), np.ones((4, 1)), batch_size=4, epochs=2, verbose=0)
    >>> [round(loss, 4) for loss in history.history["loss"]]
    [1.0, 0.16]
    """
    return get_backend_module().custom_train_step(model, grad_fn)


def update_output_losses(model: keras.Model, y: Any, y_pred: Any, sample_weight: Any) -> None:
    """Update a multi-output model's per-output loss trackers (``digit_loss``...).

    A custom train step computes the loss its own way (per example, or under
    ghost clipping); the trackers Keras logs for each output are updated here,
    once per batch, from the predictions, as Keras' own train step does.
    """
    compile_loss = getattr(model, "_compile_loss", None)
    if compile_loss is not None and compile_loss.metrics:
        compile_loss(y, y_pred, sample_weight)


def _check_scalar(value):
    if len(keras.ops.shape(value)) != 0:
        raise ValueError(
            "value_and_grad needs a function returning a scalar; reduce it first "
            f"(e.g. with keras.ops.sum). Received: output shape={tuple(keras.ops.shape(value))}"
        )
