"""Reference image architectures: targets, an evaluation classifier and GAN priors.

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
- :func:`dcgan_generator` and :func:`dcgan_critic`: the DCGAN / WGAN-GP prior of
  GMI, KED-MI and BREP-MI, for square grey or colour images of side 16, 32 or 64.
- :func:`pca_prior`: a linear (PCA, "eigenface") generator and its Gaussian critic,
  fitted in closed form on a few hundred public images, where a GAN has too little
  data to learn from; it drops into GMI in place of the GAN.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
from keras import layers

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


def _check_shape(input_shape, name="input_shape"):
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{name} must be (height, width, channels) of positive integers. "
            f"Received: {name}={input_shape!r}"
        )
    return shape


def _check_classes(n_classes):
    if not isinstance(n_classes, numbers.Integral) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2. Received: n_classes={n_classes!r}")
    return int(n_classes)


def _head(x, n_classes, output_activation):
    if output_activation not in (None, "softmax"):
        raise ValueError(
            "output_activation must be None (logits) or 'softmax'. "
            f"Received: output_activation={output_activation!r}"
        )
    return layers.Dense(n_classes, activation=output_activation, name="logits")(x)


def softmax_regression(
    input_shape, n_classes: int, *, output_activation: str | None = "softmax"
) -> keras.Model:
    """Multinomial logistic regression on the flattened pixels (Fredrikson et al. 2015).

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)``.
    n_classes : int
    output_activation : {"softmax", None}, default="softmax"
        ``None`` outputs logits.

    Returns
    -------
    keras.Model
        Flatten, then one Dense layer; its ``"features"`` layer is the flattened input.

    Examples
    --------
    >>> from kmi.models import softmax_regression
    >>> softmax_regression((8, 8, 1), 10).output_shape
    (None, 10)
    """
    shape = _check_shape(input_shape)
    inputs = keras.Input(shape)
    x = layers.Flatten(name="features")(inputs)
    return keras.Model(
        inputs, _head(x, _check_classes(n_classes), output_activation), name="softmax_regression"
    )


def mlp_classifier(
    input_shape,
    n_classes: int,
    *,
    hidden_units=(3000,),
    activation: str = "sigmoid",
    output_activation: str | None = "softmax",
) -> keras.Model:
    """Multilayer perceptron on the flattened pixels.

    Fredrikson et al. (2015) used one hidden layer of 3,000 sigmoid units.

    Parameters
    ----------
    input_shape : tuple of int
    n_classes : int
    hidden_units : tuple of int, default=(3000,)
    activation : str, default="sigmoid"
    output_activation : {"softmax", None}, default="softmax"

    Returns
    -------
    keras.Model
        Its last hidden layer is named ``"features"``.
    """
    shape = _check_shape(input_shape)
    units = tuple(hidden_units)
    if not units or any(not isinstance(u, numbers.Integral) or u < 1 for u in units):
        raise ValueError(
            "hidden_units must be a non-empty tuple of positive integers. "
            f"Received: hidden_units={hidden_units!r}"
        )
    inputs = keras.Input(shape)
    x = layers.Flatten()(inputs)
    for i, u in enumerate(units):
        name = "features" if i == len(units) - 1 else f"hidden_{i}"
        x = layers.Dense(int(u), activation=activation, name=name)(x)
    return keras.Model(
        inputs, _head(x, _check_classes(n_classes), output_activation), name="mlp_classifier"
    )


def cnn_classifier(
    input_shape,
    n_classes: int,
    *,
    filters=(32, 64),
    dense_units: int = 128,
    batch_norm: bool = True,
    output_activation: str | None = None,
) -> keras.Model:
    """A small convolutional target: Conv-BN-ReLU-MaxPool blocks and a dense layer.

    Parameters
    ----------
    input_shape : tuple of int
    n_classes : int
    filters : tuple of int, default=(32, 64)
        Filters of each 3x3 block; each block halves the resolution.
    dense_units : int, default=128
        Width of the ``"features"`` layer.
    batch_norm : bool, default=True
        Put BatchNormalization after each convolution (DeepInversion matches its
        running statistics).
    output_activation : {None, "softmax"}, default=None

    Returns
    -------
    keras.Model
    """
    shape = _check_shape(input_shape)
    inputs = keras.Input(shape)
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(int(f), 3, padding="same", use_bias=not batch_norm, name=f"conv_{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"bn_{i}")(x)
        x = layers.ReLU()(x)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(int(dense_units), activation="relu", name="features")(x)
    return keras.Model(
        inputs, _head(x, _check_classes(n_classes), output_activation), name="cnn_classifier"
    )


def evaluation_classifier(
    input_shape,
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
    n_classes : int
    width : int, default=32
        Filters of the first block (doubled in each of the three blocks).
    dropout : float, default=0.3
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
    seed : int, default=None
        Seed of the augmentation and dropout layers.

    Returns
    -------
    keras.Model
        Its ``"features"`` layer (global average pooling output) is the feature
        space of :func:`kmi.metrics.image.knn_distance`.
    """
    shape = _check_shape(input_shape)
    inputs = keras.Input(shape)
    x = inputs
    if standardize:  # per-image: zero mean, unit variance over all its pixels
        x = layers.LayerNormalization(
            axis=[1, 2, 3], center=False, scale=False, epsilon=1e-6, name="standardize"
        )(x)
    if augment:
        x = layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed)(x)
        x = layers.RandomZoom(0.1, fill_mode="nearest", seed=seed)(x)
    for i in range(3):
        f = int(width) * 2**i
        shortcut = layers.Conv2D(f, 1, padding="same", name=f"proj_{i}")(x)
        y = layers.Conv2D(f, 3, padding="same", name=f"res_{i}a")(x)
        y = layers.LayerNormalization(axis=-1)(y)
        y = layers.Activation("gelu")(y)
        y = layers.Conv2D(f, 3, padding="same", name=f"res_{i}b")(y)
        x = layers.Activation("gelu")(layers.Add()([shortcut, y]))
        if min(x.shape[1], x.shape[2]) >= 4:
            x = layers.AveragePooling2D(2)(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    x = layers.Dropout(dropout, seed=seed)(x)
    return keras.Model(
        inputs,
        _head(x, _check_classes(n_classes), output_activation),
        name="evaluation_classifier",
    )


def feature_extractor(model: keras.Model, layer: str = "features") -> keras.Model:
    """A model mapping ``model``'s input to the output of its layer ``layer``.

    Raises
    ------
    ValueError
        If ``model`` has no such layer.
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


def _gan_side(image_shape):
    shape = _check_shape(image_shape, "image_shape")
    side = shape[0]
    n_up = int(round(math.log2(side / 4))) if side >= 8 else 0
    if shape[0] != shape[1] or n_up < 1 or 4 * 2**n_up != side:
        raise ValueError(
            "image_shape must be square with a side of 8, 16, 32, 64 or 128 (4 x a power of "
            f"two); resize the images first. Received: image_shape={image_shape!r}"
        )
    return shape, n_up


def dcgan_generator(
    latent_dim: int = 100, image_shape=(32, 32, 1), *, width: int = 64
) -> keras.Model:
    """DCGAN generator: a latent vector to an image in [0, 1] (sigmoid output).

    Dense to 4x4, then transposed convolutions with BatchNormalization and ReLU,
    each doubling the side (Radford et al. 2016; the prior of GMI, Zhang et al. 2020).

    Parameters
    ----------
    latent_dim : int, default=100
    image_shape : tuple of int, default=(32, 32, 1)
        Square, side 8 to 128.
    width : int, default=64
        Filters of the last hidden block (doubled towards the input).

    Returns
    -------
    keras.Model
    """
    shape, n_up = _gan_side(image_shape)
    if not isinstance(latent_dim, numbers.Integral) or latent_dim < 1:
        raise ValueError(
            f"latent_dim must be a positive integer. Received: latent_dim={latent_dim!r}"
        )
    z = keras.Input((int(latent_dim),))
    ch = int(width) * 2 ** (n_up - 1)
    x = layers.Dense(4 * 4 * ch, use_bias=False)(z)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((4, 4, ch))(x)
    for _ in range(n_up - 1):
        ch = max(ch // 2, 8)
        x = layers.Conv2DTranspose(ch, 5, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    out = layers.Conv2DTranspose(shape[2], 5, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(z, out, name="dcgan_generator")


def dcgan_critic(
    image_shape=(32, 32, 1), *, width: int = 64, n_classes: int | None = None
) -> keras.Model:
    """WGAN-GP critic: strided convolutions, LayerNormalization, LeakyReLU.

    No BatchNormalization, which the gradient penalty forbids (Gulrajani et al.
    2017). With ``n_classes`` it has a second, K-way head on the same features:
    the discriminator of KED-MI (Chen et al. 2021), trained on the target's soft
    labels.

    Parameters
    ----------
    image_shape : tuple of int, default=(32, 32, 1)
    width : int, default=64
    n_classes : int, default=None

    Returns
    -------
    keras.Model
        Output ``critic`` of shape (n, 1); with ``n_classes``, the outputs are
        ``[critic, class_logits]``.
    """
    shape, n_up = _gan_side(image_shape)
    inputs = keras.Input(shape)
    x = layers.Conv2D(int(width), 5, strides=2, padding="same")(inputs)
    x = layers.LeakyReLU(0.2)(x)
    ch = int(width)
    for _ in range(n_up - 1):
        ch *= 2
        x = layers.Conv2D(ch, 5, strides=2, padding="same")(x)
        x = layers.LayerNormalization(axis=[1, 2, 3])(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten(name="features")(x)
    critic = layers.Dense(1, name="critic")(x)
    if n_classes is None:
        return keras.Model(inputs, critic, name="dcgan_critic")
    logits = layers.Dense(_check_classes(n_classes), name="class_logits")(x)
    return keras.Model(inputs, [critic, logits], name="dcgan_critic")


def pca_prior(X, n_components: int = 40, *, prior_weight: float = 1.0):
    """A linear image prior: principal components of public images, as a generator and critic.

    The generator maps a code ``c`` (in units of each component's standard
    deviation, so ``c ~ N(0, I)`` draws images like ``X``) to
    ``clip(mean + c @ (sd * components), 0, 1)``. The critic projects an image back
    onto the components and scores it ``-prior_weight * ||c||^2`` (a Gaussian
    log-density up to a constant), so GMI's prior loss ``-critic(G(c))`` is the
    squared norm of the code. Both are fixed (non-trainable) functional models
    built from standard layers, saved and loaded like any other.

    With a few hundred public images a GAN has little to learn from; the principal
    components ("eigenfaces" for faces) need none of its training. On the AT&T
    benchmark, 40 components of 600 public images (300 faces and their mirror
    images) already span the private subjects' faces: the benchmark's evaluation
    CNNs name the right subject for 0.81-0.94 of their projections (the
    ``judge_checks`` of ``benchmarks/results/image_att_faces_b_32_cpu.json``).

    Parameters
    ----------
    X : array of shape (n, height, width, channels)
        Public images in [0, 1]; add mirror images (``X[:, :, ::-1]``) for more.
    n_components : int, default=40
        At most ``min(n - 1, height * width * channels)``.
    prior_weight : float, default=1.0
        Scale of the critic's score. With GMI's ``identity_weight=100``, 1.0 weighs
        the prior as ``0.01 * ||c||^2`` against a cross-entropy of 1.

    Returns
    -------
    generator, critic : keras.Model
        ``generator``: ``(n, n_components)`` to ``(n, *X.shape[1:])``;
        ``critic``: images to scores of shape ``(n, 1)``.
    """
    X = np.asarray(X, dtype="float64")
    if X.ndim != 4 or len(X) < 2:
        raise ValueError(
            "X must be at least 2 images of shape (n, height, width, channels). "
            f"Received: X.shape={X.shape}"
        )
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values; remove or impute them first.")
    flat = X.reshape(len(X), -1)
    max_k = min(len(flat) - 1, flat.shape[1])  # centred images span at most n - 1 directions
    if not isinstance(n_components, numbers.Integral) or not 1 <= n_components <= max_k:
        raise ValueError(
            f"n_components must be an integer from 1 to {max_k} (one less than the number "
            f"of images, or the number of pixels). Received: n_components={n_components!r}"
        )
    if not isinstance(prior_weight, numbers.Real) or not prior_weight >= 0:
        raise ValueError(
            f"prior_weight must be a non-negative number. Received: prior_weight={prior_weight!r}"
        )
    k, d = int(n_components), flat.shape[1]
    mean = flat.mean(axis=0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    sd = np.maximum(s[:k] / np.sqrt(len(flat)), 1e-8)
    basis = vt[:k] * sd[:, None]  # (k, d): one standard deviation along each component

    def fixed_dense(units, kernel, bias, name):
        layer = layers.Dense(units, trainable=False, name=name)
        layer.build((None, kernel.shape[0]))
        layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
        return layer

    code = keras.Input((k,))
    x = fixed_dense(d, basis, mean, "components")(code)
    x = layers.ReLU(max_value=1.0, name="clip")(x)  # clip to [0, 1]
    generator = keras.Model(code, layers.Reshape(X.shape[1:])(x), name="pca_generator")

    images = keras.Input(X.shape[1:])
    unit = vt[:k] / sd[:, None]  # projection onto the codes
    c = fixed_dense(k, unit.T, -(unit @ mean), "codes")(layers.Flatten()(images))
    sq = layers.Dot(axes=1, name="squared_norm")([c, c])
    score = layers.Rescaling(-float(prior_weight), name="critic")(sq)
    critic = keras.Model(images, score, name="pca_critic")
    return generator, critic
