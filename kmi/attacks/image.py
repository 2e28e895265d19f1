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
import warnings

import keras
import numpy as np
from keras import ops
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from kmi.attacks._optim import minimize
from kmi.base import BaseAttack
from kmi.metrics.image import attack_accuracy, nearest_neighbor_accuracy

__all__ = ["BREPMI", "GMI", "KEDMI", "DeepInversion", "InversionModel", "MIFace"]


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


# ----------------------------------------------------------------------------- GAN priors
def _generate(generator, z, batch_size=256):
    outs = []
    for start in range(0, len(z), batch_size):
        out = generator(z[start : start + batch_size], training=False)
        outs.append(ops.convert_to_numpy(out))
    return np.concatenate(outs).astype("float32")


class _GANPriorMixin:
    """Fit or accept the GAN prior: one WGAN-GP loop (kmi.attacks._gan) for every attack."""

    def _check_gan_params(self):
        _check_number(self.latent_dim, "latent_dim", 1, integer=True)
        _check_number(self.gan_steps, "gan_steps", 0, integer=True)
        _check_number(self.gan_batch_size, "gan_batch_size", 1, integer=True)
        _check_number(self.gan_width, "gan_width", 1, integer=True)
        _check_number(self.gan_learning_rate, "gan_learning_rate", 0, strict=True)

    def _fit_prior(
        self, X, input_shape, rng, *, need_critic=True, n_classes=None, losses=None, extra=None
    ):
        from kmi.attacks._gan import train_gan, wgan_gp_losses
        from kmi.models.image import dcgan_critic, dcgan_generator

        if self.generator is not None:
            if need_critic and self.critic is None:
                raise ValueError(
                    f"{type(self).__name__} needs the critic with the generator (its prior "
                    "loss); pass both, or neither to train them on X. Received: critic=None"
                )
            generator, critic = self.generator, self.critic
            self.gan_history_ = None
        else:
            if X is None:
                raise ValueError(
                    f"{type(self).__name__}.fit needs public images X to train the GAN prior, "
                    "or a trained generator (and critic). Received: X=None"
                )
            X = _check_images(X, input_shape)
            generator = dcgan_generator(int(self.latent_dim), input_shape, width=self.gan_width)
            critic = dcgan_critic(input_shape, width=self.gan_width, n_classes=n_classes)
            d_loss, g_loss = losses if losses is not None else wgan_gp_losses()
            self.gan_history_ = train_gan(
                generator,
                critic,
                X,
                d_loss=d_loss,
                g_loss=g_loss,
                extra=extra,
                steps=int(self.gan_steps),
                batch_size=int(self.gan_batch_size),
                learning_rate=float(self.gan_learning_rate),
                rng=rng,
                verbose=self.verbose,
                desc=f"{type(self).__name__}: training the GAN prior",
            )
        out_shape = tuple(int(s) for s in generator.outputs[0].shape[1:])
        if out_shape != tuple(input_shape):
            raise ValueError(
                f"The generator makes images of shape {out_shape} but the target takes "
                f"{tuple(input_shape)}. Received: generator output shape={out_shape}"
            )
        self.generator_, self.critic_ = generator, critic
        self.latent_dim_ = int(generator.inputs[0].shape[-1])


_GAN_PARAMS_DOC = """\
    generator : keras.Model, default=None
        A trained generator (latent vector to images the target takes). ``None``
        trains a DCGAN generator on the images given to ``fit``.
    critic : keras.Model, default=None
        The critic trained with ``generator`` (its realness score is the prior loss).
    latent_dim : int, default=100
    gan_steps : int, default=2000
        Generator steps of WGAN-GP training (5 critic steps each).
    gan_batch_size : int, default=64
    gan_width : int, default=32
        Width of the DCGAN generator and critic built by ``fit``.
    gan_learning_rate : float, default=1e-4
        Adam's learning rate in GAN training (betas 0.5 and 0.9)."""


class GMI(_GANPriorMixin, _ClassInversionMixin, BaseAttack):
    """The generative model-inversion attack (Zhang et al. 2020), with LOMMA options.

        ``fit(X_public)`` trains a WGAN-GP prior on public images (or takes a trained
        generator and critic). ``invert(y)`` then searches the latent space: for every
        label and each of ``n_restarts`` random starts at once, it minimises
        ``-D(G(z)) + identity_weight * L_id(G(z), y)`` by SGD with momentum (or Adam),
        clipping ``z`` to ``[-latent_clip, latent_clip]``, and returns the restart with
        the lowest identity loss of the target.

        The prior need not be a GAN: :func:`kmi.models.pca_prior` gives a linear
        (PCA) generator and a Gaussian critic, fitted in closed form, for public sets
        too small to train a GAN on; use it with ``optimizer="adam"``,
        ``learning_rate=0.05``, ``latent_clip=3`` and ``latent_noise=0.5``.

        LOMMA (Nguyen et al. 2023) adds two options: ``identity_loss="logit"``, which
        maximises the target's logit of ``y`` with an l2 pull of the target's features
        towards the class's mean public features instead of the cross-entropy, and
        ``augmentation_models``: surrogate models distilled from the target on the
        public data, whose identity losses are averaged with the target's.

        Parameters
        ----------
        target : Target or keras.Model
            White-box target.
    {gan_params}
        identity_weight : float, default=100.0
            The paper's ``lambda``.
        identity_loss : {{"ce", "logit"}}, default="ce"
        logit_reg : float, default=1.0
            Weight of the feature pull of the logit loss (the target needs a layer
            named ``"features"``; without one the pull is left out).
        augmentation_models : int or list of keras.Model, default=0
            LOMMA's model augmentation: that many default surrogates, or these
            untrained models, distilled from the target's soft labels on ``X``.
        distill_epochs : int, default=30
        n_restarts : int, default=5
        max_iter : int, default=1500
        learning_rate : float, default=0.02
        momentum : float, default=0.9
            SGD's momentum (unused by Adam).
        optimizer : {{"sgd", "adam"}}, default="sgd"
            The paper's SGD with momentum, or Adam.
        latent_clip : float, default=1.0
        latent_noise : float, default=0.0
            Standard deviation of Gaussian noise added to every latent code at every
            step (fresh each step): the loss is then minimised in expectation over a
            neighbourhood of ``z``, which favours codes whose whole neighbourhood the
            target gives to the class over sharp optima. 0 is the paper's attack. In
            setting (b) of the AT&T benchmark, 0.5 raised the PCA prior's top-1 from
            0.20 to 0.54 and, with another training of the target and evaluator, from
            0.21 to 0.47 (means of 5 seeds); with the GAN prior no level from 0.1 to
            1.0 did better than seed noise.
        eval_model : keras.Model or callable, default=None
        random_state : int, RandomState instance or None, default=None
        verbose : int, default=0

        Attributes
        ----------
        target_ : Target
        generator_, critic_ : keras.Model
        gan_history_ : dict or None
            Losses of the GAN training (None for a given generator).
        surrogates_ : list of keras.Model
        latent_dim_ : int
        input_shape_ : tuple of int
        latents_ : ndarray of shape (n_labels, latent_dim)
            The chosen latent code of each label in the last :meth:`invert`.
        loss_ : ndarray of shape (n_labels,)
        restart_latents_ : ndarray of shape (n_labels, n_restarts, latent_dim)
            Every restart's final latent code in the last :meth:`invert`
            (``generator_`` maps them to images): the candidates the chosen ones
            were picked from, to inspect or to select by another rule.
        restart_losses_ : ndarray of shape (n_labels, n_restarts)
            The target's identity loss (cross-entropy of the label) of each restart's
            image; ``invert`` returns the restart with the lowest.
        n_iter_ : int
        interrupted_ : bool

        Raises
        ------
        kmi.targets.AccessError
            From ``fit``, if the target is not white-box.

        References
        ----------
        Y. Zhang, R. Jia, H. Pei, W. Wang, B. Li and D. Song. The secret revealer:
        generative model-inversion attacks against deep neural networks. CVPR 2020.
        N.-B. Nguyen, K. Chandrasegaran, M. Abdollahzadeh and N.-M. Cheung. Re-thinking
        model inversion attacks against deep neural networks (LOMMA). CVPR 2023.
    """

    required_access = "white-box"

    def __init__(
        self,
        target=None,
        *,
        generator=None,
        critic=None,
        latent_dim=100,
        gan_steps=2000,
        gan_batch_size=64,
        gan_width=32,
        gan_learning_rate=1e-4,
        identity_weight=100.0,
        identity_loss="ce",
        logit_reg=1.0,
        augmentation_models=0,
        distill_epochs=30,
        n_restarts=5,
        max_iter=1500,
        learning_rate=0.02,
        momentum=0.9,
        optimizer="sgd",
        latent_clip=1.0,
        latent_noise=0.0,
        eval_model=None,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.generator = generator
        self.critic = critic
        self.latent_dim = latent_dim
        self.gan_steps = gan_steps
        self.gan_batch_size = gan_batch_size
        self.gan_width = gan_width
        self.gan_learning_rate = gan_learning_rate
        self.identity_weight = identity_weight
        self.identity_loss = identity_loss
        self.logit_reg = logit_reg
        self.augmentation_models = augmentation_models
        self.distill_epochs = distill_epochs
        self.n_restarts = n_restarts
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.optimizer = optimizer
        self.latent_clip = latent_clip
        self.latent_noise = latent_noise
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        self._check_gan_params()
        _check_number(self.latent_noise, "latent_noise", 0)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(
                f"optimizer must be 'sgd' or 'adam'. Received: optimizer={self.optimizer!r}"
            )
        _check_number(self.identity_weight, "identity_weight", 0)
        _check_number(self.logit_reg, "logit_reg", 0)
        _check_number(self.n_restarts, "n_restarts", 1, integer=True)
        _check_number(self.max_iter, "max_iter", 0, integer=True)
        _check_number(self.learning_rate, "learning_rate", 0, strict=True)
        _check_number(self.latent_clip, "latent_clip", 0, strict=True)
        if self.identity_loss not in ("ce", "logit"):
            raise ValueError(
                "identity_loss must be 'ce' or 'logit' (LOMMA). "
                f"Received: identity_loss={self.identity_loss!r}"
            )
        aug = self.augmentation_models
        if not (isinstance(aug, numbers.Integral) and aug >= 0) and not isinstance(aug, list):
            raise ValueError(
                "augmentation_models must be a non-negative integer or a list of Keras models. "
                f"Received: augmentation_models={aug!r}"
            )

    def fit(self, X=None, y=None):
        """Train (or take) the GAN prior and any LOMMA surrogates; return ``self``.

        Parameters
        ----------
        X : array of shape (n, height, width, channels), default=None
            Public images, of no target class ideally; needed unless a generator
            and critic are given and no surrogate is asked for.
        y : ignored
        """
        target = self._validate_target()
        self._check_params()
        model = _keras_model(target, type(self).__name__)
        self.input_shape_ = _model_input_shape(model)
        rs = check_random_state(self.random_state)
        self._fit_prior(X, self.input_shape_, np.random.default_rng(rs.randint(2**31)))
        self.surrogates_ = self._distill(X, rs)
        self._p_reg = None
        if self.identity_loss == "logit" and X is not None:
            self._p_reg = self._class_feature_means(_check_images(X, self.input_shape_))
        return self

    def _distill(self, X, rs):
        from kmi.models.image import cnn_classifier

        aug = self.augmentation_models
        if isinstance(aug, numbers.Integral) and aug == 0:
            return []
        if X is None:
            raise ValueError(
                "Model augmentation distils surrogates on public images: call "
                "fit(X). Received: X=None"
            )
        X = _check_images(X, self.input_shape_)
        soft = self.target_.scores(X).astype("float32")
        k = soft.shape[1]
        if isinstance(aug, numbers.Integral):
            widths = [(16, 32), (32, 64), (24, 48), (8, 16)]
            aug = [
                cnn_classifier(self.input_shape_, k, filters=widths[i % 4], batch_norm=False)
                for i in range(aug)
            ]
        surrogates = []
        for model in aug:
            keras.utils.set_random_seed(int(rs.randint(2**31)))
            model.compile(
                keras.optimizers.Adam(1e-3), keras.losses.CategoricalCrossentropy(from_logits=True)
            )
            model.fit(X, soft, epochs=int(self.distill_epochs), batch_size=64, verbose=0)
            surrogates.append(model)
        return surrogates

    def _class_feature_means(self, X):
        from kmi.models.image import feature_extractor

        try:
            feats_model = feature_extractor(self.target_.model)
        except ValueError:
            return None
        feats = np.asarray(feats_model.predict(X, verbose=0)).reshape(len(X), -1)
        pred = self.target_.scores(X).argmax(1)
        means = np.tile(feats.mean(0), (self.target_.n_classes_, 1))
        for c in np.unique(pred):
            means[c] = feats[pred == c].mean(0)
        self._feats_model = feats_model
        return means.astype("float32")

    def _identity_rows(self, images, onehot, idx_rows):
        """Per-row identity loss averaged over the target and its surrogates."""
        target = self.target_
        losses = []
        for model in [target.model, *self.surrogates_]:
            logp = _log_probs(target, images, model)
            if self.identity_loss == "ce":
                losses.append(-ops.sum(logp * onehot, axis=-1))
            else:
                out = model(images, training=False)
                logits = out if (model is not target.model or target.from_logits) else logp
                rows = -ops.sum(logits * onehot, axis=-1)
                if model is target.model and self._p_reg is not None and self.logit_reg:
                    feats = ops.reshape(
                        self._feats_model(images, training=False), (ops.shape(images)[0], -1)
                    )
                    p = ops.take(ops.convert_to_tensor(self._p_reg), idx_rows, axis=0)
                    rows = rows + float(self.logit_reg) * ops.mean((feats - p) ** 2, axis=-1)
                losses.append(rows)
        return sum(losses) / len(losses)

    def invert(self, y):
        """Reconstruct one image for each label of ``y`` (all labels and restarts at once).

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        r = int(self.n_restarts)
        rows_idx = np.repeat(idx, r)
        onehot = ops.convert_to_tensor(np.eye(self.target_.n_classes_, dtype="float32")[rows_idx])
        idx_t = ops.convert_to_tensor(rows_idx.astype("int32"))
        generator, critic = self.generator_, self.critic_
        lam = float(self.identity_weight)
        from kmi.attacks._gan import critic_score

        noise = float(self.latent_noise)

        def loss_fn(z, aux):
            if noise:
                z = z + noise * aux["eps"]
            images = generator(z, training=False)
            prior = -critic_score(critic(images, training=False))
            return prior + lam * self._identity_rows(images, onehot, idx_t)

        def aux_fn(step, rng):
            return {"eps": rng.standard_normal((len(rows_idx), self.latent_dim_))}

        rs = check_random_state(self.random_state)
        clip = float(self.latent_clip)
        z0 = np.clip(rs.standard_normal((len(rows_idx), self.latent_dim_)), -clip, clip)
        result = minimize(
            loss_fn,
            z0.astype("float32"),
            max_iter=int(self.max_iter),
            learning_rate=float(self.learning_rate),
            optimizer=self.optimizer,
            momentum=float(self.momentum),
            clip=(-clip, clip),
            keep_best=False,
            aux_fn=aux_fn if noise else None,
            rng=np.random.default_rng(rs.randint(2**31)),
            verbose=self.verbose,
            desc=f"{type(self).__name__}: {len(idx)} classes x {r} restarts",
        )
        images = _generate(generator, result.x)
        target_logp = np.log(np.clip(self.target_.scores(images), 1e-12, 1.0))
        ident = -target_logp[np.arange(len(rows_idx)), rows_idx].reshape(len(idx), r)
        best = ident.argmin(axis=1)
        pick = np.arange(len(idx)) * r + best
        self.latents_ = result.x[pick]
        self.loss_ = ident[np.arange(len(idx)), best]
        self.restart_latents_ = result.x.reshape(len(idx), r, -1)
        self.restart_losses_ = ident
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        return images[pick]


GMI.__doc__ = GMI.__doc__.format(gan_params=_GAN_PARAMS_DOC)


# ----------------------------------------------------------------------------- KED-MI
def _kedmi_losses(target, gp_weight=10.0, supervised_weight=1.0, entropy_weight=1e-4):
    """KED-MI's GAN: WGAN-GP plus the K-way head on soft labels and the entropy term."""
    from kmi.attacks._gan import critic_score, gradient_penalty

    def class_logits(out):
        return out[1]

    def d_loss(critic_fn, real, fake, soft, eps):
        out_real, out_fake = critic_fn(real), critic_fn(fake)
        wgan = ops.mean(critic_score(out_fake)) - ops.mean(critic_score(out_real))
        gp = gradient_penalty(critic_fn, real, fake, eps)
        supervised = -ops.mean(ops.sum(soft * ops.log_softmax(class_logits(out_real), -1), -1))
        return wgan + gp_weight * gp + supervised_weight * supervised

    def g_loss(critic_fn, real, fake, soft):
        adv = -ops.mean(critic_score(critic_fn(fake)))
        logp = _log_probs(target, fake)
        entropy = -ops.mean(ops.sum(ops.exp(logp) * logp, axis=-1))
        return adv + entropy_weight * entropy

    return d_loss, g_loss


class KEDMI(_GANPriorMixin, _ClassInversionMixin, BaseAttack):
    """Knowledge-enriched distributional model inversion (Chen et al. 2021).

        ``fit(X_public)`` trains an inversion-specific GAN: the critic has a second,
        K-way head trained on the target's soft labels of the public images (the
        knowledge of the target enters the prior), and the generator is also pushed
        towards images the target classifies confidently (low entropy). ``invert(y)``
        then learns, for every label at once, a Gaussian latent distribution
        ``N(mu_y, diag(sigma_y^2))`` by the reparameterisation trick, minimising
        ``E[-D(G(z)) + identity_weight * CE(T(G(z)), y)]``, and returns, per label, the
        draw (of ``n_draws``) that the target finds most likely.

        Parameters
        ----------
        target : Target or keras.Model
            White-box target.
    {gan_params}
        supervised_weight : float, default=1.0
            Weight of the critic's soft-label head.
        entropy_weight : float, default=1e-4
            Weight of the target's entropy on generated images in the generator loss.
            Keep it small: at 1.0 the generator collapsed to saturated images that the
            target is sure of but that look like no class (``benchmarks/image_gan.py``:
            top-1 0.2, chance, against 0.6 at 1e-4, mean of 3 seeds, and 0.8 at 0).
        identity_weight : float, default=100.0
        n_samples : int, default=8
            Draws per label and step in the distributional search.
        n_draws : int, default=20
            Draws per label from the learned distribution to pick the returned image.
        max_iter : int, default=1000
        learning_rate : float, default=0.02
            Adam's, on the distribution parameters.
        eval_model : keras.Model or callable, default=None
        random_state : int, RandomState instance or None, default=None
        verbose : int, default=0

        Attributes
        ----------
        target_ : Target
        generator_, critic_ : keras.Model
        gan_history_ : dict or None
        mu_, log_sigma_ : ndarray of shape (n_labels, latent_dim)
            The learned distribution of each label of the last :meth:`invert`.
        loss_ : ndarray of shape (n_labels,)
        n_iter_ : int
        interrupted_ : bool

        References
        ----------
        S. Chen, M. Kahla, R. Jia and G.-J. Qi. Knowledge-enriched distributional model
        inversion attacks. ICCV 2021.
    """

    required_access = "white-box"

    def __init__(
        self,
        target=None,
        *,
        generator=None,
        critic=None,
        latent_dim=100,
        gan_steps=2000,
        gan_batch_size=64,
        gan_width=32,
        gan_learning_rate=1e-4,
        supervised_weight=1.0,
        entropy_weight=1e-4,
        identity_weight=100.0,
        n_samples=8,
        n_draws=20,
        max_iter=1000,
        learning_rate=0.02,
        eval_model=None,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.generator = generator
        self.critic = critic
        self.latent_dim = latent_dim
        self.gan_steps = gan_steps
        self.gan_batch_size = gan_batch_size
        self.gan_width = gan_width
        self.gan_learning_rate = gan_learning_rate
        self.supervised_weight = supervised_weight
        self.entropy_weight = entropy_weight
        self.identity_weight = identity_weight
        self.n_samples = n_samples
        self.n_draws = n_draws
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Train (or take) the inversion-specific GAN; return ``self``.

        Parameters
        ----------
        X : array of shape (n, height, width, channels), default=None
            Public images; their soft labels are queried from the target (counted).
        y : ignored
        """
        target = self._validate_target()
        self._check_gan_params()
        for name in ("supervised_weight", "entropy_weight", "identity_weight"):
            _check_number(getattr(self, name), name, 0)
        _check_number(self.n_samples, "n_samples", 1, integer=True)
        _check_number(self.n_draws, "n_draws", 1, integer=True)
        _check_number(self.max_iter, "max_iter", 0, integer=True)
        _check_number(self.learning_rate, "learning_rate", 0, strict=True)
        self.input_shape_ = _model_input_shape(_keras_model(target, type(self).__name__))
        soft = None
        if self.generator is None and X is not None:
            soft = target.scores(_check_images(X, self.input_shape_)).astype("float32")
        rs = check_random_state(self.random_state)
        self._fit_prior(
            X,
            self.input_shape_,
            np.random.default_rng(rs.randint(2**31)),
            n_classes=target.n_classes_,
            losses=_kedmi_losses(
                target, 10.0, float(self.supervised_weight), float(self.entropy_weight)
            ),
            extra=soft,
        )
        return self

    def invert(self, y):
        """Learn a latent distribution per label (all at once); return one image per label.

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        from kmi.attacks._gan import critic_score

        check_is_fitted(self)
        idx = self._label_indices(y)
        n, d, s = len(idx), self.latent_dim_, int(self.n_samples)
        onehot = ops.convert_to_tensor(
            np.repeat(np.eye(self.target_.n_classes_, dtype="float32")[idx], s, axis=0)
        )
        generator, critic, target = self.generator_, self.critic_, self.target_
        lam = float(self.identity_weight)

        def loss_fn(params, aux):
            mu, log_sigma = params[:, :d], params[:, d:]
            z = mu[:, None, :] + ops.exp(log_sigma)[:, None, :] * aux["eps"]
            images = generator(ops.reshape(z, (n * s, d)), training=False)
            prior = -critic_score(critic(images, training=False))
            ident = -ops.sum(_log_probs(target, images) * onehot, axis=-1)
            return ops.mean(ops.reshape(prior + lam * ident, (n, s)), axis=1)

        def aux_fn(step, rng):
            return {"eps": rng.standard_normal((n, s, d))}

        rs = check_random_state(self.random_state)
        rng = np.random.default_rng(rs.randint(2**31))
        x0 = np.concatenate([rng.standard_normal((n, d)), np.zeros((n, d))], axis=1)
        result = minimize(
            loss_fn,
            x0.astype("float32"),
            max_iter=int(self.max_iter),
            learning_rate=float(self.learning_rate),
            optimizer="adam",
            keep_best=False,
            aux_fn=aux_fn,
            rng=rng,
            verbose=self.verbose,
            desc=f"KEDMI: {n} class distributions",
        )
        self.mu_, self.log_sigma_ = result.x[:, :d], result.x[:, d:]
        images = self.sample(y, int(self.n_draws), random_state=rng)
        k = int(self.n_draws)
        logp = np.log(np.clip(target.scores(images.reshape(n * k, *self.input_shape_)), 1e-12, 1))
        ident = -logp[np.arange(n * k), np.repeat(idx, k)].reshape(n, k)
        best = ident.argmin(axis=1)
        self.loss_ = ident[np.arange(n), best]
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        return images[np.arange(n), best]

    def sample(self, y, n_samples=1, random_state=None):
        """Draw images from the distributions learned by the last :meth:`invert`.

        ``y`` must be the labels of that call.

        Returns
        -------
        ndarray of shape (n_labels, n_samples, height, width, channels)
        """
        check_is_fitted(self, "mu_")
        if len(np.asarray(y)) != len(self.mu_):
            raise ValueError(
                f"sample needs the {len(self.mu_)} labels of the last invert. "
                f"Received: {len(np.asarray(y))} labels"
            )
        rng = np.random.default_rng(random_state)
        eps = rng.standard_normal((len(self.mu_), n_samples, self.latent_dim_))
        z = self.mu_[:, None] + np.exp(self.log_sigma_)[:, None] * eps
        images = _generate(self.generator_, z.reshape(-1, self.latent_dim_).astype("float32"))
        return images.reshape(len(self.mu_), n_samples, *images.shape[1:])


KEDMI.__doc__ = KEDMI.__doc__.format(gan_params=_GAN_PARAMS_DOC)


# ----------------------------------------------------------------------------- BREP-MI
class BREPMI(_GANPriorMixin, _ClassInversionMixin, BaseAttack):
    """Label-only boundary-repelling model inversion (Kahla et al. 2022).

        Over a GAN prior (trained on public images by ``fit``, as for GMI), each label
        starts from a latent code the target labels as that class. At every step, for
        every label at once, ``n_directions`` points are drawn on the sphere of radius
        ``R`` around the code and labelled by the target; the code moves away from the
        points outside the class (the mean of their directions, negated), and the move
        is kept only if the target still gives the class. When all points of a sphere
        are in the class, ``R`` grows by ``radius_growth``: the code is then deep in the
        class region. Only predicted labels are used.

        Parameters
        ----------
        target : Target, keras.Model or callable
            Any target (label-only is enough); queries are counted and budgeted.
    {gan_params}
        critic : ignored
        n_directions : int, default=32
        initial_radius : float, default=2.0
        radius_growth : float, default=1.3
        max_radius : float, default=16.0
            A label stops once its radius exceeds this.
        max_iter : int, default=200
        learning_rate : float, default=1.0
            Step length relative to the radius.
        init_batches : int, default=50
            Batches of ``init_batch_size`` random codes tried to find a start per label.
        init_batch_size : int, default=256
        eval_model : keras.Model or callable, default=None
        random_state : int, RandomState instance or None, default=None
        verbose : int, default=0

        Attributes
        ----------
        target_ : Target
        generator_ : keras.Model
        latents_ : ndarray of shape (n_labels, latent_dim)
        radius_ : ndarray of shape (n_labels,)
            Radius reached by each label (larger: deeper in the class).
        found_ : ndarray of bool
            Whether a start labelled as the class was found (else the result is from a
            random code).
        n_iter_ : int
        interrupted_ : bool

        References
        ----------
        M. Kahla, S. Chen, H. A. Just and R. Jia. Label-only model inversion attacks via
        boundary repulsion. CVPR 2022.
    """

    required_access = "label-only"

    def __init__(
        self,
        target=None,
        *,
        generator=None,
        critic=None,
        latent_dim=100,
        gan_steps=2000,
        gan_batch_size=64,
        gan_width=32,
        gan_learning_rate=1e-4,
        n_directions=32,
        initial_radius=2.0,
        radius_growth=1.3,
        max_radius=16.0,
        max_iter=200,
        learning_rate=1.0,
        init_batches=50,
        init_batch_size=256,
        eval_model=None,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.generator = generator
        self.critic = critic
        self.latent_dim = latent_dim
        self.gan_steps = gan_steps
        self.gan_batch_size = gan_batch_size
        self.gan_width = gan_width
        self.gan_learning_rate = gan_learning_rate
        self.n_directions = n_directions
        self.initial_radius = initial_radius
        self.radius_growth = radius_growth
        self.max_radius = max_radius
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.init_batches = init_batches
        self.init_batch_size = init_batch_size
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Train (or take) the GAN prior; return ``self``.

        The target is never queried here. Its input shape is that of ``X`` (or of
        the generator's output).
        """
        target = self._validate_target()
        self._check_gan_params()
        _check_number(self.n_directions, "n_directions", 1, integer=True)
        _check_number(self.initial_radius, "initial_radius", 0, strict=True)
        _check_number(self.radius_growth, "radius_growth", 1, strict=True)
        _check_number(self.max_radius, "max_radius", 0, strict=True)
        _check_number(self.max_iter, "max_iter", 0, integer=True)
        _check_number(self.learning_rate, "learning_rate", 0, strict=True)
        _check_number(self.init_batches, "init_batches", 1, integer=True)
        _check_number(self.init_batch_size, "init_batch_size", 1, integer=True)
        if target.kind == "keras":
            shape = _model_input_shape(target.model)
        elif X is not None:
            shape = _check_images(X).shape[1:]
        elif self.generator is not None:
            shape = tuple(int(s) for s in self.generator.outputs[0].shape[1:])
        else:
            raise ValueError("BREPMI needs public images X or a generator. Received: X=None")
        self.input_shape_ = shape
        rs = check_random_state(self.random_state)
        self._fit_prior(X, shape, np.random.default_rng(rs.randint(2**31)), need_critic=False)
        return self

    def _labels_of(self, z):
        out = self.target_.query(_generate(self.generator_, z.astype("float32")))
        out = np.asarray(out)
        if out.ndim == 2:
            return out.argmax(axis=1)
        return self.target_.label_index(out)

    def invert(self, y):
        """Reconstruct one image for each label of ``y``, from predicted labels only.

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        n, d, k = len(idx), self.latent_dim_, int(self.n_directions)
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        z = rng.standard_normal((n, d))
        found = np.zeros(n, dtype=bool)
        radius = np.full(n, float(self.initial_radius))
        active = np.ones(n, dtype=bool)
        it = 0
        interrupted = False
        bar = keras.utils.Progbar(self.max_iter, unit_name="step") if self.verbose else None
        try:
            for _ in range(int(self.init_batches)):
                cand = rng.standard_normal((int(self.init_batch_size), d))
                labels = self._labels_of(cand)
                for row in np.flatnonzero(~found):
                    hits = np.flatnonzero(labels == idx[row])
                    if hits.size:
                        z[row], found[row] = cand[hits[0]], True
                if found.all():
                    break
            if not found.all():
                warnings.warn(
                    f"BREPMI found no start labelled as {int((~found).sum())} of the {n} "
                    "classes; their results come from random codes (see found_).",
                    RuntimeWarning,
                    stacklevel=2,
                )
            active &= found
            while it < int(self.max_iter) and active.any():
                rows = np.flatnonzero(active)
                u = rng.standard_normal((len(rows), k, d))
                u /= np.linalg.norm(u, axis=2, keepdims=True)
                points = z[rows, None, :] + radius[rows, None, None] * u
                labels = self._labels_of(points.reshape(-1, d)).reshape(len(rows), k)
                outside = labels != idx[rows, None]
                direction = -(outside[..., None] * u).mean(axis=1)
                step = float(self.learning_rate) * radius[rows, None] * direction
                candidate = z[rows] + step
                keep = self._labels_of(candidate) == idx[rows]
                z[rows[keep]] = candidate[keep]
                grow = ~outside.any(axis=1)
                radius[rows[grow]] *= float(self.radius_growth)
                active[rows[radius[rows] > float(self.max_radius)]] = False
                it += 1
                if bar is not None:
                    bar.update(it, [("radius", float(radius.mean()))])
        except KeyboardInterrupt:
            interrupted = True
            warnings.warn(
                f"Interrupted after {it} of {self.max_iter} steps; returning the current codes.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.latents_, self.radius_, self.found_ = z.astype("float32"), radius, found
        self.n_iter_, self.interrupted_ = it, interrupted
        return _generate(self.generator_, self.latents_)


BREPMI.__doc__ = BREPMI.__doc__.format(gan_params=_GAN_PARAMS_DOC)


# ----------------------------------------------------------------------------- InversionModel
def _truncate(scores, k):
    """Keep the ``k`` largest entries of each row, zero the rest (Yang et al.'s truncation)."""
    scores = np.asarray(scores, dtype="float32")
    if k is None or k >= scores.shape[1]:
        return scores
    keep = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(scores)
    np.put_along_axis(out, keep, np.take_along_axis(scores, keep, axis=1), axis=1)
    return out


class InversionModel(BaseAttack):
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
        images' shape; ``None`` builds a dense one with ``hidden_units``.
    truncation : int, default=None
        Scores kept per vector; ``None`` keeps all.
    hidden_units : tuple of int, default=(256, 512)
    epochs : int, default=100
    batch_size : int, default=64
    learning_rate : float, default=1e-3
    random_state : int, default=None
        Seeds the decoder's initialisation and shuffling.
    verbose : int, default=0

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
    """

    required_access = "black-box"

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

    def fit(self, X, y=None):
        """Query the target on auxiliary images ``X`` and train the decoder; return ``self``.

        Parameters
        ----------
        X : array of shape (n, height, width, channels)
            Auxiliary images, in [0, 1].
        y : ignored
        """
        target = self._validate_target()
        if self.truncation is not None:
            _check_number(self.truncation, "truncation", 1, integer=True)
        _check_number(self.epochs, "epochs", 0, integer=True)
        _check_number(self.batch_size, "batch_size", 1, integer=True)
        _check_number(self.learning_rate, "learning_rate", 0, strict=True)
        X = _check_images(X)
        self.input_shape_ = X.shape[1:]
        scores = np.asarray(target.query(X), dtype="float32")
        if scores.ndim != 2:
            raise ValueError(
                "InversionModel decodes score vectors, and the target answered with "
                f"labels. Received: target output={target.output!r}"
            )
        self.n_classes_ = scores.shape[1]
        if self.random_state is not None:
            keras.utils.set_random_seed(int(check_random_state(self.random_state).randint(2**31)))
        decoder = self.decoder if self.decoder is not None else self._build_decoder()
        if tuple(decoder.outputs[0].shape[1:]) != self.input_shape_:
            raise ValueError(
                f"The decoder must output images of shape {self.input_shape_}. "
                f"Received: decoder output shape={tuple(decoder.outputs[0].shape[1:])}"
            )
        decoder.compile(keras.optimizers.Adam(float(self.learning_rate)), "mse")
        from kmi._progress import epoch_progress

        callbacks = (
            [epoch_progress(self.epochs, "InversionModel: training the decoder")]
            if self.verbose and self.epochs
            else []
        )
        hist = decoder.fit(
            _truncate(scores, self.truncation),
            X,
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            verbose=0,
            callbacks=callbacks,
        )
        self.decoder_, self.history_ = decoder, hist.history
        return self

    def _build_decoder(self):
        units = tuple(self.hidden_units)
        inputs = keras.Input((self.n_classes_,))
        x = inputs
        for u in units:
            x = keras.layers.Dense(int(u), activation="relu")(x)
            x = keras.layers.LayerNormalization()(x)
        x = keras.layers.Dense(int(np.prod(self.input_shape_)), activation="sigmoid")(x)
        out = keras.layers.Reshape(self.input_shape_)(x)
        return keras.Model(inputs, out, name="inversion_decoder")

    def invert(self, outputs):
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
        return np.asarray(self.decoder_.predict(vectors, verbose=0), dtype="float32")

    def score(self, X, y=None) -> float:
        """Mean PSNR (dB) of the images rebuilt from the target's outputs on ``X``."""
        from kmi.metrics.image import psnr

        check_is_fitted(self)
        X = _check_images(X, self.input_shape_)
        return psnr(self.invert(self.target_.query(X)), X)
