"""A defense-aware attacker against trapdoors: find the triggers, then unlearn them.

Trap-MID (:class:`kmi.defenses.TrapMID`) trains a model so that a faint trigger
``T[c]``, blended into any input as ``(1 - alpha) * x + alpha * T[c]``, makes class
``c`` confident. An inversion attack that maximises a class's confidence then finds
the trigger instead of the class's features. An attacker who holds the weights
(white-box) and knows the mechanism, but not the triggers, can take the trapdoor
out of a copy of the model before inverting it, as backdoor defenses do
(Neural Cleanse, Wang et al. 2019: reverse-engineer the triggers, then unlearn
them):

1. :func:`recover_triggers`: for each class, the blended pattern (same blend,
   same ``alpha``) that makes the model answer that class on the attacker's
   public images. On a model without a trapdoor a faint blend barely moves the
   answers; on a trapdoored one it does, which is also how the trapdoor shows.
2. :func:`untrapped`: a copy of the model fine-tuned on the public images to
   answer, for a triggered image, what the model answers for the clean one, and
   to keep its answers on clean images (distilled from the model itself).

The attack (MIFace, GMI, ...) then inverts the copy. No private image and no
query beyond the public images' answers are used.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kmi.defenses.trapdoor import _ValueRange
from kmi.utils.validation import check_images


class _Blend(keras.layers.Layer):
    """``(1 - alpha) * x + alpha * T[t]``: one trigger per class, as variables."""

    def __init__(self, n_classes, alpha, low=0.0, high=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.n_classes, self.alpha = int(n_classes), float(alpha)
        self.low, self.high, self.seed = float(low), float(high), seed

    def build(self, input_shape):
        image_shape = tuple(input_shape[0][1:])
        self.triggers = self.add_weight(
            shape=(self.n_classes, *image_shape),
            initializer=keras.initializers.RandomUniform(self.low, self.high, seed=self.seed),
            constraint=_ValueRange(self.low, self.high),
            name="triggers",
        )

    def call(self, inputs):
        x, t = inputs
        chosen = ops.take(self.triggers, ops.cast(ops.reshape(t, (-1,)), "int32"), axis=0)
        return (1.0 - self.alpha) * x + self.alpha * chosen


def _n_classes(model) -> int:
    shape = model.output_shape
    if not (isinstance(shape, tuple) and isinstance(shape[-1], int) and shape[-1] > 1):
        raise ValueError(
            "The model must map images to one score per class (output shape (None, "
            f"n_classes)). Received: output shape {shape}"
        )
    return shape[-1]


def _copy(model):
    """A clone of ``model`` with its weights: the attacker's own copy to change."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _check(model, X_public, alpha):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "A trapdoor can only be searched for and removed in a Keras model (white-box "
            f"access). Received: model of type {type(model).__name__}"
        )
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha is a blend ratio in (0, 1). Received: alpha={alpha!r}")
    shape = model.input_shape
    shape = shape[0] if isinstance(shape, list) else shape
    return check_images(X_public, tuple(shape[1:]), name="X_public"), _n_classes(model)


def recover_triggers(
    model,
    X_public,
    *,
    alpha: float = 0.02,
    epochs: int = 20,
    learning_rate: float = 0.1,
    from_logits: bool = True,
    value_range=(0.0, 1.0),
    random_state: int = 0,
):
    """The blended trigger that makes ``model`` answer each class, and how well it does.

    For each class ``c`` a pattern ``T[c]`` in ``value_range`` is fitted so that
    ``model((1 - alpha) * x + alpha * T[c])`` answers ``c`` on the public images
    ``x`` (cross-entropy, Adam; each image is paired with a class drawn at
    random, each epoch). The model is not changed.

    Parameters
    ----------
    model : keras.Model
        Images (NHWC) to class scores.
    X_public : array of shape (n, H, W, C)
        The attacker's images (any classes, no labels).
    alpha : float, default=0.02
        Blend ratio, Trap-MID's default.
    epochs, learning_rate : int, float
        The triggers' fit: passes over the public images, Adam's step.
    from_logits : bool, default=True
        Whether the model outputs logits (else probabilities).
    value_range : (low, high), default=(0, 1)
        The pixel range the triggers are kept in.
    random_state : int, default=0

    Returns
    -------
    (triggers, success)
        ``triggers``: array of shape ``(n_classes, H, W, C)``. ``success``: per
        class, the share of the public images not already answered ``c`` that
        ``c``'s trigger makes the model answer ``c``. On a trapdoored model it is
        near 1 at the trapdoor's ``alpha``; on a clean one, far lower.

    Raises
    ------
    ValueError
        If ``model`` is not a Keras classifier of images, ``X_public`` does not fit
        its input, or ``alpha`` is not in (0, 1).
    """
    X, n_classes = _check(model, X_public, alpha)
    rng = np.random.default_rng(random_state)
    keras.utils.set_random_seed(int(random_state))
    low, high = (float(v) for v in value_range)
    x_in = keras.Input(X.shape[1:])
    t_in = keras.Input((1,), dtype="int32")
    blend = _Blend(n_classes, alpha, low, high, seed=int(random_state))
    frozen = _copy(model)  # frozen, so that only the triggers train; the model is untouched
    frozen.trainable = False
    search = keras.Model([x_in, t_in], frozen(blend([x_in, t_in]), training=False))
    search.compile(
        keras.optimizers.Adam(float(learning_rate)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )
    for _ in range(int(epochs)):
        t = rng.integers(0, n_classes, size=(len(X), 1)).astype("int32")
        search.fit([X, t], t, batch_size=64, epochs=1, verbose=0)
    triggers = np.asarray(ops.convert_to_numpy(blend.triggers))
    return triggers, trigger_success(model, X, triggers, alpha)


def trigger_success(model, X, triggers, alpha) -> np.ndarray:
    """Per class ``c``: the share of the images not answered ``c`` that the blend of
    ``triggers[c]`` makes ``model`` answer ``c``."""
    clean = np.asarray(model.predict(X, verbose=0)).argmax(1)
    success = []
    for c, trigger in enumerate(np.asarray(triggers)):
        rows = clean != c
        if not rows.any():
            success.append(float("nan"))
            continue
        blended = ((1 - alpha) * X[rows] + alpha * trigger).astype("float32")
        success.append(
            float(np.mean(np.asarray(model.predict(blended, verbose=0)).argmax(1) == c))
        )
    return np.asarray(success)


def untrapped(
    model,
    X_public,
    *,
    alpha: float = 0.02,
    trigger_epochs: int = 20,
    epochs: int = 10,
    learning_rate: float = 1e-3,
    from_logits: bool = True,
    value_range=(0.0, 1.0),
    random_state: int = 0,
):
    """A copy of ``model`` with its trapdoor unlearned: a defense-aware attack's target.

    The triggers are recovered (:func:`recover_triggers`), then a copy of the
    model is fine-tuned (Adam, ``epochs`` over the public images, with each image
    paired with a class's recovered trigger at random) to give a triggered
    image the scores the model gives the clean one, and to keep the model's scores
    on the clean images (cross-entropy against the model's own soft answers). The
    model itself is not changed. Invert the copy with any attack (``Target(copy)``):
    the shortcut the trapdoor offered is gone, so the search must find what makes
    the class.

    Parameters
    ----------
    model : keras.Model
        Images to class scores; its weights are read (white-box).
    X_public : array of shape (n, H, W, C)
        The attacker's images (any classes, no labels).
    alpha : float, default=0.02
        The trapdoor's blend ratio (Trap-MID's default); the mechanism is known,
        the triggers are not.
    trigger_epochs : int, default=20
        The trigger search's passes (:func:`recover_triggers`).
    epochs, learning_rate : int, float
        The fine-tuning of the copy.
    from_logits : bool, default=True
        Whether the model outputs logits (else probabilities).
    value_range : (low, high), default=(0, 1)
    random_state : int, default=0

    Returns
    -------
    (keras.Model, dict)
        The fine-tuned copy (same architecture, saved and loaded as any Keras
        model), and what happened: the recovered ``triggers``, their success
        (:func:`recover_triggers`) on the model (``success_before``) and on the
        copy (``success_after``), and ``agreement``, the share of the public
        images the copy and the model answer alike.

    Raises
    ------
    ValueError
        As :func:`recover_triggers`.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks.image import untrapped
    >>> from kmi.models import softmax_regression
    >>> model = softmax_regression((8, 8, 1), 3, seed=0)
    >>> X = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    >>> copy, info = untrapped(model, X, trigger_epochs=1, epochs=1)
    >>> copy.output_shape, sorted(info)
    ((None, 3), ['agreement', 'success_after', 'success_before', 'triggers'])
    """
    X, n_classes = _check(model, X_public, alpha)
    triggers, before = recover_triggers(
        model,
        X,
        alpha=alpha,
        epochs=trigger_epochs,
        from_logits=from_logits,
        value_range=value_range,
        random_state=random_state,
    )
    keras.utils.set_random_seed(int(random_state))
    rng = np.random.default_rng(random_state + 1)
    copy = _copy(model)
    scores = np.asarray(model.predict(X, verbose=0))
    soft = np.asarray(ops.convert_to_numpy(ops.softmax(scores))) if from_logits else scores

    x_in = keras.Input(X.shape[1:])
    t_in = keras.Input((1,), dtype="int32")
    blend = _Blend(n_classes, alpha, *value_range, name="recovered_triggers")
    blend.build([(None, *X.shape[1:]), (None, 1)])
    blend.triggers.assign(triggers)
    blend.trainable = False
    clean = copy(x_in, training=False)
    triggered = copy(blend([x_in, t_in]), training=False)
    tune = keras.Model([x_in, t_in], [clean, triggered])
    loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits)
    tune.compile(keras.optimizers.Adam(float(learning_rate)), [loss, loss])
    for _ in range(int(epochs)):
        t = rng.integers(0, n_classes, size=(len(X), 1)).astype("int32")
        tune.fit([X, t], [soft, soft], batch_size=64, epochs=1, verbose=0)
    after = trigger_success(copy, X, triggers, alpha)
    agreement = float(
        np.mean(np.asarray(copy.predict(X, verbose=0)).argmax(1) == scores.argmax(1))
    )
    info = {"triggers": triggers, "success_before": before, "success_after": after}
    return copy, {**info, "agreement": agreement}
