"""Ghost-clipping rules that run a layer's own ``call`` again: normalisation, any other.

:class:`AffineNormRule` covers normalisation layers, affine in their scale and
offset: it runs the layer again with its parameters set to 0 and 1 and forms each
example's (vector) gradient outright. :class:`PerExampleRule` covers any other
layer that does not mix examples: it recomputes that layer alone, per example,
with the backend's vectorised per-example gradients. Both record the layer's call
arguments in the forward pass to run it again.
"""

from __future__ import annotations

import keras
from keras import ops

from kmi import backend as kmi_backend
from kmi.defenses._ghost_base import Rule, combine, own_variables, vector_terms


def _parameter_axes(layer, variable, rank):
    """The output axes a normalisation parameter is laid along."""
    axis = getattr(layer, "axis", None)
    if axis is not None:
        axes = sorted(a % rank for a in ([axis] if isinstance(axis, int) else axis))
        if len(axes) == len(variable.shape):
            return axes
    return list(range(rank - len(variable.shape), rank))


class AffineNormRule(Rule):
    """Normalisation layers, affine in each of their parameters: ``y = f(x) * scale + offset``.

    ``d y / d theta`` is ``y(theta = 1) - y(theta = 0)`` (each other trainable
    parameter set to 0), whatever the layer's convention (``scale`` or
    ``1 + scale``); each example's gradient is that times the output gradient,
    summed over the axes the parameter is broadcast along.
    """

    classes = (
        keras.layers.LayerNormalization,
        keras.layers.GroupNormalization,
        keras.layers.RMSNormalization,
    )

    def problem(self, layer):
        if layer._flatten_layers(include_self=False, recursive=False):
            return "it has sublayers"
        return super().problem(layer)

    def forward(self, layer, call, tap, record, args, kwargs):
        y = call(*args, **kwargs)
        _record_inputs(record, args, kwargs)
        return tap("y", y)

    def terms(self, layer, calls, variables, ctx):
        trainable = [v for v in variables if v.trainable]
        own = own_variables(layer)
        per_example = {id(v): None for v in trainable}
        for c in calls:
            args, kwargs = _restore_inputs(c)

            def output(one=None, c=c, args=args, kwargs=kwargs):
                # the layer with every trainable parameter 0, except ``one`` at 1
                values = {id(v): ops.zeros(v.shape, v.dtype) for v in trainable}
                if one is not None:
                    values[id(one)] = ops.ones(one.shape, one.dtype)
                mapping = [
                    (v, values.get(id(v)) if id(v) in values else ctx.value(v)) for v in own
                ]
                with keras.StatelessScope(state_mapping=mapping):
                    return layer.call(*args, **kwargs)

            g = c.grads["y"]
            rank = len(g.shape)
            base = output()
            for variable in trainable:
                d = ops.cast(output(variable) - base, g.dtype)
                axes = _parameter_axes(layer, variable, rank)
                summed = [i for i in range(1, rank) if i not in axes]
                term = ops.sum(g * d, axis=summed) if summed else g * d
                term = ops.reshape(term, (-1, *variable.shape))
                previous = per_example[id(variable)]
                per_example[id(variable)] = term if previous is None else previous + term
        parts = {id(v): vector_terms(per_example[id(v)]) for v in trainable}
        return combine(parts, variables)


def _record_inputs(record, args, kwargs):
    """Keep a call's arguments: tensors in ``record.tensors``, the rest as they are."""
    flat = keras.tree.flatten((list(args), kwargs))
    record.tensors["inputs"] = [t for t in flat if ops.is_tensor(t)]
    record.static["structure"] = (list(args), kwargs)
    record.static["is_tensor"] = [ops.is_tensor(t) for t in flat]


def _restore_inputs(call_record, replace=None):
    """A recorded call's ``(args, kwargs)``; ``replace(tensor)`` maps each tensor."""
    tensors = iter(call_record.tensors["inputs"])
    structure = call_record.static["structure"]
    flat = keras.tree.flatten(structure)
    values = []
    for leaf, is_tensor in zip(flat, call_record.static["is_tensor"]):
        if is_tensor:
            t = next(tensors)
            values.append(replace(t) if replace else t)
        else:
            values.append(leaf)
    args, kwargs = keras.tree.pack_sequence_as(structure, values)
    return tuple(args), kwargs


class PerExampleRule(Rule):
    """Any layer that treats examples independently: recompute it alone, per example.

    Its output is tapped; each example's gradient is the vector-Jacobian product
    of the layer's own call on that example with the example's output gradient,
    vectorised by :func:`kmi.backend.per_example_value_and_grad`. Only the layer's
    variables are differentiated; the rest of the model is untouched.
    """

    def problem(self, layer):
        return None

    def forward(self, layer, call, tap, record, args, kwargs):
        out = call(*args, **kwargs)
        _record_inputs(record, args, kwargs)
        flat = keras.tree.flatten(out)
        taps = [k for k, t in enumerate(flat) if ops.is_tensor(t) and _is_float(t)]
        record.static["outputs"] = taps
        tapped = [tap(f"out{k}", t) if k in taps else t for k, t in enumerate(flat)]
        return keras.tree.pack_sequence_as(out, tapped)

    def terms(self, layer, calls, variables, ctx):
        trainable = [v for v in variables if v.trainable]
        per_example = [None] * len(trainable)
        for c in calls:
            taps = c.static["outputs"]
            grads = [c.grads[f"out{k}"] for k in taps]
            batch_size = grads[0].shape[0]
            per_ex = [t for t in c.tensors["inputs"] if _batched(t, batch_size)]
            per_ex_ids = {id(t) for t in per_ex}

            def fn(params, example, c=c, taps=taps, per_ex_ids=per_ex_ids):
                leaves = iter(example["inputs"])

                def replace(tensor):
                    if id(tensor) in per_ex_ids:
                        return ops.expand_dims(next(leaves), 0)
                    return tensor

                args, kwargs = _restore_inputs(c, replace)
                mapping = ctx.mapping(zip(trainable, params))
                with keras.StatelessScope(state_mapping=mapping):
                    out = layer.call(*args, **kwargs)
                flat = keras.tree.flatten(out)
                value = 0.0
                for k, g in zip(taps, example["grads"]):
                    value = value + ops.sum(ops.cast(flat[k][0], g.dtype) * g)
                return value, ()

            params = [ctx.value(v) for v in trainable]
            _, _, grads_ = kmi_backend.per_example_value_and_grad(
                fn, params, {"inputs": per_ex, "grads": grads}
            )
            per_example = [g if p is None else p + g for p, g in zip(per_example, grads_)]
        parts = {id(v): vector_terms(p) for v, p in zip(trainable, per_example)}
        return combine(parts, variables)


def _is_float(t):
    return "float" in keras.backend.standardize_dtype(t.dtype)


def _batched(t, batch_size):
    shape = t.shape
    return len(shape) >= 1 and shape[0] == batch_size
