"""Ghost clipping gives each example's gradient norm and the clipped sum, layer by layer.

The reference is the plainest one there is: each example's gradient from its own
forward and backward pass, in a Python loop.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from kmi.backend import jit, value_and_grad_with_aux
from kmi.defenses import DPSGD, _ghost, _ghost_base, _ghost_linear
from kmi.defenses._ghost import ghost_norms, ghost_unsupported, plan_ghost

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
N = 8
JAX = keras.backend.backend() == "jax"


def _compiled(model, loss=LOSS):
    model.compile(keras.optimizers.SGD(0.1), loss)
    return model


@keras.saving.register_keras_serializable(package="kmi_tests")
class Scale(keras.layers.Layer):
    """A layer no rule knows: ``x * alpha``."""

    def build(self, input_shape):
        self.alpha = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.alpha


def _sequence(rng, steps=5, width=6):
    return rng.normal(size=(N, steps, width)).astype("float32")


def _head(h, classes=3):
    if len(h.shape) > 2:
        h = (
            keras.layers.GlobalAveragePooling1D()(h)
            if len(h.shape) == 3
            else keras.layers.Flatten()(h)
        )
    return keras.layers.Dense(classes)(h)


def _functional(shape, body, rng, data=None):
    inp = keras.Input(shape)
    model = keras.Model(inp, _head(body(inp)))
    x = data if data is not None else rng.normal(size=(N, *shape)).astype("float32")
    return model, x, np.arange(N) % 3


def _transformer(rng):
    def body(x):
        h = keras.layers.LayerNormalization()(x)
        h = keras.layers.MultiHeadAttention(2, 4)(h, h)
        h = keras.layers.LayerNormalization(axis=[1, 2])(h)
        return keras.layers.EinsumDense("abc,cde->abde", (5, 2, 3), bias_axes="de")(h)

    return _functional((5, 6), body, rng)


def _einsum(rng):
    def body(x):
        h = keras.layers.EinsumDense("...b,bc->...c", 5, bias_axes="c", activation="tanh")(x)
        h = keras.layers.EinsumDense("abc,cd->abd", (5, 4))(h)  # no bias
        h = keras.layers.EinsumDense("abc,bcd->ad", 3, bias_axes="d")(h)  # contracts positions
        return h

    return _functional((5, 6), body, rng)


def _norms(rng):
    def body(x):
        h = keras.layers.GroupNormalization(groups=2)(x)
        h = keras.layers.RMSNormalization()(h)
        h = keras.layers.LayerNormalization(axis=-1, scale=False)(h)
        h = keras.layers.LayerNormalization(center=False)(h)
        return keras.layers.Dense(4, activation="tanh")(h)

    return _functional((5, 6), body, rng)


def _keras_hub_norms(rng):
    from keras_hub.src.models.gemma.rms_normalization import RMSNormalization
    from keras_hub.src.models.llama.llama_layernorm import LlamaLayerNorm

    def body(x):
        h = keras.layers.Dense(6)(x)
        h = RMSNormalization()(h)  # (1 + scale)
        return LlamaLayerNorm()(h)  # scale

    return _functional((5, 6), body, rng)


def _convolutions(rng):
    def body(x):
        h = keras.layers.Conv1D(4, 2, dilation_rate=2, padding="causal", activation="tanh")(x)
        h = keras.layers.Conv1D(4, 3, groups=2, padding="same", activation="tanh")(h)
        return keras.layers.Conv1D(3, 2, strides=2)(h)

    return _functional((9, 6), body, rng)


def _conv2d(rng):
    model = keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            keras.layers.Conv2D(4, 4, strides=2, padding="same", activation="tanh"),
            keras.layers.MaxPooling2D(2, 1),
            keras.layers.Conv2D(
                4, 3, dilation_rate=2, groups=2, padding="same", activation="relu"
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    return model, rng.normal(size=(N, 9, 9, 2)).astype("float32"), np.arange(N) % 3


def _channels_first(rng):
    model = keras.Sequential(
        [
            keras.Input((2, 9, 9)),
            keras.layers.Conv2D(4, 3, data_format="channels_first", dilation_rate=2),
            keras.layers.Conv2D(4, 3, groups=2, data_format="channels_first", padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    return model, rng.normal(size=(N, 2, 9, 9)).astype("float32"), np.arange(N) % 3


def _embedding(rng):
    tokens = rng.integers(0, 9, size=(N, 6)).astype("int32")
    tokens[:, 4:] = 0
    tokens[:, 1] = tokens[:, 2]  # a row used twice in one example
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(9, 4, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    return model, tokens, np.arange(N) % 3


def _shared_layer(rng):
    inp = keras.Input((5,))
    shared = keras.layers.Dense(5, activation="tanh")
    model = keras.Model(inp, keras.layers.Dense(3)(shared(shared(inp))))
    return model, rng.normal(size=(N, 5)).astype("float32"), np.arange(N) % 3


def _frozen_kernel(rng):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(3)])
    model.layers[0].kernel.trainable = False
    return model, rng.normal(size=(N, 5)).astype("float32"), np.arange(N) % 3


def _bert(rng):
    import keras_hub

    vocab, length = 40, 6
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocab, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=length, dropout=0.0,
    )  # fmt: skip
    model = keras.Model(
        backbone.input, keras.layers.Dense(3)(backbone(backbone.input)["pooled_output"])
    )
    x = {
        "token_ids": rng.integers(0, vocab, (N, length)).astype("int32"),
        "segment_ids": rng.integers(0, 2, (N, length)).astype("int32"),
        "padding_mask": np.arange(length)[None].repeat(N, 0) < 4,
    }
    x["token_ids"][:, 2] = x["token_ids"][:, 1]
    return model, x, np.arange(N) % 3


def _gpt2(rng):
    import keras_hub

    vocab, length = 30, 6
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocab, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=length, dropout=0.0,
    )  # fmt: skip
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    x = {
        "token_ids": rng.integers(0, vocab, (N, length)).astype("int32"),
        "padding_mask": np.ones((N, length), bool),
    }
    x["token_ids"][:, 3] = x["token_ids"][:, 1]
    # next-token targets: the tied table is both looked up and projected onto
    return model, x, np.roll(x["token_ids"], -1, axis=1)


def _untied(rng):
    token = keras.layers.ReversibleEmbedding(20, 6, tie_weights=False)
    inp = keras.Input((5,), dtype="int32")
    logits = token(keras.layers.Dense(6, activation="tanh")(token(inp)), reverse=True)
    model = keras.Model(inp, logits)
    x = rng.integers(0, 20, (N, 5)).astype("int32")
    return model, x, rng.integers(0, 20, (N, 5)).astype("int32")


def _mixed(rng, unroll=True):
    # unrolled (a Python loop over the 5 steps) except where a test says otherwise:
    # alone, a test of it took 7 s on TensorFlow with the GRU's while loop, 2.5 s unrolled
    model = keras.Sequential(
        [
            keras.Input((5, 6)),
            keras.layers.Dense(6),
            Scale(),
            keras.layers.GRU(4, unroll=unroll),
            keras.layers.Dense(3),
        ]
    )
    return model, _sequence(rng), np.arange(N) % 3


def _scaled(rng):
    model = keras.Sequential(
        [keras.Input((5, 6)), keras.layers.Dense(6), Scale(), keras.layers.Flatten(),
         keras.layers.Dense(3)]
    )  # fmt: skip
    return model, _sequence(rng), np.arange(N) % 3


def _lora(rng):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6), keras.layers.Dense(3)])
    model.layers[0].enable_lora(2)
    model.layers[0].lora_kernel_b.assign(rng.normal(size=(2, 6)).astype("float32"))
    return model, rng.normal(size=(N, 5)).astype("float32"), np.arange(N) % 3


MODELS = {
    "transformer": (_transformer, []),
    "einsum": (_einsum, []),
    "norms": (_norms, []),
    "keras_hub_norms": (_keras_hub_norms, []),
    "conv1d": (_convolutions, []),
    "conv2d": (_conv2d, []),
    "channels_first": (_channels_first, []),
    "embedding": (_embedding, []),
    "shared_layer": (_shared_layer, []),
    "frozen_kernel": (_frozen_kernel, []),
    "bert": (_bert, []),
    "gpt2": (_gpt2, []),
    "untied": (_untied, []),
    "mixed": (_mixed, ["Scale", "GRU"]),
    "scaled": (_scaled, ["Scale"]),
    "lora": (_lora, ["Dense"]),
}


def _loop_reference(model, x, y, weight):
    """Each example's gradient from its own forward and backward pass.

    One compiled function (``kmi.backend.jit``) is called once per example: run op
    by op, JAX compiled every operation of the model again (348 compilations, 12 s
    for the transformer).
    """
    variables = model.trainable_variables

    def grads_of_one(params, xi, yi, wi):
        def loss(params):
            mapping = list(zip(variables, params)) + [
                (v, v.value) for v in model.non_trainable_variables
            ]
            with keras.StatelessScope(state_mapping=mapping):
                y_pred = model(xi, training=True)
                value = model.compute_loss(
                    x=xi, y=yi, y_pred=y_pred, sample_weight=wi, training=True
                )
            return value, ()

        return value_and_grad_with_aux(loss, params)[2]

    compiled = jit(grads_of_one)
    params = [ops.convert_to_tensor(v.value) for v in variables]
    per_example = []
    for i in range(len(weight)):
        xi = keras.tree.map_structure(lambda t, i=i: ops.convert_to_tensor(t[i : i + 1]), x)
        grads = compiled(params, xi, ops.convert_to_tensor(y[i : i + 1]), weight[i : i + 1])
        per_example.append([ops.convert_to_numpy(g) for g in grads])
    return [np.stack([g[j] for g in per_example]) for j in range(len(variables))]


def _count_formed_output_grads(monkeypatch):
    """``[calls]`` per ghost_norms call: how often the output gradient was formed again."""
    counts = []
    make = _ghost._weighted_output_grad

    def counting(*args):
        weighted = make(*args)
        index = len(counts)
        counts.append(0)

        def count(factors):
            counts[index] += 1
            return weighted(factors)

        return count

    monkeypatch.setattr(_ghost, "_weighted_output_grad", counting)
    return counts


@pytest.mark.parametrize("route", ["materialize", "ghost_norm"])
@pytest.mark.parametrize("name", list(MODELS))
def test_norms_and_clipped_sum_match_a_per_example_loop(name, route, monkeypatch):
    if name == "channels_first" and not JAX:
        pytest.skip("TensorFlow's CPU convolutions do not run channels_first")
    # the ghost norm is the route of layers too large to form per-example gradients
    for module, decision in ((_ghost_base, "_materialize"), (_ghost_linear, "_materialize_conv")):
        monkeypatch.setattr(module, decision, lambda *a: route == "materialize")
    build, uncovered = MODELS[name]
    model, x, y = build(np.random.default_rng(0))
    _compiled(model)
    weight = np.ones(y.shape, "float32")
    weight[3] = 0.0  # a padding example: contributes nothing
    weight[5] = 2.0
    reference = _loop_reference(model, x, y, weight)
    norms = np.sqrt(sum((g.reshape(N, -1) ** 2).sum(1) for g in reference))
    clip = float(np.median(norms[norms > 0])) * 0.8
    keep = weight.reshape(N, -1).any(axis=1)
    factors = np.minimum(1.0, clip / np.maximum(norms, 1e-12)) * keep
    assert (factors[keep] < 1).any()  # clipping is active, the test is not vacuous
    expected = [np.tensordot(factors, g, axes=(0, 0)) for g in reference]

    plan = plan_ghost(model)
    assert sorted(type(layer).__name__ for layer in plan.uncovered) == sorted(uncovered)
    # the output layer's gradient is formed again from the predictions, not held
    formed_again = _count_formed_output_grads(monkeypatch)
    trainable = [ops.convert_to_tensor(v.value) for v in model.trainable_variables]
    non_trainable = [ops.convert_to_tensor(v.value) for v in model.non_trainable_variables]

    def norms_and_sum(trainable, non_trainable, x, y, weight, factors):
        got, clipped_sum, loss_sum, _, _ = ghost_norms(
            model, plan, trainable, non_trainable, x, y, weight
        )
        return got, clipped_sum(factors), loss_sum

    # compiled, as in a training step (op by op, JAX compiled each operation again)
    got, summed, loss_sum = jit(norms_and_sum)(
        trainable, non_trainable, keras.tree.map_structure(ops.convert_to_tensor, x),
        ops.convert_to_tensor(y), ops.convert_to_tensor(weight),
        ops.convert_to_tensor(factors.astype("float32")),
    )  # fmt: skip
    np.testing.assert_allclose(ops.convert_to_numpy(got), norms, rtol=1e-5, atol=1e-6)
    overall = max(np.abs(want).max() for want in expected)
    for variable, value, want in zip(model.trainable_variables, summed, expected):
        # a gradient that is 0 in exact arithmetic (self-attention's key bias) is
        # compared at the scale of the others
        scale = max(np.abs(want).max(), 1e-2 * overall)
        np.testing.assert_allclose(
            ops.convert_to_numpy(value) / scale, want / scale, atol=1e-5, err_msg=variable.path
        )
    batch_loss = model.compute_loss(
        x=x, y=y, y_pred=model(x), sample_weight=ops.convert_to_tensor(weight)
    )
    np.testing.assert_allclose(float(loss_sum), float(batch_loss) * N, rtol=1e-5)
    if route == "ghost_norm":  # (materialised per-example gradients need no g later)
        assert formed_again == [1]  # the output layer's clipped sum used it, once


@pytest.mark.parametrize("name, route", [("transformer", "ghost"), ("scaled", "mixed")])
def test_a_dp_fit_through_each_route_equals_the_vectorized_route(name, route):
    model_a, x, y = MODELS[name][0](np.random.default_rng(0))
    model_b = keras.models.clone_model(model_a)
    model_b.set_weights(model_a.get_weights())
    weights = []
    for model, clipping in ((model_a, "auto"), (model_b, "vectorized")):
        _compiled(model)
        dp = DPSGD(0.3, 0.0, num_examples=N, seed=4, clipping=clipping)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.fit(x, y, batch_size=4, epochs=2, callbacks=[dp], shuffle=False, verbose=0)
        assert dp.clipping_ == (route if clipping == "auto" else "vectorized")
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@keras.saving.register_keras_serializable(package="kmi_tests")
class Penalty(keras.layers.Layer):
    """Adds ``mean(x^2)`` to the loss and returns ``x`` itself."""

    def call(self, x):
        self.add_loss(ops.mean(ops.square(x)))
        return x


def _penalized_output():
    inp = keras.Input((5,))
    model = _compiled(keras.Model(inp, Penalty()(keras.layers.Dense(3)(inp))))
    return model, np.arange(N) % 3


def _output_read_by_a_layer():
    inp = keras.Input((5,))
    hidden = keras.layers.Dense(4, name="hidden")(inp)
    logits = keras.layers.Dense(3, name="logits")(hidden)
    model = keras.Model(inp, {"hidden": hidden, "logits": logits})
    model.compile(keras.optimizers.SGD(0.1), {"hidden": "mse", "logits": LOSS})
    rng = np.random.default_rng(1)
    return model, {"hidden": rng.normal(size=(N, 4)).astype("float32"), "logits": np.arange(N) % 3}


@pytest.mark.parametrize("build", [_penalized_output, _output_read_by_a_layer])
def test_an_output_read_elsewhere_keeps_its_own_gradient(build, monkeypatch):
    # the output's gradient is not formed again from the compiled loss alone when an
    # add_loss term or another layer reads the output too
    model, y = build()
    x = np.random.default_rng(0).normal(size=(N, 5)).astype("float32")
    formed_again = _count_formed_output_grads(monkeypatch)
    params = [ops.convert_to_tensor(v.value) for v in model.trainable_variables]
    _, clipped_sum, _, _, _ = ghost_norms(
        model, plan_ghost(model), params, [], ops.convert_to_tensor(x),
        keras.tree.map_structure(ops.convert_to_tensor, y), None,
    )  # fmt: skip

    def loss(values):
        mapping = list(zip(model.trainable_variables, values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            return model.compute_loss(x=x, y=y, y_pred=model(x), training=True), ()

    _, _, grads = value_and_grad_with_aux(loss, params)
    for got, want in zip(clipped_sum(ops.ones((N,))), grads):
        np.testing.assert_allclose(
            ops.convert_to_numpy(got), N * ops.convert_to_numpy(want), rtol=1e-5, atol=1e-6
        )
    assert formed_again == [0]


def test_uncovered_layers_are_named_and_ghost_refuses_them():
    # the GRU's while loop (not unrolled): its per-example gradients in a real DP fit
    model, x, y = _mixed(np.random.default_rng(0), unroll=False)
    _compiled(model)
    dp = DPSGD(1.0, 1.0, num_examples=N, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, batch_size=4, callbacks=[dp], verbose=0)
    assert dp.clipping_ == "mixed"
    assert "(Scale)" in dp.clipping_reason_ and "(GRU)" in dp.clipping_reason_
    with pytest.raises(ValueError, match=r"clipping='ghost'.*\(Scale\)"):
        model.fit(x, y, callbacks=[DPSGD(1.0, 1.0, num_examples=N, clipping="ghost")], verbose=0)
    with pytest.raises(ValueError, match="must be one of"):
        model.fit(x, y, callbacks=[DPSGD(1.0, 1.0, num_examples=N, clipping="x")], verbose=0)


@pytest.mark.parametrize(
    "change, words",
    [
        ("regularizer", "weight regularizer"),
        ("reduction", "reduction='sum'"),
        ("dropout_rnn", "'gru' (GRU) has no ghost-clipping rule and draws random numbers"),
    ],
)
def test_what_sends_the_whole_model_to_the_vectorized_route_is_named(change, words):
    dense = {"kernel_regularizer": "l2"} if change == "regularizer" else {}
    model = keras.Sequential(
        [
            keras.Input((5, 6)),
            keras.layers.GRU(
                4, dropout=0.5 if change == "dropout_rnn" else 0.0, unroll=True, name="gru"
            ),
            keras.layers.Dense(2, **dense),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    _compiled(model, loss if change == "reduction" else LOSS)
    assert words in ghost_unsupported(model)
    dp = DPSGD(1.0, 1.0, num_examples=N, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(_sequence(np.random.default_rng(0)), np.arange(N) % 2, callbacks=[dp], verbose=0)
    assert dp.clipping_ == "vectorized" and words in dp.clipping_reason_


def test_rules_match_layers_by_isinstance_so_subclasses_are_covered():
    """A third-party subclass of a covered layer gets its parent's rule."""
    import keras_hub

    from kmi.defenses._ghost_rules import rule_for

    class TiedEmbedding(keras_hub.layers.ReversibleEmbedding):
        pass

    class ScaledDense(keras.layers.Dense):
        pass

    cases = {
        keras_hub.layers.ReversibleEmbedding(10, 4): "ReversibleEmbeddingRule",
        TiedEmbedding(10, 4): "ReversibleEmbeddingRule",  # not the plain Embedding rule
        ScaledDense(3): "DenseRule",
        keras_hub.layers.PositionEmbedding(8): "PositionEmbeddingRule",
        keras.layers.Dropout(0.1): "NoneType",
    }
    assert {type(layer).__name__: type(rule_for(layer)).__name__ for layer in cases} == {
        type(layer).__name__: rule for layer, rule in cases.items()
    }
