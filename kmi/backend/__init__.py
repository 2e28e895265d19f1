"""The few operations Keras 3 leaves to each backend.

Everything else in kmi is written with ``keras.ops``. The functions here dispatch
on ``keras.backend.backend()`` to one module per backend (:mod:`kmi.backend.tensorflow`,
:mod:`kmi.backend.jax`).
"""

import importlib

import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax")

__all__ = ["SUPPORTED_BACKENDS", "get_backend_module", "value_and_grad"]


def get_backend_module():
    """Return the kmi module implementing the active Keras backend.

    Raises
    ------
    NotImplementedError
        If the active Keras backend is not one kmi supports.
    """
    name = keras.backend.backend()
    if name not in SUPPORTED_BACKENDS:
        raise NotImplementedError(
            "kmi supports the Keras backends "
            f"{', '.join(SUPPORTED_BACKENDS)}; set KERAS_BACKEND to one of them "
            f"before importing keras. Received: backend={name!r}"
        )
    return importlib.import_module(f"kmi.backend.{name}")


def value_and_grad(fn, x):
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


def _check_scalar(value):
    if len(keras.ops.shape(value)) != 0:
        raise ValueError(
            "value_and_grad needs a function returning a scalar; reduce it first "
            f"(e.g. with keras.ops.sum). Received: output shape={tuple(keras.ops.shape(value))}"
        )
