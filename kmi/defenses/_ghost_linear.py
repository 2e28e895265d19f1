"""Ghost-clipping rules for layers linear in their weights: dense, convolution, embedding.

Each example's weight gradient is ``a_i^T g_i``, the layer's input (or its
patches, or the one-hot rows it looks up) times the gradient of its output, so
:func:`~kmi.defenses._ghost_base.linear_terms` and
:func:`~kmi.defenses._ghost_base.embedding_terms` give its norm and the clipped
sum. Covered: ``Dense``, ``EinsumDense`` (any equation keeping the batch axis
first, so ``MultiHeadAttention`` and keras-hub's transformer layers), 1-D and 2-D
convolutions, ``Embedding``, ``ReversibleEmbedding`` (tied or not) and keras-hub's
``PositionEmbedding``.
"""

from __future__ import annotations

import math
import string

import keras
from keras import ops

from kmi import backend as kmi_backend
from kmi.defenses._ghost_base import (
    Rule,
    by_position,
    combine,
    embedding_terms,
    linear_terms,
    vector_terms,
    weighted_output,
)

# Per-example convolution kernels (formed by a fused product) up to this many entries.
_MATERIALIZE_CONV = 2**16


def _materialize_conv(positions, width, units):
    """Form per-example convolution kernels (the backend's fused product) instead?

    The fused product runs near the speed of the convolution itself (measured on
    the TF Privacy tutorial CNN, ``benchmarks/dp_sgd.py speed``).
    """
    return positions != 1 and width * units <= max(4 * positions * positions, _MATERIALIZE_CONV)


def _int_indices(inputs):
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    return inputs if dtype in ("int32", "int64") else ops.cast(inputs, "int32")


def _copy_mask(source, target):
    from keras.src.backend.common.masking import get_keras_mask, set_keras_mask

    mask = get_keras_mask(source)
    if mask is not None:
        set_keras_mask(target, mask)
    return target


# ------------------------------------------------------------------- dense and conv


class _KernelBiasRule(Rule):
    """``activation(product(a, kernel) + bias)``, tapped at the pre-activation ``z``."""

    def variables(self, layer):
        return [v for v in (layer.kernel, layer.bias) if v is not None]

    def product(self, layer, a):
        raise NotImplementedError

    def forward(self, layer, call, tap, record, args, kwargs):
        a = args[0]
        z = self.product(layer, a)
        if layer.bias is not None:
            z = ops.add(z, layer.bias)
        record.tensors["a"] = a
        z = tap("z", z)
        return z if layer.activation is None else layer.activation(z)


class DenseRule(_KernelBiasRule):
    classes = (keras.layers.Dense,)

    def product(self, layer, a):
        return ops.matmul(a, layer.kernel)

    def terms(self, layer, calls, variables, ctx):
        width, units = layer.kernel.shape
        a = ops.concatenate([by_position(c.tensors["a"], width) for c in calls], axis=1)
        g = ops.concatenate([by_position(c.grads["z"], units) for c in calls], axis=1)
        parts = {}
        if layer.kernel.trainable:
            key = tuple(id(c.tensors["a"]) for c in calls)
            sq, sums = linear_terms(a[:, None], g[:, None], ctx, key, weighted_output(calls, "z"))
            parts[id(layer.kernel)] = (sq, lambda f: ops.reshape(sums(f), (width, units)))
        if layer.bias is not None and layer.bias.trainable:
            parts[id(layer.bias)] = vector_terms(ops.sum(g, axis=1))
        return combine(parts, variables)


def _einsum_specs(equation, rank):
    """``(input, kernel, output)`` letter strings, with ``...`` written out."""
    inputs, output = equation.split("->")
    left, kernel = inputs.split(",")
    if "..." in left:
        used = set(equation)
        spare = [c for c in string.ascii_letters if c not in used]
        fill = "".join(spare[: rank - (len(left) - 3)])
        left = left.replace("...", fill)
        output = output.replace("...", fill)
    return left, kernel, output


class EinsumDenseRule(_KernelBiasRule):
    """``z = einsum(equation, a, W) + b`` for any equation whose first input axis is the batch."""

    classes = (keras.layers.EinsumDense,)

    def product(self, layer, a):
        return ops.einsum(layer.equation, a, layer.kernel)

    def problem(self, layer):
        problem = super().problem(layer)
        if problem:
            return problem
        inputs, output = layer.equation.split("->")
        left, kernel = inputs.split(",")
        if left.startswith("...") and output.startswith("..."):
            pass  # the batch axis is in the ellipsis
        elif "..." in left or left[0] != output[0] or left[0] in kernel:
            return f"the equation {layer.equation!r} does not keep the batch axis first"
        for letter in kernel:
            if letter not in left and letter not in output:
                return f"the kernel axis {letter!r} of {layer.equation!r} is summed alone"
        return None

    def terms(self, layer, calls, variables, ctx):
        rank = len(calls[0].tensors["a"].shape)
        left, kernel, output = _einsum_specs(layer.equation, rank)
        batch = left[0]
        shared = [c for c in kernel if c in left and c in output]
        contracted = [c for c in kernel if c in left and c not in output]
        produced = [c for c in kernel if c in output and c not in left]
        positions = [c for c in left if c in output and c not in kernel and c != batch]
        size = dict(zip(kernel, layer.kernel.shape))
        blocks = math.prod(size[c] for c in shared)
        width = math.prod(size[c] for c in contracted)
        units = math.prod(size[c] for c in produced)
        a_spec = batch + "".join(shared + positions + contracted)
        g_spec = batch + "".join(shared + positions + produced)

        def matrix(t, spec, target, last):
            t = ops.einsum(f"{spec}->{target}", t) if spec != target else t
            positions = math.prod(t.shape[1:]) // (blocks * last)
            return ops.reshape(t, (-1, blocks, positions, last))

        a = ops.concatenate([matrix(c.tensors["a"], left, a_spec, width) for c in calls], axis=2)
        g = ops.concatenate([matrix(c.grads["z"], output, g_spec, units) for c in calls], axis=2)
        parts = {}
        if layer.kernel.trainable:
            key = (tuple(id(c.tensors["a"]) for c in calls), left, a_spec)
            sq, sums = linear_terms(a, g, ctx, key)
            order = "".join(shared + contracted + produced)
            full = [size[c] for c in order]

            def kernel_sum(factors, sums=sums, order=order, full=full):
                s = ops.reshape(sums(factors), full)
                return ops.einsum(f"{order}->{kernel}", s) if order != kernel else s

            parts[id(layer.kernel)] = (sq, kernel_sum)
        if layer.bias is not None and layer.bias.trainable:
            first = min(output.find(c) for c in layer.bias_axes)
            bias_spec = "".join(c for c in output[first:] if c in layer.bias_axes)
            per_example = sum(
                ops.einsum(f"{output}->{batch}{bias_spec}", c.grads["z"]) for c in calls
            )
            per_example = ops.reshape(per_example, (-1, *layer.bias.shape))
            parts[id(layer.bias)] = vector_terms(per_example)
        return combine(parts, variables)


class ConvRule(Rule):
    """1-D and 2-D convolutions: any stride, padding, dilation, groups or data format."""

    classes = (keras.layers.Conv1D, keras.layers.Conv2D)

    def variables(self, layer):
        return [v for v in (layer.kernel, layer.bias) if v is not None]

    def problem(self, layer):
        problem = super().problem(layer)
        if problem:
            return problem
        if isinstance(layer, keras.layers.Conv1DTranspose | keras.layers.Conv2DTranspose):
            return "it is a transposed convolution"
        return None

    def forward(self, layer, call, tap, record, args, kwargs):
        a, padding = args[0], layer.padding
        if padding == "causal":
            a, padding = ops.pad(a, layer._compute_causal_padding()), "valid"
        z = ops.conv(
            a,
            layer.kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        if layer.bias is not None:
            if layer.data_format == "channels_last":
                bias_shape = (1,) * (len(z.shape) - 1) + (layer.filters,)
            else:
                bias_shape = (1, layer.filters) + (1,) * (len(z.shape) - 2)
            z = ops.add(z, ops.reshape(layer.bias, bias_shape))
        record.tensors["a"] = a
        record.static["padding"] = padding
        z = tap("z", z)
        return z if layer.activation is None else layer.activation(z)

    @staticmethod
    def _channels_last(layer, t):
        return t if layer.data_format == "channels_last" else ops.moveaxis(t, 1, -1)

    def terms(self, layer, calls, variables, ctx):
        kernel_shape = tuple(layer.kernel.shape)
        filters, groups = kernel_shape[-1], layer.groups
        grads = [self._channels_last(layer, c.grads["z"]) for c in calls]
        parts = {}
        if layer.kernel.trainable:
            conv = (layer.kernel_size, layer.strides)
            inputs = [
                (self._channels_last(layer, c.tensors["a"]), c.static["padding"]) for c in calls
            ]
            g = ops.concatenate([by_position(t, filters) for t in grads], axis=1)
            positions = g.shape[1]
            width = math.prod(kernel_shape[:-1])
            if groups == 1 and _materialize_conv(positions, width, filters):
                # per-example kernels from the backend's fused product
                per_example = sum(
                    kmi_backend.per_example_conv_kernel_grads(
                        a, gx, *conv, padding, layer.dilation_rate
                    )
                    for (a, padding), gx in zip(inputs, grads)
                )
                sq, sums = vector_terms(per_example)
            else:
                patches = ops.concatenate(
                    [
                        kmi_backend.conv_patches(a, *conv, padding, layer.dilation_rate)
                        for a, padding in inputs
                    ],
                    axis=1,
                )
                offsets = math.prod(layer.kernel_size)
                channels = kernel_shape[-2]  # per group
                # (n, P, offsets * groups * C) -> (n, groups, P, offsets * C)
                patches = ops.reshape(patches, (-1, positions, offsets, groups, channels))
                patches = ops.reshape(
                    ops.transpose(patches, (0, 3, 1, 2, 4)),
                    (-1, groups, positions, offsets * channels),
                )
                g = ops.reshape(g, (-1, positions, groups, filters // groups))
                g = ops.transpose(g, (0, 2, 1, 3))
                sq, block_sums = linear_terms(patches, g, ctx, None)

                def sums(factors, block_sums=block_sums, offsets=offsets, channels=channels):
                    s = ops.reshape(
                        block_sums(factors), (groups, offsets, channels, filters // groups)
                    )
                    return ops.transpose(s, (1, 2, 0, 3))

            parts[id(layer.kernel)] = (sq, lambda f, s=sums: ops.reshape(s(f), kernel_shape))
        if layer.bias is not None and layer.bias.trainable:
            per_example = sum(ops.sum(by_position(t, filters), axis=1) for t in grads)
            parts[id(layer.bias)] = vector_terms(per_example)
        return combine(parts, variables)


# ----------------------------------------------------------------------- embeddings


class EmbeddingRule(Rule):
    """``Embedding`` and its subclasses (a lookup)."""

    classes = (keras.layers.Embedding,)

    def variables(self, layer):
        return [layer.embeddings]

    def forward(self, layer, call, tap, record, args, kwargs):
        out = call(*args, **kwargs)
        record.tensors["idx"] = _int_indices(args[0])
        return _copy_mask(out, tap("z", out))

    def _lookup_terms(self, layer, calls):
        width = layer.output_dim
        idx = ops.concatenate(
            [ops.reshape(c.tensors["idx"], (ops.shape(c.tensors["idx"])[0], -1)) for c in calls],
            axis=1,
        )
        g = ops.concatenate([by_position(c.grads["z"], width) for c in calls], axis=1)
        return idx, g

    def terms(self, layer, calls, variables, ctx):
        if not layer.embeddings.trainable:
            return combine({}, variables)
        idx, g = self._lookup_terms(layer, calls)
        return combine({id(layer.embeddings): embedding_terms(idx, g, layer.input_dim)}, variables)


class ReversibleEmbeddingRule(EmbeddingRule):
    """``ReversibleEmbedding``: a lookup, and (``reverse=True``) a projection onto the vocabulary.

    With tied weights the one table gets both uses: each example's gradient is
    ``L_i + R_i`` (lookup, projection), and its squared norm
    ``|L_i|^2 + |R_i|^2 + 2 <L_i, R_i>``, where the cross term
    ``sum_p sum_q G_q[idx_p] (g_p . h_q)`` needs no vocabulary-sized product.
    """

    classes = (keras.layers.ReversibleEmbedding,)

    def variables(self, layer):
        extra = [] if layer.tie_weights else [layer.reverse_embeddings]
        return [layer.embeddings, *extra]

    def problem(self, layer):
        problem = super().problem(layer)
        if problem is None and layer.reverse_dtype is not None:
            return f"reverse_dtype={layer.reverse_dtype!r}"
        return problem

    def forward(self, layer, call, tap, record, args, kwargs):
        reverse = kwargs.get("reverse", args[1] if len(args) > 1 else False)
        record.static["reverse"] = bool(reverse)
        if not reverse:
            return super().forward(layer, call, tap, record, args[:1], {})
        h = args[0]
        kernel = ops.transpose(layer.embeddings) if layer.tie_weights else layer.reverse_embeddings
        record.tensors["h"] = h
        logits = tap("z", ops.matmul(h, kernel))
        if layer.logit_soft_cap is not None:
            cap = layer.logit_soft_cap
            logits = ops.multiply(ops.tanh(ops.divide(logits, cap)), cap)
        return logits

    def terms(self, layer, calls, variables, ctx):
        lookups = [c for c in calls if not c.static["reverse"]]
        projections = [c for c in calls if c.static["reverse"]]
        vocab, width = layer.input_dim, layer.output_dim
        parts = {}
        table = layer.embeddings
        lookup = projection = None
        if lookups and table.trainable:
            idx, g = self._lookup_terms(layer, lookups)
            lookup = embedding_terms(idx, g, vocab)
        reverse_variable = table if layer.tie_weights else layer.reverse_embeddings
        if projections and reverse_variable.trainable:
            h = ops.concatenate([by_position(c.tensors["h"], width) for c in projections], axis=1)
            gl = ops.concatenate([by_position(c.grads["z"], vocab) for c in projections], axis=1)
            key = tuple(id(c.tensors["h"]) for c in projections)
            weighted = weighted_output(projections, "z")
            sq, sums = linear_terms(h[:, None], gl[:, None], ctx, key, weighted)
            # (width, vocab): the reverse kernel; the tied table holds its transpose
            projection = (sq, lambda f, s=sums: ops.reshape(s(f), (width, vocab)))
        if layer.tie_weights and lookup and projection:
            # <L_i, R_i^T>: G_q[idx_p] (g_p . h_q), summed over lookup p and projection q
            picked = ops.take_along_axis(gl, idx[:, None, :], axis=2)  # (n, Q, P)
            dots = ops.einsum("npd,nqd->nqp", g, h)
            cross = ops.sum(picked * dots, axis=(1, 2))

            def tied(factors, lookup=lookup, projection=projection):
                return lookup[1](factors) + ops.transpose(projection[1](factors))

            parts[id(table)] = (lookup[0] + projection[0] + 2.0 * cross, tied)
        else:
            if lookup:
                parts[id(table)] = lookup
            if projection and layer.tie_weights:
                parts[id(table)] = (projection[0], lambda f, p=projection: ops.transpose(p[1](f)))
            elif projection:
                parts[id(layer.reverse_embeddings)] = projection
        return combine(parts, variables)


class PositionEmbeddingRule(Rule):
    """keras-hub ``PositionEmbedding``: rows ``start_index ...`` (or ``positions``) of a table."""

    classes = ()  # keras_hub.layers.PositionEmbedding, resolved when keras_hub is imported

    def variables(self, layer):
        return [layer.position_embeddings]

    def forward(self, layer, call, tap, record, args, kwargs):
        out = call(*args, **kwargs)
        length = ops.shape(out)[-2]
        positions = kwargs.get("positions")
        if positions is None:
            start = kwargs.get("start_index", 0)
            positions = ops.arange(length, dtype="int32") + ops.cast(start, "int32")
            record.static["distinct"] = True
        else:
            record.static["distinct"] = False
        positions = ops.cast(positions, "int32")
        if len(positions.shape) == 1:
            positions = ops.expand_dims(positions, 0)
        n = ops.shape(out)[0]
        record.tensors["idx"] = ops.broadcast_to(positions, (n, length))
        return tap("z", out)

    def terms(self, layer, calls, variables, ctx):
        table = layer.position_embeddings
        if not table.trainable:
            return combine({}, variables)
        rows, width = table.shape
        idx = ops.concatenate([c.tensors["idx"] for c in calls], axis=1)
        g = ops.concatenate([by_position(c.grads["z"], width) for c in calls], axis=1)
        distinct = len(calls) == 1 and calls[0].static["distinct"]
        return combine({id(table): embedding_terms(idx, g, rows, distinct=distinct)}, variables)
