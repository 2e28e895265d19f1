"""Ghost clipping: per-example gradient norms without per-example gradients.

For a layer whose output is linear in its weights, ``z = a W (+ b)``, one example's
weight gradient is ``a_i^T g_i``, where ``a_i`` is the layer's input for that
example and ``g_i`` the gradient of the example's loss with respect to ``z_i``.
One ordinary forward and backward pass of the batch yields every ``a_i`` and
``g_i`` (the gradient of the summed loss with respect to ``z_i`` is example
``i``'s own). From them:

- the squared norm of each example's gradient: by forming ``a_i^T g_i`` when the
  per-example weight gradients fit the memory budget (no more arithmetic than
  the alternative, and the clipped sum then comes from them), else as
  ``sum (a_i a_i^T) * (g_i g_i^T)`` over positions ("ghost norm", Goodfellow
  2015; Li et al. 2022; the choice per layer is Bu et al. 2023's mixed one);
  for a Dense layer applied once per example it is ``|a_i|^2 |g_i|^2``;
- the clipped sum ``sum_i c_i a_i^T g_i = a^T (c * g)`` with one batched product
  ("book-keeping", Bu et al. 2023), so no second backward pass is needed.

Supported: ``Dense``, ``Conv1D``/``Conv2D`` (channels_last, ungrouped, undilated)
and ``Embedding``. A model with any other trainable layer uses the vectorised
per-example gradients instead (:func:`ghost_unsupported` says why).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kmi import backend as kmi_backend

# Per-example weight gradients of up to this many entries are formed outright.
_MATERIALIZE = 2**16

_LAYER_ROLES = {
    keras.layers.Dense: ("kernel", "bias"),
    keras.layers.Conv1D: ("kernel", "bias"),
    keras.layers.Conv2D: ("kernel", "bias"),
    keras.layers.Embedding: ("embeddings",),
}


def _layer_problem(layer):
    """Why ``layer`` (of a supported class) cannot be ghost-clipped, or None."""
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled"
    if getattr(layer, "quantization_mode", None):
        return "it is quantized"
    if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D):
        if layer.data_format != "channels_last":
            return "data_format is channels_first"
        if layer.groups != 1:
            return "it is a grouped convolution"
        if any(d != 1 for d in layer.dilation_rate):
            return "it is dilated"
        if layer.padding not in ("valid", "same"):
            return f"padding={layer.padding!r}"
    if layer.activity_regularizer is not None:
        return "it has an activity regularizer (summed over the batch)"
    return None


def ghost_layers(model):
    """The layers to tap, in the order of ``model.trainable_variables``.

    Returns
    -------
    layers : list of keras.layers.Layer
        Supported layers owning trainable variables.
    slots : list of (int, str)
        For each trainable variable, the index in ``layers`` of its layer and its
        role (``"kernel"``, ``"bias"``, ``"embeddings"``).

    Raises
    ------
    ValueError
        Naming the first trainable variable ghost clipping cannot handle.
    """
    reason = ghost_unsupported(model)
    if reason:
        raise ValueError(reason)
    owners = {}
    layers = []
    for layer in model._flatten_layers(include_self=False):
        roles = _LAYER_ROLES.get(type(layer))
        if roles is None:
            continue
        for role in roles:
            variable = getattr(layer, role, None)
            if variable is not None and variable.trainable:
                if layer not in layers:
                    layers.append(layer)
                owners[id(variable)] = (layers.index(layer), role)
    slots = [owners[id(v)] for v in model.trainable_variables]
    return layers, slots


def ghost_unsupported(model):
    """Why ghost clipping cannot train ``model`` (a message), or ``None`` if it can."""
    if type(model).compute_loss is not keras.Model.compute_loss:
        return f"{type(model).__name__} overrides compute_loss"
    if model.loss is None:
        return "the model has no compiled loss (only add_loss terms)"
    losses = model.loss if isinstance(model.loss, list | tuple) else [model.loss]
    if isinstance(model.loss, dict):
        losses = list(model.loss.values())
    for loss in losses:
        reduction = getattr(loss, "reduction", "sum_over_batch_size")
        if reduction != "sum_over_batch_size":
            return (
                f"the loss {getattr(loss, 'name', loss)!r} has reduction={reduction!r} "
                "(ghost clipping needs the default 'sum_over_batch_size')"
            )
    owners = {}
    for layer in model._flatten_layers(include_self=False):
        for variable in layer.weights:
            if getattr(variable, "regularizer", None) is not None:
                return f"layer {layer.name!r} has a weight regularizer"
        roles = _LAYER_ROLES.get(type(layer))
        if roles is None:
            continue
        problem = _layer_problem(layer)
        for role in roles:
            variable = getattr(layer, role, None)
            if variable is not None and variable.trainable:
                if problem:
                    return f"layer {layer.name!r} ({type(layer).__name__}): {problem}"
                owners[id(variable)] = layer
    for variable in model.trainable_variables:
        if id(variable) not in owners:
            return (
                f"the trainable variable {variable.path!r} belongs to a layer ghost "
                "clipping does not support (it supports Dense, Conv1D, Conv2D and Embedding)"
            )
    return None


def _pre_activation(layer, inputs):
    """The layer's output before its activation, and its input as the tap records it."""
    if isinstance(layer, keras.layers.Embedding):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        indices = inputs if dtype in ("int32", "int64") else ops.cast(inputs, "int32")
        return ops.take(layer.embeddings, indices, axis=0), indices
    if isinstance(layer, keras.layers.Dense):
        z = ops.matmul(inputs, layer.kernel)
    else:
        z = layer.convolution_op(inputs, layer.kernel)
    if layer.bias is not None:
        z = ops.add(z, layer.bias)
    return z, inputs


class _Tapping:
    """Route the tapped layers' calls through ``tap`` while a forward pass runs."""

    def __init__(self, layers, tap):
        self.layers = layers
        self.tap = tap
        self.records = {}

    def __enter__(self):
        self._saved = []
        for index, layer in enumerate(self.layers):
            self._saved.append(layer.__dict__.get("call"))
            layer.call = self._wrapped(index, layer)
        return self

    def __exit__(self, *exc):
        for layer, saved in zip(self.layers, self._saved):
            if saved is None:
                del layer.call
            else:
                layer.call = saved
        return False

    def _wrapped(self, index, layer):
        def call(inputs, *args, **kwargs):
            calls = self.records.setdefault(index, [])
            z, recorded = _pre_activation(layer, inputs)
            z = self.tap((index, len(calls)), z)
            calls.append(recorded)
            if isinstance(layer, keras.layers.Embedding):
                return ops.cast(z, layer.compute_dtype)
            return z if layer.activation is None else layer.activation(z)

        return call


def _materialize(positions, width, units):
    """Whether to form per-example weight gradients rather than ghost norms.

    Forming ``a_i^T g_i`` costs no more arithmetic than the ghost norm, and the
    clipped sum then comes from it for free; only memory limits it.
    """
    if positions is None:
        return False
    return width * units <= max(4 * positions * positions, _MATERIALIZE)


def _flat(a, last):
    """``(n, ..., last) -> (n, positions, last)``."""
    middle = a.shape[1:-1]
    if None in middle:
        return ops.reshape(a, (ops.shape(a)[0], -1, last))
    return ops.reshape(a, (-1, math.prod(middle), last))


def _layer_terms(layer, inputs, grads, roles):
    """Per-example squared norms, and a function of the clip factors giving the sums.

    ``inputs`` and ``grads`` hold one entry per call of the layer (a shared layer
    contributes the sum over its calls, handled by joining them along positions).
    ``roles`` are the layer's trainable variables (``"kernel"``, ``"bias"``...).
    """
    if isinstance(layer, keras.layers.Embedding):
        idx = ops.concatenate([ops.reshape(i, (ops.shape(i)[0], -1)) for i in inputs], axis=1)
        g = ops.concatenate([_flat(x, layer.output_dim) for x in grads], axis=1)
        same = ops.cast(ops.equal(idx[:, :, None], idx[:, None, :]), g.dtype)
        gram = ops.einsum("npo,nqo->npq", g, g)
        squares = ops.sum(same * gram, axis=(1, 2))

        def sums(factors):
            weighted = ops.reshape(g * factors[:, None, None], (-1, layer.output_dim))
            table = ops.segment_sum(
                weighted, ops.reshape(idx, (-1,)), num_segments=layer.input_dim
            )
            return {"embeddings": table}

        return squares, sums

    kernel_shape = tuple(layer.kernel.shape)
    units = kernel_shape[-1]
    width = math.prod(kernel_shape[:-1])
    conv = not isinstance(layer, keras.layers.Dense)
    g = ops.concatenate([_flat(x, units) for x in grads], axis=1)
    positions = g.shape[1]

    def layer_inputs():  # (n, positions, width): the rows the kernel multiplies
        if not conv:
            return ops.concatenate([_flat(x, width) for x in inputs], axis=1)
        windows = [
            kmi_backend.conv_patches(x, layer.kernel_size, layer.strides, layer.padding)
            for x in inputs
        ]
        return ops.concatenate(windows, axis=1)

    a = per_example = None
    if "kernel" not in roles:
        squares = ops.zeros((ops.shape(g)[0],), g.dtype)
    elif positions == 1:
        a = layer_inputs()
        squares = ops.sum(ops.square(a), axis=(1, 2)) * ops.sum(ops.square(g), axis=(1, 2))
    elif _materialize(positions, width, units):
        if conv:
            per_example = sum(
                kmi_backend.per_example_conv_kernel_grads(
                    x, gx, layer.kernel_size, layer.strides, layer.padding
                )
                for x, gx in zip(inputs, grads)
            )
        else:
            per_example = ops.einsum("npk,npo->nko", layer_inputs(), g)
        squares = ops.sum(ops.square(per_example), axis=(1, 2))
    else:
        a = layer_inputs()
        gram_a = ops.einsum("npk,nqk->npq", a, a)
        gram_g = ops.einsum("npo,nqo->npq", g, g)
        squares = ops.sum(gram_a * gram_g, axis=(1, 2))
    if "bias" in roles:
        squares = squares + ops.sum(ops.square(ops.sum(g, axis=1)), axis=1)

    def sums(factors):
        weighted = g * factors[:, None, None]
        out = {}
        if "kernel" in roles:
            if per_example is not None:
                kernel = ops.tensordot(factors, per_example, axes=[[0], [0]])
            else:
                kernel = ops.einsum("npk,npo->ko", a, weighted)
            out["kernel"] = ops.reshape(kernel, kernel_shape)
        if "bias" in roles:
            out["bias"] = ops.sum(weighted, axis=(0, 1))
        return out

    return squares, sums


def ghost_norms(model, layers, slots, trainable, non_trainable, x, y, sample_weight):
    """Per-example gradient norms by ghost clipping, from one forward/backward pass.

    Returns
    -------
    norms : tensor of shape (batch_size,)
        Each example's gradient norm (all trainable variables together).
    clipped_sum : callable
        ``clipped_sum(factors)`` gives ``sum_i factors_i * grad_i`` for each
        trainable variable, in the order of ``model.trainable_variables``.
    loss_sum : tensor
        The sum of the examples' losses (the batch loss times the batch size).
    y_pred, non_trainable : the forward pass's predictions and state updates.
    """
    call_kwargs = {"training": True} if model._call_has_training_arg else {}
    mapping = list(zip(model.trainable_variables, trainable)) + list(
        zip(model.non_trainable_variables, non_trainable)
    )
    batch_size = ops.shape(next(t for t in keras.tree.flatten(x) if t is not None))[0]

    def fn(tap):
        tapping = _Tapping(layers, tap)
        with tapping, keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            y_pred = model(x, **call_kwargs)
            loss = model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
        new_values = []
        for ref, value in zip(model.non_trainable_variables, non_trainable):
            new = scope.get_current_value(ref)
            new_values.append(value if new is None else new)
        return loss, (y_pred, new_values, tapping.records)

    loss, (y_pred, new_non_trainable, records), tap_grads = kmi_backend.value_and_tap_grads(fn)
    # The batch loss is the mean of the examples' losses: scale the taps' gradients
    # by the batch size to get each example's own.
    n = ops.cast(batch_size, loss.dtype)
    squares, summers = [], []
    for index, layer in enumerate(layers):
        calls = records.get(index, [])
        roles = {role for i, role in slots if i == index}
        if not calls:
            summers.append(None)
            continue
        grads = [tap_grads[(index, k)] * n for k in range(len(calls))]
        sq, summer = _layer_terms(layer, calls, grads, roles)
        squares.append(sq)
        summers.append(summer)
    norms = ops.sqrt(ops.sum(ops.stack(squares, axis=0), axis=0))

    def clipped_sum(factors):
        per_layer = [None if s is None else s(factors) for s in summers]
        summed = []
        for (index, role), value in zip(slots, trainable):
            grads = per_layer[index]
            summed.append(ops.zeros_like(value) if grads is None else grads[role])
        return summed

    return norms, clipped_sum, loss * n, y_pred, new_non_trainable
