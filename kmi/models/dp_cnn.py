"""The small CNN of the DP-SGD literature (TF Privacy tutorial, Papernot et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from kmi.models._seeds import SeedStream

__all__ = ["dp_cnn"]


def dp_cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    activation: str = "tanh",
    name: str | None = None,
    *,
    seed: int | None = None,
) -> keras.Sequential:
    """The TF Privacy tutorial CNN for MNIST-sized images, with tempered activations.

    conv 16 8x8 stride 2 (same padding), max-pool 2 stride 1, conv 32 4x4 stride 2,
    max-pool 2 stride 1, dense 32, dense ``num_classes`` (logits). It has no
    BatchNormalization, so DP-SGD can train it. ``tanh`` is the tempered sigmoid
    Papernot et al. (2021) found best under DP-SGD.

    Parameters
    ----------
    input_shape : tuple of int, default=(28, 28, 1)
        ``(height, width, channels)``.
    num_classes : int, default=10
        Width of the output layer.
    activation : str, default="tanh"
        Activation of the hidden layers.
    name : str, optional
        Name of the model.
    seed : int, default=None
        Seeds the weight initialisation, each layer with a seed of its own derived
        from it; ``None`` draws as Keras does.

    Returns
    -------
    keras.Sequential
        Uncompiled; outputs logits.

    Raises
    ------
    ValueError
        If ``seed`` is not a non-negative integer (Keras raises on a bad shape).

    References
    ----------
    Papernot, Thakurta, Song, Chien and Erlingsson, "Tempered Sigmoid Activations
    for Deep Learning with Differential Privacy", AAAI 2021.

    Examples
    --------
    >>> from kmi.models.dp_cnn import dp_cnn
    >>> dp_cnn().count_params()
    26010
    >>> dp_cnn(seed=0).output_shape
    (None, 10)
    """
    seeds = SeedStream(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(
                16,
                8,
                strides=2,
                padding="same",
                activation=activation,
                kernel_initializer=seeds.initializer(),
            ),
            layers.MaxPooling2D(2, strides=1),
            layers.Conv2D(
                32,
                4,
                strides=2,
                padding="valid",
                activation=activation,
                kernel_initializer=seeds.initializer(),
            ),
            layers.MaxPooling2D(2, strides=1),
            layers.Flatten(),
            layers.Dense(32, activation=activation, kernel_initializer=seeds.initializer()),
            layers.Dense(num_classes, kernel_initializer=seeds.initializer()),
        ],
        name=name,
    )
