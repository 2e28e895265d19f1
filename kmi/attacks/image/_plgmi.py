"""PLG-MI: pseudo-label guided model inversion with a conditional GAN (Yuan et al. 2023)."""

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
from kmi.attacks.image._gan_prior import GANPriorMixin, critic_score, generate
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.attacks.image._selection import RestartsMixin
from kmi.base import BaseAttack
from kmi.utils.validation import check_images


def max_margin(logits, onehot):
    """``max_j!=y logit_j - logit_y`` per row: PLG-MI's identity loss (lower is better)."""
    own = ops.sum(logits * onehot, axis=-1)
    others = ops.max(logits - 1e9 * onehot, axis=-1)
    return others - own


def top_n_pseudo_labels(scores, top_n):
    """PLG-MI's top-n selection: for each class, the ``top_n`` public images the
    target is surest belong to it.

    Parameters
    ----------
    scores : ndarray of shape (n_images, n_classes)
        The target's probabilities of the public images.
    top_n : int

    Returns
    -------
    (rows, labels) : ndarrays of shape (n_classes * min(top_n, n_images),)
        Image indices and their pseudo-labels, class by class (an image may be chosen
        for several classes).
    """
    scores = np.asarray(scores)
    n = min(int(top_n), len(scores))
    order = np.argsort(-scores, axis=0, kind="stable")[:n]  # (n, k): best first per class
    labels = np.repeat(np.arange(scores.shape[1])[None, :], n, axis=0)
    return order.T.reshape(-1), labels.T.reshape(-1)


def _plgmi_losses(target, n_classes, inv_weight):
    """PLG-MI's GAN: hinge loss with a projection discriminator, and the target's
    max-margin loss on the generated images in the generator's."""
    k = n_classes

    def project(out, onehot):  # D(x, y) = psi(phi(x)) + <embed(y), phi(x)>
        return critic_score(out) + ops.sum(out[1] * onehot, axis=-1)

    def d_loss(critic_fn, real, fake, classes, eps):
        y_real, y_fake = classes[:, :k], classes[:, k:]
        return ops.mean(ops.relu(1.0 - project(critic_fn(real), y_real))) + ops.mean(
            ops.relu(1.0 + project(critic_fn(fake), y_fake))
        )

    def g_loss(critic_fn, real, fake, classes):
        y_fake = classes[:, k:]
        adv = -ops.mean(project(critic_fn(fake), y_fake))
        # log-probabilities differ from logits by a constant per row: the same margin
        inv = ops.mean(max_margin(log_probs(target, fake), y_fake))
        return adv + inv_weight * inv

    return d_loss, g_loss


@fill_doc(**PARAMS_DOC)
class PLGMI(PixelRangeMixin, GANPriorMixin, RestartsMixin, ClassInversionMixin, BaseAttack):
    """Pseudo-label guided model inversion (Yuan et al. 2023).

    ``fit(X_public)``:

    1. *top-n selection*: the target labels the public images, and for each class the
       ``top_n`` images it is surest of become that class's pseudo-labelled set;
    2. a *conditional* GAN is trained on them: the generator takes a code and a
       one-hot class (the last ``n_classes`` inputs of a DCGAN generator), the
       critic is a projection discriminator (the DCGAN critic's realness score plus
       its class head's logit of the class), with the hinge loss; the generator's
       loss adds ``inv_weight`` times the target's max-margin loss on its images,
       so the target guides what each class's images look like.

    ``invert(y)`` then searches, for every label and each of ``n_restarts`` starts at
    once, the code whose image (generated *for that class*) has the lowest max-margin
    loss of the target, by Adam, and returns the restart the target prefers
    (``selection``). Because the generator is conditioned on the class, the search
    starts among images of that class rather than among any public image.

    The paper trains the generator and the inversion with random augmentations of
    the generated images (crops, flips, rotations) before the target, and uses a
    discriminator with spectral normalisation; neither is done here (the DCGAN
    critic has layer normalisation).

    Parameters
    ----------
    target : Target or keras.Model
        White-box target.
    {gan_params}
    top_n : int, default=30
        Public images per class kept by the top-n selection.
    inv_weight : float, default=0.2
        Weight of the target's max-margin loss in the generator's loss (the paper's
        ``alpha``).
    n_restarts : int, default=5
    max_iter : int, default=600
    learning_rate : float, default=0.1
        Adam's, on the codes.
    latent_clip : float, default=3.0
        Codes are kept in ``[-latent_clip, latent_clip]``.
    {selection}
    {eval_model}
    {random_state}
    {verbose}
    {pixel_range}

    Attributes
    ----------
    target_ : Target
    generator_ : keras.Model
        The conditional generator: its input is a code of ``latent_dim_`` then a
        one-hot class.
    critic_ : keras.Model
    gan_history_ : dict or None
    pseudo_labels_ : ndarray
        The pseudo-label of each image of the selected public set.
    latent_dim_ : int
    latents_ : ndarray of shape (n_labels, latent_dim)
    loss_ : ndarray of shape (n_labels,)
        The target's cross-entropy of the label for each returned image.
    restart_latents_ : ndarray of shape (n_labels, n_restarts, latent_dim)
    restart_losses_ : ndarray of shape (n_labels, n_restarts)
        The target's cross-entropy of the label for each restart's image.
    selection_scores_ : ndarray of shape (n_labels, n_restarts)
    n_iter_ : int
    interrupted_ : bool

    References
    ----------
    X. Yuan, K. Chen, J. Zhang, W. Zhang, N. Yu and Y. Zhang. Pseudo label-guided
    model inversion attack via conditional generative adversarial network. AAAI 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import PLGMI
    >>> from kmi.models import softmax_regression
    >>> from kmi.targets import Target
    >>> target = Target(softmax_regression((8, 8, 1), 3, seed=0))
    >>> public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> attack = PLGMI(target, gan_steps=2, gan_width=4, latent_dim=4, top_n=4,
    ...                max_iter=3, n_restarts=2, random_state=0).fit(public)
    >>> attack.invert([0, 2]).shape
    (2, 8, 8, 1)
    >>> attack.pseudo_labels_.tolist()  # 4 public images per class
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    """

    required_access = "white-box"
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        **GAN_CONSTRAINTS,
        "top_n": [Interval(Integral, 1, None, closed="left")],
        "inv_weight": [Interval(Real, 0, None, closed="left")],
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "latent_clip": [Interval(Real, 0, None, closed="neither")],
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
        top_n=30,
        inv_weight=0.2,
        n_restarts=5,
        max_iter=600,
        learning_rate=0.1,
        latent_clip=3.0,
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
        self.top_n = top_n
        self.inv_weight = inv_weight
        self.n_restarts = n_restarts
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.latent_clip = latent_clip
        self.selection = selection
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Pseudo-label the public images and train the conditional GAN; return ``self``.

        Parameters
        ----------
        X : array of shape (n, height, width, channels)
            Public images; the target's scores of them are read (counted). Not
            needed with a trained conditional ``generator``.
        y : ignored
        """
        self.input_shape_ = model_input_shape(keras_model(self.target_, type(self).__name__))
        X = self._fit_pixel_range(X)
        target = self.target_
        k = target.n_classes_
        extra = None
        self.pseudo_labels_ = np.zeros(0, dtype=int)
        if self.generator is None and X is not None:
            X = check_images(X, self.input_shape_)
            rows, labels = top_n_pseudo_labels(target.scores(X), self.top_n)
            X, extra = X[rows], np.eye(k, dtype="float32")[labels]
            self.pseudo_labels_ = labels
        rs = check_random_state(self.random_state)
        self._fit_prior(
            X,
            self.input_shape_,
            np.random.default_rng(rs.randint(2**31)),
            need_critic=False,
            n_classes=k,
            losses=_plgmi_losses(target, k, float(self.inv_weight)),
            extra=extra,
            queries=target,
            conditional=True,
        )
        return self

    def _conditioned(self, z, idx):
        """Generator inputs: the codes ``z`` followed by the one-hot classes ``idx``."""
        onehot = np.eye(self.target_.n_classes_, dtype="float32")[idx]
        return np.concatenate([z, onehot], axis=1).astype("float32")

    def invert(self, y: ArrayLike) -> np.ndarray:
        """Reconstruct one image for each label of ``y`` (all labels and restarts at once).

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        r, d = int(self.n_restarts), self.latent_dim_
        rows_idx = np.repeat(idx, r)
        onehot = np.eye(self.target_.n_classes_, dtype="float32")[rows_idx]
        generator, target = self.generator_, self.target_

        def loss_fn(z, aux):
            images = generator(ops.concatenate([z, aux["onehot"]], axis=-1), training=False)
            return max_margin(log_probs(target, images), aux["onehot"])

        rs = check_random_state(self.random_state)
        clip = float(self.latent_clip)
        z0 = np.clip(rs.standard_normal((len(rows_idx), d)), -clip, clip).astype("float32")
        result = minimize(
            loss_fn,
            z0,
            max_iter=int(self.max_iter),
            learning_rate=float(self.learning_rate),
            optimizer="adam",
            clip=(-clip, clip),
            keep_best=False,
            data={"onehot": onehot},
            models=[generator, target.model],
            program=("PLGMI", target.from_logits),
            queries=target,
            verbose=self.verbose,
            desc=f"PLGMI: {len(idx)} classes x {r} restarts",
        )
        images = generate(generator, self._conditioned(result.x, rows_idx))
        return self._to_data_range(self._pick_restarts(result, images, idx, rs))
