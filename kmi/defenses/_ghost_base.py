"""Ghost clipping's rule interface, and the algebra its rules share.

A rule (:class:`Rule`) knows one kind of layer. During the batch's ordinary forward
pass it records what the layer's weight gradients are made of (a :class:`Call`:
the layer's input ``a`` and a *tap* on its output ``z``, whose gradient ``g`` the
backward pass delivers for every example at once); from them it gives each
example's squared gradient norm and the clipped sum ``sum_i c_i grad_i`` for any
clip factors ``c``. The rules themselves are in :mod:`kmi.defenses._ghost_linear`
and :mod:`kmi.defenses._ghost_recompute`; :mod:`kmi.defenses._ghost_rules` says
which rule covers which layer.

The shared algebra: :func:`linear_terms` for a weight used as ``z = a @ W`` (each
example's gradient ``a_i^T g_i``, its squared norm formed from the per-example
product when that is small, else as ``sum (a_i a_i^T) * (g_i g_i^T)`` over
positions, the "ghost norm" of Goodfellow 2015 and Li et al. 2022, whichever costs
less, Bu et al. 2023's mixed choice; the clipped sum as one batched product
``a^T (c * g)``, Bu et al. 2023's "book-keeping"), :func:`embedding_terms` for a
table looked up by index, and :func:`vector_terms` for per-example gradients formed
outright.
"""

from __future__ import annotations

import math

from keras import ops

from kmi import backend as kmi_backend

# Per-example weight gradients of up to this many entries are formed outright.
_SMALL = 2**16


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


def by_position(t, last):
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


def weighted_output(calls, name):
    """``factors -> factors * g`` formed anew for a layer called once, whose tap
    ``name`` is a model output; else None (the tapped gradient is used)."""
    if len(calls) != 1 or name not in calls[0].weighted_grads:
        return None
    return calls[0].weighted_grads[name]


def vector_terms(per_example):
    """Squares and sums of per-example gradients formed outright, ``(n, ...)``."""
    flat = ops.reshape(per_example, (ops.shape(per_example)[0], -1))
    squares = ops.sum(ops.square(flat), axis=1)
    return squares, lambda factors: ops.tensordot(factors, per_example, axes=[[0], [0]])


def combine(parts, variables):
    """Join per-variable ``(squares, sums)`` into one rule result."""
    squares = None
    for sq, _ in parts.values():
        squares = sq if squares is None else squares + sq

    def sums(factors):
        return [parts[id(v)][1](factors) if id(v) in parts else None for v in variables]

    return squares, sums


# ---------------------------------------------------------------------- the interface


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
