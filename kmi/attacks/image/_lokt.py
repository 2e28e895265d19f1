"""LOKT: label-only inversion by knowledge transfer to surrogates (Nguyen et al. 2023)."""

from __future__ import annotations

from numbers import Integral
from typing import Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from kmi._docstring import fill_doc
from kmi.attacks.image._common import (
    COMMON_CONSTRAINTS,
    GAN_CONSTRAINTS,
    PARAMS_DOC,
    ClassInversionMixin,
)
from kmi.attacks.image._gan_prior import GANPriorMixin, generate
from kmi.attacks.image._pixels import UNIT, PixelRangeMixin
from kmi.attacks.image._surrogates import (
    default_surrogates,
    surrogate_ensemble,
    train_surrogates,
)
from kmi.base import BaseAttack
from kmi.targets import Target


@fill_doc(**PARAMS_DOC)
class LOKT(PixelRangeMixin, GANPriorMixin, ClassInversionMixin, BaseAttack):
    """Label-only model inversion by knowledge transfer (Nguyen et al. 2023).

    A label-only target gives no gradient and no confidence to climb. LOKT moves
    the attack to models that do: ``fit`` trains surrogate classifiers on the
    target's predicted labels, then ``invert`` runs a white-box attack
    (``attack``, GMI by default) against the surrogates' ensemble, over the same
    GAN prior. Only ``fit`` queries the target, one label per image; ``invert``
    never does.

    ``fit(X_public)``:

    1. trains the GAN prior on the public images (or takes ``generator``);
    2. asks the target for the label of every public image and of
       ``n_synthetic`` images drawn from the prior, which reach regions of the
       target's classes the public images may not;
    3. trains ``n_surrogates`` CNNs of varied widths on those labels
       (:mod:`._surrogates`, the loop LOMMA's distillation uses).

    The paper trains a target-conditioned ACGAN (T-ACGAN) whose class-conditional
    samples both form the surrogates' training set and serve as the attack's
    prior. Here the prior is the unconditional WGAN-GP of GMI, and the synthetic
    set is its samples labelled by the target: the knowledge transfer is the
    paper's, its conditional generator is not.

    Parameters
    ----------
    target : Target, keras.Model or callable
        Any target (label-only is enough); queries are counted and budgeted.
    {gan_params}
    n_surrogates : int, default=3
        Surrogate classifiers, averaged (mean probability) into the model attacked.
    surrogate_epochs : int, default=30
        Training epochs of each surrogate.
    n_synthetic : int, default=2000
        Images drawn from the prior and labelled by the target, added to the public
        images to train the surrogates (0: public images only).
    surrogates : list of keras.Model, default=None
        Untrained networks (logits, the target's number of classes) to use instead
        of the default CNNs; ``n_surrogates`` is then ignored.
    attack : image attack, default=None
        The white-box attack run against the surrogates, unfitted, e.g.
        ``GMI(max_iter=300, n_restarts=5)`` or ``KEDMI(...)``; its ``target``,
        ``random_state`` and ``pixel_range`` are set by LOKT, and its GAN prior is
        LOKT's when it takes one. ``None`` means :class:`~kmi.attacks.GMI` with its
        defaults.
    {eval_model}
    {random_state}
    {verbose}
    {pixel_range}

    Attributes
    ----------
    target_ : Target
    generator_, critic_ : keras.Model
    gan_history_ : dict or None
    surrogates_ : list of keras.Model
        The trained surrogates.
    surrogate_agreement_ : float
        Fraction of the training images on which the ensemble gives the target's
        label: how well the surrogates learned the target (on data the target saw
        queried, not on its private data).
    attack_ : image attack
        The fitted white-box attack on the surrogates (its ``latents_``,
        ``restart_losses_``, ... describe the last :meth:`invert`).
    n_fit_queries_ : int
        Labels asked of the target by ``fit``.

    Raises
    ------
    ValueError
        From ``fit``, without public images to train the prior or the surrogates on.

    References
    ----------
    N.-B. Nguyen, K. Chandrasegaran, M. Abdollahzadeh and N.-M. Cheung. Label-only
    model inversion attacks via knowledge transfer. NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import GMI, LOKT
    >>> from kmi.models import softmax_regression
    >>> from kmi.targets import Target
    >>> target = Target(softmax_regression((8, 8, 1), 3, seed=0), access="label-only")
    >>> public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> attack = LOKT(target, gan_steps=2, gan_width=4, latent_dim=4, n_surrogates=1,
    ...               surrogate_epochs=1, n_synthetic=16,
    ...               attack=GMI(max_iter=2, n_restarts=1), random_state=0).fit(public)
    >>> attack.invert([0, 1]).shape
    (2, 8, 8, 1)
    >>> target.n_queries_ == attack.n_fit_queries_ == 32  # labels, asked by fit only
    True
    """

    required_access = "label-only"
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        **GAN_CONSTRAINTS,
        "n_surrogates": [Interval(Integral, 1, None, closed="left")],
        "surrogate_epochs": [Interval(Integral, 1, None, closed="left")],
        "n_synthetic": [Interval(Integral, 0, None, closed="left")],
        "surrogates": [list, None],
        "attack": [HasMethods(["fit", "invert", "set_params"]), None],
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
        n_surrogates=3,
        surrogate_epochs=30,
        n_synthetic=2000,
        surrogates=None,
        attack=None,
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
        self.n_surrogates = n_surrogates
        self.surrogate_epochs = surrogate_epochs
        self.n_synthetic = n_synthetic
        self.surrogates = surrogates
        self.attack = attack
        self.eval_model = eval_model
        self.random_state = random_state
        self.verbose = verbose
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Train the prior, label images with the target, train the surrogates.

        Parameters
        ----------
        X : array of shape (n, height, width, channels)
            Public images (of no target class ideally).
        y : ignored
        """
        if X is None:
            raise ValueError(
                "LOKT trains its surrogates on public images labelled by the target: "
                "call fit(X). Received: X=None"
            )
        self.input_shape_ = self._prior_input_shape(X)
        X = self._fit_pixel_range(X)
        rs = check_random_state(self.random_state)
        rng = np.random.default_rng(rs.randint(2**31))
        self._fit_prior(X, self.input_shape_, rng, need_critic=False)

        synthetic = generate(
            self.generator_,
            rng.standard_normal((int(self.n_synthetic), self.latent_dim_)).astype("float32"),
        )
        images = np.concatenate([X, synthetic]) if len(synthetic) else X
        before = self.target_.n_queries_
        labels = self.target_.label_index(self.target_.predict(images))
        self.n_fit_queries_ = int(self.target_.n_queries_ - before)
        n_classes = len(self.target_.classes_)

        if self.surrogates is not None:
            models = list(self.surrogates)
        else:
            models = default_surrogates(self.input_shape_, n_classes, self.n_surrogates, rng)
        if self.verbose:
            print(f"LOKT: training {len(models)} surrogates on {len(images)} labels", flush=True)
        self.surrogates_ = train_surrogates(
            models, images, labels, epochs=int(self.surrogate_epochs), rng=rng
        )
        ensemble = surrogate_ensemble(self.surrogates_, self.input_shape_)
        agree = np.asarray(ensemble.predict(images, verbose=0)).argmax(axis=1) == labels
        self.surrogate_agreement_ = float(agree.mean())

        from kmi.attacks.image._gmi import GMI

        inner = clone(self.attack) if self.attack is not None else GMI()
        params = {
            "target": Target(ensemble, classes=self.target_.classes_, from_logits=False),
            "random_state": rs.randint(2**31),
            "pixel_range": UNIT,
        }
        inner_params = inner.get_params(deep=False)
        if "generator" in inner_params:
            params["generator"] = self.generator_
            if "critic" in inner_params:
                params["critic"] = self.critic_
        if "verbose" in inner_params:
            params["verbose"] = self.verbose
        self.attack_ = inner.set_params(**params).fit(X)
        return self

    def invert(self, y: ArrayLike) -> np.ndarray:
        """Reconstruct one image for each label of ``y``, attacking the surrogates.

        The target is not queried.

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        self._label_indices(y)  # the target's labels, checked before the search
        return self._to_data_range(self.attack_.invert(y))
