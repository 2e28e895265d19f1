"""GMI: inversion through a GAN prior (Zhang et al. 2020), with LOMMA's options."""

from __future__ import annotations

import numbers
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
    GAN_CONSTRAINTS,
    OPTIMIZERS,
    PARAMS_DOC,
    SELECTION_CONSTRAINT,
    ClassInversionMixin,
    keras_model,
    log_probs,
    model_input_shape,
)
from kmi.attacks.image._gan_prior import GANPriorMixin, critic_score, generate
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.attacks.image._selection import RestartsMixin
from kmi.attacks.image._surrogates import default_surrogates, train_surrogates
from kmi.base import BaseAttack
from kmi.utils.validation import check_images


@fill_doc(**PARAMS_DOC)
class GMI(PixelRangeMixin, GANPriorMixin, RestartsMixin, ClassInversionMixin, BaseAttack):
    """The generative model-inversion attack (Zhang et al. 2020), with LOMMA options.

    ``fit(X_public)`` trains a WGAN-GP prior on public images (or takes a trained
    generator and critic). ``invert(y)`` then searches the latent space: for every
    label and each of ``n_restarts`` random starts at once, it minimises
    ``-D(G(z)) + identity_weight * L_id(G(z), y)`` by SGD with momentum (or Adam),
    clipping ``z`` to ``[-latent_clip, latent_clip]``, and returns the restart with
    the lowest identity loss of the target (or, with ``selection="robust"``, the
    one the target is surest of under random crops).

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
    identity_loss : {"ce", "logit"}, default="ce"
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
    optimizer : {"sgd", "adam"}, default="sgd"
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
    {selection}
    {eval_model}
    {random_state}
    {verbose}
    {pixel_range}

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
        image; ``invert`` returns the restart with the lowest, with
        ``selection="loss"``.
    selection_scores_ : ndarray of shape (n_labels, n_restarts)
        Each restart's score by ``selection`` (higher is better); ``invert``
        returns the restart with the highest.
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

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import GMI
    >>> from kmi.models import softmax_regression
    >>> from kmi.targets import Target
    >>> target = Target(softmax_regression((8, 8, 1), 3, seed=0))
    >>> public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> attack = GMI(target, gan_steps=2, gan_width=4, latent_dim=4, max_iter=3,
    ...              n_restarts=2, random_state=0).fit(public)
    >>> attack.invert([0, 2]).shape
    (2, 8, 8, 1)
    >>> target.n_queries_ > 0  # every white-box read is counted
    True
    """

    required_access = "white-box"
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        **GAN_CONSTRAINTS,
        "identity_weight": [Interval(Real, 0, None, closed="left")],
        "identity_loss": [StrOptions({"ce", "logit"})],
        "logit_reg": [Interval(Real, 0, None, closed="left")],
        "augmentation_models": [Interval(Integral, 0, None, closed="left"), list],
        "distill_epochs": [Interval(Integral, 1, None, closed="left")],
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "optimizer": [OPTIMIZERS],
        "latent_clip": [Interval(Real, 0, None, closed="neither")],
        "latent_noise": [Interval(Real, 0, None, closed="left")],
        "selection": SELECTION_CONSTRAINT,
    }

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
        selection="loss",
        eval_model=None,
        random_state=None,
        verbose=0,
        pixel_range=None,
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
        self.selection = selection
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Train (or take) the GAN prior and any LOMMA surrogates; return ``self``.

        Parameters
        ----------
        X : array of shape (n, height, width, channels), default=None
            Public images, of no target class ideally; needed unless a generator
            and critic are given and no surrogate is asked for.
        y : ignored
        """
        model = keras_model(self.target_, type(self).__name__)
        self.input_shape_ = model_input_shape(model)
        X = self._fit_pixel_range(X)
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        self._fit_prior(X, self.input_shape_, rng)
        self.surrogates_ = self._distill(X, rng)
        self._p_reg = None
        if self.identity_loss == "logit" and X is not None:
            self._p_reg = self._class_feature_means(check_images(X, self.input_shape_))
        return self

    def _distill(self, X, rng):
        aug = self.augmentation_models
        if isinstance(aug, numbers.Integral) and aug == 0:
            return []
        if X is None:
            raise ValueError(
                "Model augmentation distils surrogates on public images: call "
                "fit(X). Received: X=None"
            )
        X = check_images(X, self.input_shape_)
        soft = self.target_.scores(X).astype("float32")
        if isinstance(aug, numbers.Integral):
            aug = default_surrogates(self.input_shape_, soft.shape[1], aug, rng)
        return train_surrogates(aug, X, soft, epochs=int(self.distill_epochs), rng=rng)

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

    def _identity_rows(self, images, onehot, idx_rows, p_reg=None):
        """Per-row identity loss averaged over the target and its surrogates."""
        target = self.target_
        losses = []
        for model in [target.model, *self.surrogates_]:
            logp = log_probs(target, images, model)
            if self.identity_loss == "ce":
                losses.append(-ops.sum(logp * onehot, axis=-1))
            else:
                out = model(images, training=False)
                logits = out if (model is not target.model or target.from_logits) else logp
                rows = -ops.sum(logits * onehot, axis=-1)
                if model is target.model and p_reg is not None and self.logit_reg:
                    feats = ops.reshape(
                        self._feats_model(images, training=False), (ops.shape(images)[0], -1)
                    )
                    p = ops.take(p_reg, idx_rows, axis=0)
                    rows = rows + float(self.logit_reg) * ops.mean((feats - p) ** 2, axis=-1)
                losses.append(rows)
        return sum(losses) / len(losses)

    def invert(self, y: ArrayLike) -> np.ndarray:
        """Reconstruct one image for each label of ``y`` (all labels and restarts at once).

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        r = int(self.n_restarts)
        rows_idx = np.repeat(idx, r)
        data = {
            "onehot": np.eye(self.target_.n_classes_, dtype="float32")[rows_idx],
            "rows": rows_idx.astype("int32"),
        }
        use_p_reg = self._p_reg is not None and bool(self.logit_reg)
        if use_p_reg:
            data["p_reg"] = self._p_reg
        generator, critic = self.generator_, self.critic_
        lam = float(self.identity_weight)
        noise = float(self.latent_noise)

        def loss_fn(z, aux):
            if noise:
                z = z + noise * aux["eps"]
            images = generator(z, training=False)
            prior = -critic_score(critic(images, training=False))
            ident = self._identity_rows(images, aux["onehot"], aux["rows"], aux.get("p_reg"))
            return prior + lam * ident

        def aux_fn(step, rng):
            return {"eps": rng.standard_normal((len(rows_idx), self.latent_dim_))}

        models = [generator, critic, self.target_.model, *self.surrogates_]
        if use_p_reg:
            models.append(self._feats_model)
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
            data=data,
            models=models,
            program=(
                type(self).__name__,
                self.target_.from_logits,
                self.identity_loss,
                float(self.logit_reg) if use_p_reg else 0.0,
                lam,
                noise,
            ),
            queries=self.target_,
            verbose=self.verbose,
            desc=f"{type(self).__name__}: {len(idx)} classes x {r} restarts",
        )
        images = generate(generator, result.x)
        return self._to_data_range(self._pick_restarts(result, images, idx, rs))
