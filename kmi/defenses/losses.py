"""Training-time defense losses: negative label smoothing and its schedule."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["LabelSmoothingSchedule", "NegativeLabelSmoothing"]


@keras.saving.register_keras_serializable(package="kmi")
class NegativeLabelSmoothing(keras.losses.Loss):
    """Cross-entropy with (negative) label smoothing (Struppek et al. 2024).

    The target of each example is ``(1 - alpha) * one_hot(y) + alpha / n_classes``.
    Positive ``alpha`` is ordinary label smoothing, which makes models *easier* to
    invert; negative ``alpha`` (the defense) gives the wrong classes negative
    targets, which pushes the model to over-confident, poorly separated logits
    that starve gradient- and confidence-based inversion attacks.

    Parameters
    ----------
    alpha : float, default=-0.05
        Smoothing factor; ``alpha < 1``. Negative values are the defense.
    from_logits : bool, default=True
        Whether predictions are logits (else probabilities).
    sparse : bool, optional
        Whether ``y_true`` holds class indices (else one-hot rows). ``None``
        infers it: ``y_true`` with one dimension fewer than ``y_pred``, or a
        last dimension of 1, is sparse.
    reduction : str, default="sum_over_batch_size"
        As in ``keras.losses.Loss``.
    name : str, default="negative_label_smoothing"
        As in ``keras.losses.Loss``.
    dtype : str, optional
        As in ``keras.losses.Loss``.

    Raises
    ------
    ValueError
        If ``alpha >= 1``.

    See Also
    --------
    LabelSmoothingSchedule : ramps ``alpha`` during training, as in the paper.

    References
    ----------
    Struppek, Hintersdorf and Kersting, "Be Careful What You Smooth For: Label
    Smoothing Can Be a Privacy Shield but Also a Catalyst for Model Inversion
    Attacks", ICLR 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import NegativeLabelSmoothing
    >>> loss = NegativeLabelSmoothing(alpha=0.0)
    >>> round(float(loss(np.array([1]), np.array([[0.0, 0.0]]))), 4)  # log(2)
    0.6931

    A negative ``alpha`` rewards confidence beyond the one-hot target: the loss of
    a confident, correct prediction falls below zero.

    >>> logits = np.array([[4.0, 0.0]])
    >>> round(float(NegativeLabelSmoothing(alpha=-0.5)(np.array([0]), logits)), 3)
    -0.982

    In a model:

    >>> import keras
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)
    ... ])
    >>> model.compile("sgd", NegativeLabelSmoothing(alpha=-0.05))
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> history = model.fit(x, (x[:, 0] > 0).astype("int32"), epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss']
    """

    def __init__(
        self,
        alpha: float = -0.05,
        from_logits: bool = True,
        sparse: bool | None = None,
        reduction: str = "sum_over_batch_size",
        name: str = "negative_label_smoothing",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not alpha < 1:
            raise ValueError(f"alpha must be < 1. Received: alpha={alpha!r}")
        self.alpha = float(alpha)
        self.from_logits = bool(from_logits)
        self.sparse = sparse

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.convert_to_tensor(y_pred)
        n_classes = y_pred.shape[-1]
        y_true = ops.convert_to_tensor(y_true)
        sparse = self.sparse
        if sparse is None:
            sparse = len(y_true.shape) < len(y_pred.shape) or (
                y_true.shape[-1] == 1 and n_classes != 1
            )
        if sparse:
            if len(y_true.shape) == len(y_pred.shape):
                y_true = ops.squeeze(y_true, axis=-1)
            y_true = ops.one_hot(ops.cast(y_true, "int32"), n_classes, dtype=y_pred.dtype)
        else:
            y_true = ops.cast(y_true, y_pred.dtype)
        targets = (1.0 - self.alpha) * y_true + self.alpha / n_classes
        if self.from_logits:
            log_probs = ops.log_softmax(y_pred, axis=-1)
        else:
            log_probs = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        return -ops.sum(targets * log_probs, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "from_logits": self.from_logits,
            "sparse": self.sparse,
        }


@keras.saving.register_keras_serializable(package="kmi")
class LabelSmoothingSchedule(keras.callbacks.Callback):
    """Ramp the ``alpha`` of a :class:`NegativeLabelSmoothing` loss during ``fit``.

    Struppek et al. (2024) train with negative label smoothing by starting from
    ordinary cross-entropy and moving the smoothing factor linearly to its final
    negative value over the first epochs; starting directly at a negative value
    can stall training. At the start of epoch ``e`` the loss's ``alpha`` is set to
    ``start_alpha + (final_alpha - start_alpha) * min(1, e / ramp_epochs)``, and
    the current value is written to ``logs["label_smoothing_alpha"]``.

    Parameters
    ----------
    final_alpha : float, default=-0.05
        The smoothing factor reached at the end of the ramp.
    ramp_epochs : int, default=10
        Epochs over which ``alpha`` moves; ``0`` sets it at once.
    start_alpha : float, default=0.0
        The smoothing factor of the first epoch.
    loss : NegativeLabelSmoothing, optional
        The loss to drive. Default: the model's compiled loss (which must be a
        :class:`NegativeLabelSmoothing`).

    Raises
    ------
    ValueError
        At the start of ``fit``: ``ramp_epochs`` is not a non-negative integer, or
        there is no :class:`NegativeLabelSmoothing` loss to drive.

    See Also
    --------
    NegativeLabelSmoothing : the loss whose ``alpha`` it sets.

    Notes
    -----
    The loss coefficient is a constant of the compiled train step, so the train
    function is rebuilt (retraced) when ``alpha`` changes: once per epoch during
    the ramp.

    References
    ----------
    Struppek, Hintersdorf and Kersting, "Be Careful What You Smooth For: Label
    Smoothing Can Be a Privacy Shield but Also a Catalyst for Model Inversion
    Attacks", ICLR 2024.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import LabelSmoothingSchedule, NegativeLabelSmoothing
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("sgd", NegativeLabelSmoothing(alpha=0.0))
    >>> schedule = LabelSmoothingSchedule(final_alpha=-0.1, ramp_epochs=2)
    >>> x, y = np.zeros((8, 4)), np.zeros(8, "int32")
    >>> history = model.fit(x, y, epochs=3, callbacks=[schedule], verbose=0)
    >>> [round(a, 3) for a in history.history["label_smoothing_alpha"]]
    [0.0, -0.05, -0.1]
    """

    def __init__(
        self,
        final_alpha: float = -0.05,
        ramp_epochs: int = 10,
        start_alpha: float = 0.0,
        loss: NegativeLabelSmoothing | None = None,
    ) -> None:
        super().__init__()
        self.final_alpha = final_alpha
        self.ramp_epochs = ramp_epochs
        self.start_alpha = start_alpha
        self.loss = loss

    def get_config(self) -> dict[str, Any]:
        return {
            "final_alpha": self.final_alpha,
            "ramp_epochs": self.ramp_epochs,
            "start_alpha": self.start_alpha,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LabelSmoothingSchedule:
        return cls(**config)

    def alpha_at(self, epoch: int) -> float:
        """The smoothing factor used during ``epoch``.

        Parameters
        ----------
        epoch : int
            The epoch, 0-based.

        Returns
        -------
        float
            ``start_alpha + (final_alpha - start_alpha) * min(1, epoch / ramp_epochs)``.

        Examples
        --------
        >>> from kmi.defenses import LabelSmoothingSchedule
        >>> schedule = LabelSmoothingSchedule(final_alpha=-0.1, ramp_epochs=4)
        >>> [round(schedule.alpha_at(e), 3) for e in range(6)]
        [0.0, -0.025, -0.05, -0.075, -0.1, -0.1]
        """
        if self.ramp_epochs <= 0:
            return float(self.final_alpha)
        t = min(1.0, epoch / self.ramp_epochs)
        return float(self.start_alpha + (self.final_alpha - self.start_alpha) * t)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if int(self.ramp_epochs) != self.ramp_epochs or self.ramp_epochs < 0:
            raise ValueError(
                "ramp_epochs must be a non-negative integer. "
                f"Received: ramp_epochs={self.ramp_epochs!r}"
            )
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        candidates = (
            [obj for obj in keras.tree.flatten(loss) if isinstance(obj, NegativeLabelSmoothing)]
            if loss is not None
            else []
        )
        if not candidates:
            raise ValueError(
                "LabelSmoothingSchedule drives a NegativeLabelSmoothing loss: compile the "
                "model with one or pass loss=. "
                f"Received: loss={type(loss).__name__ if loss is not None else None}"
            )
        self._losses = candidates

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        alpha = self.alpha_at(epoch)
        if any(loss.alpha != alpha for loss in self._losses):
            for loss in self._losses:
                loss.alpha = alpha
            self.model.make_train_function(force=True)
        self._alpha = alpha

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["label_smoothing_alpha"] = self._alpha
