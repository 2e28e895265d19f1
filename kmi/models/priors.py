"""Image priors for generative model inversion: a DCGAN and a PCA ("eigenface") prior.

- :func:`dcgan_generator` and :func:`dcgan_critic`: the DCGAN / WGAN-GP prior of
  GMI, KED-MI and BREP-MI, for square grey or colour images of side 8 to 128.
- :func:`pca_prior`: a linear (PCA, "eigenface") generator and its Gaussian critic,
  fitted in closed form on a few hundred public images, where a GAN has too little
  data to learn from; it drops into GMI in place of the GAN.

The DCGAN builders take ``seed``: with an integer, every random initializer gets a
seed of its own derived from it, so that the same seed builds the same weights (on a
given backend) without any global seeding.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers
from numpy.typing import ArrayLike

from kmi.models._checks import check_input_shape, check_n_classes
from kmi.models._seeds import SeedStream
from kmi.utils.validation import check_images

__all__ = ["dcgan_critic", "dcgan_generator", "pca_prior"]


def _gan_side(image_shape):
    shape = check_input_shape(image_shape, "image_shape")
    side = shape[0]
    n_up = int(round(math.log2(side / 4))) if side >= 8 else 0
    if shape[0] != shape[1] or n_up < 1 or 4 * 2**n_up != side:
        raise ValueError(
            "image_shape must be square with a side of 8, 16, 32, 64 or 128 (4 x a power of "
            f"two); resize the images first. Received: image_shape={image_shape!r}"
        )
    return shape, n_up


def dcgan_generator(
    latent_dim: int = 100,
    image_shape: Sequence[int] = (32, 32, 1),
    *,
    width: int = 64,
    seed: int | None = None,
) -> keras.Model:
    """DCGAN generator: a latent vector to an image in [0, 1] (sigmoid output).

    Dense to 4x4, then transposed convolutions with BatchNormalization and ReLU,
    each doubling the side (Radford et al. 2016; the prior of GMI, Zhang et al. 2020).

    Parameters
    ----------
    latent_dim : int, default=100
        Length of the latent vector.
    image_shape : tuple of int, default=(32, 32, 1)
        Square, side 8, 16, 32, 64 or 128.
    width : int, default=64
        Filters of the last hidden block (doubled towards the input).
    seed : int, default=None
        Seeds the weight initialisation; ``None`` draws as Keras does.

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        On a bad ``latent_dim``, ``image_shape`` or ``seed``.

    References
    ----------
    A. Radford, L. Metz and S. Chintala. Unsupervised representation learning with
    deep convolutional generative adversarial networks. ICLR 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import dcgan_generator
    >>> generator = dcgan_generator(8, (16, 16, 1), width=8, seed=0)
    >>> images = np.asarray(generator.predict(np.zeros((2, 8)), verbose=0))
    >>> images.shape, bool(images.min() >= 0 and images.max() <= 1)
    ((2, 16, 16, 1), True)
    """
    shape, n_up = _gan_side(image_shape)
    if not isinstance(latent_dim, numbers.Integral) or latent_dim < 1:
        raise ValueError(
            f"latent_dim must be a positive integer. Received: latent_dim={latent_dim!r}"
        )
    seeds = SeedStream(seed)
    z = keras.Input((int(latent_dim),))
    ch = int(width) * 2 ** (n_up - 1)
    x = layers.Dense(4 * 4 * ch, use_bias=False, kernel_initializer=seeds.initializer())(z)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((4, 4, ch))(x)
    for _ in range(n_up - 1):
        ch = max(ch // 2, 8)
        x = layers.Conv2DTranspose(
            ch,
            5,
            strides=2,
            padding="same",
            use_bias=False,
            kernel_initializer=seeds.initializer(),
        )(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    out = layers.Conv2DTranspose(
        shape[2],
        5,
        strides=2,
        padding="same",
        activation="sigmoid",
        kernel_initializer=seeds.initializer(),
    )(x)
    return keras.Model(z, out, name="dcgan_generator")


def dcgan_critic(
    image_shape: Sequence[int] = (32, 32, 1),
    *,
    width: int = 64,
    n_classes: int | None = None,
    seed: int | None = None,
) -> keras.Model:
    """WGAN-GP critic: strided convolutions, LayerNormalization, LeakyReLU.

    No BatchNormalization, which the gradient penalty forbids (Gulrajani et al.
    2017). With ``n_classes`` it has a second, K-way head on the same features:
    the discriminator of KED-MI (Chen et al. 2021), trained on the target's soft
    labels.

    Parameters
    ----------
    image_shape : tuple of int, default=(32, 32, 1)
        Square, side 8, 16, 32, 64 or 128.
    width : int, default=64
        Filters of the first convolution (doubled in each of the next).
    n_classes : int, default=None
        Number of classes of the second head; ``None`` for a critic only.
    seed : int, default=None
        Seeds the weight initialisation; ``None`` draws as Keras does.

    Returns
    -------
    keras.Model
        Output ``critic`` of shape (n, 1); with ``n_classes``, the outputs are
        ``[critic, class_logits]``.

    Raises
    ------
    ValueError
        On a bad ``image_shape``, ``n_classes`` or ``seed``.

    References
    ----------
    I. Gulrajani, F. Ahmed, M. Arjovsky, V. Dumoulin and A. Courville. Improved
    training of Wasserstein GANs. NeurIPS 2017.

    S. Chen, M. Kahla, R. Jia and G.-J. Qi. Knowledge-enriched distributional model
    inversion attacks. ICCV 2021.

    Examples
    --------
    >>> from kmi.models import dcgan_critic
    >>> dcgan_critic((16, 16, 1), width=8, seed=0).output_shape
    (None, 1)
    >>> dcgan_critic((16, 16, 1), width=8, n_classes=5).output_shape
    [(None, 1), (None, 5)]
    """
    shape, n_up = _gan_side(image_shape)
    seeds = SeedStream(seed)
    inputs = keras.Input(shape)
    x = layers.Conv2D(
        int(width), 5, strides=2, padding="same", kernel_initializer=seeds.initializer()
    )(inputs)
    x = layers.LeakyReLU(0.2)(x)
    ch = int(width)
    for _ in range(n_up - 1):
        ch *= 2
        x = layers.Conv2D(
            ch, 5, strides=2, padding="same", kernel_initializer=seeds.initializer()
        )(x)
        x = layers.LayerNormalization(axis=[1, 2, 3])(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten(name="features")(x)
    critic = layers.Dense(1, kernel_initializer=seeds.initializer(), name="critic")(x)
    if n_classes is None:
        return keras.Model(inputs, critic, name="dcgan_critic")
    logits = layers.Dense(
        check_n_classes(n_classes), kernel_initializer=seeds.initializer(), name="class_logits"
    )(x)
    return keras.Model(inputs, [critic, logits], name="dcgan_critic")


def pca_prior(
    X: ArrayLike, n_components: int = 40, *, prior_weight: float = 1.0
) -> tuple[keras.Model, keras.Model]:
    """A linear image prior: principal components of public images, as a generator and critic.

    The generator maps a code ``c`` (in units of each component's standard
    deviation, so ``c ~ N(0, I)`` draws images like ``X``) to
    ``clip(mean + c @ (sd * components), 0, 1)``. The critic projects an image back
    onto the components and scores it ``-prior_weight * ||c||^2`` (a Gaussian
    log-density up to a constant), so GMI's prior loss ``-critic(G(c))`` is the
    squared norm of the code. Both are fixed (non-trainable) functional models
    built from standard layers, saved and loaded like any other; they are computed
    from ``X``, so they take no seed.

    With a few hundred public images a GAN has little to learn from; the principal
    components ("eigenfaces" for faces) need none of its training. On the AT&T
    benchmark, 40 components of 600 public images (300 faces and their mirror
    images) already span the private subjects' faces: the benchmark's evaluation
    CNNs name the right subject for 0.81-0.94 of their projections (the
    ``judge_checks`` of ``benchmarks/results/image_att_faces_b_32_cpu.json``).

    Parameters
    ----------
    X : array of shape (n, height, width, channels)
        At least 2 public images in [0, 1]; add mirror images (``X[:, :, ::-1]``)
        for more.
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

    Raises
    ------
    ValueError
        If ``X`` is not a batch of at least 2 finite images, or on a bad
        ``n_components`` or ``prior_weight``.

    References
    ----------
    M. Turk and A. Pentland. Eigenfaces for recognition. Journal of Cognitive
    Neuroscience 3(1), 1991.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import pca_prior
    >>> X = np.random.default_rng(0).random((12, 8, 8, 1))
    >>> generator, critic = pca_prior(X, 4)
    >>> generator.output_shape, critic.output_shape
    ((None, 8, 8, 1), (None, 1))
    >>> mean = generator.predict(np.zeros((1, 4)), verbose=0)[0]
    >>> bool(np.allclose(mean, X.mean(axis=0), atol=1e-5))
    True
    """
    X = check_images(X, min_samples=2).astype("float64")
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
