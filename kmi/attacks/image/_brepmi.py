"""BREP-MI: label-only inversion by boundary repulsion (Kahla et al. 2022)."""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Self

import keras
import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from kmi._docstring import fill_doc
from kmi.attacks.image._common import (
    COMMON_CONSTRAINTS,
    GAN_CONSTRAINTS,
    PARAMS_DOC,
    ClassInversionMixin,
)
from kmi.attacks.image._gan_prior import GANPriorMixin, generate
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.base import BaseAttack


@fill_doc(**PARAMS_DOC)
class BREPMI(PixelRangeMixin, GANPriorMixin, ClassInversionMixin, BaseAttack):
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
    {eval_model}
    {random_state}
    {verbose}
    {pixel_range}

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

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import BREPMI
    >>> from kmi.models import softmax_regression
    >>> from kmi.targets import Target
    >>> target = Target(softmax_regression((8, 8, 1), 3, seed=0), access="label-only")
    >>> public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> attack = BREPMI(target, gan_steps=2, gan_width=4, latent_dim=4, max_iter=2,
    ...                 init_batches=2, init_batch_size=16, random_state=0).fit(public)
    >>> attack.invert([0, 1]).shape
    (2, 8, 8, 1)
    """

    required_access = "label-only"
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        **GAN_CONSTRAINTS,
        "n_directions": [Interval(Integral, 1, None, closed="left")],
        "initial_radius": [Interval(Real, 0, None, closed="neither")],
        "radius_growth": [Interval(Real, 1, None, closed="neither")],
        "max_radius": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "init_batches": [Interval(Integral, 1, None, closed="left")],
        "init_batch_size": [Interval(Integral, 1, None, closed="left")],
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
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Train (or take) the GAN prior; return ``self``.

        The target is never queried here. Its input shape is that of ``X`` (or of
        the generator's output).
        """
        shape = self.input_shape_ = self._prior_input_shape(X)
        X = self._fit_pixel_range(X)
        rs = check_random_state(self.random_state)
        self._fit_prior(X, shape, np.random.default_rng(rs.randint(2**31)), need_critic=False)
        return self

    def _labels_of(self, z):
        out = self.target_.query(generate(self.generator_, z.astype("float32")))
        out = np.asarray(out)
        if out.ndim == 2:
            return out.argmax(axis=1)
        return self.target_.label_index(out)

    def invert(self, y: ArrayLike) -> np.ndarray:
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
        return self._to_data_range(generate(self.generator_, self.latents_))
