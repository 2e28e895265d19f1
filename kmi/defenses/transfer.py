"""Transfer-learning defense: fine-tune only the last layers (TL-DMI)."""

from __future__ import annotations

import keras

__all__ = ["freeze_until"]


def freeze_until(
    model: keras.Model, layer: str | int | keras.layers.Layer, *, inclusive: bool = True
) -> keras.Model:
    """Freeze a model's layers up to ``layer``, the TL-DMI recipe (Ho et al. 2024).

    TL-DMI pre-trains a model on public data, then fine-tunes only its last
    layers on the private data: the early layers, which hold most of the
    information an inversion attack exploits, never see the private data. This
    sets ``trainable = False`` on every top-level layer of ``model`` up to
    ``layer`` and ``trainable = True`` on the layers after it.

    Parameters
    ----------
    model : keras.Model
        A Sequential or functional model.
    layer : str, int or keras.layers.Layer
        The last layer frozen (with ``inclusive=True``): its name, its index in
        ``model.layers`` (negative indices count from the end) or the layer.
    inclusive : bool, default=True
        Whether ``layer`` itself is frozen.

    Returns
    -------
    keras.Model
        ``model``, modified in place. Compile it (again) before ``fit``: Keras
        reads ``trainable`` when it builds the train step.

    Raises
    ------
    ValueError
        If ``layer`` is not a top-level layer of ``model``.

    See Also
    --------
    check_dp_compatible : a frozen ``BatchNormalization`` is accepted by DP-SGD.

    References
    ----------
    Ho, Hao, Chandrasegaran, Nguyen and Cheung, "Model Inversion Robustness: Can
    Transfer Learning Help?", CVPR 2024.

    Examples
    --------
    >>> import keras
    >>> from kmi.defenses import freeze_until
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="a"),
    ...                           keras.layers.Dense(8, name="b"), keras.layers.Dense(2)])
    >>> [layer.trainable for layer in freeze_until(model, "b").layers]
    [False, False, True]
    >>> [layer.trainable for layer in freeze_until(model, -1, inclusive=False).layers]
    [False, False, True]
    >>> len(model.trainable_weights)  # the last Dense's kernel and bias
    2
    """
    layers = list(model.layers)
    if isinstance(layer, keras.layers.Layer):
        matches = [i for i, candidate in enumerate(layers) if candidate is layer]
        index = matches[0] if matches else None
    elif isinstance(layer, str):
        names = [candidate.name for candidate in layers]
        index = names.index(layer) if layer in names else None
    elif isinstance(layer, int) and not isinstance(layer, bool):
        index = layer + len(layers) if layer < 0 else layer
        if not 0 <= index < len(layers):
            index = None
    else:
        index = None
    if index is None:
        names = [candidate.name for candidate in layers]
        raise ValueError(
            "layer must be the name, index or instance of a top-level layer of the "
            f"model (layers: {names}). Received: layer={layer!r}"
        )
    stop = index + 1 if inclusive else index
    for i, candidate in enumerate(layers):
        candidate.trainable = i >= stop
    return model
