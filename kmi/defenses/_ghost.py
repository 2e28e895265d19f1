"""Ghost clipping: per-example gradient norms without per-example gradients of the model.

One ordinary forward and backward pass of the batch yields, for every layer, its
input ``a_i`` and the gradient ``g_i`` of the loss with respect to its output, for
every example ``i`` at once (the gradient of the summed loss with respect to
``z_i`` is example ``i``'s own). A layer's per-example weight gradient is a
function of these alone, so each example's gradient norm, and the sum of the
clipped gradients, follow without forming the per-example gradients of the whole
model (Goodfellow 2015; Li et al. 2022; Bu et al. 2023). How each kind of layer
does it is a *rule* (:mod:`kmi.defenses._ghost_rules`).

:func:`plan_ghost` decides, per layer, before training:

- a layer whose class has a rule (``Dense``, ``EinsumDense``, convolutions,
  embeddings, normalisations, keras-hub's ``ReversibleEmbedding`` and
  ``PositionEmbedding``) is handled by it;
- any other layer owning trainable variables is recomputed alone, per example,
  for the gradients of its own variables (:class:`~kmi.defenses._ghost_recompute.PerExampleRule`);
  the rest of the model stays on the ghost route ("mixed");
- a layer that calls its sublayers in a loop or on a reshaped batch (``RNN``,
  ``Bidirectional``, ``TimeDistributed``) is handled as one such unit.

Only what breaks per-example gradients of a single layer sends the whole model to
the vectorised route: a loss that is not a mean over the batch, a weight or
activity regularizer, a custom ``compute_loss``, or a layer that is not covered and
draws random numbers (its per-example recomputation would draw other ones).
"""

from __future__ import annotations

import keras
from keras import ops

from kmi import backend as kmi_backend
from kmi.defenses._ghost_base import Call, Context, own_variables
from kmi.defenses._ghost_rules import PER_EXAMPLE, covered_classes, rule_for

#: Layers that call their sublayers in a loop or on a reshaped batch: never tapped inside.
_CONTAINERS = (keras.layers.RNN, keras.layers.Wrapper)
_SEED_STATE_NAME = "seed_generator_state"


class _Entry:
    """A tapped layer: its rule and the variables the rule computes gradients for."""

    def __init__(self, layer, rule, variables):
        self.layer = layer
        self.rule = rule
        self.variables = variables


class GhostPlan:
    """How ghost clipping treats each layer of a model (see :func:`plan_ghost`).

    Attributes
    ----------
    entries : list
        Tapped layers with their rules, in the order they were found.
    slots : list of (int, int)
        For each of ``model.trainable_variables``: the entry and the position
        of the variable in that entry's variables.
    uncovered : list of keras.layers.Layer
        Layers without a rule, whose own variables get per-example gradients.
    """

    def __init__(self, entries, slots, uncovered):
        self.entries = entries
        self.slots = slots
        self.uncovered = uncovered

    @property
    def reason(self):
        """Which layers are not covered (a message), or ``None`` if all are."""
        if not self.uncovered:
            return None
        names = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in self.uncovered)
        return (
            f"no ghost-clipping rule for {names}; their own variables get per-example "
            f"gradients, every other layer is ghost-clipped (rules exist for "
            f"{', '.join(sorted(set(covered_classes())))})"
        )


def _parents(model):
    parents = {}

    def walk(layer):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if id(child) not in parents:
                parents[id(child)] = layer
                walk(child)

    walk(model)
    return parents


def _container(layer, parents, model):
    """The outermost RNN/wrapper around ``layer`` (or ``layer`` itself), else None."""
    found = layer if isinstance(layer, _CONTAINERS) else None
    parent = parents.get(id(layer))
    while parent is not None and parent is not model:
        if isinstance(parent, _CONTAINERS):
            found = parent
        parent = parents.get(id(parent))
    return found


#: Attributes that switch a random layer off when all are 0 (Dropout, RNN cells, noise).
_RATES = ("rate", "dropout", "recurrent_dropout", "stddev")


def _random_sublayer(unit):
    """A layer in ``unit`` that draws random numbers in training, or None.

    A layer holding a SeedGenerator draws none when its rates (``rate``,
    ``dropout``, ``recurrent_dropout``, ``stddev``) are all 0, as an ``LSTM``
    without dropout.
    """
    for layer in [unit, *unit._flatten_layers(include_self=False)]:
        seeds = [v for v in layer.non_trainable_variables if v.path.endswith(_SEED_STATE_NAME)]
        nested = {
            id(v) for sub in layer._flatten_layers(include_self=False) for v in sub.variables
        }
        if not [v for v in seeds if id(v) not in nested]:
            continue
        rates = [getattr(layer, name) for name in _RATES if hasattr(layer, name)]
        if not rates or any(r for r in rates):
            return layer
    return None


def _loss_problem(model):
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
    return None


def _analyse(model):
    """``(plan, problem)``: a plan, or why the model needs the vectorised route."""
    problem = _loss_problem(model)
    if problem:
        return None, problem
    layers = list(model._flatten_layers(include_self=False))
    for layer in layers:
        for variable in layer.weights:
            if getattr(variable, "regularizer", None) is not None:
                return None, f"layer {layer.name!r} has a weight regularizer"
        if getattr(layer, "activity_regularizer", None) is not None:
            return None, (
                f"layer {layer.name!r} has an activity regularizer (summed over the batch)"
            )
    owner = {}
    for layer in layers:
        for variable in own_variables(layer):
            owner[id(variable)] = layer
    parents = _parents(model)
    entries, index_of, slots, uncovered = [], {}, [], []

    def entry(layer, rule, variables):
        if id(layer) not in index_of:
            index_of[id(layer)] = len(entries)
            entries.append(_Entry(layer, rule, variables))
        return index_of[id(layer)]

    for variable in model.trainable_variables:
        layer = owner.get(id(variable))
        if layer is None:
            return None, (
                f"the trainable variable {variable.path!r} belongs to the model itself, "
                "not to a layer"
            )
        unit = _container(layer, parents, model)
        rule = None if unit is not None else rule_for(layer)
        if rule is not None and rule.problem(layer) is None:
            known = {id(v) for v in rule.variables(layer)}
            if all(id(v) in known for v in own_variables(layer) if v.trainable):
                e = entry(layer, rule, rule.variables(layer))
                slots.append((e, [id(v) for v in entries[e].variables].index(id(variable))))
                continue
        unit = unit or layer
        if id(unit) not in index_of:
            random = _random_sublayer(unit)
            if random is not None:
                return None, (
                    f"layer {unit.name!r} ({type(unit).__name__}) has no ghost-clipping rule "
                    f"and draws random numbers in training ({random.name!r}, e.g. dropout), "
                    "which its per-example recomputation could not reproduce"
                )
            owned = {id(v) for v in unit.trainable_variables}
            variables = [v for v in model.trainable_variables if id(v) in owned]
            entry(unit, PER_EXAMPLE, variables)
            uncovered.append(unit)
        e = index_of[id(unit)]
        slots.append((e, [id(v) for v in entries[e].variables].index(id(variable))))
    return GhostPlan(entries, slots, uncovered), None


def ghost_unsupported(model):
    """Why ghost clipping cannot train ``model`` at all (a message), or ``None``.

    A model whose layers are not all covered by a rule can still be trained by
    ghost clipping mixed with per-layer per-example gradients: see
    :attr:`GhostPlan.reason` for which layers those are.
    """
    return _analyse(model)[1]


def plan_ghost(model):
    """The :class:`GhostPlan` for ``model``.

    Raises
    ------
    ValueError
        Saying why the model cannot be ghost-clipped at all (see :func:`ghost_unsupported`).
    """
    plan, problem = _analyse(model)
    if problem:
        raise ValueError(problem)
    return plan


class _Tapping:
    """Route the planned layers' calls through their rules while a forward pass runs."""

    def __init__(self, entries, tap):
        self.entries = entries
        self.tap = tap
        self.calls = {}
        self.tapped = {}  # key -> the tapped tensor, to find the model's outputs among them

    def __enter__(self):
        self._saved = []
        for index, entry in enumerate(self.entries):
            layer = entry.layer
            saved = layer.__dict__.get("call")
            self._saved.append(saved)
            original = saved if saved is not None else type(layer).call.__get__(layer)
            layer.call = self._wrapped(index, entry, original)
        return self

    def __exit__(self, *exc):
        for entry, saved in zip(self.entries, self._saved):
            if saved is None:
                del entry.layer.call
            else:
                entry.layer.call = saved
        return False

    def _wrapped(self, index, entry, original):
        def call(*args, **kwargs):
            calls = self.calls.setdefault(index, [])
            record = Call()
            record.static["taps"] = []
            key = (index, len(calls))
            calls.append(record)

            def tap(name, z):
                record.static["taps"].append(name)
                z = self.tap((*key, name), z)
                self.tapped[(*key, name)] = z
                return z

            return entry.rule.forward(entry.layer, original, tap, record, args, kwargs)

        return call

    def tensors(self):
        """What the calls recorded, as a structure of tensors (returned through autodiff)."""
        return {index: [c.tensors for c in calls] for index, calls in self.calls.items()}


def _output_taps(tapped, y_pred):
    """The keys of the taps whose tensor is the model's only output.

    The only output of a model, without a Keras mask, is read by nothing but the
    compiled loss (the caller rules out ``add_loss`` terms), so its gradient can be
    formed again from ``y_pred`` once the clip factors are known
    (:func:`_weighted_output_grad`) instead of being held through the backward
    pass. One of several outputs may also feed another layer, whose part of its
    gradient the loss alone would miss.
    """
    flat = keras.tree.flatten(y_pred)
    if len(flat) != 1 or getattr(flat[0], "_keras_mask", None) is not None:
        return set()
    return {key for key, z in tapped.items() if z is flat[0]}


def _weighted_output_grad(model, x, y, y_pred, sample_weight, mapping, n):
    """``fn(factors)``: each example's gradient of the only output times its factor.

    The gradient of the compiled loss with respect to the model's output, formed
    anew from ``y_pred`` when the clip factors are known: it costs an elementwise
    pass over the predictions, where holding the gradient of a vocabulary-wide
    output through the backward pass costs memory the size of the logits.
    """

    def loss(prediction):
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            value = model.compute_loss(
                x=x, y=y, y_pred=keras.tree.pack_sequence_as(y_pred, [prediction]),
                sample_weight=sample_weight, training=True,
            )  # fmt: skip
        return value, ()

    def weighted(factors):
        (prediction,) = keras.tree.flatten(y_pred)
        grad = kmi_backend.value_and_grad_with_aux(loss, prediction)[2]
        grad = ops.cast(grad, factors.dtype) * n
        return grad * ops.reshape(factors, (-1,) + (1,) * (len(grad.shape) - 1))

    return weighted


def ghost_norms(model, plan, trainable, non_trainable, x, y, sample_weight):
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
    # compute_loss updates the per-output loss trackers: let it, on throw-away values
    # (the train step updates the real ones once, from the batch)
    scratch = [(v, ops.zeros(v.shape, v.dtype)) for v in model.metrics_variables]
    batch_size = ops.shape(next(t for t in keras.tree.flatten(x) if t is not None))[0]
    last = {}

    def fn(tap):
        tapping = _Tapping(plan.entries, tap)
        last["tapping"] = tapping
        with (
            tapping,
            keras.StatelessScope(state_mapping=mapping + scratch, collect_losses=True) as scope,
        ):
            y_pred = model(x, **call_kwargs)
            loss = model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
        new_values = []
        for ref, value in zip(model.non_trainable_variables, non_trainable):
            new = scope.get_current_value(ref)
            new_values.append(value if new is None else new)
        # (an add_loss term might read an output too: then its gradient is held)
        last["outputs"] = set() if scope.losses else _output_taps(tapping.tapped, y_pred)
        return loss, (y_pred, new_values, tapping.tensors())

    loss, (y_pred, new_non_trainable, tensors), tap_grads = kmi_backend.value_and_tap_grads(fn)
    # The batch loss is the mean of the examples' losses: scale the taps' gradients
    # by the batch size to get each example's own.
    n = ops.cast(batch_size, loss.dtype)
    ctx = Context(batch_size, mapping)
    weighted_output_grad = _weighted_output_grad(
        model, x, y, y_pred, sample_weight, mapping + scratch, n
    )
    squares, summers = [], []
    for index, entry in enumerate(plan.entries):
        calls = last["tapping"].calls.get(index, [])
        for k, (call, recorded) in enumerate(zip(calls, tensors.get(index, []))):
            call.tensors = recorded
            call.grads = {
                name: ops.cast(tap_grads[(index, k, name)], loss.dtype) * n
                for name in call.static["taps"]
            }
            call.weighted_grads = {
                name: weighted_output_grad
                for name in call.static["taps"]
                if (index, k, name) in last["outputs"]
            }
        if not calls:
            summers.append(None)
            continue
        sq, summer = entry.rule.terms(entry.layer, calls, entry.variables, ctx)
        if sq is not None:
            squares.append(sq)
        summers.append(summer)
    norms = ops.sqrt(ops.sum(ops.stack(squares, axis=0), axis=0))

    def clipped_sum(factors):
        per_entry = [None if s is None else s(factors) for s in summers]
        summed = []
        for (index, position), value in zip(plan.slots, trainable):
            grads = per_entry[index]
            grad = None if grads is None else grads[position]
            summed.append(ops.zeros_like(value) if grad is None else ops.cast(grad, value.dtype))
        return summed

    return norms, clipped_sum, loss * n, y_pred, new_non_trainable
