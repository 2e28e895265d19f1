"""The DP-SGD training step: per-example gradients, clipping, noise, a compiled step.

:func:`make_grad_fn` builds the stateless gradient function that
:func:`kmi.backend.custom_train_step` turns into a train step: each example's
gradient is clipped (by ghost clipping, :mod:`kmi.defenses._ghost`, or from
per-example gradients vectorised by :func:`kmi.backend.per_example_value_and_grad`),
the clipped gradients are summed, Gaussian noise is added and the sum is divided by
the batch size. :func:`dp_train_function` compiles that step once per model and
configuration, with the model's own ``make_train_function``, and reuses it.
:func:`per_example_gradients` (public, re-exported by :mod:`kmi.defenses.dp`)
exposes the per-example gradients and their clipping for inspection.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from kmi import backend as kmi_backend
from kmi.defenses._dp_checks import check_clip_and_noise, check_vectorized_distribution
from kmi.defenses._ghost import ghost_norms, ghost_unsupported, plan_ghost

__all__ = ["per_example_gradients"]

_SEED_STATE_NAME = "seed_generator_state"
# Odd 32-bit constant (golden ratio): spreads per-example seed offsets.
_SEED_STRIDE = 0x9E3779B1
#: DP train functions kept per model (the oldest is dropped beyond this many).
_CACHED_TRAIN_FUNCTIONS = 4


def _first(x):
    """The first tensor (not ``None``) of a structure: its length is the batch size."""
    return next(t for t in keras.tree.flatten(x) if t is not None)


def _seed_indices(model):
    return [
        i for i, v in enumerate(model.non_trainable_variables) if v.path.endswith(_SEED_STATE_NAME)
    ]


def _per_example(model, trainable, non_trainable, x, y, sample_weight):
    """Per-example losses, predictions, gradients and non-trainable updates.

    Random layers (Dropout...) get a different seed for every example, so each
    example sees its own mask, as in an ordinary batched step.
    """
    seed_idx = _seed_indices(model)
    batch_size = ops.shape(_first(x))[0]
    batch = {"x": x}
    if y is not None:
        batch["y"] = y
    if sample_weight is not None:
        batch["sample_weight"] = sample_weight
    if seed_idx:
        seeds = []
        for i in seed_idx:
            state = non_trainable[i]
            offsets = ops.cast(ops.arange(batch_size), state.dtype) * ops.cast(
                _SEED_STRIDE, state.dtype
            )
            offsets = ops.stack([offsets, ops.zeros_like(offsets)], axis=1)
            seeds.append(ops.expand_dims(state, 0) + offsets)
        batch["seeds"] = seeds
    call_kwargs = {"training": True} if model._call_has_training_arg else {}

    def example_loss(params, example):
        values = list(non_trainable)
        for k, i in enumerate(seed_idx):
            values[i] = example["seeds"][k]

        def expand(t):
            return ops.expand_dims(t, 0)

        xe = keras.tree.map_structure(expand, example["x"])
        ye = keras.tree.map_structure(expand, example["y"]) if "y" in example else None
        we = expand(example["sample_weight"]) if "sample_weight" in example else None
        mapping = list(zip(model.trainable_variables, params)) + list(
            zip(model.non_trainable_variables, values)
        )
        # per-output loss trackers updated by compute_loss: on throw-away values
        mapping += [(v, ops.zeros(v.shape, v.dtype)) for v in model.metrics_variables]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            y_pred = model(xe, **call_kwargs)
            loss = model.compute_loss(x=xe, y=ye, y_pred=y_pred, sample_weight=we, training=True)
        new_values = []
        for ref, value in zip(model.non_trainable_variables, values):
            new = scope.get_current_value(ref)
            new_values.append(value if new is None else new)
        y_pred = keras.tree.map_structure(lambda t: t[0], y_pred)
        return loss, (y_pred, new_values)

    losses, (y_pred, new_non_trainable), grads = kmi_backend.per_example_value_and_grad(
        example_loss, trainable, batch
    )
    # Every example advances the random state the same way; keep example 0's
    # update (offset 0), so the model's generators move on as in a batched step.
    new_non_trainable = [v[0] for v in new_non_trainable]
    return losses, y_pred, grads, new_non_trainable


def _clip(grads, l2_norm_clip, sample_weight=None):
    """Per-example clipping factors and norms; examples with zero weight get factor 0."""
    squares = []
    for g in grads:
        size = int(np.prod(g.shape[1:]))
        squares.append(ops.sum(ops.square(ops.reshape(g, (-1, size))), axis=1))
    norms = ops.sqrt(ops.sum(ops.stack(squares, axis=0), axis=0))
    return _clip_factors(norms, l2_norm_clip, sample_weight), norms


def _clip_factors(norms, l2_norm_clip, sample_weight=None):
    """``min(1, clip / norm)`` per example; examples with zero weight get factor 0."""
    factors = ops.minimum(1.0, l2_norm_clip / ops.maximum(norms, 1e-12))
    if sample_weight is not None:
        w = ops.reshape(ops.convert_to_tensor(sample_weight), (ops.shape(factors)[0], -1))
        factors = factors * ops.cast(ops.any(ops.not_equal(w, 0), axis=1), factors.dtype)
    return factors


def _noise(shapes, stddev, seed_generator, base_seed, iterations):
    """Gaussian noise drawn statelessly from (iterations, base_seed).

    The first seed component is the optimizer step, so no two steps share a seed;
    the second advances across the variables of one step.
    """
    dtype = seed_generator.state.dtype
    state = ops.stack([ops.cast(iterations, dtype), ops.cast(base_seed, dtype)])
    with keras.StatelessScope(state_mapping=[(seed_generator.state, state)]):
        return [keras.random.normal(shape, stddev=stddev, seed=seed_generator) for shape in shapes]


def make_grad_fn(
    model: keras.Model,
    l2_norm_clip: float,
    noise_multiplier: float,
    normalizer: float | None,
    seed_generator: keras.random.SeedGenerator,
    base_seed: int,
    ghost: Any = None,
) -> Callable:
    """The stateless DP gradient function handed to kmi.backend.custom_train_step.

    ``grad_fn(trainable, non_trainable, iterations, x, y, sample_weight)`` returns
    ``(loss, y_pred, grads, non_trainable)``: the clipped per-example gradients'
    sum, plus Gaussian noise of standard deviation ``noise_multiplier *
    l2_norm_clip`` drawn from ``(iterations, base_seed)``, divided by
    ``normalizer`` (the expected batch size under Poisson sampling) or, when it is
    ``None``, by the batch size. ``ghost``: the
    :class:`~kmi.defenses._ghost.GhostPlan` to clip by ghost clipping, or ``None``
    for vectorised per-example gradients.
    """

    def clipped_sum(trainable, non_trainable, x, y, sample_weight):
        if ghost is not None:
            norms, weighted_sum, loss_sum, y_pred, non_trainable = ghost_norms(
                model, ghost, trainable, non_trainable, x, y, sample_weight
            )
            factors = _clip_factors(norms, l2_norm_clip, sample_weight)
            return weighted_sum(factors), loss_sum, y_pred, non_trainable
        losses, y_pred, grads, non_trainable = _per_example(
            model, trainable, non_trainable, x, y, sample_weight
        )
        factors, _ = _clip(grads, l2_norm_clip, sample_weight)
        summed = [ops.tensordot(factors, g, axes=[[0], [0]]) for g in grads]
        return summed, ops.sum(losses), y_pred, non_trainable

    def grad_fn(trainable, non_trainable, iterations, x, y, sample_weight):
        summed, loss_sum, y_pred, non_trainable = clipped_sum(
            trainable, non_trainable, x, y, sample_weight
        )
        if normalizer is None:
            denominator = ops.cast(ops.shape(_first(x))[0], "float32")
        else:
            denominator = ops.cast(normalizer, "float32")
        if noise_multiplier > 0:
            noise = _noise(
                [tuple(s.shape) for s in summed],
                noise_multiplier * l2_norm_clip,
                seed_generator,
                base_seed,
                iterations,
            )
            summed = [s + n for s, n in zip(summed, noise)]
        grads = [s / ops.cast(denominator, s.dtype) for s in summed]
        loss = loss_sum / ops.cast(denominator, loss_sum.dtype)
        return loss, y_pred, grads, non_trainable

    return grad_fn


def choose_clipping(model: keras.Model, clipping: str) -> tuple[Any, str, str | None]:
    """``(plan, method, reason)``: how DP-SGD clips ``model`` with ``clipping``.

    ``plan`` is the :class:`~kmi.defenses._ghost.GhostPlan`, or ``None`` for
    vectorised per-example gradients; ``method`` is ``"ghost"``, ``"mixed"`` or
    ``"vectorized"``; ``reason`` says why ghost clipping is not used for every
    layer (``None`` if it is).
    """
    reason = None
    if clipping != "vectorized":
        reason = ghost_unsupported(model)
        if reason is None:
            plan = plan_ghost(model)
            reason = plan.reason
            if reason is None:
                return plan, "ghost", None
            if clipping == "auto":
                return plan, "mixed", reason
        if clipping == "ghost":
            raise ValueError(
                f"clipping='ghost' cannot train this model: {reason}. Use "
                "clipping='auto' (ghost clipping where it can, per-example gradients "
                "elsewhere) or 'vectorized' (per-example gradients, any layer). "
                "Received: clipping='ghost'"
            )
    check_vectorized_distribution(model)
    return None, "vectorized", reason


def dp_train_function(
    model: keras.Model, key: tuple[Hashable, ...], build_grad_fn: Callable[[], Callable]
) -> Callable:
    """The model's compiled DP train function for ``key``, built once and reused.

    Built with the model's own ``make_train_function`` around a DP train step;
    the model's ``train_step`` and ``train_function`` are left as they were, so
    a later plain ``fit`` does not recompile either. The key also holds what a
    recompile or a change of trainable variables replaces. ``build_grad_fn()``
    returns the :func:`make_grad_fn` function; it is called only on a cache miss.
    """
    key = (
        *key,
        model.optimizer,
        getattr(model, "_compile_loss", None),
        tuple(id(v) for v in model.trainable_variables),
        model.steps_per_execution,
        model.jit_compile,
        model.run_eagerly,
        keras.distribution.distribution(),
    )
    cache = model.__dict__.setdefault("_kmi_dp_train_functions", {})
    if key not in cache:
        had_step = "train_step" in model.__dict__
        saved_step, saved_function = model.__dict__.get("train_step"), model.train_function
        model.train_step = kmi_backend.custom_train_step(model, build_grad_fn())
        try:
            model.make_train_function(force=True)
            cache[key] = model.train_function
        finally:
            if had_step:
                model.train_step = saved_step
            else:
                del model.train_step
            model.train_function = saved_function
        while len(cache) > _CACHED_TRAIN_FUNCTIONS:
            cache.pop(next(iter(cache)))
    return cache[key]


def per_example_gradients(
    model: keras.Model,
    x: Any,
    y: Any = None,
    sample_weight: ArrayLike | None = None,
    *,
    l2_norm_clip: float | None = None,
) -> list[np.ndarray]:
    """Each example's gradient of the model's training loss, optionally clipped.

    This is what :class:`~kmi.defenses.DPSGD` computes with
    ``clipping="vectorized"`` before summing and adding noise, exposed for
    inspection and for audits. The loss is the model's compiled loss, with its
    ``add_loss`` terms, computed on each example alone; random layers (Dropout)
    draw an independent mask per example.

    Parameters
    ----------
    model : keras.Model
        A compiled model.
    x : array-like or structure of array-like
        One batch of inputs, as given to ``model.fit``.
    y : array-like or structure of array-like, optional
        The batch's targets.
    sample_weight : array-like of shape (batch_size,), optional
        Per-example loss weights.
    l2_norm_clip : float, optional
        If given, each example's gradient (all variables together) is scaled to
        an L2 norm of at most ``l2_norm_clip``, as DP-SGD does.

    Returns
    -------
    list of ndarray
        One array per trainable variable, shaped ``(batch_size, *variable.shape)``,
        in the order of ``model.trainable_variables``.

    Raises
    ------
    ValueError
        If the model is not compiled, ``l2_norm_clip`` is not a finite number
        > 0, or (on JAX, under ``keras.distribution``) the model has a trainable
        convolution, whose vectorised gradients are wrong when sharded.

    See Also
    --------
    DPSGD : DP-SGD training, which clips these gradients, sums them and adds noise.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import per_example_gradients
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", "mse")
    >>> x = np.random.default_rng(0).normal(size=(4, 3))
    >>> grads = per_example_gradients(model, x, np.zeros((4, 2)), l2_norm_clip=0.1)
    >>> [g.shape for g in grads]
    [(4, 3, 2), (4, 2)]
    >>> norms = np.sqrt(sum((g.reshape(4, -1) ** 2).sum(axis=1) for g in grads))
    >>> bool(np.all(norms <= 0.1 + 1e-6))
    True
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "per_example_gradients needs a compiled model (its loss). "
            "Received: model.optimizer=None"
        )

    def to_tensor(t):
        return None if t is None else ops.convert_to_tensor(t)

    check_vectorized_distribution(model)
    x = keras.tree.map_structure(to_tensor, x)
    y = keras.tree.map_structure(to_tensor, y) if y is not None else None
    sample_weight = to_tensor(sample_weight)
    trainable = [ops.convert_to_tensor(v.value) for v in model.trainable_variables]
    non_trainable = [ops.convert_to_tensor(v.value) for v in model.non_trainable_variables]

    # compiled, as in training (TF's vectorized_map cannot return a tensor it did
    # not compute, e.g. a frozen weight, when run eagerly)
    @kmi_backend.jit
    def compute(trainable, non_trainable, x, y, sample_weight):
        return _per_example(model, trainable, non_trainable, x, y, sample_weight)[2]

    grads = compute(trainable, non_trainable, x, y, sample_weight)
    if l2_norm_clip is not None:
        check_clip_and_noise(l2_norm_clip, None)
        factors, _ = _clip(grads, l2_norm_clip)
        grads = [g * ops.reshape(factors, (-1,) + (1,) * (len(g.shape) - 1)) for g in grads]
    return [ops.convert_to_numpy(g) for g in grads]
