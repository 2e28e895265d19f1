"""The inversion model: a decoder from prediction vectors to images (Yang et al. 2019)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Self

import keras
import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from kmi._docstring import fill_doc
from kmi._progress import epoch_progress
from kmi.attacks.image._common import PARAMS_DOC, seeds
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.base import BaseAttack
from kmi.metrics.image import psnr
from kmi.utils.validation import check_images


def _truncate(scores, k):
    """Keep the ``k`` largest entries of each row, zero the rest (Yang et al.'s truncation)."""
    scores = np.asarray(scores, dtype="float32")
    if k is None or k >= scores.shape[1]:
        return scores
    keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(scores)
    np.put_along_axis(out, keep, np.take_along_axis(scores, keep, axis=1), axis=1)
    return out


@fill_doc(**PARAMS_DOC)
class InversionModel(PixelRangeMixin, BaseAttack):
    """Training-based black-box inversion: a decoder from predictions to images.

    ``fit(X_aux)`` queries the target on auxiliary images and trains a decoder
    network to map its (truncated) prediction vectors back to the images, with a
    mean squared error (Yang et al. 2019). ``invert(outputs)`` reconstructs an
    image from each prediction vector; given integer labels instead, it decodes
    their one-hot vectors, a representative of each class. Truncation keeps the
    ``truncation`` largest scores of every vector, in training and in attack, so
    that the decoder matches a target that releases only its top-k (or rounded)
    scores; pass a :class:`~kmi.targets.Target` with ``output="top-k"`` or
    ``"rounded"`` to attack such a release.

    Parameters
    ----------
    target : Target, keras.Model, scikit-learn classifier or callable
        Black-box target (scores are enough).
    decoder : keras.Model, default=None
        An untrained decoder from ``n_classes`` scores to images of the auxiliary
        images' shape, trained to give images in [0, 1] (``invert`` maps them to
        ``pixel_range``); ``None`` builds a dense one with ``hidden_units``.
    truncation : int, default=None
        Scores kept per vector; ``None`` keeps all.
    hidden_units : tuple of int, default=(256, 512)
    epochs : int, default=100
    batch_size : int, default=64
    learning_rate : float, default=1e-3
    {random_state}
    {verbose}
    {pixel_range}

    Attributes
    ----------
    target_ : Target
    decoder_ : keras.Model
    input_shape_ : tuple of int
    n_classes_ : int
    history_ : dict
        The decoder's training losses.

    Raises
    ------
    kmi.targets.AccessError
        From ``fit``, for a label-only target.

    References
    ----------
    Z. Yang, J. Zhang, E.-C. Chang and Z. Liang. Neural network inversion in
    adversarial setting via background knowledge alignment. CCS 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import InversionModel
    >>> from kmi.models import softmax_regression
    >>> target = softmax_regression((8, 8, 1), 3, seed=0)
    >>> public = np.random.default_rng(0).uniform(size=(32, 8, 8, 1))
    >>> attack = InversionModel(target, hidden_units=(16,), epochs=2,
    ...                         random_state=0).fit(public)
    >>> attack.invert([0, 1, 2]).shape  # one representative per class
    (3, 8, 8, 1)
    >>> bool(attack.score(public[:4]) > 0)  # PSNR (dB) of images rebuilt from answers
    True
    """

    required_access = "black-box"
    needs_public_data = True
    level = "instance"
    _parameter_constraints = {
        "target": "no_validation",
        "decoder": [keras.Model, None],
        "truncation": [Interval(Integral, 1, None, closed="left"), None],
        "hidden_units": ["array-like"],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "pixel_range": ["array-like", None],
    }

    def __init__(
        self,
        target=None,
        *,
        decoder=None,
        truncation=None,
        hidden_units=(256, 512),
        epochs=100,
        batch_size=64,
        learning_rate=1e-3,
        random_state=None,
        verbose=0,
        pixel_range=None,
    ):
        self.target = target
        self.decoder = decoder
        self.truncation = truncation
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike, y: None = None) -> Self:
        """Query the target on auxiliary images ``X`` and train the decoder; return ``self``.

        Parameters
        ----------
        X : array of shape (n, height, width, channels)
            Auxiliary images, in the target's pixel range.
        y : ignored
        """
        X = check_images(X)
        self.input_shape_ = X.shape[1:]
        X = self._fit_pixel_range(X)
        target = self.target_
        scores = np.asarray(target.query(X), dtype="float32")
        if scores.ndim != 2:
            raise ValueError(
                "InversionModel decodes score vectors, and the target answered with "
                f"labels. Received: target output={target.output!r}"
            )
        self.n_classes_ = scores.shape[1]
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        decoder = self.decoder if self.decoder is not None else self._build_decoder(rng)
        if tuple(decoder.outputs[0].shape[1:]) != self.input_shape_:
            raise ValueError(
                f"The decoder must output images of shape {self.input_shape_}. "
                f"Received: decoder output shape={tuple(decoder.outputs[0].shape[1:])}"
            )
        decoder.compile(keras.optimizers.Adam(float(self.learning_rate)), "mse")
        callbacks = (
            [epoch_progress(self.epochs, "InversionModel: training the decoder")]
            if self.verbose and self.epochs
            else []
        )
        vectors = _truncate(scores, self.truncation)
        batch_size = int(min(self.batch_size, len(X)))
        steps = math.ceil(len(X) / batch_size)

        def batches():  # shuffled from random_state, not from a global seed
            while True:
                order = rng.permutation(len(X))
                for start in range(0, len(X), batch_size):
                    rows = order[start : start + batch_size]
                    yield vectors[rows], X[rows]

        hist = decoder.fit(
            batches(),
            steps_per_epoch=steps,
            shuffle=False,
            epochs=int(self.epochs),
            verbose=0,
            callbacks=callbacks,
        )
        self.decoder_, self.history_ = decoder, hist.history
        return self

    def _build_decoder(self, rng):
        units = tuple(self.hidden_units)
        init = iter(keras.initializers.GlorotUniform(seed=s) for s in seeds(rng, len(units) + 1))
        inputs = keras.Input((self.n_classes_,))
        x = inputs
        for u in units:
            x = keras.layers.Dense(int(u), activation="relu", kernel_initializer=next(init))(x)
            x = keras.layers.LayerNormalization()(x)
        x = keras.layers.Dense(
            int(np.prod(self.input_shape_)), activation="sigmoid", kernel_initializer=next(init)
        )(x)
        out = keras.layers.Reshape(self.input_shape_)(x)
        return keras.Model(inputs, out, name="inversion_decoder")

    def invert(self, outputs: ArrayLike) -> np.ndarray:
        """Reconstruct images from prediction vectors, or class representatives from labels.

        Parameters
        ----------
        outputs : array of shape (n, n_classes) or (n,)
            Prediction vectors released by the target; or labels of the target,
            decoded from their one-hot vectors.

        Returns
        -------
        ndarray of shape (n, height, width, channels)
        """
        check_is_fitted(self)
        outputs = np.asarray(outputs)
        if outputs.ndim == 1:
            idx = self.target_.label_index(outputs)
            outputs = np.eye(self.n_classes_, dtype="float32")[idx]
        if outputs.ndim != 2 or outputs.shape[1] != self.n_classes_:
            raise ValueError(
                f"outputs must be prediction vectors of shape (n, {self.n_classes_}) or "
                f"labels of shape (n,). Received: outputs.shape={outputs.shape}"
            )
        if not np.isfinite(outputs.astype("float64")).all():
            raise ValueError("outputs contain NaN or infinite values. Received: outputs with NaN")
        vectors = _truncate(outputs.astype("float32"), self.truncation)
        images = np.asarray(self.decoder_.predict(vectors, verbose=0), dtype="float32")
        return self._to_data_range(images)

    def score(self, X: ArrayLike, y: None = None) -> float:
        """Mean PSNR (dB) of the images rebuilt from the target's outputs on ``X``."""
        check_is_fitted(self)
        X = check_images(X, self.input_shape_)
        lo, hi = self.pixel_range_
        return psnr(self.invert(self.target_.query(self._to_unit(X))), X, data_range=hi - lo)
