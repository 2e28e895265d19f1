"""What DP-SGD refuses, and why: model compatibility and parameter checks.

:func:`check_dp_compatible` is public (re-exported by :mod:`kmi.defenses.dp` and
:mod:`kmi.defenses`); the other checks are shared by :mod:`kmi.defenses.dp` and
:mod:`kmi.defenses._dp_step`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from kmi.defenses.accounting import ACCOUNTANTS

__all__ = ["check_dp_compatible"]

#: How :class:`~kmi.defenses.DPSGD` may obtain each example's gradient norm.
CLIPPING_METHODS = ("auto", "ghost", "vectorized")


def check_dp_compatible(model: keras.Model) -> None:
    """Raise if ``model`` cannot be trained with per-example DP-SGD.

    Refused: layers whose training-time computation mixes examples of a batch
    (a trainable ``BatchNormalization``, whose batch statistics make one
    example's output depend on the others), models that define their own
    ``train_step`` (DP-SGD replaces it), kmi losses computed on the whole batch
    (:class:`~kmi.defenses.BiDO`), uncompiled models, loss-scaling optimizers and
    models without trainable variables. A frozen ``BatchNormalization``
    (``trainable=False``, as :func:`~kmi.defenses.freeze_until` leaves a
    pretrained network) runs in inference mode in Keras 3, normalising with its
    moving statistics, and is accepted.

    :class:`~kmi.defenses.DPSGD` runs this check at the start of every ``fit``,
    and :func:`~kmi.defenses.make_private` when it is called; call it yourself to
    check a model before a long run.

    Parameters
    ----------
    model : keras.Model
        The compiled model to check.

    Returns
    -------
    None
        When ``model`` can be trained with DP-SGD.

    Raises
    ------
    ValueError
        Naming the offending layer or method and the alternative.

    See Also
    --------
    DPSGD : the callback that runs the check.

    Examples
    --------
    >>> import keras
    >>> from kmi.defenses import check_dp_compatible
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8),
    ...     keras.layers.BatchNormalization(name="bn"),
    ...     keras.layers.Dense(2),
    ... ])
    >>> model.compile("sgd", "mse")
    >>> check_dp_compatible(model)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Layer 'bn' (BatchNormalization) normalises with statistics of the whole batch...

    A frozen ``BatchNormalization`` uses its moving statistics, and is accepted:

    >>> model.get_layer("bn").trainable = False
    >>> check_dp_compatible(model)
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"DP-SGD needs a keras.Model. Received: model={type(model).__name__}")
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) normalises with statistics "
                "of the whole batch, so one example's gradient depends on the others and "
                "per-example clipping no longer bounds its influence. Replace it by "
                "keras.layers.GroupNormalization or keras.layers.LayerNormalization "
                "(per-example statistics), or freeze it (layer.trainable = False: it then "
                f"uses its moving statistics). Received: layer={layer.name!r}"
            )
    if getattr(model, "_kmi_batch_level_loss", False):
        raise ValueError(
            f"{type(model).__name__} computes its loss from the whole batch (e.g. BiDO's "
            "HSIC terms), which DP-SGD cannot split into per-example gradients. Train "
            "with one defense or the other. "
            f"Received: model={type(model).__name__}"
        )
    if "train_step" not in model.__dict__ and type(model).train_step is not keras.Model.train_step:
        raise ValueError(
            f"{type(model).__name__} overrides train_step, which DP-SGD must replace. Move "
            "custom loss terms into compute_loss (it runs per example under DP-SGD). "
            f"Received: model={type(model).__name__}"
        )
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "DP-SGD needs a compiled model: call model.compile(optimizer, loss) first. "
            "Received: model.optimizer=None"
        )
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "DP-SGD clips unscaled per-example gradients and does not support loss "
            "scaling; use a float32 dtype policy and a plain optimizer. "
            f"Received: optimizer={type(model.optimizer).__name__}"
        )
    if not model.trainable_variables:
        raise ValueError(
            "DP-SGD needs trainable variables. Received: model.trainable_variables=[]"
        )


_CONV_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def check_vectorized_distribution(model: keras.Model) -> None:
    """Refuse vmap'd convolution gradients on a sharded batch: they come out wrong.

    Measured with jax 0.10 on two virtual CPU devices: a Conv1D's per-example
    kernel gradients differed by up to 1.8 from the one-device values (Dense
    and bias gradients were exact), so per-example clipping would be wrong.
    """
    if keras.backend.backend() != "jax" or keras.distribution.distribution() is None:
        return
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, _CONV_LAYERS) and layer.trainable_weights:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is a convolution, and "
                "per-example gradients of convolutions vectorised with jax.vmap come out "
                "wrong when the batch is sharded across devices (keras.distribution is "
                "set), so DP-SGD would clip the wrong gradients. Use clipping='ghost' "
                "(every trainable layer Dense, Conv1D, Conv2D or Embedding; its gradients "
                "are exact when sharded) or train on one device. "
                f"Received: layer={layer.name!r}, clipping='vectorized'"
            )


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def check_clip_and_noise(l2_norm_clip: float, noise_multiplier: float | None) -> None:
    """Raise unless ``l2_norm_clip > 0`` and ``noise_multiplier`` is ``None`` or ``>= 0``."""
    if not (finite_number(l2_norm_clip) and l2_norm_clip > 0):
        raise ValueError(
            f"l2_norm_clip must be a finite number > 0. Received: l2_norm_clip={l2_norm_clip!r}"
        )
    if noise_multiplier is not None and not (
        finite_number(noise_multiplier) and noise_multiplier >= 0
    ):
        raise ValueError(
            "noise_multiplier must be a finite number >= 0 (an infinite one would make "
            "the weights non-finite, and 0 gives no privacy guarantee: epsilon is "
            f"infinite). Received: noise_multiplier={noise_multiplier!r}"
        )


def check_dpsgd_parameters(
    l2_norm_clip: float,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float | None,
    num_examples: int | None,
    clipping: str,
    accountant: str,
) -> None:
    """Raise unless :class:`~kmi.defenses.DPSGD`'s parameters are valid (not its sampling)."""
    check_clip_and_noise(l2_norm_clip, noise_multiplier)
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError(
            "Give exactly one of noise_multiplier and target_epsilon. "
            f"Received: noise_multiplier={noise_multiplier!r}, "
            f"target_epsilon={target_epsilon!r}"
        )
    if target_epsilon is not None and not (finite_number(target_epsilon) and target_epsilon > 0):
        raise ValueError(
            "target_epsilon must be a finite number > 0. "
            f"Received: target_epsilon={target_epsilon!r}"
        )
    if delta is not None and not (finite_number(delta) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1). Received: delta={delta!r}")
    if num_examples is not None and not (
        finite_number(num_examples) and int(num_examples) == num_examples and num_examples >= 1
    ):
        raise ValueError(
            f"num_examples must be a positive integer. Received: num_examples={num_examples!r}"
        )
    if clipping not in CLIPPING_METHODS:
        raise ValueError(
            f"clipping must be one of {CLIPPING_METHODS}. Received: clipping={clipping!r}"
        )
    if accountant not in ACCOUNTANTS:
        raise ValueError(
            f"accountant must be one of {ACCOUNTANTS}. Received: accountant={accountant!r}"
        )
