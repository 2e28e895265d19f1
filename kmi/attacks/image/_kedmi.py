"""KED-MI: knowledge-enriched distributional model inversion (Chen et al. 2021)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Self

import numpy as np
from keras import ops
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from kmi._docstring import fill_doc
from kmi.attacks._optim import minimize
from kmi.attacks.image._common import (
    COMMON_CONSTRAINTS,
    GAN_CONSTRAINTS,
    PARAMS_DOC,
    SELECTION_CONSTRAINT,
    ClassInversionMixin,
    keras_model,
    log_probs,
    model_input_shape,
)
from kmi.attacks.image._gan_prior import (
    GANPriorMixin,
    critic_score,
    generate,
    gradient_penalty,
)
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.attacks.image._selection import best_candidates
from kmi.base import BaseAttack
from kmi.utils.validation import check_images


def _kedmi_losses(target, gp_weight=10.0, supervised_weight=1.0, entropy_weight=1e-4):
    """KED-MI's GAN: WGAN-GP plus the K-way head on soft labels and the entropy term."""

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
        logp = log_probs(target, fake)
        entropy = -ops.mean(ops.sum(ops.exp(logp) * logp, axis=-1))
        return adv + entropy_weight * entropy

    return d_loss, g_loss


@fill_doc(**PARAMS_DOC)
class KEDMI(PixelRangeMixin, GANPriorMixin, ClassInversionMixin, BaseAttack):
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
    mu_, log_sigma_ : ndarray of shape (n_labels, latent_dim)
        The learned distribution of each label of the last :meth:`invert`.
    loss_ : ndarray of shape (n_labels,)
    selection_scores_ : ndarray of shape (n_labels, n_draws)
        Each draw's score by ``selection`` (higher is better); ``invert`` returns
        the draw with the highest.
    n_iter_ : int
    interrupted_ : bool

    References
    ----------
    S. Chen, M. Kahla, R. Jia and G.-J. Qi. Knowledge-enriched distributional model
    inversion attacks. ICCV 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import KEDMI
    >>> from kmi.models import softmax_regression
    >>> target = softmax_regression((8, 8, 1), 3, seed=0)
    >>> public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> attack = KEDMI(target, gan_steps=2, gan_width=4, latent_dim=4, max_iter=3,
    ...                n_samples=2, n_draws=2, random_state=0).fit(public)
    >>> attack.invert([1]).shape
    (1, 8, 8, 1)
    >>> attack.sample([1], n_samples=4).shape
    (1, 4, 8, 8, 1)
    """

    required_access = "white-box"
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        **GAN_CONSTRAINTS,
        "supervised_weight": [Interval(Real, 0, None, closed="left")],
        "entropy_weight": [Interval(Real, 0, None, closed="left")],
        "identity_weight": [Interval(Real, 0, None, closed="left")],
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_draws": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
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
        supervised_weight=1.0,
        entropy_weight=1e-4,
        identity_weight=100.0,
        n_samples=8,
        n_draws=20,
        max_iter=1000,
        learning_rate=0.02,
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
        self.supervised_weight = supervised_weight
        self.entropy_weight = entropy_weight
        self.identity_weight = identity_weight
        self.n_samples = n_samples
        self.n_draws = n_draws
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.selection = selection
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Train (or take) the inversion-specific GAN; return ``self``.

        Parameters
        ----------
        X : array of shape (n, height, width, channels), default=None
            Public images; their soft labels are queried from the target (counted).
        y : ignored
        """
        self.input_shape_ = model_input_shape(keras_model(self.target_, type(self).__name__))
        X = self._fit_pixel_range(X)
        target = self.target_
        soft = None
        if self.generator is None and X is not None:
            soft = target.scores(check_images(X, self.input_shape_)).astype("float32")
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
            queries=target,
        )
        return self

    def invert(self, y: ArrayLike) -> np.ndarray:
        """Learn a latent distribution per label (all at once); return one image per label.

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        n, d, s = len(idx), self.latent_dim_, int(self.n_samples)
        onehot = np.repeat(np.eye(self.target_.n_classes_, dtype="float32")[idx], s, axis=0)
        generator, critic, target = self.generator_, self.critic_, self.target_
        lam = float(self.identity_weight)

        def loss_fn(params, aux):
            mu, log_sigma = params[:, :d], params[:, d:]
            z = mu[:, None, :] + ops.exp(log_sigma)[:, None, :] * aux["eps"]
            images = generator(ops.reshape(z, (n * s, d)), training=False)
            prior = -critic_score(critic(images, training=False))
            ident = -ops.sum(log_probs(target, images) * aux["onehot"], axis=-1)
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
            data={"onehot": onehot},
            models=[generator, critic, target.model],
            program=("KEDMI", n, d, s, lam, target.from_logits),
            queries=target,
            queries_per_row=s,
            verbose=self.verbose,
            desc=f"KEDMI: {n} class distributions",
        )
        self.mu_, self.log_sigma_ = result.x[:, :d], result.x[:, d:]
        images = self._sample(y, int(self.n_draws), random_state=rng)
        best, ident, self.selection_scores_ = best_candidates(
            target,
            images,
            idx,
            self.selection,
            random_state=int(rng.integers(2**31)) if self.selection != "loss" else None,
        )
        self.loss_ = ident[np.arange(n), best]
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        return self._to_data_range(images[np.arange(n), best])

    def sample(self, y: ArrayLike, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Draw images from the distributions learned by the last :meth:`invert`.

        ``y`` must be the labels of that call.

        Returns
        -------
        ndarray of shape (n_labels, n_samples, height, width, channels)
            In the target's ``pixel_range``.
        """
        return self._to_data_range(self._sample(y, n_samples, random_state))

    def _sample(self, y, n_samples, random_state):
        """:meth:`sample` in [0, 1], the range the attack works in."""
        check_is_fitted(self, "mu_")
        if len(np.asarray(y)) != len(self.mu_):
            raise ValueError(
                f"sample needs the {len(self.mu_)} labels of the last invert. "
                f"Received: {len(np.asarray(y))} labels"
            )
        rng = np.random.default_rng(random_state)
        eps = rng.standard_normal((len(self.mu_), n_samples, self.latent_dim_))
        z = self.mu_[:, None] + np.exp(self.log_sigma_)[:, None] * eps
        images = generate(self.generator_, z.reshape(-1, self.latent_dim_).astype("float32"))
        return images.reshape(len(self.mu_), n_samples, *images.shape[1:])
