"""DP-SGD that drops into ``model.fit``: per-example clipping, Gaussian noise, accounting.

:class:`DPSGD` is a Keras callback. For the duration of a ``fit`` it replaces the
model's train step by one that clips each example's gradient to ``l2_norm_clip``
(by ghost clipping, :mod:`kmi.defenses._ghost`, for every layer with a rule in
:mod:`kmi.defenses._ghost_rules`: dense, einsum, convolution, embedding and
normalisation layers, keras-hub's included; per-example gradients, vectorised by
:func:`kmi.backend.per_example_value_and_grad` (``jax.vmap`` or
``tf.vectorized_map``), of the other layers' variables only), sums, adds Gaussian noise of
standard deviation ``noise_multiplier * l2_norm_clip`` and divides by the batch size
before handing the result to the compiled optimizer. Everything else ``fit`` does (the
compiled loss and metrics, ``add_loss`` terms, the optimizer, other callbacks) is
unchanged, and the model's own train step is back once ``fit`` returns.

Accounting is delegated to ``dp-accounting`` (:mod:`kmi.defenses.accounting`).
"""

from __future__ import annotations

import math
import secrets
import warnings

import keras
import numpy as np
from keras import ops

from kmi import backend as kmi_backend
from kmi.defenses._ghost import ghost_norms, ghost_unsupported, plan_ghost
from kmi.defenses.accounting import (
    ACCOUNTANTS,
    calibrate_noise,
    compute_epsilon,
    max_steps,
)

__all__ = [
    "DPSGD",
    "PoissonSampler",
    "PrivacyBudget",
    "check_dp_compatible",
    "make_private",
    "per_example_gradients",
]

_SEED_STATE_NAME = "seed_generator_state"
CLIPPING_METHODS = ("auto", "ghost", "vectorized")
# Odd 32-bit constant (golden ratio): spreads per-example seed offsets.
_SEED_STRIDE = 0x9E3779B1


# --------------------------------------------------------------------------- checks


def check_dp_compatible(model) -> None:
    """Raise if ``model`` cannot be trained with per-example DP-SGD.

    Refused: layers whose training-time computation mixes examples of a batch
    (a trainable ``BatchNormalization``, whose batch statistics make one
    example's output depend on the others), models that define their own
    ``train_step`` (DP-SGD replaces it) and kmi losses computed on the whole batch
    (:class:`~kmi.defenses.BiDO`). A frozen ``BatchNormalization``
    (``trainable=False``, as :func:`~kmi.defenses.freeze_until` leaves a
    pretrained network) runs in inference mode in Keras 3, normalising with its
    moving statistics, and is accepted.

    Parameters
    ----------
    model : keras.Model

    Raises
    ------
    ValueError
        Naming the offending layer or method and the alternative.
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


def _check_vectorized_distribution(model):
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


def _finite_number(value):
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check_clip_and_noise(l2_norm_clip, noise_multiplier):
    if not (_finite_number(l2_norm_clip) and l2_norm_clip > 0):
        raise ValueError(
            f"l2_norm_clip must be a finite number > 0. Received: l2_norm_clip={l2_norm_clip!r}"
        )
    if noise_multiplier is not None and not (
        _finite_number(noise_multiplier) and noise_multiplier >= 0
    ):
        raise ValueError(
            "noise_multiplier must be a finite number >= 0 (an infinite one would make "
            "the weights non-finite, and 0 gives no privacy guarantee: epsilon is "
            f"infinite). Received: noise_multiplier={noise_multiplier!r}"
        )


# ------------------------------------------------------------------ the DP computation


def _first(x):
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


def _make_grad_fn(
    model, l2_norm_clip, noise_multiplier, normalizer, seed_generator, base_seed, ghost=None
):
    """The stateless DP gradient function handed to kmi.backend.custom_train_step.

    ``ghost``: the :class:`~kmi.defenses._ghost.GhostPlan` to clip by ghost
    clipping, or ``None`` for vectorised per-example gradients.
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


def per_example_gradients(model, x, y=None, sample_weight=None, *, l2_norm_clip=None):
    """Each example's gradient of the model's training loss, optionally clipped.

    This is what :class:`DPSGD` computes before summing and adding noise, exposed
    for inspection and for audits.

    Parameters
    ----------
    model : keras.Model
        A compiled model.
    x, y, sample_weight : array-like
        One batch, as given to ``model.fit``.
    l2_norm_clip : float, optional
        If given, each example's gradient (all variables together) is scaled to
        an L2 norm of at most ``l2_norm_clip``, as DP-SGD does.

    Returns
    -------
    list of ndarray
        One array per trainable variable, shaped ``(batch_size, *variable.shape)``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import per_example_gradients
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", "mse")
    >>> grads = per_example_gradients(model, np.ones((4, 3)), np.zeros((4, 2)), l2_norm_clip=0.1)
    >>> [g.shape for g in grads]
    [(4, 3, 2), (4, 2)]
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "per_example_gradients needs a compiled model (its loss). "
            "Received: model.optimizer=None"
        )

    def to_tensor(t):
        return None if t is None else ops.convert_to_tensor(t)

    _check_vectorized_distribution(model)
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
        _check_clip_and_noise(l2_norm_clip, None)
        factors, _ = _clip(grads, l2_norm_clip)
        grads = [g * ops.reshape(factors, (-1,) + (1,) * (len(g.shape) - 1)) for g in grads]
    return [ops.convert_to_numpy(g) for g in grads]


# --------------------------------------------------------------------- data helper


class PoissonSampler(keras.utils.PyDataset):
    """Batches drawn by Poisson sampling, the sampling DP-SGD's accounting assumes.

    Each example joins each batch independently with probability
    ``batch_size / num_examples``, so batch sizes vary around ``batch_size``.
    To keep the number of distinct shapes (and recompilations) small, every batch
    is padded to a multiple of ``pad_to_multiple_of`` with examples of sample
    weight zero, which :class:`DPSGD` excludes from the gradient sum. Pass the
    same object to ``model.fit`` and to ``DPSGD(sampling=...)``: the epsilon then
    reported is the epsilon of what ran.

    Parameters
    ----------
    x : array-like or dict of array-like
        Training inputs.
    y : array-like
        Targets.
    sample_weight : array-like of shape (n_samples,), optional
    batch_size : int, default=256
        Expected batch size.
    steps : int, optional
        Batches per epoch. Default: ``round(num_examples / batch_size)``.
    seed : int, optional
        Seed of the sampling; ``None`` draws one from the OS.
    pad_to_multiple_of : int, default=32
        Batches are padded to a multiple of this size (1: no padding).
    **kwargs
        Passed to ``keras.utils.PyDataset`` (``workers``...).

    Attributes
    ----------
    num_examples : int
    sampling_rate : float
    """

    def __init__(
        self,
        x,
        y,
        sample_weight=None,
        *,
        batch_size=256,
        steps=None,
        seed=None,
        pad_to_multiple_of=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.x = keras.tree.map_structure(np.asarray, x)
        self.y = np.asarray(y)
        self.num_examples = len(_first(self.x))
        if len(self.y) != self.num_examples:
            raise ValueError(
                "x and y must have the same number of examples. "
                f"Received: len(x)={self.num_examples}, len(y)={len(self.y)}"
            )
        if int(batch_size) != batch_size or not (0 < batch_size <= self.num_examples):
            raise ValueError(
                f"batch_size must be an integer in [1, {self.num_examples}]. "
                f"Received: batch_size={batch_size!r}"
            )
        if int(pad_to_multiple_of) != pad_to_multiple_of or pad_to_multiple_of < 1:
            raise ValueError(
                "pad_to_multiple_of must be a positive integer. "
                f"Received: pad_to_multiple_of={pad_to_multiple_of!r}"
            )
        self.sample_weight = (
            np.ones(self.num_examples, "float32")
            if sample_weight is None
            else np.asarray(sample_weight, "float32")
        )
        self.batch_size = int(batch_size)
        self.sampling_rate = self.batch_size / self.num_examples
        self.steps = int(steps) if steps is not None else max(1, round(1 / self.sampling_rate))
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self._epoch = 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self._epoch, int(index)])
        chosen = np.flatnonzero(rng.random(self.num_examples) < self.sampling_rate)
        m = self.pad_to_multiple_of
        size = max(m, -(-len(chosen) // m) * m)
        idx = np.zeros(size, dtype=np.int64)
        idx[: len(chosen)] = chosen
        weight = np.zeros(size, dtype="float32")
        weight[: len(chosen)] = self.sample_weight[chosen]
        x = keras.tree.map_structure(lambda a: a[idx], self.x)
        return x, self.y[idx], weight

    def on_epoch_end(self):
        self._epoch += 1


# ----------------------------------------------------------------------- callbacks

#: DP train functions kept per model (the oldest is dropped beyond this many).
_CACHED_TRAIN_FUNCTIONS = 4


def _dp_train_function(model, key, make_grad_fn):
    """The model's compiled DP train function for ``key``, built once and reused.

    Built with the model's own ``make_train_function`` around a DP train step;
    the model's ``train_step`` and ``train_function`` are left as they were, so
    a later plain ``fit`` does not recompile either. The key also holds what a
    recompile or a change of trainable variables replaces.
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
        model.train_step = kmi_backend.custom_train_step(model, make_grad_fn())
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


@keras.saving.register_keras_serializable(package="kmi")
class DPSGD(keras.callbacks.Callback):
    """Make a ``model.fit`` differentially private (DP-SGD, Abadi et al. 2016).

    During the ``fit`` it is passed to, every training step computes each
    example's gradient, clips it to L2 norm ``l2_norm_clip``, sums the clipped
    gradients, adds Gaussian noise of standard deviation ``noise_multiplier *
    l2_norm_clip`` and divides by the batch size; the compiled optimizer then
    applies the result. At the end of every epoch the privacy spent so far is
    written to ``logs["epsilon"]`` (at ``delta``), so it shows in the progress
    bar and in ``History``. The model's own train step is restored when ``fit``
    returns.

    Parameters
    ----------
    l2_norm_clip : float, default=1.0
        Maximum L2 norm of one example's gradient (all variables together).
    noise_multiplier : float, optional
        Noise standard deviation divided by ``l2_norm_clip``. Give this or
        ``target_epsilon``.
    target_epsilon : float, optional
        Calibrate ``noise_multiplier`` so that the planned ``epochs`` of this
        ``fit`` spend at most this epsilon.
    delta : float, optional
        Default: ``1 / num_examples``.
    num_examples : int, optional
        Training set size ``N``, needed when ``delta`` is not given with
        shuffled batches (a Keras callback cannot see the data).
    accountant : {"rdp", "pld"}, default="rdp"
        dp-accounting accountant used for epsilon and calibration.
    sampling : "shuffle" or PoissonSampler, default="shuffle"
        How batches are drawn. ``"shuffle"``: ordinary ``fit`` batches; the
        sampling rate is taken as ``1 / steps_per_epoch`` and epsilon is the
        Poisson-sampling epsilon at that rate, an approximation for shuffled
        batches (a warning says so). A :class:`PoissonSampler` (the same object
        passed to ``fit``): epsilon is exact for what ran, and the noisy sum is
        divided by the *expected* batch size.
    seed : int, optional
        Seed of the noise. ``None`` draws one from the OS (what a private run
        should do; fix it only for tests).
    clipping : {"auto", "ghost", "vectorized"}, default="auto"
        How each example's gradient norm is obtained. ``"ghost"``: from the
        layers' inputs and output gradients of one ordinary forward/backward pass
        (ghost clipping with book-keeping; see Notes), for models whose trainable
        layers all have a ghost rule (matched with ``isinstance``, so subclasses
        are covered): ``Dense``, ``EinsumDense`` (any equation, so
        ``MultiHeadAttention`` and keras-hub's transformer layers), ``Conv1D`` /
        ``Conv2D`` (dilated, grouped, causal, channels-first), ``Embedding``,
        keras-hub's ``ReversibleEmbedding`` (tied or not) and
        ``PositionEmbedding``, ``LayerNormalization``, ``GroupNormalization``,
        ``RMSNormalization`` and keras-hub's RMS norms; it raises naming the
        classes of any other. ``"auto"``: ghost clipping for the covered layers
        and per-example gradients of the other layers' variables only (reported
        as ``clipping_ == "mixed"``); the whole model's per-example gradients
        only when the model as a whole rules ghost clipping out (a custom
        ``compute_loss``, a loss reduction other than the mean, weight or
        activity regularizers). ``"vectorized"``: per-example gradients of the
        whole model (``jax.vmap``/``tf.vectorized_map``), for any layer. All
        give the same clipped sum, up to float rounding.
    verbose : int, default=0
        1 prints the noise multiplier, sampling assumption and clipping method
        at the start.

    Attributes
    ----------
    noise_multiplier_ : float
        The noise multiplier used (given or calibrated).
    sampling_rate_ : float
    delta_ : float
    steps_ : int
        DP steps run so far by this callback (all its ``fit`` calls: privacy
        composes across them).
    epsilon_ : float
        Privacy spent after the last completed epoch.
    sampling_assumption_ : str
        ``"poisson"`` or ``"shuffle (Poisson accounting used as an approximation)"``.
    clipping_ : str
        The clipping method used: ``"ghost"``, ``"mixed"`` (ghost clipping and
        per-example gradients of the uncovered layers) or ``"vectorized"``.
    clipping_reason_ : str or None
        With ``clipping="auto"``, why ghost clipping was not used for every
        layer; it names the class of each layer that was not covered.

    Raises
    ------
    ValueError
        At the start of ``fit``: invalid parameters, or a model DP-SGD cannot
        train (see :func:`check_dp_compatible`).

    See Also
    --------
    make_private : the same without a callback.
    PrivacyBudget : stop before a budget is exceeded.
    compute_epsilon, calibrate_noise

    Notes
    -----
    Ghost clipping (Li et al. 2022; Bu et al. 2023) runs the batch forward and
    backward once, taps each covered layer's input ``a`` and the gradient ``g`` of
    the loss with respect to its output, and gets each example's gradient norm from
    them (``||a_i^T g_i||``, by forming ``a_i^T g_i`` where that is small, else as
    ``sum (a_i a_i^T) * (g_i g_i^T)`` over the positions of a sequence or image) and
    the clipped sum as ``a^T (c * g)`` (book-keeping). Normalisation layers'
    per-example gamma/beta gradients are formed outright (they are small); a tied
    ``ReversibleEmbedding``'s two uses are summed before the norm. A layer whose
    output is the model's only output (a language model's vocabulary projection)
    does not hold that output's gradient through the backward pass for the clipped
    sum: it is formed again from the predictions once the clip factors are known, so
    DP fine-tuning of a language model does not hold one more logits-sized buffer
    (measured on a GPT-2 shape: ``benchmarks/dp_sgd.py transformers-profile``). A
    layer without a rule contributes the norm of its own per-example gradients, so
    one unknown layer never sends the whole model to the vectorised route. It is the
    faster route on both backends (``benchmarks/dp_sgd.py speed`` and
    ``transformers``). It needs the compiled loss to be a mean over the batch (the
    default reduction) and no weight or activity regularizers; ``clipping="auto"``
    otherwise uses the vectorised route. Loss terms a layer adds with ``add_loss``
    are taken to be means over the batch, as kmi's own are
    (:class:`~kmi.defenses.InformationBottleneck`); a layer adding a batch *sum*
    needs ``clipping="vectorized"``.

    The DP train function is compiled once per model and configuration and
    reused by later ``fit`` calls; the model's own train function is swapped
    back when ``fit`` returns, so a plain ``fit`` afterwards does not recompile
    either.

    Vectorised per-example gradients are computed by
    :func:`kmi.backend.per_example_value_and_grad` (``jax.vmap`` on JAX,
    ``tf.vectorized_map`` on TensorFlow). Layers that use randomness (Dropout)
    draw an independent mask per example. Loss terms from
    ``add_loss`` and weight regularizers are part of each example's loss.
    Noise is drawn from a seed derived from the optimizer step and ``seed``.
    On TensorFlow, ``tf.vectorized_map`` has no vectorisation rule for the
    stateless random ops of Dropout with per-example seeds; those ops alone run in
    a ``while_loop`` (TensorFlow logs a warning), which slows models with Dropout.
    A trainable BatchNormalization is refused; a frozen one (``trainable=False``,
    which Keras 3 runs in inference mode) is accepted (see
    :func:`check_dp_compatible`).

    References
    ----------
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import DPSGD
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.1, num_examples=64, seed=0)
    >>> history = model.fit(x, y, batch_size=16, epochs=2, callbacks=[dp], verbose=0)
    >>> "epsilon" in history.history
    True
    """

    def __init__(
        self,
        l2_norm_clip=1.0,
        noise_multiplier=None,
        *,
        target_epsilon=None,
        delta=None,
        num_examples=None,
        accountant="rdp",
        sampling="shuffle",
        seed=None,
        clipping="auto",
        verbose=0,
    ):
        super().__init__()
        self.l2_norm_clip = l2_norm_clip
        self.noise_multiplier = noise_multiplier
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.num_examples = num_examples
        self.accountant = accountant
        self.sampling = sampling
        self.seed = seed
        self.clipping = clipping
        self.verbose = verbose
        self.steps_ = 0

    def get_config(self):
        if isinstance(self.sampling, PoissonSampler):
            raise NotImplementedError(
                "A DPSGD callback holding a PoissonSampler (data) is not serialisable. "
                "Received: sampling=PoissonSampler"
            )
        return {
            "l2_norm_clip": self.l2_norm_clip,
            "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "num_examples": self.num_examples,
            "accountant": self.accountant,
            "sampling": self.sampling,
            "seed": self.seed,
            "clipping": self.clipping,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- validation and schedule
    def _resolve(self):
        _check_clip_and_noise(self.l2_norm_clip, self.noise_multiplier)
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "Give exactly one of noise_multiplier and target_epsilon. "
                f"Received: noise_multiplier={self.noise_multiplier!r}, "
                f"target_epsilon={self.target_epsilon!r}"
            )
        if self.target_epsilon is not None and not (
            _finite_number(self.target_epsilon) and self.target_epsilon > 0
        ):
            raise ValueError(
                "target_epsilon must be a finite number > 0. "
                f"Received: target_epsilon={self.target_epsilon!r}"
            )
        if self.delta is not None and not (_finite_number(self.delta) and 0 < self.delta < 1):
            raise ValueError(f"delta must be in (0, 1). Received: delta={self.delta!r}")
        if self.num_examples is not None and not (
            _finite_number(self.num_examples)
            and int(self.num_examples) == self.num_examples
            and self.num_examples >= 1
        ):
            raise ValueError(
                "num_examples must be a positive integer. "
                f"Received: num_examples={self.num_examples!r}"
            )
        if self.clipping not in CLIPPING_METHODS:
            raise ValueError(
                f"clipping must be one of {CLIPPING_METHODS}. Received: clipping={self.clipping!r}"
            )
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(
                f"accountant must be one of {ACCOUNTANTS}. "
                f"Received: accountant={self.accountant!r}"
            )
        steps_per_epoch = self.params.get("steps")
        if isinstance(self.sampling, PoissonSampler):
            self.sampling_rate_ = self.sampling.sampling_rate
            num_examples = self.sampling.num_examples
            self._normalizer = float(self.sampling.batch_size)
            self.sampling_assumption_ = "poisson"
        elif self.sampling == "shuffle":
            if not steps_per_epoch:
                raise ValueError(
                    "With shuffled batches DPSGD takes the sampling rate as 1 / steps per "
                    "epoch, which is unknown for this data; pass steps_per_epoch to fit or "
                    "use a PoissonSampler. Received: steps=None"
                )
            self.sampling_rate_ = 1.0 / steps_per_epoch
            num_examples = self.num_examples
            self._normalizer = None
            self.sampling_assumption_ = "shuffle (Poisson accounting used as an approximation)"
        else:
            raise ValueError(
                "sampling must be 'shuffle' or a kmi.defenses.PoissonSampler. "
                f"Received: sampling={self.sampling!r}"
            )
        if self.delta is None and num_examples is None:
            raise ValueError(
                "delta defaults to 1 / N, and a callback cannot see the data: pass "
                "num_examples=len(x) (or delta). Received: num_examples=None, delta=None"
            )
        self.delta_ = float(self.delta) if self.delta is not None else 1.0 / num_examples
        if self.noise_multiplier is not None:
            self.noise_multiplier_ = float(self.noise_multiplier)
        else:
            epochs = self.params.get("epochs") or 1
            self.noise_multiplier_ = calibrate_noise(
                self.target_epsilon,
                sampling_rate=self.sampling_rate_,
                steps=self.steps_ + math.ceil(epochs / self.sampling_rate_ - 1e-9),
                delta=self.delta_,
                accountant=self.accountant,
            )

    def on_train_begin(self, logs=None):
        self._resolve()
        model = self.model
        check_dp_compatible(model)
        if self.sampling_assumption_ != "poisson":
            warnings.warn(
                "DPSGD: batches are shuffled, not Poisson-sampled; the epsilon reported "
                f"is the Poisson-sampling epsilon at rate {self.sampling_rate_:.4g} "
                "(the usual approximation, not a bound for what ran). Use "
                "kmi.defenses.PoissonSampler for an exact account.",
                UserWarning,
                stacklevel=2,
            )
        ghost = self._choose_clipping(model)
        if self.verbose:
            how = self.clipping_
            if self.clipping_reason_:
                how += f" (ghost clipping not used: {self.clipping_reason_})"
            print(
                f"DPSGD: l2_norm_clip={self.l2_norm_clip}, noise_multiplier="
                f"{self.noise_multiplier_:.4g}, sampling_rate={self.sampling_rate_:.4g}, "
                f"delta={self.delta_:.3g}, sampling={self.sampling_assumption_}, "
                f"clipping={how}"
            )
        if self.noise_multiplier_ == 0:
            warnings.warn(
                "DPSGD: noise_multiplier=0 clips gradients but adds no noise: there is no "
                "privacy guarantee (epsilon is infinite).",
                UserWarning,
                stacklevel=2,
            )

        def make_grad_fn():
            seed = secrets.randbits(31) if self.seed is None else int(self.seed)
            return _make_grad_fn(
                model,
                float(self.l2_norm_clip),
                self.noise_multiplier_,
                self._normalizer,
                keras.random.SeedGenerator(seed),
                seed,
                ghost,
            )

        key = (
            float(self.l2_norm_clip),
            self.noise_multiplier_,
            self._normalizer,
            self.clipping_,
            self.seed,
        )
        self._plain_train_function = model.train_function
        model.train_function = _dp_train_function(model, key, make_grad_fn)
        model._kmi_dpsgd = self

    def _choose_clipping(self, model):
        """Set ``clipping_``; return the ghost plan, or None (vectorised)."""
        self.clipping_reason_ = None
        if self.clipping != "vectorized":
            reason = ghost_unsupported(model)
            if reason is None:
                plan = plan_ghost(model)
                reason = plan.reason
                if reason is None:
                    self.clipping_ = "ghost"
                    return plan
                if self.clipping == "auto":
                    self.clipping_ = "mixed"
                    self.clipping_reason_ = reason
                    return plan
            if self.clipping == "ghost":
                raise ValueError(
                    f"clipping='ghost' cannot train this model: {reason}. Use "
                    "clipping='auto' (ghost clipping where it can, per-example gradients "
                    "elsewhere) or 'vectorized' (per-example gradients, any layer). "
                    "Received: clipping='ghost'"
                )
            self.clipping_reason_ = reason
        self.clipping_ = "vectorized"
        _check_vectorized_distribution(model)
        return None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_steps = self.steps_

    def on_train_batch_end(self, batch, logs=None):
        # ``batch`` is the index of the last step run (steps_per_execution may run
        # several per call), so count from it rather than by calls.
        self.steps_ = self._epoch_start_steps + batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self.epsilon_ = self.epsilon()
        if logs is not None:
            logs["epsilon"] = self.epsilon_

    def on_train_end(self, logs=None):
        model = self.model
        model.train_function = self._plain_train_function
        model.__dict__.pop("_kmi_dpsgd", None)

    def epsilon(self, steps=None) -> float:
        """Epsilon after ``steps`` DP steps (default: the steps run so far)."""
        return compute_epsilon(
            self.noise_multiplier_,
            sampling_rate=self.sampling_rate_,
            steps=self.steps_ if steps is None else steps,
            delta=self.delta_,
            accountant=self.accountant,
        )


@keras.saving.register_keras_serializable(package="kmi")
class PrivacyBudget(keras.callbacks.Callback):
    """Stop a DP-SGD ``fit`` before its privacy budget is exceeded.

    Works with a :class:`DPSGD` callback in the same ``fit`` (or a model from
    :func:`make_private`). At the start of training it computes, with the same
    accountant, the largest number of DP steps whose epsilon stays within
    ``target_epsilon``, and sets ``model.stop_training`` after that step (the
    ``EarlyStopping`` pattern), so training ends mid-epoch if it must.

    Parameters
    ----------
    target_epsilon : float
        The budget.
    delta : float, optional
        Default: the DPSGD callback's delta.
    dpsgd : DPSGD, optional
        The DP-SGD callback to follow. Default: the one running on the model.

    Attributes
    ----------
    max_steps_ : int
        Total DP steps allowed by the budget.
    stopped_step_ : int or None
        The DP step after which training was stopped, if it was.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import DPSGD, PrivacyBudget
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> dp = DPSGD(noise_multiplier=0.8, num_examples=64, seed=0)
    >>> budget = PrivacyBudget(target_epsilon=2.0)
    >>> _ = model.fit(x, y, batch_size=16, epochs=50, callbacks=[dp, budget], verbose=0)
    >>> dp.epsilon() <= 2.0
    True
    """

    def __init__(self, target_epsilon, delta=None, *, dpsgd=None):
        super().__init__()
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.dpsgd = dpsgd

    def get_config(self):
        return {"target_epsilon": self.target_epsilon, "delta": self.delta}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def on_train_begin(self, logs=None):
        if not self.target_epsilon > 0:
            raise ValueError(
                f"target_epsilon must be > 0. Received: target_epsilon={self.target_epsilon!r}"
            )
        self.max_steps_ = None
        self.stopped_step_ = None

    def _setup(self):
        dp = self.dpsgd or self.model.__dict__.get("_kmi_dpsgd")
        if dp is None:
            raise ValueError(
                "PrivacyBudget needs a DPSGD callback in the same fit (or a model from "
                "make_private). Received: dpsgd=None"
            )
        self._dp = dp
        delta = dp.delta_ if self.delta is None else float(self.delta)
        self.max_steps_ = max_steps(
            dp.noise_multiplier_,
            self.target_epsilon,
            sampling_rate=dp.sampling_rate_,
            delta=delta,
            accountant=dp.accountant,
        )
        if self.max_steps_ <= dp.steps_:
            raise ValueError(
                f"The budget epsilon={self.target_epsilon} allows {self.max_steps_} DP steps "
                f"and {dp.steps_} have run: no step can be taken. Received: "
                f"target_epsilon={self.target_epsilon!r}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.max_steps_ is None:
            self._setup()
        if self._epoch_start is None:
            # DPSGD counts a step when it ends, so this is the count before the epoch
            self._epoch_start = self._dp.steps_ - batch

    def on_train_batch_end(self, batch, logs=None):
        done = self._epoch_start + batch + 1
        # stop when the next call (steps_per_execution steps) would exceed the budget
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if done + per_call > self.max_steps_:
            self.model.stop_training = True
            self.stopped_step_ = done


def make_private(model, l2_norm_clip=1.0, noise_multiplier=None, **kwargs):
    """Make every later ``model.fit`` differentially private, without a callback.

    Equivalent to passing ``DPSGD(l2_norm_clip, noise_multiplier, **kwargs)`` in
    the ``callbacks`` of every ``fit``: the DP train step is installed for each
    ``fit``, ``logs["epsilon"]`` is written every epoch, and the one
    :class:`DPSGD` object (``model.dpsgd``) accounts across ``fit`` calls.

    Parameters
    ----------
    model : keras.Model
        A compiled model (checked now with :func:`check_dp_compatible`).
    l2_norm_clip, noise_multiplier, **kwargs
        As in :class:`DPSGD`.

    Returns
    -------
    keras.Model
        ``model`` itself, modified in place.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import make_private
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model = make_private(model, noise_multiplier=1.0, num_examples=32, seed=0)
    >>> "epsilon" in model.fit(x, y, batch_size=8, verbose=0).history
    True
    """
    check_dp_compatible(model)
    dpsgd = DPSGD(l2_norm_clip, noise_multiplier, **kwargs)
    fit = type(model).fit.__get__(model)

    def private_fit(*args, callbacks=None, **fit_kwargs):
        callbacks = list(callbacks or [])
        if not any(isinstance(c, DPSGD) for c in callbacks):
            callbacks.insert(0, dpsgd)
        return fit(*args, callbacks=callbacks, **fit_kwargs)

    private_fit.__doc__ = fit.__doc__
    model.fit = private_fit
    model.dpsgd = dpsgd
    return model
