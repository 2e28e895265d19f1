"""Ghost clipping's per-layer rules: each example's gradient from one backward pass.

A rule knows one kind of layer (matched with ``isinstance``, so subclasses are
covered). During the batch's ordinary forward pass it records what the layer's
weight gradients are made of: the layer's input ``a`` and a *tap* on its
(pre-activation) output ``z``, whose gradient ``g`` the backward pass delivers
for every example at once. From ``a`` and ``g`` the rule gives

- each example's squared gradient norm over the layer's trainable variables, and
- the clipped sum ``sum_i c_i grad_i`` for any clip factors ``c``.

The linear rules (``Dense``, ``EinsumDense``, convolutions, the embeddings) use
``grad_i = a_i^T g_i``: its squared norm is formed either from the per-example
product itself, when it is small, or as ``sum (a_i a_i^T) * (g_i g_i^T)`` over
positions ("ghost norm", Goodfellow 2015; Li et al. 2022), whichever costs less
(Bu et al. 2023's mixed choice), and the clipped sum is one batched product
``a^T (c * g)`` ("book-keeping", Bu et al. 2023). Normalisation layers are affine
in their scale and offset, so their per-example gradients are formed outright
(they are vectors). :class:`PerExampleRule` covers any other layer that does not
mix examples: it recomputes that layer alone, per example, with the backend's
vectorised per-example gradients.
"""

from __future__ import annotations

import math
import string
import sys

import keras
from keras import ops

from kmi import backend as kmi_backend

# Per-example weight gradients of up to this many entries are formed outright.
_SMALL = 2**16
# Per-example convolution kernels (formed by a fused product) up to this many entries.
_MATERIALIZE_CONV = 2**16


class Context:
    """What rules share in one step: the batch size, variable values, a cache."""

    def __init__(self, batch_size, mapping):
        self.batch_size = batch_size
        self._values = {id(variable): value for variable, value in mapping}
        self._mapping = mapping
        self.cache = {}

    def value(self, variable):
        return self._values[id(variable)]

    def mapping(self, overrides=()):
        """``(variable, value)`` pairs for every model variable, some replaced."""
        replaced = {id(v): value for v, value in overrides}
        return [(v, replaced.get(id(v), value)) for v, value in self._mapping]


class Call:
    """One call of a tapped layer: what it recorded, and its taps' gradients."""

    def __init__(self, static=None):
        self.tensors = {}
        self.static = static or {}
        self.grads = {}
        self.weighted_grads = {}  # tap name -> (factors -> factors * grad), model outputs


def own_variables(layer):
    """Variables a layer creates itself (not those of its sublayers)."""
    nested = {id(v) for sub in layer._flatten_layers(include_self=False) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in nested]


# ------------------------------------------------------------------ shared algebra


def _rows(t, last):
    """``(n, ..., last) -> (n, positions, last)``."""
    middle = t.shape[1:-1]
    if None in middle:
        return ops.reshape(t, (ops.shape(t)[0], -1, last))
    return ops.reshape(t, (-1, math.prod(middle), last))


def _materialize(positions, width, units):
    """Form per-example ``(width, units)`` weight gradients, rather than ghost norms?

    Forming them costs ``positions * width * units`` per example and saves the
    book-keeping product; the ghost norm costs ``positions^2 * (width + units)``
    in Gram matrices (:func:`kmi.backend.gram`) plus the book-keeping product,
    and keeps the layer's inputs and output gradients until the clip factors
    are known. Form them when they are no larger than those (or small anyway).
    """
    return width * units <= max(positions * (width + units), _SMALL)


def _materialize_conv(positions, width, units):
    """Form per-example convolution kernels (the backend's fused product) instead?

    The fused product runs near the speed of the convolution itself (measured on
    the TF Privacy tutorial CNN, ``benchmarks/dp_sgd.py speed``).
    """
    return positions != 1 and width * units <= max(4 * positions * positions, _MATERIALIZE_CONV)


def linear_terms(a, g, ctx, key=None, weighted_g=None):
    """Squares and clipped sum of a weight used as ``z[n, s, p] = a[n, s, p] @ W[s]``.

    ``a``: ``(n, S, P, K)``; ``g``: ``(n, S, P, O)``, each example's own gradient.
    ``S`` independent blocks (groups, heads) each have a ``(K, O)`` weight.
    Returns ``squares`` of shape ``(n,)`` and ``sums(factors) -> (S, K, O)``.
    ``key`` names ``a`` for the cache, so layers reading the same input (the
    query, key and value projections of self-attention) form its Gram matrix once.
    ``weighted_g(factors)``, when given, is ``factors * g`` formed anew (a model
    output's gradient, see :func:`kmi.defenses._ghost._weighted_output_grad`), so
    that ``g`` is not needed after the norms.
    """
    _, blocks, positions, width = a.shape
    units = g.shape[-1]
    per_example = None
    if positions == 1:
        squares = ops.sum(ops.sum(ops.square(a), -1) * ops.sum(ops.square(g), -1), axis=(1, 2))
    elif _materialize(positions, width, units):
        per_example = ops.einsum("nspk,nspo->nsko", a, g)
        squares = ops.sum(ops.square(per_example), axis=(1, 2, 3))
    else:
        gram_key = None if key is None else ("gram", key)
        gram_a = ctx.cache.get(gram_key) if gram_key else None
        if gram_a is None:
            gram_a = kmi_backend.gram(a)
            if gram_key:
                ctx.cache[gram_key] = gram_a
        squares = ops.sum(gram_a * kmi_backend.gram(g), axis=(1, 2, 3))

    def sums(factors):
        if per_example is not None:
            return ops.tensordot(factors, per_example, axes=[[0], [0]])
        # scale the narrower of the two by the factors (a vocabulary-wide g is large)
        if weighted_g is not None:
            left, right = a, ops.reshape(weighted_g(factors), ops.shape(g))
        elif width <= units:
            left, right = a * factors[:, None, None, None], g
        else:
            left, right = a, g * factors[:, None, None, None]
        if blocks == 1:  # one large product: faster than the batched einsum
            left = ops.reshape(left, (-1, width))
            return ops.matmul(ops.transpose(left), ops.reshape(right, (-1, units)))[None]
        return ops.einsum("nspk,nspo->sko", left, right)

    return squares, sums


def embedding_terms(idx, g, rows, *, distinct=False):
    """Squares and clipped sum of a table looked up as ``z[n, p] = E[idx[n, p]]``.

    ``idx``: ``(n, P)`` integer rows; ``g``: ``(n, P, d)``. ``distinct``: no row
    appears twice in one example (positions), so the norm is ``|g_i|^2``.
    """
    width = g.shape[-1]
    positions = g.shape[1]
    per_example = None
    if distinct:
        squares = ops.sum(ops.square(g), axis=(1, 2))
    elif positions is not None and rows * width <= max(positions * (positions + width), 64):
        # a small table (segment ids): one-hot products are cheaper than the Gram matrix
        per_example = ops.einsum("npv,npd->nvd", ops.one_hot(idx, rows, dtype=g.dtype), g)
        squares = ops.sum(ops.square(per_example), axis=(1, 2))
    else:
        same = ops.cast(ops.equal(idx[:, :, None], idx[:, None, :]), g.dtype)
        squares = ops.sum(same * kmi_backend.gram(g), axis=(1, 2))

    def sums(factors):
        if per_example is not None:
            return ops.tensordot(factors, per_example, axes=[[0], [0]])
        weighted = ops.reshape(g * factors[:, None, None], (-1, width))
        return ops.segment_sum(weighted, ops.reshape(idx, (-1,)), num_segments=rows)

    return squares, sums


def _weighted(calls, name):
    """``factors -> factors * g`` formed anew for a layer called once, whose tap
    ``name`` is a model output; else None (the tapped gradient is used)."""
    if len(calls) != 1 or name not in calls[0].weighted_grads:
        return None
    return calls[0].weighted_grads[name]


def _vector_terms(per_example):
    """Squares and sums of per-example gradients formed outright, ``(n, ...)``."""
    flat = ops.reshape(per_example, (ops.shape(per_example)[0], -1))
    squares = ops.sum(ops.square(flat), axis=1)
    return squares, lambda factors: ops.tensordot(factors, per_example, axes=[[0], [0]])


def _combine(parts, variables):
    """Join per-variable ``(squares, sums)`` into one rule result."""
    squares = None
    for sq, _ in parts.values():
        squares = sq if squares is None else squares + sq

    def sums(factors):
        return [parts[id(v)][1](factors) if id(v) in parts else None for v in variables]

    return squares, sums


def _int_indices(inputs):
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    return inputs if dtype in ("int32", "int64") else ops.cast(inputs, "int32")


def _copy_mask(source, target):
    from keras.src.backend.common.masking import get_keras_mask, set_keras_mask

    mask = get_keras_mask(source)
    if mask is not None:
        set_keras_mask(target, mask)
    return target


# --------------------------------------------------------------------------- rules


class Rule:
    """How ghost clipping handles one kind of layer.

    Subclasses set ``classes`` and implement :meth:`forward` and :meth:`terms`.
    """

    classes = ()

    def variables(self, layer):
        """The variables the rule computes gradients for (trainable or not)."""
        return own_variables(layer)

    def problem(self, layer):
        """Why this layer cannot be handled by the rule (a phrase), or ``None``."""
        if getattr(layer, "lora_enabled", False):
            return "LoRA is enabled"
        if getattr(layer, "quantization_mode", None):
            return "it is quantized"
        return None

    def forward(self, layer, call, tap, record, args, kwargs):
        """Run the layer (``call`` is its own ``call``), tapping what the rule needs."""
        raise NotImplementedError

    def terms(self, layer, calls, variables, ctx):
        """``(squares, sums)``: ``sums(factors)`` lists one tensor (or None) per variable."""
        raise NotImplementedError


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
        a = ops.concatenate([_rows(c.tensors["a"], width) for c in calls], axis=1)
        g = ops.concatenate([_rows(c.grads["z"], units) for c in calls], axis=1)
        parts = {}
        if layer.kernel.trainable:
            key = tuple(id(c.tensors["a"]) for c in calls)
            sq, sums = linear_terms(a[:, None], g[:, None], ctx, key, _weighted(calls, "z"))
            parts[id(layer.kernel)] = (sq, lambda f: ops.reshape(sums(f), (width, units)))
        if layer.bias is not None and layer.bias.trainable:
            parts[id(layer.bias)] = _vector_terms(ops.sum(g, axis=1))
        return _combine(parts, variables)


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
            parts[id(layer.bias)] = _vector_terms(per_example)
        return _combine(parts, variables)


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
            g = ops.concatenate([_rows(t, filters) for t in grads], axis=1)
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
                sq, sums = _vector_terms(per_example)
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
            per_example = sum(ops.sum(_rows(t, filters), axis=1) for t in grads)
            parts[id(layer.bias)] = _vector_terms(per_example)
        return _combine(parts, variables)


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
        g = ops.concatenate([_rows(c.grads["z"], width) for c in calls], axis=1)
        return idx, g

    def terms(self, layer, calls, variables, ctx):
        if not layer.embeddings.trainable:
            return _combine({}, variables)
        idx, g = self._lookup_terms(layer, calls)
        return _combine(
            {id(layer.embeddings): embedding_terms(idx, g, layer.input_dim)}, variables
        )


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
            h = ops.concatenate([_rows(c.tensors["h"], width) for c in projections], axis=1)
            gl = ops.concatenate([_rows(c.grads["z"], vocab) for c in projections], axis=1)
            key = tuple(id(c.tensors["h"]) for c in projections)
            weighted = _weighted(projections, "z")
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
        return _combine(parts, variables)


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
            return _combine({}, variables)
        rows, width = table.shape
        idx = ops.concatenate([c.tensors["idx"] for c in calls], axis=1)
        g = ops.concatenate([_rows(c.grads["z"], width) for c in calls], axis=1)
        distinct = len(calls) == 1 and calls[0].static["distinct"]
        return _combine({id(table): embedding_terms(idx, g, rows, distinct=distinct)}, variables)


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
        parts = {id(v): _vector_terms(per_example[id(v)]) for v in trainable}
        return _combine(parts, variables)


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
        parts = {id(v): _vector_terms(p) for v, p in zip(trainable, per_example)}
        return _combine(parts, variables)


def _is_float(t):
    return "float" in keras.backend.standardize_dtype(t.dtype)


def _batched(t, batch_size):
    shape = t.shape
    return len(shape) >= 1 and shape[0] == batch_size


# ------------------------------------------------------------------------ registry

#: keras-hub classes, by module and name, resolved once keras_hub is imported.
_KERAS_HUB = {
    "PositionEmbeddingRule": [
        ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding"),
    ],
    "AffineNormRule": [
        ("keras_hub.src.layers.modeling.rms_normalization", "RMSNormalization"),
        ("keras_hub.src.models.gemma.rms_normalization", "RMSNormalization"),
        ("keras_hub.src.models.gemma3.gemma3_layers", "RMSNormalization"),
        ("keras_hub.src.models.llama.llama_layernorm", "LlamaLayerNorm"),
        ("keras_hub.src.models.mistral.mistral_layer_norm", "MistralLayerNormalization"),
        ("keras_hub.src.models.mixtral.mixtral_layer_norm", "MixtralLayerNormalization"),
        ("keras_hub.src.models.qwen.qwen_layernorm", "QwenLayerNorm"),
        ("keras_hub.src.models.qwen3.qwen3_layernorm", "Qwen3LayerNorm"),
        ("keras_hub.src.models.phi3.phi3_layernorm", "Phi3LayerNorm"),
        ("keras_hub.src.models.t5.t5_layer_norm", "T5LayerNorm"),
    ],
}

# Most specific first: ReversibleEmbedding is an Embedding.
RULES = [
    ReversibleEmbeddingRule(),
    EmbeddingRule(),
    EinsumDenseRule(),
    DenseRule(),
    ConvRule(),
    PositionEmbeddingRule(),
    AffineNormRule(),
]
PER_EXAMPLE = PerExampleRule()


def _keras_hub_classes(rule):
    if "keras_hub" not in sys.modules:  # no keras-hub layer can be in the model
        return ()
    import importlib

    found = []
    for module, name in _KERAS_HUB.get(type(rule).__name__, []):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def rule_for(layer):
    """The rule covering ``layer``'s class (by ``isinstance``), or ``None``."""
    for rule in RULES:
        if isinstance(layer, rule.classes + _keras_hub_classes(rule)):
            return rule
    return None


def covered_classes():
    """Names of the layer classes ghost clipping covers, for messages."""
    names = []
    for rule in RULES:
        names += [c.__name__ for c in rule.classes + _keras_hub_classes(rule)]
    return names
