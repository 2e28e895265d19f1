import warnings

import keras
import numpy as np
import pytest

from kmi.defenses import (
    DPSGD,
    PoissonSampler,
    PrivacyBudget,
    check_dp_compatible,
    compute_epsilon,
    make_private,
    per_example_gradients,
)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=64, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    return x, y


def _mlp(d=6, dropout=0.0, lr=0.1):
    layers = [keras.Input((d,)), keras.layers.Dense(8, activation="tanh")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(3))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(lr), LOSS, metrics=["accuracy"])
    return model


def _cnn():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, strides=2, activation="tanh"),
            keras.layers.MaxPooling2D(2, 1),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    model.compile("sgd", LOSS)
    return model


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_per_example_gradients_are_clipped(kind):
    if kind == "mlp":
        model, (x, y) = _mlp(), _data(16)
    else:
        model = _cnn()
        x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32") * 3
        y = np.arange(16) % 3
    raw = per_example_gradients(model, x, y)
    clip = 0.05
    clipped = per_example_gradients(model, x, y, l2_norm_clip=clip)
    assert [g.shape for g in clipped] == [(16, *v.shape) for v in model.trainable_variables]
    raw_norms = np.sqrt(sum((g.reshape(16, -1) ** 2).sum(1) for g in raw))
    norms = np.sqrt(sum((g.reshape(16, -1) ** 2).sum(1) for g in clipped))
    assert np.all(raw_norms > clip)  # the test is not vacuous
    assert np.all(norms <= clip * (1 + 1e-5))
    np.testing.assert_allclose(norms, clip, rtol=1e-4)


def test_per_example_gradients_average_to_the_batch_gradient():
    model, (x, y) = _mlp(), _data(8)
    per_example = per_example_gradients(model, x, y)
    # one ordinary SGD step with lr=1 moves the weights by minus the mean gradient
    before = [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in model.get_weights()]
    model.compile(keras.optimizers.SGD(1.0), LOSS)
    model.train_on_batch(x, y)
    after = model.get_weights()
    for b, a, g in zip(before, after, per_example):
        np.testing.assert_allclose(b - a, g.mean(0), atol=1e-5)


def test_zero_noise_huge_clip_equals_ordinary_step():
    x, y = _data(32)
    private, plain = _mlp(), _mlp()
    plain.set_weights(private.get_weights())
    dp = DPSGD(l2_norm_clip=1e6, noise_multiplier=0.0, num_examples=32, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        h_dp = private.fit(x, y, batch_size=32, epochs=1, callbacks=[dp], verbose=0, shuffle=False)
    h = plain.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(private.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert h_dp.history["loss"][0] == pytest.approx(h.history["loss"][0], rel=1e-5)
    assert h_dp.history["accuracy"] == h.history["accuracy"]


def test_noise_has_the_requested_standard_deviation():
    # Zero inputs give zero gradients, so one SGD(lr=1) step moves each weight by
    # exactly -noise / batch_size, with std noise_multiplier * l2_norm_clip / batch.
    batch, clip, sigma = 10, 0.5, 2.0
    model = keras.Sequential([keras.Input((50,)), keras.layers.Dense(40, use_bias=False)])
    model.compile(keras.optimizers.SGD(1.0), "mse")
    w0 = model.get_weights()[0]
    dp = DPSGD(l2_norm_clip=clip, noise_multiplier=sigma, num_examples=batch, seed=123)
    model.fit(
        np.zeros((batch, 50), "float32"),
        np.zeros((batch, 40), "float32"),
        batch_size=batch,
        callbacks=[dp],
        verbose=0,
    )
    step = (model.get_weights()[0] - w0).ravel()
    expected = sigma * clip / batch
    # 2000 samples: the sample std is within 5% of the truth with overwhelming probability
    assert np.std(step) == pytest.approx(expected, rel=0.05)
    assert abs(np.mean(step)) < 4 * expected / np.sqrt(step.size)


def test_same_seed_same_run_and_epsilon_in_history():
    x, y = _data()
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        model = _mlp(dropout=0.3)
        dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, num_examples=64, seed=7)
        history = model.fit(x, y, batch_size=16, epochs=2, callbacks=[dp], verbose=0)
        runs.append((model.get_weights(), history.history))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    eps = runs[0][1]["epsilon"]
    assert len(eps) == 2 and eps[0] < eps[1]
    assert eps[1] == pytest.approx(
        compute_epsilon(1.0, sampling_rate=1 / 4, steps=8, delta=1 / 64)
    )


def test_dropout_model_trains_and_train_step_is_restored():
    x, y = _data(128)
    model = _mlp(dropout=0.5, lr=0.5)
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=0.3, num_examples=128, seed=0)
    with pytest.warns(UserWarning, match="not Poisson-sampled"):
        history = model.fit(x, y, batch_size=32, epochs=4, callbacks=[dp], verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert dp.sampling_assumption_.startswith("shuffle")
    assert "train_step" not in model.__dict__
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # an ordinary fit again


def test_zero_noise_warns_that_there_is_no_guarantee():
    x, y = _data()
    with pytest.warns(UserWarning, match="no privacy guarantee"):
        _mlp().fit(x, y, callbacks=[DPSGD(noise_multiplier=0.0, num_examples=64)], verbose=0)


@pytest.mark.parametrize("clipping", ["auto", "vectorized"])
def test_frozen_batch_normalization_is_accepted(clipping):
    # the transfer-learning recipe: a pretrained block with BatchNormalization, frozen
    x, y = _data(32)
    base = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8), keras.layers.BatchNormalization()]
    )
    norm = base.layers[-1]
    norm.moving_mean.assign(np.linspace(-1, 1, 8).astype("float32"))
    norm.moving_variance.assign(np.linspace(0.5, 2, 8).astype("float32"))
    base.trainable = False
    model = keras.Sequential([base, keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    check_dp_compatible(model)
    moving = [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in base.weights]
    dp = DPSGD(1.0, 0.5, num_examples=32, seed=0, clipping=clipping)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, batch_size=8, epochs=2, callbacks=[dp], verbose=0)
    assert dp.clipping_ == ("ghost" if clipping == "auto" else "vectorized")
    for before, after in zip(moving, base.get_weights()):
        np.testing.assert_array_equal(before, after)  # inference mode: statistics untouched


def test_batch_normalization_is_refused():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("sgd", LOSS)
    x, y = _data(16)
    with pytest.raises(ValueError, match="BatchNormalization.*freeze it.*Received: layer="):
        model.fit(x, y, callbacks=[DPSGD(noise_multiplier=1.0, num_examples=16)], verbose=0)
    with pytest.raises(ValueError, match="batch_normalization"):
        check_dp_compatible(model)


def test_custom_train_step_is_refused():
    class Custom(keras.Model):
        def train_step(self, *args):
            return super().train_step(*args)

    inputs = keras.Input((6,))
    model = Custom(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", LOSS)
    with pytest.raises(ValueError, match="compute_loss"):
        check_dp_compatible(model)


def test_loss_scale_optimizer_is_refused():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), LOSS)
    with pytest.raises(ValueError, match="loss scaling.*Received: optimizer="):
        check_dp_compatible(model)


def test_uncompiled_model_is_refused():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compile"):
        check_dp_compatible(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise_multiplier=1.0, target_epsilon=1.0, num_examples=64), "exactly one"),
        (dict(num_examples=64), "exactly one"),
        (dict(noise_multiplier=1.0), "num_examples"),
        (dict(noise_multiplier=1.0, num_examples=64, l2_norm_clip=0.0), "l2_norm_clip"),
        (dict(noise_multiplier=1.0, num_examples=64, accountant="x"), "accountant"),
        (dict(noise_multiplier=1.0, num_examples=64, sampling="poisson"), "sampling"),
        (dict(noise_multiplier=float("inf"), num_examples=64), "noise_multiplier=inf"),
        (dict(noise_multiplier=float("nan"), num_examples=64), "noise_multiplier=nan"),
        (dict(noise_multiplier=-1.0, num_examples=64), "noise_multiplier=-1.0"),
        (dict(noise_multiplier="1", num_examples=64), "noise_multiplier='1'"),
        (dict(noise_multiplier=1.0, num_examples=64, l2_norm_clip=np.inf), "l2_norm_clip=inf"),
        (dict(target_epsilon=float("inf"), num_examples=64), "target_epsilon=inf"),
        (dict(target_epsilon=-2.0, num_examples=64), "target_epsilon=-2.0"),
        (dict(noise_multiplier=1.0, delta=1.5), "delta=1.5"),
        (dict(noise_multiplier=1.0, delta=0.0), "delta=0.0"),
        (dict(noise_multiplier=1.0, num_examples=0), "num_examples=0"),
        (dict(noise_multiplier=1.0, num_examples=2.5), "num_examples=2.5"),
    ],
)
def test_callback_errors(kwargs, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        _mlp().fit(x, y, batch_size=16, callbacks=[DPSGD(**kwargs)], verbose=0)


def test_target_epsilon_calibrates_noise():
    x, y = _data()
    dp = DPSGD(target_epsilon=3.0, num_examples=64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = _mlp().fit(x, y, batch_size=16, epochs=3, callbacks=[dp], verbose=0)
    assert history.history["epsilon"][-1] <= 3.0
    assert history.history["epsilon"][-1] == pytest.approx(3.0, abs=0.05)
    assert dp.noise_multiplier_ > 0


def test_privacy_budget_stops_before_exceeding():
    x, y = _data()
    dp = DPSGD(noise_multiplier=1.0, num_examples=64, seed=0)
    budget = PrivacyBudget(target_epsilon=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _mlp().fit(x, y, batch_size=16, epochs=100, callbacks=[dp, budget], verbose=0)
    assert dp.epsilon() <= 4.0
    assert dp.epsilon(dp.steps_ + 1) > 4.0
    assert dp.steps_ == budget.max_steps_ == budget.stopped_step_
    assert dp.steps_ < 400


def test_privacy_budget_needs_dpsgd():
    x, y = _data()
    with pytest.raises(ValueError, match="DPSGD"):
        _mlp().fit(x, y, callbacks=[PrivacyBudget(1.0)], verbose=0)


def test_poisson_sampler_batches():
    x, y = _data(400)
    sampler = PoissonSampler(x, y, batch_size=40, seed=0, pad_to_multiple_of=16)
    assert len(sampler) == 10 and sampler.sampling_rate == 0.1
    sizes = []
    for i in range(len(sampler)):
        xb, yb, wb = sampler[i]
        assert len(xb) % 16 == 0 and len(xb) == len(yb) == len(wb)
        assert set(np.unique(wb)) <= {0.0, 1.0}
        sizes.append(int(wb.sum()))
    assert 25 < np.mean(sizes) < 55 and len(set(sizes)) > 1
    # deterministic under its seed
    np.testing.assert_array_equal(
        sampler[3][2], PoissonSampler(x, y, batch_size=40, seed=0, pad_to_multiple_of=16)[3][2]
    )


def test_dpsgd_with_poisson_sampler_reports_exact_epsilon():
    x, y = _data(128)
    sampler = PoissonSampler(x, y, batch_size=32, seed=0)
    dp = DPSGD(noise_multiplier=1.0, sampling=sampler, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "not Poisson" warning
        history = _mlp().fit(sampler, epochs=2, callbacks=[dp], verbose=0)
    assert dp.sampling_assumption_ == "poisson"
    expected = compute_epsilon(1.0, sampling_rate=0.25, steps=8, delta=1 / 128)
    assert history.history["epsilon"][-1] == pytest.approx(expected)


def test_padding_examples_do_not_contribute():
    # zero-weight examples (Poisson padding) must give zero gradient, even with a
    # weight regularizer whose gradient does not depend on the example
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, kernel_regularizer="l2")])
    model.compile(keras.optimizers.SGD(1.0), LOSS)
    w0 = model.get_weights()
    x, y = _data(8)
    dp = DPSGD(noise_multiplier=0.0, num_examples=8, sampling="shuffle", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, sample_weight=np.zeros(8), batch_size=8, callbacks=[dp], verbose=0)
    for a, b in zip(w0, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_make_private_accounts_across_fits():
    x, y = _data()
    model = make_private(_mlp(), noise_multiplier=1.0, num_examples=64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = model.fit(x, y, batch_size=16, verbose=0).history["epsilon"][-1]
        second = model.fit(x, y, batch_size=16, verbose=0).history["epsilon"][-1]
    assert model.dpsgd.steps_ == 8
    assert second > first


def test_fit_save_load_round_trip(tmp_path):
    x, y = _data()
    model = _mlp(dropout=0.2)
    dp = DPSGD(noise_multiplier=1.0, num_examples=64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[dp], verbose=0)
    path = tmp_path / "dp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    loaded.fit(
        x, y, batch_size=16, epochs=1, verbose=0, callbacks=[DPSGD.from_config(dp.get_config())]
    )
    config = keras.saving.serialize_keras_object(dp)
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again, DPSGD) and again.get_config() == dp.get_config()
    budget = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(PrivacyBudget(2.0, 1e-5))
    )
    assert budget.get_config() == {"target_epsilon": 2.0, "delta": 1e-5}


def test_steps_are_counted_with_steps_per_execution():
    x, y = _data()
    model = _mlp()
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=2,
    )
    dp = DPSGD(noise_multiplier=1.0, num_examples=64, seed=0)
    budget = PrivacyBudget(target_epsilon=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, batch_size=8, epochs=3, callbacks=[dp], verbose=0)
        assert dp.steps_ == 24
        model.fit(x, y, batch_size=8, epochs=100, callbacks=[dp, budget], verbose=0)
    assert dp.steps_ <= budget.max_steps_ < dp.steps_ + 2
    assert dp.epsilon() <= 4.0


def test_nested_batch_normalization_is_refused():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.BatchNormalization(name="bn")])
    model = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(2)])
    model.compile("sgd", LOSS)
    with pytest.raises(ValueError, match="'bn'"):
        check_dp_compatible(model)


def test_dropout_masks_differ_between_examples():
    model = _mlp(dropout=0.5)
    x = np.ones((16, 6), "float32")  # identical examples: only the masks can differ
    y = np.zeros(16, "int32")
    kernel_grads = per_example_gradients(model, x, y)[2]  # last Dense kernel, (16, 8, 3)
    kept = np.abs(kernel_grads).sum(-1) > 0  # which hidden units survived, per example
    assert len({tuple(row) for row in kept}) > 1


def _two_outputs():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    outputs = {
        "digit": keras.layers.Dense(3, name="digit")(hidden),
        "parity": keras.layers.Dense(2, name="parity")(hidden),
    }
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.SGD(0.1),
        loss={"digit": LOSS, "parity": LOSS},
        loss_weights={"digit": 1.0, "parity": 0.5},
    )
    return model


@pytest.mark.parametrize("clipping", ["ghost", "vectorized"])
def test_dict_losses_of_a_multi_output_model_are_logged(clipping):
    x, _ = _data(32)
    y = {"digit": (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0), "parity": (x[:, 2] > 0) * 1}
    model = _two_outputs()
    _two_outputs.initial = model.get_weights()
    dp = DPSGD(1e6, 0.0, num_examples=32, seed=0, clipping=clipping)  # no clipping, no noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = model.fit(x, y, batch_size=32, callbacks=[dp], shuffle=False, verbose=0)
    logged = {k: v[0] for k, v in history.history.items()}
    assert logged["digit_loss"] > 0.1 and logged["parity_loss"] > 0.1
    # without clipping or noise the step is an ordinary one: the same losses are logged
    plain = _two_outputs()
    plain.set_weights(_two_outputs.initial)
    plain.fit(x, y, batch_size=32, shuffle=False, verbose=0)
    np.testing.assert_allclose(
        [logged["digit_loss"], logged["parity_loss"], logged["loss"]],
        [plain.history.history["digit_loss"][0], plain.history.history["parity_loss"][0],
         plain.history.history["loss"][0]],
        rtol=1e-5,
    )  # fmt: skip


def test_a_second_fit_does_not_recompile(monkeypatch):
    from kmi.defenses import _dp_step

    traces = {"dp": 0}
    make_grad_fn = _dp_step.make_grad_fn

    def counting(*args, **kwargs):
        grad_fn = make_grad_fn(*args, **kwargs)

        def traced(*a, **k):
            traces["dp"] += 1  # Python runs only while the step is traced
            return grad_fn(*a, **k)

        return traced

    monkeypatch.setattr(_dp_step, "make_grad_fn", counting)
    x, y = _data(32)
    model = _mlp()
    model.fit(x, y, batch_size=8, verbose=0)
    plain_function = model.train_function
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(3):  # a new callback each time, as users write it
            model.fit(
                x, y, batch_size=8, verbose=0,
                callbacks=[DPSGD(1.0, 1.0, num_examples=32, seed=3)],
            )  # fmt: skip
            assert model.train_function is plain_function  # the model's own is back
        assert traces["dp"] == 1
        model.fit(x, y, batch_size=8, verbose=0)
        assert model.train_function is plain_function  # and a plain fit reuses it
        # another configuration is another function, and so is a recompiled model
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[DPSGD(2.0, 1.0, num_examples=32)])
        assert traces["dp"] == 2
        model.compile(keras.optimizers.SGD(0.1), LOSS)
        dp = DPSGD(1.0, 1.0, num_examples=32, seed=3)
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[dp])
        assert traces["dp"] == 3
