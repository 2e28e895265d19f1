"""A defense-aware attacker's view of a trapdoored model: the model behind a blur."""

from __future__ import annotations

import numpy as np


def gaussian_kernel(sigma: float, channels: int) -> np.ndarray:
    """A normalised 2-D Gaussian kernel of width ``2 * ceil(2 * sigma) + 1``, one per
    channel, shaped for ``keras.layers.DepthwiseConv2D``: (k, k, channels, 1)."""
    radius = max(1, int(np.ceil(2 * sigma)))
    t = np.arange(-radius, radius + 1, dtype="float64")
    g = np.exp(-(t**2) / (2 * sigma**2))
    k = np.outer(g, g)
    k /= k.sum()
    return np.repeat(k[:, :, None, None], channels, axis=2).astype("float32")


def purified(model, sigma: float = 1.0):
    """``model`` behind a fixed Gaussian blur: a defense-aware attack's target.

    Trap-MID (:class:`kmi.defenses.TrapMID`) trains a model to answer class ``c``
    confidently when a faint trigger ``T[c]`` is blended into its input (2% of it at
    the paper's ``alpha``), so that an inversion attack, which maximises a class's
    confidence, finds the trigger instead of the class's features. An attacker who
    knows a trapdoor may be there can invert ``purified(model)`` instead of
    ``model``: the blur removes most of a trigger's fine detail before the model
    sees it, so the trigger no longer pays, and the search must find what makes the
    class in coarse shapes. The attack gets the model's gradients through the blur
    (white-box) and returns the unblurred images it searched. This is kmi's own
    defense-aware attacker (input purification, as against backdoors); the
    adaptive attack of the Trap-MID paper may differ.

    Parameters
    ----------
    model : keras.Model
        The target's model: images (NHWC) to class scores.
    sigma : float, default=1.0
        The blur's standard deviation, in pixels.

    Returns
    -------
    keras.Model
        ``model`` after a non-trainable depthwise convolution with a Gaussian
        kernel (``"same"`` padding, so the image's shape is kept; the edges are
        zero-padded). It saves and loads as any Keras model.

    Raises
    ------
    ValueError
        If ``model`` is not a Keras model of images, or ``sigma`` is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks.image import purified
    >>> from kmi.models import softmax_regression
    >>> model = softmax_regression((8, 8, 1), 3, seed=0)
    >>> purified(model).output_shape
    (None, 3)
    """
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(
            f"model must be a Keras model of images. Received: {type(model).__name__}"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise ValueError(
            "model must take images of shape (height, width, channels). "
            f"Received: a model whose input shape is {shape}"
        )
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of pixels. Received: sigma={sigma!r}")
    kernel = gaussian_kernel(float(sigma), shape[-1])
    blur = keras.layers.DepthwiseConv2D(
        kernel.shape[:2], padding="same", use_bias=False, trainable=False, name="purify_blur"
    )
    inputs = keras.Input(shape)
    outputs = model(blur(inputs))
    blur.set_weights([kernel])
    return keras.Model(inputs, outputs, name=f"{model.name}_purified")
