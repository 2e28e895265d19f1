"""MIFace: gradient descent on the pixels (Fredrikson et al. 2015)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Self

import numpy as np
from keras import ops
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from kmi._docstring import fill_doc
from kmi.attacks._optim import minimize
from kmi.attacks.image._common import (
    COMMON_CONSTRAINTS,
    OPTIMIZERS,
    PARAMS_DOC,
    ClassInversionMixin,
    keras_model,
    log_probs,
    model_input_shape,
    stretch,
    total_variation,
)
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.base import BaseAttack


@fill_doc(**PARAMS_DOC)
class MIFace(PixelRangeMixin, ClassInversionMixin, BaseAttack):
    """Gradient-descent inversion of a class (Fredrikson, Jha and Ristenpart 2015).

    Starting from a blank (or the auxiliary mean) image, minimise
    ``c(x) = 1 - p_y(x) + tv_weight * TV(x) + l2_weight * ||x||^2`` by gradient
    descent on the pixels, for every requested class at once, with the paper's
    stopping rule: a class stops when ``c(x) <= gamma`` or after ``patience`` steps
    without improvement; the best image seen is returned. An optional ``process``
    hook (the paper's denoising step) runs every ``process_every`` steps.

    Parameters
    ----------
    target : Target or keras.Model
        White-box target (a Keras model with a fixed input shape).
    max_iter : int, default=1000
        The paper's ``alpha`` (5000 there).
    learning_rate : float, default=0.1
        The paper's ``lambda``.
    optimizer : {"sgd", "adam"}, default="sgd"
        The paper uses plain gradient descent.
    momentum : float, default=0.0
    gamma : float, default=None
        Stop a class once its cost is at most ``gamma`` (0.99 in the paper).
    patience : int, default=None
        Stop a class after ``patience`` steps without improvement (the paper's
        ``beta``, 100). ``None`` runs ``max_iter`` steps.
    init : {"zeros", "mean", "random"} or array, default="zeros"
        Start image: blank; the mean of the auxiliary images given to ``fit``;
        uniform noise; or an array of one image (or one per requested label).
    tv_weight : float, default=0.0
        Weight of the total-variation prior.
    l2_weight : float, default=0.0
        Weight of the mean squared pixel value.
    process : callable, default=None
        ``process(images) -> images`` on NumPy batches (e.g. a denoiser).
    process_every : int, default=1
    contrast : {None, "stretch"}, default=None
        Post-processing of the result: ``"stretch"`` maps each image's range to [0, 1].
    {eval_model}
    {random_state}
    {verbose}
    {pixel_range}

    Attributes
    ----------
    target_ : Target
    input_shape_ : tuple of int
        Shape of one image.
    mean_image_ : ndarray or None
        Mean of the auxiliary images given to ``fit``.
    loss_ : ndarray of shape (n_labels,)
        Final cost of each class in the last :meth:`invert`.
    n_iter_ : int
        Steps of the last :meth:`invert`.
    interrupted_ : bool
        Whether the last :meth:`invert` was interrupted.

    Raises
    ------
    kmi.targets.AccessError
        From ``fit``, if the target is not white-box.

    See Also
    --------
    DeepInversion : Data-free inversion matching BatchNorm statistics.
    GMI : Inversion through a GAN prior trained on public data.

    References
    ----------
    M. Fredrikson, S. Jha and T. Ristenpart. Model inversion attacks that exploit
    confidence information and basic countermeasures. CCS 2015.

    Examples
    --------
    >>> import keras
    >>> from kmi.attacks import MIFace
    >>> from kmi.models import softmax_regression
    >>> model = softmax_regression((8, 8, 1), 3)
    >>> attack = MIFace(model, max_iter=20).fit()
    >>> attack.invert([0, 2]).shape
    (2, 8, 8, 1)
    """

    required_access = "white-box"
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [OPTIMIZERS],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "gamma": [Interval(Real, None, None, closed="neither"), None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "init": [StrOptions({"zeros", "mean", "random"}), np.ndarray],
        "tv_weight": [Interval(Real, 0, None, closed="left")],
        "l2_weight": [Interval(Real, 0, None, closed="left")],
        "process": [callable, None],
        "process_every": [Interval(Integral, 1, None, closed="left")],
        "contrast": [StrOptions({"stretch"}), None],
    }

    def __init__(
        self,
        target=None,
        *,
        max_iter=1000,
        learning_rate=0.1,
        optimizer="sgd",
        momentum=0.0,
        gamma=None,
        patience=None,
        init="zeros",
        tv_weight=0.0,
        l2_weight=0.0,
        process=None,
        process_every=1,
        contrast=None,
        eval_model=None,
        random_state=None,
        verbose=0,
        pixel_range=None,
    ):
        self.target = target
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.gamma = gamma
        self.patience = patience
        self.init = init
        self.tv_weight = tv_weight
        self.l2_weight = l2_weight
        self.process = process
        self.process_every = process_every
        self.contrast = contrast
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Validate the target and parameters; remember the mean of auxiliary images.

        Parameters
        ----------
        X : array of shape (n, height, width, channels), default=None
            Auxiliary images (needed for ``init="mean"``).
        y : ignored

        Returns
        -------
        self
        """
        model = keras_model(self.target_, type(self).__name__)
        self.input_shape_ = model_input_shape(model)
        X = self._fit_pixel_range(X)
        self.mean_image_ = None
        if X is not None:
            self.mean_image_ = X.mean(axis=0)
        elif isinstance(self.init, str) and self.init == "mean":
            raise ValueError("init='mean' needs auxiliary images: call fit(X). Received: X=None")
        return self

    def _start(self, n):
        shape = (n, *self.input_shape_)
        if isinstance(self.init, np.ndarray):
            init = self._to_unit(np.asarray(self.init, dtype="float32"))
            if init.shape == self.input_shape_:
                return np.broadcast_to(init, shape).copy()
            if init.shape == shape:
                return init.copy()
            raise ValueError(
                f"init must be one image of shape {self.input_shape_} or one per label "
                f"{shape}. Received: init.shape={init.shape}"
            )
        if self.init == "mean":
            return np.broadcast_to(self.mean_image_, shape).astype("float32").copy()
        if self.init == "random":
            rng = check_random_state(self.random_state)
            return rng.uniform(0, 1, size=shape).astype("float32")
        return np.zeros(shape, dtype="float32")

    def invert(self, y: ArrayLike) -> np.ndarray:
        """Reconstruct one image for each label of ``y``.

        Parameters
        ----------
        y : array-like of shape (n_labels,)
            Labels of the target (repeats allowed).

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        target = self.target_
        onehot = np.eye(target.n_classes_, dtype="float32")[idx]
        tv, l2 = float(self.tv_weight), float(self.l2_weight)

        def loss_fn(x, aux):
            probs = ops.exp(log_probs(target, x))
            cost = 1.0 - ops.sum(probs * aux["onehot"], axis=-1)
            if tv:
                cost = cost + tv * total_variation(x)
            if l2:
                cost = cost + l2 * ops.mean(x * x, axis=(1, 2, 3))
            return cost

        result = minimize(
            loss_fn,
            self._start(len(idx)),
            max_iter=int(self.max_iter),
            learning_rate=float(self.learning_rate),
            optimizer=self.optimizer,
            momentum=float(self.momentum),
            clip=(0.0, 1.0),
            gamma=self.gamma,
            patience=self.patience,
            process=self.process,
            process_every=int(self.process_every),
            data={"onehot": onehot},
            models=[target.model],
            program=("MIFace", target.from_logits, tv, l2),
            verbose=self.verbose,
            queries=target,
            desc=f"MIFace: {len(idx)} classes",
        )
        self.loss_ = result.loss
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        images = result.x
        if self.contrast == "stretch":
            images = stretch(images)
        return self._to_data_range(images)
