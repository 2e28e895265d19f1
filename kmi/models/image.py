"""Reference image classifiers: targets of model inversion and an evaluation classifier.

Every builder returns a functional :class:`keras.Model` (saved and loaded with
``model.save`` / ``keras.saving.load_model``) whose classifier outputs are logits
unless ``output_activation="softmax"``. Classifiers name their penultimate layer
``"features"``, which :func:`feature_extractor` exposes for the metrics of
:mod:`kmi.metrics.image` (KNN distance, Frechet distance).

- Targets of the model-inversion literature: :func:`softmax_regression` and
  :func:`mlp_classifier` (Fredrikson et al. 2015), :func:`cnn_classifier` (with
  BatchNormalization, which DeepInversion needs).
- :func:`evaluation_classifier`: a different architecture (residual blocks, global
  average pooling) trained on the private data, that judges reconstructions.

The image priors of generative attacks (:func:`dcgan_generator`, :func:`dcgan_critic`,
:func:`pca_prior`) live in :mod:`kmi.models.priors`; they are importable from here too.

Every builder takes ``seed``: with an integer, every random initializer and random
layer gets a seed of its own derived from it, so that the same seed builds the same
weights (on a given backend) without any global seeding.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
from keras import layers

from kmi.models._checks import check_input_shape, check_n_classes
from kmi.models._seeds import SeedStream
from kmi.models.priors import dcgan_critic, dcgan_generator, pca_prior

__all__ = [
    "cnn_classifier",
    "dcgan_critic",
    "dcgan_generator",
    "evaluation_classifier",
    "feature_extractor",
    "mlp_classifier",
    "pca_prior",
    "softmax_regression",
]


def _head(x, n_classes, output_activation, seeds):
    if output_activation not in (None, "softmax"):
        raise ValueError(
            "output_activation must be None (logits) or 'softmax'. "
            f"Received: output_activation={output_activation!r}"
        )
    return layers.Dense(
        n_classes,
        activation=output_activation,
        kernel_initializer=seeds.initializer(),
        name="logits",
    )(x)


def softmax_regression(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    output_activation: str | None = "softmax",
    seed: int | None = None,
) -> keras.Model:
    """Multinomial logistic regression on the flattened pixels (Fredrikson et al. 2015).

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``.
    n_classes : int
        Number of classes, at least 2.
    output_activation : {"softmax", None}, default="softmax"
        ``None`` outputs logits.
    seed : int, default=None
        Seeds the weight initialisation; ``None`` draws as Keras does.

    Returns
    -------
    keras.Model
        Flatten, then one Dense layer; its ``"features"`` layer is the flattened input.

    Raises
    ------
    ValueError
        If ``input_shape`` is not three positive integers, ``n_classes`` is below 2,
        ``output_activation`` is unknown or ``seed`` is not a non-negative integer.

    References
    ----------
    M. Fredrikson, S. Jha and T. Ristenpart. Model inversion attacks that exploit
    confidence information and basic countermeasures. CCS 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import softmax_regression
    >>> model = softmax_regression((8, 8, 1), 10, seed=0)
    >>> model.output_shape
    (None, 10)
    >>> again = softmax_regression((8, 8, 1), 10, seed=0)
    >>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))
    True
    """
    shape = check_input_shape(input_shape)
    seeds = SeedStream(seed)
    inputs = keras.Input(shape)
    x = layers.Flatten(name="features")(inputs)
    return keras.Model(
        inputs,
        _head(x, check_n_classes(n_classes), output_activation, seeds),
        name="softmax_regression",
    )


def mlp_classifier(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    hidden_units: Sequence[int] = (3000,),
    activation: str = "sigmoid",
    output_activation: str | None = "softmax",
    seed: int | None = None,
) -> keras.Model:
    """Multilayer perceptron on the flattened pixels.

    Fredrikson et al. (2015) used one hidden layer of 3,000 sigmoid units.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``.
    n_classes : int
        Number of classes, at least 2.
    hidden_units : tuple of int, default=(3000,)
        Width of each hidden layer.
    activation : str, default="sigmoid"
        Activation of the hidden layers.
    output_activation : {"softmax", None}, default="softmax"
        ``None`` outputs logits.
    seed : int, default=None
        Seeds the weight initialisation; ``None`` draws as Keras does.

    Returns
    -------
    keras.Model
        Its last hidden layer is named ``"features"``.

    Raises
    ------
    ValueError
        On a bad ``input_shape``, ``n_classes``, ``hidden_units``,
        ``output_activation`` or ``seed``.

    References
    ----------
    M. Fredrikson, S. Jha and T. Ristenpart. Model inversion attacks that exploit
    confidence information and basic countermeasures. CCS 2015.

    Examples
    --------
    >>> from kmi.models import mlp_classifier
    >>> model = mlp_classifier((8, 8, 1), 10, hidden_units=(16,), seed=0)
    >>> model.output_shape, model.get_layer("features").units
    ((None, 10), 16)
    """
    shape = check_input_shape(input_shape)
    units = tuple(hidden_units)
    if not units or any(not isinstance(u, numbers.Integral) or u < 1 for u in units):
        raise ValueError(
            "hidden_units must be a non-empty tuple of positive integers. "
            f"Received: hidden_units={hidden_units!r}"
        )
    seeds = SeedStream(seed)
    inputs = keras.Input(shape)
    x = layers.Flatten()(inputs)
    for i, u in enumerate(units):
        name = "features" if i == len(units) - 1 else f"hidden_{i}"
        x = layers.Dense(
            int(u), activation=activation, kernel_initializer=seeds.initializer(), name=name
        )(x)
    return keras.Model(
        inputs,
        _head(x, check_n_classes(n_classes), output_activation, seeds),
        name="mlp_classifier",
    )


def cnn_classifier(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    filters: Sequence[int] = (32, 64),
    dense_units: int = 128,
    batch_norm: bool = True,
    output_activation: str | None = None,
    seed: int | None = None,
) -> keras.Model:
    """A small convolutional target: Conv-BN-ReLU-MaxPool blocks and a dense layer.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``.
    n_classes : int
        Number of classes, at least 2.
    filters : tuple of int, default=(32, 64)
        Filters of each 3x3 block; each block halves the resolution.
    dense_units : int, default=128
        Width of the ``"features"`` layer.
    batch_norm : bool, default=True
        Put BatchNormalization after each convolution (DeepInversion matches its
        running statistics).
    output_activation : {None, "softmax"}, default=None
        ``None`` outputs logits.
    seed : int, default=None
        Seeds the weight initialisation; ``None`` draws as Keras does.

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        On a bad ``input_shape``, ``n_classes``, ``output_activation`` or ``seed``.

    Examples
    --------
    >>> from kmi.models import cnn_classifier
    >>> model = cnn_classifier((8, 8, 1), 3, filters=(4, 8), dense_units=16, seed=0)
    >>> model.output_shape, model.get_layer("bn_0").__class__.__name__
    ((None, 3), 'BatchNormalization')
    """
    shape = check_input_shape(input_shape)
    seeds = SeedStream(seed)
    inputs = keras.Input(shape)
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(
            int(f),
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer=seeds.initializer(),
            name=f"conv_{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"bn_{i}")(x)
        x = layers.ReLU()(x)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(
        int(dense_units),
        activation="relu",
        kernel_initializer=seeds.initializer(),
        name="features",
    )(x)
    return keras.Model(
        inputs,
        _head(x, check_n_classes(n_classes), output_activation, seeds),
        name="cnn_classifier",
    )


def evaluation_classifier(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    width: int = 32,
    dropout: float = 0.3,
    augment: bool = True,
    standardize: bool = False,
    output_activation: str | None = None,
    seed: int | None = None,
) -> keras.Model:
    """An evaluation classifier, of a different architecture from the targets.

    Model-inversion results are judged by a classifier the attack never saw
    (Zhang et al. 2020): it is trained on the private data and reads each
    reconstruction. This one has residual blocks, global average pooling, dropout
    and (during training only) random translation and zoom, unlike every target
    builder here.

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``.
    n_classes : int
        Number of classes, at least 2.
    width : int, default=32
        Filters of the first block (doubled in each of the three blocks).
    dropout : float, default=0.3
        Dropout rate before the output layer.
    augment : bool, default=True
        Random translation (10 %) and zoom (10 %) while training.
    standardize : bool, default=False
        Standardise each image first (subtract its mean pixel, divide by its pixel
        standard deviation), so that the classifier reads the same class whatever the
        image's global brightness and contrast. Reconstructions rarely have the
        private images' exact intensities: on AT&T faces (20 subjects, 32x32, trained
        150 epochs without augmentation), the classifier without standardisation read
        its own training faces made 0.1 darker as the right subject for only 0.19 and
        0.33 of them (two seeds), and at 0.7 of their contrast for 0.21 and 0.23; with
        it, for all of them (``judge_checks`` in
        ``benchmarks/results/image_att_faces_b_32_cpu.json``).
    output_activation : {None, "softmax"}, default=None
        ``None`` outputs logits.
    seed : int, default=None
        Seeds the weight initialisation, the augmentation and the dropout, each
        layer with a seed of its own; ``None`` draws as Keras does.

    Returns
    -------
    keras.Model
        Its ``"features"`` layer (global average pooling output) is the feature
        space of :func:`kmi.metrics.image.knn_distance`.

    Raises
    ------
    ValueError
        On a bad ``input_shape``, ``n_classes``, ``output_activation`` or ``seed``.

    References
    ----------
    Y. Zhang, R. Jia, H. Pei, W. Wang, B. Li and D. Song. The secret revealer:
    generative model-inversion attacks against deep neural networks. CVPR 2020.

    Examples
    --------
    >>> from kmi.models import evaluation_classifier, feature_extractor
    >>> model = evaluation_classifier((8, 8, 1), 10, width=4, seed=0)
    >>> model.output_shape, feature_extractor(model).output_shape
    ((None, 10), (None, 16))
    """
    shape = check_input_shape(input_shape)
    seeds = SeedStream(seed)
    inputs = keras.Input(shape)
    x = inputs
    if standardize:  # per-image: zero mean, unit variance over all its pixels
        x = layers.LayerNormalization(
            axis=[1, 2, 3], center=False, scale=False, epsilon=1e-6, name="standardize"
        )(x)
    if augment:
        x = layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seeds.next())(x)
        x = layers.RandomZoom(0.1, fill_mode="nearest", seed=seeds.next())(x)
    for i in range(3):
        f = int(width) * 2**i
        shortcut = layers.Conv2D(
            f, 1, padding="same", kernel_initializer=seeds.initializer(), name=f"proj_{i}"
        )(x)
        y = layers.Conv2D(
            f, 3, padding="same", kernel_initializer=seeds.initializer(), name=f"res_{i}a"
        )(x)
        y = layers.LayerNormalization(axis=-1)(y)
        y = layers.Activation("gelu")(y)
        y = layers.Conv2D(
            f, 3, padding="same", kernel_initializer=seeds.initializer(), name=f"res_{i}b"
        )(y)
        x = layers.Activation("gelu")(layers.Add()([shortcut, y]))
        if min(x.shape[1], x.shape[2]) >= 4:
            x = layers.AveragePooling2D(2)(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    x = layers.Dropout(dropout, seed=seeds.next())(x)
    return keras.Model(
        inputs,
        _head(x, check_n_classes(n_classes), output_activation, seeds),
        name="evaluation_classifier",
    )


def feature_extractor(model: keras.Model, layer: str = "features") -> keras.Model:
    """A model mapping ``model``'s input to the output of its layer ``layer``.

    It shares ``model``'s layers and weights (nothing is copied).

    Parameters
    ----------
    model : keras.Model
        A functional model, e.g. from :func:`evaluation_classifier`.
    layer : str, default="features"
        Name of the layer whose output is returned.

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        If ``model`` has no such layer.

    Examples
    --------
    >>> from kmi.models import feature_extractor, mlp_classifier
    >>> model = mlp_classifier((8, 8, 1), 3, hidden_units=(32, 12))
    >>> feature_extractor(model).output_shape
    (None, 12)
    """
    try:
        out = model.get_layer(layer).output
    except ValueError as exc:
        names = [lyr.name for lyr in model.layers][-6:]
        raise ValueError(
            f"The model has no layer named {layer!r} (its last layers are {names}). "
            f"Received: layer={layer!r}"
        ) from exc
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, out, name=f"{model.name}_{layer}")
