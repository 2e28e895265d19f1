"""Pieces shared by the class-inversion attacks of :mod:`kmi.attacks.image`."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from keras import ops
from numpy.typing import ArrayLike
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from kmi.attacks.image._pixels import PIXEL_RANGE_DOC
from kmi.attacks.image._selection import SELECTION_DOC, SELECTIONS
from kmi.metrics.image import attack_accuracy, nearest_neighbor_accuracy
from kmi.utils.validation import check_images, check_labels

#: Parameter text shared by the image attacks' docstrings (see :mod:`kmi._docstring`).
PARAMS_DOC = {
    "eval_model": """\
eval_model : keras.Model or callable, default=None
    Evaluation classifier used by :meth:`score` (an independent network trained on
    the private data, :func:`kmi.models.evaluation_classifier`).""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Seeds every random draw of the attack (starts, noise, network initialisation),
    so the same seed gives the same images on either backend.""",
    "verbose": """\
verbose : int, default=0
    Show a progress bar for long loops.""",
    "pixel_range": PIXEL_RANGE_DOC,
    "selection": SELECTION_DOC,
    "gan_params": """\
generator : keras.Model, default=None
    A trained generator (latent vector to images the target takes, in its
    ``pixel_range``). ``None`` trains a DCGAN generator on the images given to
    ``fit``. Another attack's ``generator_`` (which makes images in [0, 1], the
    range the attacks work in) is taken as it is.
critic : keras.Model, default=None
    The critic trained with ``generator`` (its realness score is the prior loss),
    taking images as ``generator`` makes them.
latent_dim : int, default=100
    Length of the generator's latent vector.
gan_steps : int, default=2000
    Generator steps of WGAN-GP training (5 critic steps each).
gan_batch_size : int, default=64
    Images per GAN training batch.
gan_width : int, default=32
    Width of the DCGAN generator and critic built by ``fit``.
gan_learning_rate : float, default=1e-4
    Adam's learning rate in GAN training (betas 0.5 and 0.9).""",
}

#: Constraints of the parameters most image attacks share.
COMMON_CONSTRAINTS = {
    "target": "no_validation",
    "eval_model": [callable, None],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "pixel_range": ["array-like", None],
}

#: Constraints of the GAN prior's parameters (GMI, KEDMI, BREPMI).
GAN_CONSTRAINTS = {
    "generator": [HasMethods(["__call__"]), None],
    "critic": [HasMethods(["__call__"]), None],
    "latent_dim": [Interval(Integral, 1, None, closed="left")],
    "gan_steps": [Interval(Integral, 0, None, closed="left")],
    "gan_batch_size": [Interval(Integral, 1, None, closed="left")],
    "gan_width": [Interval(Integral, 1, None, closed="left")],
    "gan_learning_rate": [Interval(Real, 0, None, closed="neither")],
}

OPTIMIZERS = StrOptions({"sgd", "adam"})

#: The ``selection`` parameter of the attacks that keep several candidates per label.
SELECTION_CONSTRAINT = [StrOptions(set(SELECTIONS))]


def keras_model(target, attack):
    """The Keras model of a white-box target, or a clear error."""
    if target.kind != "keras":
        raise TypeError(
            f"{attack} differentiates the target, so it needs a Keras model. "
            f"Received: target model of type {type(target.model).__name__}"
        )
    return target.model


def model_input_shape(model):
    """The fixed shape of one input of ``model``, or a clear error."""
    shape = model.inputs[0].shape[1:] if model.inputs else None
    if shape is None or any(s is None for s in shape):
        raise ValueError(
            "The target model needs a fixed input shape (build it with keras.Input). "
            f"Received: input_shape={shape}"
        )
    return tuple(int(s) for s in shape)


def log_probs(target, x, model=None):
    """Log-probabilities of the target (or ``model``) for a batch, with keras.ops."""
    model = target.model if model is None else model
    out = model(x, training=False)
    from_logits = target.from_logits if model is target.model else True
    if from_logits:
        return ops.log_softmax(out, axis=-1)
    return ops.log(ops.clip(out, 1e-12, 1.0))


def total_variation(x):
    """Anisotropic total variation of each image of a batch."""
    dh = x[:, 1:, :, :] - x[:, :-1, :, :]
    dw = x[:, :, 1:, :] - x[:, :, :-1, :]
    return ops.mean(ops.abs(dh), axis=(1, 2, 3)) + ops.mean(ops.abs(dw), axis=(1, 2, 3))


def stretch(images):
    """Per-image min-max contrast stretch to [0, 1]."""
    flat = images.reshape(len(images), -1)
    lo = flat.min(axis=1)[:, None, None, None]
    hi = flat.max(axis=1)[:, None, None, None]
    return np.where(hi > lo, (images - lo) / np.maximum(hi - lo, 1e-12), images)


def seeds(rng, n):
    """``n`` integer seeds drawn from a NumPy generator (for Keras initializers)."""
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]


class ClassInversionMixin:
    """invert(y) -> one image per label; score(X, y) against private images."""

    level = "class"

    def _label_indices(self, y):
        y = np.asarray(y)
        if y.ndim != 1 or len(y) == 0:
            raise ValueError(
                f"y must be a non-empty 1-D array of class labels. Received: y.shape={y.shape}"
            )
        return self.target_.label_index(y)

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Attack success on the private images ``X`` of classes ``y`` (greater is better).

        Inverts every distinct label of ``y`` once. With ``eval_model``, returns its
        top-1 accuracy on the reconstructions (:func:`kmi.metrics.image.attack_accuracy`);
        without, the nearest-neighbour accuracy in pixel space against ``X``
        (:func:`kmi.metrics.image.nearest_neighbor_accuracy`), which needs private
        images of at least two classes (with one, every image is "nearest" to it).

        Raises
        ------
        ValueError
            If ``X`` is empty or holds NaN, or ``y`` does not match it.
        """
        check_is_fitted(self)
        X = check_images(X, self.input_shape_)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(
                f"y must hold one label per image of X ({len(X)}). Received: y.shape={y.shape}"
            )
        one_class_ok = self.eval_model is not None
        y_idx = check_labels(self.target_.label_index(y), len(X), min_classes=2 - one_class_ok)
        labels = np.unique(y)
        images = self.invert(labels)
        idx = self.target_.label_index(labels)
        if self.eval_model is not None:
            return attack_accuracy(self.eval_model, images, idx, top_k=1)
        return nearest_neighbor_accuracy(images, idx, X, y_idx)
