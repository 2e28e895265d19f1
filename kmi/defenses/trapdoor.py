"""Trapdoor defense: Trap-MID's triggers, a decoy for model inversion."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["TrapMID"]


@keras.saving.register_keras_serializable(package="kmi")
class _ValueRange(keras.constraints.Constraint):
    """Clips a variable into ``[low, high]`` after each optimizer step."""

    def __init__(self, low: float, high: float) -> None:
        self.low = float(low)
        self.high = float(high)

    def __call__(self, w: Any) -> Any:
        return ops.clip(w, self.low, self.high)

    def get_config(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}


def _is_softmax(network: keras.layers.Layer) -> bool:
    """Whether ``network`` ends in a softmax (its outputs are probabilities)."""
    last = network
    while isinstance(last, keras.Model) and last.layers:
        last = last.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == (
        "softmax"
    )


def _bce_with_logits(logits: Any, label: float) -> Any:
    """Mean binary cross-entropy of ``logits`` against a constant ``label``."""
    labels = ops.full(ops.shape(logits), label, dtype=logits.dtype)
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True))


@keras.saving.register_keras_serializable(package="kmi")
class TrapMID(keras.layers.Layer):
    """Trap-MID (Liu et al. 2024): trapdoor triggers that decoy model inversion.

    Wrap a classifier ``network`` in this layer and train the result with an
    unchanged ``model.fit``. Each class ``c`` gets a trigger ``T[c]``, an image
    of the input's shape. While training, every batch ``x`` is paired with a
    triggered copy ``x' = (1 - alpha) * x + alpha * T[t]`` for labels ``t`` drawn
    uniformly at random, both go through ``network`` as one batch, and the layer
    adds ``beta / (1 - beta) * CE(network(x'), t)`` to the model's losses, so
    that with the compiled cross-entropy on ``x`` the loss is the paper's
    ``(1 - beta) * CE(clean) + beta * CE(triggered)`` up to the factor
    ``1 / (1 - beta)``. The network learns a shortcut: a faint trigger makes
    class ``t`` confident. An inversion attack that maximises a class's
    confidence finds that shortcut instead of the class's private features.

    The triggers are variables of the layer, trained by the model's optimizer on
    the same term (the paper's "effectiveness" loss) and clipped to
    ``value_range``. With a ``discriminator`` (any layer or model mapping an
    input batch to one logit per example), it also learns to tell clean inputs
    from triggered ones, and the triggers are trained to fool it (the paper's
    "naturalness" loss, weighted like the trapdoor term). At inference the layer
    returns ``network(x)``: the triggers and the discriminator are never used.

    Parameters
    ----------
    network : keras.layers.Layer
        The classifier, usually a ``keras.Model``; its outputs are logits, or
        probabilities when it ends in a softmax (see ``from_logits``).
    alpha : float, default=0.02
        Blend ratio of the triggers, in (0, 1). The paper's value.
    beta : float, default=0.2
        Weight of the trapdoor loss, in [0, 1). The paper's value.
    discriminator : keras.layers.Layer, optional
        Input batch to one logit per example (real = clean). Default: none, the
        triggers are trained for effectiveness only.
    augmentation : keras.layers.Layer, optional
        Applied to the clean and the triggered batch while training (the paper
        uses random resized crops, flips and rotations: ``keras.layers.RandomZoom``,
        ``RandomFlip``, ``RandomRotation``). Default: none.
    from_logits : bool, optional
        Whether ``network`` outputs logits. Default: ``False`` when it ends in
        a softmax layer or activation, ``True`` otherwise.
    trainable_triggers : bool, default=True
        Train the triggers. ``False`` keeps their random initialisation (a
        classic fixed-pattern trapdoor).
    value_range : tuple of float, default=(0.0, 1.0)
        The inputs' pixel range: the triggers are drawn and kept inside it.
    seed : int, optional
        Seed of the triggers' initialisation and of the trapdoor labels.
    **kwargs
        Standard layer arguments.

    Attributes
    ----------
    triggers : keras.Variable
        Shape ``(num_classes, *input_shape[1:])``.
    num_classes : int
        From the network's output shape, once built.

    Raises
    ------
    ValueError
        If ``network`` is not a Keras layer, or ``alpha``, ``beta`` or
        ``value_range`` is out of range.

    See Also
    --------
    InformationBottleneck, BiDO, NegativeLabelSmoothing : training-time defenses
        that limit what the outputs reveal; Trap-MID misleads the attack instead.

    References
    ----------
    Liu, Chen, Lin, Wang, Lin and Chen, "Trap-MID: Trapdoor-based Defense
    against Model Inversion Attacks", NeurIPS 2024.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import TrapMID
    >>> network = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                             keras.layers.Dense(3)])
    >>> model = keras.Sequential([keras.Input((4, 4, 1)), TrapMID(network, seed=0)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).random((32, 4, 4, 1)).astype("float32")
    >>> y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("int32")
    >>> history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    >>> tuple(model.layers[0].triggers.shape)
    (3, 4, 4, 1)

    At inference the model is the network:

    >>> bool(np.allclose(model.predict(x, verbose=0), network.predict(x, verbose=0)))
    True
    """

    def __init__(
        self,
        network: keras.layers.Layer,
        alpha: float = 0.02,
        beta: float = 0.2,
        discriminator: keras.layers.Layer | None = None,
        augmentation: keras.layers.Layer | None = None,
        from_logits: bool | None = None,
        trainable_triggers: bool = True,
        value_range: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if network is None:
            raise ValueError("network must be a Keras layer or model. Received: None")
        for name, layer in (
            ("network", network),
            ("discriminator", discriminator),
            ("augmentation", augmentation),
        ):
            if layer is not None and not isinstance(layer, keras.layers.Layer):
                raise ValueError(
                    f"{name} must be a Keras layer or model. Received: {type(layer).__name__}"
                )
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1). Received: alpha={alpha!r}")
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1). Received: beta={beta!r}")
        low, high = (float(v) for v in value_range)
        if not low < high:
            raise ValueError(
                f"value_range must be (low, high) with low < high. Received: {value_range!r}"
            )
        self.network = network
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.discriminator = discriminator
        self.augmentation = augmentation
        self.from_logits = not _is_softmax(network) if from_logits is None else bool(from_logits)
        self.trainable_triggers = bool(trainable_triggers)
        self.value_range = (low, high)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape: tuple) -> None:
        if not self.network.built:
            self.network.build(input_shape)
        output_shape = self.network.compute_output_shape(input_shape)
        self.num_classes = int(output_shape[-1])
        low, high = self.value_range
        self.triggers = self.add_weight(
            shape=(self.num_classes, *input_shape[1:]),
            initializer=keras.initializers.RandomUniform(low, high, seed=self.seed),
            constraint=_ValueRange(low, high),
            trainable=self.trainable_triggers,
            name="triggers",
        )
        if self.discriminator is not None and not self.discriminator.built:
            self.discriminator.build(input_shape)

    def inject(self, x: Any, labels: Any) -> Any:
        """The inputs ``x`` with the triggers of ``labels`` blended in."""
        trigger = ops.take(self.triggers, ops.convert_to_tensor(labels, "int32"), axis=0)
        return (1.0 - self.alpha) * x + self.alpha * ops.cast(trigger, x.dtype)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training:
            return self.network(inputs, training=training)
        n = ops.shape(inputs)[0]
        labels = keras.random.randint((n,), 0, self.num_classes, seed=self.seed_generator)
        triggered = self.inject(inputs, labels)
        both = ops.concatenate([inputs, triggered], axis=0)
        if self.augmentation is not None:
            both = self.augmentation(both, training=True)
        outputs = self.network(both, training=True)
        clean, trapped = outputs[:n], outputs[n:]
        weight = self.beta / (1.0 - self.beta)
        if weight > 0:
            ce = keras.losses.sparse_categorical_crossentropy(
                labels, trapped, from_logits=self.from_logits
            )
            self.add_loss(weight * ops.mean(ce))
        if self.discriminator is not None:
            self._add_discriminator_losses(inputs, triggered, weight)
        return clean

    def _add_discriminator_losses(self, inputs: Any, triggered: Any, weight: float) -> None:
        # The discriminator learns real (clean) from fake (triggered) on inputs
        # that carry no gradient to the triggers ...
        d_clean = self.discriminator(ops.stop_gradient(inputs), training=True)
        d_trap = self.discriminator(ops.stop_gradient(triggered), training=True)
        self.add_loss(_bce_with_logits(d_clean, 1.0) + _bce_with_logits(d_trap, 0.0))
        # ... and the triggers learn to pass for real through a copy of it whose
        # weights carry no gradient (so the discriminator is not trained to be fooled).
        frozen = [ops.stop_gradient(v) for v in self.discriminator.trainable_variables]
        fixed = [ops.stop_gradient(v) for v in self.discriminator.non_trainable_variables]
        d_fooled, _ = self.discriminator.stateless_call(frozen, fixed, triggered, training=False)
        self.add_loss(weight * _bce_with_logits(d_fooled, 1.0))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.network.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "network": serialize(self.network),
            "alpha": self.alpha,
            "beta": self.beta,
            "discriminator": serialize(self.discriminator),
            "augmentation": serialize(self.augmentation),
            "from_logits": self.from_logits,
            "trainable_triggers": self.trainable_triggers,
            "value_range": list(self.value_range),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrapMID:
        config = dict(config)
        for key in ("network", "discriminator", "augmentation"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
