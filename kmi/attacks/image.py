"""Model inversion of image classifiers: recover what each class looks like.

Every attack here is a scikit-learn estimator with the same shape:

- ``Attack(target, *, ...)`` stores its parameters;
- ``fit(X=None)`` validates the target and learns from auxiliary (public) images
  when the attack uses them (a mean image, a GAN prior, an inversion network);
- ``invert(y)`` returns one image per requested label, shape (n, height, width,
  channels), values in [0, 1]; every requested class is optimised at once, in one
  batch (:func:`kmi.attacks._optim.minimize`), never in a Python loop over classes;
- ``score(X, y)``: success against the private images ``X`` of classes ``y`` an
  auditor holds: top-1 accuracy of ``eval_model`` (an independent evaluation
  classifier, :func:`kmi.models.evaluation_classifier`) on ``invert(unique(y))``,
  or, without one, the fraction of reconstructions whose nearest private image
  (in pixels) is of the attacked class.

Labels are those of the target (its output columns, :attr:`Target.classes_`).
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
from keras import ops
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from kmi.attacks._optim import minimize
from kmi.base import BaseAttack
from kmi.metrics.image import attack_accuracy, nearest_neighbor_accuracy

__all__ = ["DeepInversion", "MIFace"]


# ----------------------------------------------------------------------------- helpers
def _keras_model(target, attack):
    if target.kind != "keras":
        raise TypeError(
            f"{attack} differentiates the target, so it needs a Keras model. "
            f"Received: target model of type {type(target.model).__name__}"
        )
    return target.model


def _model_input_shape(model):
    shape = model.inputs[0].shape[1:] if model.inputs else None
    if shape is None or any(s is None for s in shape):
        raise ValueError(
            "The target model needs a fixed input shape (build it with keras.Input). "
            f"Received: input_shape={shape}"
        )
    return tuple(int(s) for s in shape)


def _check_images(X, shape=None, name="X"):
    X = np.asarray(X, dtype="float32")
    if X.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of images of shape (n, height, width, channels). "
            f"Received: {name}.shape={X.shape}"
        )
    if shape is not None and X.shape[1:] != tuple(shape):
        raise ValueError(
            f"{name} must hold images of shape {tuple(shape)}, the target's input. "
            f"Received: {name}.shape={X.shape}"
        )
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values. Received: {name} with NaN")
    return X


def _log_probs(target, x, model=None):
    """Log-probabilities of the target (or ``model``) for a batch, with keras.ops."""
    model = target.model if model is None else model
    out = model(x, training=False)
    from_logits = target.from_logits if model is target.model else True
    if from_logits:
        return ops.log_softmax(out, axis=-1)
    return ops.log(ops.clip(out, 1e-12, 1.0))


def _check_number(value, name, low=0.0, integer=False, strict=False):
    kind = numbers.Integral if integer else numbers.Real
    bad = not isinstance(value, kind) or isinstance(value, bool)
    bad = bad or (value <= low if strict else value < low)
    if bad:
        what = "an integer" if integer else "a number"
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {what} {op} {low}. Received: {name}={value!r}")
    return value


def _total_variation(x):
    dh = x[:, 1:, :, :] - x[:, :-1, :, :]
    dw = x[:, :, 1:, :] - x[:, :, :-1, :]
    return ops.mean(ops.abs(dh), axis=(1, 2, 3)) + ops.mean(ops.abs(dw), axis=(1, 2, 3))


def _stretch(images):
    """Per-image min-max contrast stretch to [0, 1]."""
    flat = images.reshape(len(images), -1)
    lo = flat.min(axis=1)[:, None, None, None]
    hi = flat.max(axis=1)[:, None, None, None]
    return np.where(hi > lo, (images - lo) / np.maximum(hi - lo, 1e-12), images)


class _ClassInversionMixin:
    """invert(y) -> one image per label; score(X, y) against private images."""

    def _label_indices(self, y):
        y = np.asarray(y)
        if y.ndim != 1 or len(y) == 0:
            raise ValueError(
                f"y must be a non-empty 1-D array of class labels. Received: y.shape={y.shape}"
            )
        return self.target_.label_index(y)

    def score(self, X, y) -> float:
        """Attack success on the private images ``X`` of classes ``y`` (greater is better).

        Inverts every distinct label of ``y`` once. With ``eval_model``, returns its
        top-1 accuracy on the reconstructions (:func:`kmi.metrics.image.attack_accuracy`);
        without, the nearest-neighbour accuracy in pixel space against ``X``
        (:func:`kmi.metrics.image.nearest_neighbor_accuracy`).
        """
        check_is_fitted(self)
        X = np.asarray(X, dtype="float32")
        y = np.asarray(y)
        labels = np.unique(y)
        images = self.invert(labels)
        idx = self.target_.label_index(labels)
        if self.eval_model is not None:
            return attack_accuracy(self.eval_model, images, idx, top_k=1)
        return nearest_neighbor_accuracy(images, idx, X, self.target_.label_index(y))


# ----------------------------------------------------------------------------- MIFace
class MIFace(_ClassInversionMixin, BaseAttack):
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
    eval_model : keras.Model or callable, default=None
        Evaluation classifier used by :meth:`score`.
    random_state : int, RandomState instance or None, default=None
        Seeds ``init="random"``.
    verbose : int, default=0

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

    def _validate_params(self):
        _check_number(self.max_iter, "max_iter", 0, integer=True)
        _check_number(self.learning_rate, "learning_rate", 0, strict=True)
        _check_number(self.tv_weight, "tv_weight", 0)
        _check_number(self.l2_weight, "l2_weight", 0)
        _check_number(self.process_every, "process_every", 1, integer=True)
        if self.patience is not None:
            _check_number(self.patience, "patience", 1, integer=True)
        if self.gamma is not None:
            _check_number(self.gamma, "gamma", -math.inf)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(
                f"optimizer must be 'sgd' or 'adam'. Received: optimizer={self.optimizer!r}"
            )
        if self.contrast not in (None, "stretch"):
            raise ValueError(
                f"contrast must be None or 'stretch'. Received: contrast={self.contrast!r}"
            )
        if self.process is not None and not callable(self.process):
            raise ValueError(f"process must be callable. Received: process={self.process!r}")
        if not isinstance(self.init, (str, np.ndarray)) or (
            isinstance(self.init, str) and self.init not in ("zeros", "mean", "random")
        ):
            raise ValueError(
                f"init must be 'zeros', 'mean', 'random' or an array. Received: init={self.init!r}"
            )

    def fit(self, X=None, y=None):
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
        target = self._validate_target()
        self._validate_params()
        self.input_shape_ = _model_input_shape(_keras_model(target, type(self).__name__))
        self.mean_image_ = None
        if X is not None:
            self.mean_image_ = _check_images(X, self.input_shape_).mean(axis=0)
        elif isinstance(self.init, str) and self.init == "mean":
            raise ValueError("init='mean' needs auxiliary images: call fit(X). Received: X=None")
        return self

    def _start(self, n):
        shape = (n, *self.input_shape_)
        if isinstance(self.init, np.ndarray):
            init = np.asarray(self.init, dtype="float32")
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

    def invert(self, y):
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
        onehot = ops.convert_to_tensor(np.eye(target.n_classes_, dtype="float32")[idx])
        tv, l2 = float(self.tv_weight), float(self.l2_weight)

        def loss_fn(x, aux):
            probs = ops.exp(_log_probs(target, x))
            cost = 1.0 - ops.sum(probs * onehot, axis=-1)
            if tv:
                cost = cost + tv * _total_variation(x)
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
            verbose=self.verbose,
            desc=f"MIFace: {len(idx)} classes",
        )
        self.loss_ = result.loss
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        images = result.x
        if self.contrast == "stretch":
            images = _stretch(images)
        return images


# ----------------------------------------------------------------------------- DeepInversion
def _batchnorm_layers(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_batchnorm_layers(layer))
    return found


class DeepInversion(_ClassInversionMixin, BaseAttack):
    """Data-free inversion matching BatchNorm statistics (Yin et al. 2020).

    Optimises a batch of images, one per requested label, with Adam to minimise
    ``CE(f(x'), y) + r_feature * R_bn(x') + tv_weight * TV(x) + l2_weight * ||x||^2``,
    where ``x'`` is ``x`` randomly shifted by up to ``jitter`` pixels and flipped, and
    ``R_bn`` sums, over every BatchNormalization layer, the distances between the
    batch mean and variance of its input and its running statistics. The running
    statistics remember the private training data; matching them pulls the images
    towards it without any data.

    Parameters
    ----------
    target : Target or keras.Model
        White-box target with at least one BatchNormalization layer.
    max_iter : int, default=2000
    learning_rate : float, default=0.05
    r_feature : float, default=0.05
        Weight of the BatchNorm statistics term.
    tv_weight : float, default=1e-3
    l2_weight : float, default=1e-4
    jitter : int, default=1
        Largest random shift, in pixels, per step.
    flip : bool, default=True
        Random horizontal flips.
    eval_model : keras.Model or callable, default=None
        Evaluation classifier used by :meth:`score`.
    random_state : int, RandomState instance or None, default=None
        Seeds the start images, jitter and flips.
    verbose : int, default=0

    Attributes
    ----------
    target_ : Target
    input_shape_ : tuple of int
    n_batchnorm_ : int
        BatchNormalization layers matched.
    loss_ : ndarray of shape (n_labels,)
    n_iter_ : int
    interrupted_ : bool

    Raises
    ------
    ValueError
        From ``fit``, if the target has no BatchNormalization layer.
    kmi.targets.AccessError
        From ``fit``, if the target is not white-box.

    Notes
    -----
    The statistics term couples the images of one :meth:`invert` call: ask for
    several labels at once (a batch), as the paper does.

    References
    ----------
    H. Yin, P. Molchanov, Z. Li, J. M. Alvarez, A. Mallya, D. Hoiem, N. K. Jha and
    J. Kautz. Dreaming to distill: data-free knowledge transfer via DeepInversion.
    CVPR 2020.
    """

    required_access = "white-box"

    def __init__(
        self,
        target=None,
        *,
        max_iter=2000,
        learning_rate=0.05,
        r_feature=0.05,
        tv_weight=1e-3,
        l2_weight=1e-4,
        jitter=1,
        flip=True,
        eval_model=None,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.r_feature = r_feature
        self.tv_weight = tv_weight
        self.l2_weight = l2_weight
        self.jitter = jitter
        self.flip = flip
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Validate the target (white-box, with BatchNormalization); return ``self``.

        ``X`` and ``y`` are ignored: the attack is data-free.
        """
        target = self._validate_target()
        model = _keras_model(target, type(self).__name__)
        _check_number(self.max_iter, "max_iter", 0, integer=True)
        _check_number(self.learning_rate, "learning_rate", 0, strict=True)
        for name in ("r_feature", "tv_weight", "l2_weight"):
            _check_number(getattr(self, name), name, 0)
        _check_number(self.jitter, "jitter", 0, integer=True)
        self.input_shape_ = _model_input_shape(model)
        bns = _batchnorm_layers(model)
        if not bns:
            raise ValueError(
                "DeepInversion matches the running statistics of BatchNormalization "
                "layers, and the target has none; use MIFace or GMI for this target. "
                f"Received: target model {model.name!r} without BatchNormalization"
            )
        self.n_batchnorm_ = len(bns)
        self._stats_model = keras.Model(
            model.inputs, [bn.input for bn in bns] + [model.outputs[0]]
        )
        self._bns = bns
        return self

    def invert(self, y):
        """Reconstruct one image for each label of ``y`` (optimised together).

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        target = self.target_
        n = len(idx)
        onehot = ops.convert_to_tensor(np.eye(target.n_classes_, dtype="float32")[idx])
        stats_model, bns = self._stats_model, self._bns
        running = [
            (ops.convert_to_tensor(bn.moving_mean), ops.convert_to_tensor(bn.moving_variance))
            for bn in bns
        ]
        r_feature, tv, l2 = float(self.r_feature), float(self.tv_weight), float(self.l2_weight)
        from_logits = target.from_logits

        def loss_fn(x, aux):
            xj = ops.roll(x, aux["shift"][0], axis=1)
            xj = ops.roll(xj, aux["shift"][1], axis=2)
            if self.flip:
                xj = ops.where(aux["flip"] > 0.5, ops.flip(xj, axis=2), xj)
            outs = stats_model(xj, training=False)
            feats, out = outs[:-1], outs[-1]
            logp = ops.log_softmax(out, -1) if from_logits else ops.log(ops.clip(out, 1e-12, 1))
            rows = -ops.sum(logp * onehot, axis=-1)
            bn_loss = 0.0
            for f, (mu_r, var_r) in zip(feats, running):
                axes = tuple(range(len(f.shape) - 1))
                mu = ops.mean(f, axis=axes)
                var = ops.var(f, axis=axes)
                bn_loss = bn_loss + ops.norm(mu - mu_r) + ops.norm(var - var_r)
            rows = rows + r_feature * bn_loss / n
            if tv:
                rows = rows + tv * _total_variation(x)
            if l2:
                rows = rows + l2 * ops.sum(x * x, axis=(1, 2, 3))
            return rows

        jitter = int(self.jitter)

        def aux_fn(step, rng):
            shift = rng.integers(-jitter, jitter + 1, size=2) if jitter else np.zeros(2)
            return {"shift": shift.astype("int32"), "flip": np.float32(rng.random() < 0.5)}

        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        x0 = rng.uniform(0.25, 0.75, size=(n, *self.input_shape_)).astype("float32")
        result = minimize(
            loss_fn,
            x0,
            max_iter=int(self.max_iter),
            learning_rate=float(self.learning_rate),
            optimizer="adam",
            clip=(0.0, 1.0),
            keep_best=False,
            aux_fn=aux_fn,
            rng=rng,
            verbose=self.verbose,
            desc=f"DeepInversion: {n} images",
        )
        self.loss_ = result.loss
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        return result.x
