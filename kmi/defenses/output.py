"""Output hardening: transforms of a model's scores before they are released.

The functions here are written with ``keras.ops``, so they accept NumPy arrays and
tensors of any backend. :class:`kmi.targets.Target` applies them to query answers;
Keras layers wrapping them can be appended to a served model.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops
from numpy.typing import ArrayLike

__all__ = [
    "ConfidenceNoise",
    "LabelOnly",
    "ReverseSigmoid",
    "RoundConfidence",
    "TopK",
    "confidence_noise",
    "label_only",
    "reverse_sigmoid",
    "round_confidence",
    "top_k_confidence",
]


def round_confidence(scores: ArrayLike, decimals: int = 2) -> Any:
    """Round scores to ``decimals`` decimal places (Fredrikson et al. 2015).

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Probabilities.
    decimals : int, default=2
        Number of decimals kept. Must be >= 0.

    Returns
    -------
    tensor of shape (n_samples, n_classes)
        The rounded scores, float32. Rows are not renormalised: rounding is what
        an API that prints ``decimals`` digits releases.

    Raises
    ------
    ValueError
        If ``decimals`` is not a non-negative integer.

    See Also
    --------
    RoundConfidence : the same as a layer.
    kmi.targets.Target : applies it to query answers (``decimals=``).

    References
    ----------
    Fredrikson, Jha and Ristenpart, "Model Inversion Attacks that Exploit
    Confidence Information and Basic Countermeasures", CCS 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import round_confidence
    >>> scores = np.array([[0.123, 0.877], [0.5049, 0.4951]])
    >>> np.asarray(round_confidence(scores, decimals=1), "float64").round(6).tolist()
    [[0.1, 0.9], [0.5, 0.5]]
    """
    if int(decimals) != decimals or decimals < 0:
        raise ValueError(
            f"decimals must be a non-negative integer. Received: decimals={decimals!r}"
        )
    scale = 10.0 ** int(decimals)
    return ops.round(ops.convert_to_tensor(scores, dtype="float32") * scale) / scale


def top_k_confidence(scores: ArrayLike, k: int = 1) -> Any:
    """Keep the ``k`` largest scores of each row and set the others to zero.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Probabilities (or any scores).
    k : int, default=1
        Number of scores released per row; ``1 <= k``. Values above ``n_classes``
        release every score.

    Returns
    -------
    tensor of shape (n_samples, n_classes)
        Rows keep their original values in the top ``k`` positions (they are not
        renormalised, as an API showing the top ``k`` probabilities would not).
        Scores tied with the ``k``-th largest are kept too.

    Raises
    ------
    ValueError
        If ``k`` is not a positive integer.

    See Also
    --------
    TopK : the same as a layer, optionally renormalised.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import top_k_confidence
    >>> scores = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    >>> np.asarray(top_k_confidence(scores, k=2), "float64").round(6).tolist()
    [[0.0, 0.6, 0.3], [0.5, 0.0, 0.3]]
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer. Received: k={k!r}")
    scores = ops.convert_to_tensor(scores, dtype="float32")
    n_classes = ops.shape(scores)[-1]
    k = min(int(k), int(n_classes))
    kth = ops.top_k(scores, k=k, sorted=True)[0][..., k - 1 : k]
    return ops.where(scores >= kth, scores, ops.zeros_like(scores))


def label_only(scores: ArrayLike) -> Any:
    """Return only the predicted label (the arg-max) of each row.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Probabilities or logits.

    Returns
    -------
    tensor of shape (n_samples,)
        The index of each row's largest score, int32.

    See Also
    --------
    LabelOnly : the same as a layer, optionally one-hot.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import label_only
    >>> np.asarray(label_only(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))).tolist()
    [1, 0]
    """
    return ops.cast(ops.argmax(ops.convert_to_tensor(scores), axis=-1), "int32")


def confidence_noise(
    scores: ArrayLike,
    stddev: float = 0.1,
    seed: int | keras.random.SeedGenerator | None = None,
) -> Any:
    """Perturb probabilities with Gaussian noise and return probabilities.

    Noise of standard deviation ``stddev`` is added to the log-probabilities and
    the result is passed through a softmax, so every row stays a probability
    distribution (non-negative, summing to one) whatever the noise.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Probabilities.
    stddev : float, default=0.1
        Standard deviation of the noise on log-probabilities; ``0`` returns the
        scores (renormalised).
    seed : int, keras.random.SeedGenerator or None
        Randomness, as in ``keras.random.normal``.

    Returns
    -------
    tensor of shape (n_samples, n_classes)
        Probabilities (rows sum to one), float32.

    Raises
    ------
    ValueError
        If ``stddev`` is negative.

    See Also
    --------
    ConfidenceNoise : the same as a layer.

    Examples
    --------
    The draws depend on the backend's random generator; what they keep does not:

    >>> import numpy as np
    >>> from kmi.defenses import confidence_noise
    >>> scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    >>> noisy = np.asarray(confidence_noise(scores, stddev=0.1, seed=0))
    >>> noisy.shape, bool(np.allclose(noisy.sum(axis=1), 1.0, atol=1e-6))
    ((2, 3), True)
    >>> noisy.argmax(axis=1).tolist(), bool(np.allclose(noisy, scores))
    ([0, 2], False)
    """
    if not stddev >= 0:
        raise ValueError(f"stddev must be >= 0. Received: stddev={stddev!r}")
    scores = ops.convert_to_tensor(scores, dtype="float32")
    logits = ops.log(ops.clip(scores, 1e-12, 1.0))
    if stddev > 0:
        logits = logits + keras.random.normal(ops.shape(scores), stddev=stddev, seed=seed)
    return ops.softmax(logits, axis=-1)


def reverse_sigmoid(scores: ArrayLike, beta: float = 1.0, gamma: float = 0.1) -> Any:
    """Reverse-sigmoid perturbation of probabilities (Lee et al. 2019).

    ``r = beta * (sigmoid(gamma * logit(p)) - 1/2)`` is subtracted from each
    probability ``p``, negative values are clipped to zero and every row is
    renormalised to sum to one. Large probabilities are pushed down and small ones
    up, which misleads attacks that learn from confidence values (model stealing,
    score-based inversion) while mostly keeping the predicted label.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Probabilities.
    beta : float, default=1.0
        Perturbation magnitude, >= 0.
    gamma : float, default=0.1
        Dataset-dependent convergence parameter of the sigmoid, > 0.

    Returns
    -------
    tensor of shape (n_samples, n_classes)
        Probabilities (rows sum to one), float32.

    Raises
    ------
    ValueError
        If ``beta`` is negative or ``gamma`` is not positive.

    See Also
    --------
    ReverseSigmoid : the same as a layer.

    References
    ----------
    Lee, Edwards, Molloy and Srivastava, "Defending Against NN Model Stealing
    Attacks Using Deceptive Perturbations", IEEE S&P Workshops 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import reverse_sigmoid
    >>> scores = np.array([[0.9, 0.1], [0.6, 0.4]])
    >>> np.asarray(reverse_sigmoid(scores, beta=1.0, gamma=0.5), "float64").round(3).tolist()
    [[0.65, 0.35], [0.549, 0.451]]
    """
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0. Received: beta={beta!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0. Received: gamma={gamma!r}")
    p = ops.clip(ops.convert_to_tensor(scores, dtype="float32"), 1e-9, 1.0 - 1e-9)
    r = beta * (ops.sigmoid(gamma * ops.log(p / (1.0 - p))) - 0.5)
    perturbed = ops.maximum(p - r, 0.0)
    return perturbed / ops.maximum(ops.sum(perturbed, axis=-1, keepdims=True), 1e-12)


class _OutputDefense(keras.layers.Layer):
    """Base of the output-hardening layers: applied in training and inference."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = False

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@keras.saving.register_keras_serializable(package="kmi")
class RoundConfidence(_OutputDefense):
    """Round released probabilities to ``decimals`` decimals.

    Append to a served model (after the softmax). See :func:`round_confidence`.

    Parameters
    ----------
    decimals : int, default=2
        Number of decimals kept, >= 0.
    renormalize : bool, default=False
        Divide each rounded row by its sum, so that it sums to one again.
    **kwargs
        Standard layer arguments.

    Raises
    ------
    ValueError
        If ``decimals`` is not a non-negative integer.

    See Also
    --------
    round_confidence : the function it applies.

    References
    ----------
    Fredrikson, Jha and Ristenpart, "Model Inversion Attacks that Exploit
    Confidence Information and Basic Countermeasures", CCS 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import RoundConfidence
    >>> print(np.round(np.asarray(RoundConfidence(1)(np.array([[0.123, 0.877]]))), 6))
    [[0.1 0.9]]

    Appended to a served model, after its softmax:

    >>> import keras
    >>> served = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax"), RoundConfidence(2)
    ... ])
    >>> served.output_shape
    (None, 3)
    """

    def __init__(self, decimals: int = 2, renormalize: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(decimals) != decimals or decimals < 0:
            raise ValueError(
                f"decimals must be a non-negative integer. Received: decimals={decimals!r}"
            )
        self.decimals = int(decimals)
        self.renormalize = bool(renormalize)

    def call(self, inputs: Any) -> Any:
        out = round_confidence(inputs, self.decimals)
        if self.renormalize:
            out = out / ops.maximum(ops.sum(out, axis=-1, keepdims=True), 1e-12)
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "decimals": self.decimals, "renormalize": self.renormalize}


@keras.saving.register_keras_serializable(package="kmi")
class TopK(_OutputDefense):
    """Release only the ``k`` largest probabilities of each row (others set to 0).

    Parameters
    ----------
    k : int, default=1
        Number of probabilities released per row, >= 1.
    renormalize : bool, default=False
        Divide the kept probabilities by their sum (rows then sum to one).
    **kwargs
        Standard layer arguments.

    Raises
    ------
    ValueError
        If ``k`` is not a positive integer.

    See Also
    --------
    top_k_confidence : the function it applies.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import TopK
    >>> np.asarray(TopK(1, renormalize=True)(np.array([[0.2, 0.5, 0.3]]))).tolist()
    [[0.0, 1.0, 0.0]]
    """

    def __init__(self, k: int = 1, renormalize: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer. Received: k={k!r}")
        self.k = int(k)
        self.renormalize = bool(renormalize)

    def call(self, inputs: Any) -> Any:
        out = top_k_confidence(inputs, self.k)
        if self.renormalize:
            out = out / ops.maximum(ops.sum(out, axis=-1, keepdims=True), 1e-12)
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k, "renormalize": self.renormalize}


@keras.saving.register_keras_serializable(package="kmi")
class LabelOnly(_OutputDefense):
    """Release only the predicted label.

    Parameters
    ----------
    one_hot : bool, default=False
        ``False``: output the label index, int32, shape ``(n_samples,)``.
        ``True``: output it one-hot, float32, shape ``(n_samples, n_classes)``
        (a valid, degenerate probability vector, for code that expects scores).
    **kwargs
        Standard layer arguments.

    See Also
    --------
    label_only : the function it applies.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import LabelOnly
    >>> scores = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    >>> np.asarray(LabelOnly()(scores)).tolist()
    [1, 0]
    >>> np.asarray(LabelOnly(one_hot=True)(scores)).tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    >>> served = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax"), LabelOnly()
    ... ])
    >>> served.output_shape
    (None,)
    """

    def __init__(self, one_hot: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.one_hot = bool(one_hot)

    def call(self, inputs: Any) -> Any:
        labels = label_only(inputs)
        if self.one_hot:
            return ops.one_hot(labels, ops.shape(inputs)[-1], dtype="float32")
        return labels

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape if self.one_hot else input_shape[:-1]

    def compute_output_spec(self, inputs: Any) -> keras.KerasTensor:
        if self.one_hot:
            return keras.KerasTensor(inputs.shape, dtype="float32")
        return keras.KerasTensor(inputs.shape[:-1], dtype="int32")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "one_hot": self.one_hot}


@keras.saving.register_keras_serializable(package="kmi")
class ConfidenceNoise(_OutputDefense):
    """Release noisy probabilities (Gaussian noise on log-probabilities, softmax).

    Unlike ``keras.layers.GaussianNoise`` this layer is a serving-time defense:
    it perturbs every call, in inference too. Rows remain probability vectors.
    See :func:`confidence_noise`.

    Parameters
    ----------
    stddev : float, default=0.1
        Standard deviation of the noise on log-probabilities, >= 0.
    seed : int, optional
        Seed of the layer's ``keras.random.SeedGenerator``.
    **kwargs
        Standard layer arguments.

    Raises
    ------
    ValueError
        If ``stddev`` is negative.

    See Also
    --------
    confidence_noise : the function it applies.

    Examples
    --------
    Every call draws new noise, at inference too; rows stay probabilities:

    >>> import numpy as np
    >>> from kmi.defenses import ConfidenceNoise
    >>> layer = ConfidenceNoise(stddev=0.1, seed=0)
    >>> scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    >>> first, second = np.asarray(layer(scores)), np.asarray(layer(scores))
    >>> bool(np.allclose(first.sum(axis=1), 1.0, atol=1e-6)), bool(np.allclose(first, second))
    (True, False)
    """

    def __init__(self, stddev: float = 0.1, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not stddev >= 0:
            raise ValueError(f"stddev must be >= 0. Received: stddev={stddev!r}")
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any) -> Any:
        return confidence_noise(inputs, self.stddev, seed=self.seed_generator)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kmi")
class ReverseSigmoid(_OutputDefense):
    """Reverse-sigmoid output perturbation (Lee et al. 2019).

    See :func:`reverse_sigmoid`; rows remain probability vectors.

    Parameters
    ----------
    beta : float, default=1.0
        Perturbation magnitude, >= 0.
    gamma : float, default=0.1
        Convergence parameter of the sigmoid, > 0.
    **kwargs
        Standard layer arguments.

    Raises
    ------
    ValueError
        If ``beta`` is negative or ``gamma`` is not positive.

    See Also
    --------
    reverse_sigmoid : the function it applies.

    References
    ----------
    Lee, Edwards, Molloy and Srivastava, "Defending Against NN Model Stealing
    Attacks Using Deceptive Perturbations", IEEE S&P Workshops 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import ReverseSigmoid
    >>> out = np.asarray(ReverseSigmoid()(np.array([[0.6, 0.3, 0.1]])), "float64")
    >>> out.round(3).tolist(), bool(np.isclose(out.sum(), 1.0))
    ([[0.553, 0.301, 0.145]], True)
    """

    def __init__(self, beta: float = 1.0, gamma: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0. Received: beta={beta!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0. Received: gamma={gamma!r}")
        self.beta = float(beta)
        self.gamma = float(gamma)

    def call(self, inputs: Any) -> Any:
        return reverse_sigmoid(inputs, self.beta, self.gamma)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta, "gamma": self.gamma}
