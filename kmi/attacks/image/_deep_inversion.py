"""DeepInversion: data-free inversion matching BatchNorm statistics (Yin et al. 2020)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Self

import keras
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
    PARAMS_DOC,
    ClassInversionMixin,
    keras_model,
    model_input_shape,
    total_variation,
)
from kmi.attacks.image._pixels import PixelRangeMixin
from kmi.base import BaseAttack


def _batchnorm_layers(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_batchnorm_layers(layer))
    return found


class _RecordInputs:
    """Within the block, each of ``layers`` records the input of its last call.

    Works wherever the layers sit: in a nested or wrapped model (a ``Rescaling`` in
    front of a loaded network), where a ``keras.Model`` of their inputs cannot be
    built from the outer model's graph. The layers' ``call`` is replaced on the
    instances for the block only, out of Keras's attribute tracking.
    """

    def __init__(self, layers):
        self.layers = list(layers)
        self.inputs = [None] * len(self.layers)

    def __enter__(self):
        # a call already set on the instance (as ghost clipping's _Tapping does) is
        # wrapped, and put back on exit
        self._saved = [layer.__dict__.get("call") for layer in self.layers]
        for i, layer in enumerate(self.layers):
            original = layer.call

            def call(inputs, *args, _i=i, _original=original, **kwargs):
                self.inputs[_i] = inputs
                return _original(inputs, *args, **kwargs)

            object.__setattr__(layer, "call", call)
        return self

    def __exit__(self, *exc):
        for layer, saved in zip(self.layers, self._saved):
            if saved is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", saved)
        return False


@fill_doc(**PARAMS_DOC)
class DeepInversion(PixelRangeMixin, ClassInversionMixin, BaseAttack):
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
    {eval_model}
    {random_state}
    {verbose}
    {pixel_range}

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

    Examples
    --------
    >>> import keras
    >>> from kmi.attacks import DeepInversion
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> x = keras.layers.BatchNormalization()(x)
    >>> x = keras.layers.Flatten()(keras.layers.ReLU()(x))
    >>> model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    >>> attack = DeepInversion(model, max_iter=3, random_state=0).fit()
    >>> attack.n_batchnorm_
    1
    >>> attack.invert([0, 1, 2]).shape
    (3, 8, 8, 1)
    """

    required_access = "white-box"
    needs_batchnorm = True
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "r_feature": [Interval(Real, 0, None, closed="left")],
        "tv_weight": [Interval(Real, 0, None, closed="left")],
        "l2_weight": [Interval(Real, 0, None, closed="left")],
        "jitter": [Interval(Integral, 0, None, closed="left")],
        "flip": ["boolean"],
    }

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
        pixel_range=None,
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
        self.pixel_range = pixel_range

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Validate the target (white-box, with BatchNormalization); return ``self``.

        ``X`` and ``y`` are ignored: the attack is data-free (give ``pixel_range``
        for a model that does not take images in [0, 1]).
        """
        keras_model(self.target_, type(self).__name__)
        self.input_shape_ = model_input_shape(self.target_.model)
        self._fit_pixel_range()
        model = self.target_.model
        bns = _batchnorm_layers(model)
        if not bns:
            raise ValueError(
                "DeepInversion matches the running statistics of BatchNormalization "
                "layers, and the target has none; use MIFace or GMI for this target. "
                f"Received: target model {model.name!r} without BatchNormalization"
            )
        self.n_batchnorm_ = len(bns)
        self._bns = bns
        return self

    def invert(self, y: ArrayLike) -> np.ndarray:
        """Reconstruct one image for each label of ``y`` (optimised together).

        Returns
        -------
        ndarray of shape (n_labels, height, width, channels)
        """
        check_is_fitted(self)
        idx = self._label_indices(y)
        target = self.target_
        n = len(idx)
        onehot = np.eye(target.n_classes_, dtype="float32")[idx]
        model, bns = target.model, self._bns
        r_feature, tv, l2 = float(self.r_feature), float(self.tv_weight), float(self.l2_weight)
        from_logits, flip = target.from_logits, bool(self.flip)

        def loss_fn(x, aux):
            xj = ops.roll(x, aux["shift"][0], axis=1)
            xj = ops.roll(xj, aux["shift"][1], axis=2)
            if flip:
                xj = ops.where(aux["flip"] > 0.5, ops.flip(xj, axis=2), xj)
            with _RecordInputs(bns) as record:  # the BatchNorm layers' inputs
                out = model(xj, training=False)
            feats = record.inputs
            out = out[0] if isinstance(out, (list, tuple)) else out
            logp = ops.log_softmax(out, -1) if from_logits else ops.log(ops.clip(out, 1e-12, 1))
            rows = -ops.sum(logp * aux["onehot"], axis=-1)
            bn_loss = 0.0
            for f, bn in zip(feats, bns):  # running statistics: the model's current ones
                axes = tuple(range(len(f.shape) - 1))
                mu = ops.mean(f, axis=axes)
                var = ops.var(f, axis=axes)
                bn_loss = bn_loss + ops.norm(mu - bn.moving_mean.value)
                bn_loss = bn_loss + ops.norm(var - bn.moving_variance.value)
            rows = rows + r_feature * bn_loss / n
            if tv:
                rows = rows + tv * total_variation(x)
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
            data={"onehot": onehot},
            models=[model],
            program=("DeepInversion", from_logits, flip, r_feature, tv, l2, n),
            verbose=self.verbose,
            queries=target,
            desc=f"DeepInversion: {n} images",
        )
        self.loss_ = result.loss
        self.n_iter_ = result.n_iter
        self.interrupted_ = result.interrupted
        return self._to_data_range(result.x)
