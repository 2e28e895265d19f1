"""Training-time defense layers: the MID information bottleneck."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["InformationBottleneck"]


@keras.saving.register_keras_serializable(package="kmi")
class InformationBottleneck(keras.layers.Layer):
    """Variational information bottleneck, the MID defense (Wang et al. 2021).

    Place it before the classifier head. It maps its input to the mean ``mu`` and
    the pre-activation ``s`` of a diagonal Gaussian code, ``sigma = softplus(s -
    5)``; while training it outputs a reparameterised sample ``mu + sigma * eps``,
    at inference ``mu`` (or a sample, if ``sample_at_inference``). It adds
    ``beta * KL(N(mu, sigma^2) || N(0, I))`` (mean over the batch) to the model's
    losses, which limits the mutual information between the input and the code,
    and so what an inversion attack can recover from the model's outputs.

    Parameters
    ----------
    units : int, optional
        Size of the code. Default: the size of the input.
    beta : float, default=1e-2
        Weight of the KL term, >= 0.
    seed : int, optional
        Seed of the sampling noise.
    sample_at_inference : bool, default=False
        Also sample at inference (a stochastic served model).
    kernel_initializer : str or initializer, default="glorot_uniform"
        Of the encoder producing ``mu`` and ``s``.
    **kwargs
        Standard layer arguments.

    Attributes
    ----------
    encoder : keras.layers.Dense
        Produces ``2 * units`` values: ``mu`` then ``s``.

    Raises
    ------
    ValueError
        If ``units`` is not a positive integer or ``None``, or ``beta`` is negative.

    See Also
    --------
    BiDO : another training-time defense, on hidden representations.
    DPSGD : the layer's KL term is a mean over the batch, so it trains under DP-SGD.

    References
    ----------
    Wang, Hong, Zhang, Jin and Chen, "Improving Robustness to Model Inversion
    Attacks via Mutual Information Regularization", AAAI 2021.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import InformationBottleneck
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"),
    ...     InformationBottleneck(units=4, beta=1e-2, seed=0),
    ...     keras.layers.Dense(2),
    ... ])
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    >>> model.output_shape, len(history.history["loss"])
    ((None, 2), 1)

    Training samples the code; inference returns its mean:

    >>> same = lambda a, b: bool(np.allclose(np.asarray(a), np.asarray(b)))
    >>> same(model(x[:2]), model(x[:2])), same(model(x[:2], training=True), model(x[:2]))
    (True, False)
    """

    def __init__(
        self,
        units: int | None = None,
        beta: float = 1e-2,
        seed: int | None = None,
        sample_at_inference: bool = False,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if units is not None and (int(units) != units or units < 1):
            raise ValueError(
                f"units must be a positive integer or None. Received: units={units!r}"
            )
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0. Received: beta={beta!r}")
        self.units = None if units is None else int(units)
        self.beta = float(beta)
        self.seed = seed
        self.sample_at_inference = bool(sample_at_inference)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape: tuple) -> None:
        units = self.units or int(input_shape[-1])
        self._code_units = units
        self.encoder = keras.layers.Dense(
            2 * units, kernel_initializer=self.kernel_initializer, name="encoder"
        )
        self.encoder.build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        stats = self.encoder(inputs)
        mu = stats[..., : self._code_units]
        sigma = ops.softplus(stats[..., self._code_units :] - 5.0)
        kl = 0.5 * ops.sum(
            ops.square(mu) + ops.square(sigma) - 2.0 * ops.log(sigma + 1e-8) - 1.0, axis=-1
        )
        if training and self.beta > 0:
            self.add_loss(self.beta * ops.mean(kl))
        if training or self.sample_at_inference:
            eps = keras.random.normal(ops.shape(mu), seed=self.seed_generator)
            return mu + sigma * eps
        return mu

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units or input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "beta": self.beta,
            "seed": self.seed,
            "sample_at_inference": self.sample_at_inference,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
