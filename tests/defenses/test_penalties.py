import warnings

import keras
import numpy as np
import pytest

from kmi.defenses import (
    DPSGD,
    BiDO,
    InformationBottleneck,
    LabelSmoothingSchedule,
    NegativeLabelSmoothing,
    coco,
    freeze_until,
    hsic,
)

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _data(n=32, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (np.argmax(x[:, :c], axis=1)).astype("int32")


# ----------------------------------------------------------------- information bottleneck


def _mid_model(beta=1e-2, **kwargs):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            InformationBottleneck(units=4, beta=beta, seed=0, **kwargs),
            keras.layers.Dense(3),
        ]
    )


def test_information_bottleneck_inference_is_mu_training_samples():
    layer = InformationBottleneck(units=4, seed=0)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    a, b = _np(layer(x)), _np(layer(x))
    assert a.shape == (5, 4)
    np.testing.assert_array_equal(a, b)
    mu = _np(layer.encoder(x))[:, :4]
    np.testing.assert_allclose(a, mu, atol=1e-6)
    t1, t2 = _np(layer(x, training=True)), _np(layer(x, training=True))
    assert not np.allclose(t1, t2)
    # sigma = softplus(s - 5) is small at initialisation: samples stay near mu
    assert np.abs(t1 - mu).max() < 0.2
    stochastic = InformationBottleneck(units=4, seed=0, sample_at_inference=True)
    assert not np.allclose(_np(stochastic(x)), _np(stochastic(x)))


def test_information_bottleneck_adds_beta_times_kl():
    beta = 0.3
    layer = InformationBottleneck(units=4, beta=beta, seed=0)
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    layer(x, training=True)
    assert len(layer.losses) == 1
    stats = _np(layer.encoder(x))
    mu, sigma = stats[:, :4], np.log1p(np.exp(stats[:, 4:] - 5.0))
    kl = 0.5 * np.sum(mu**2 + sigma**2 - 2 * np.log(sigma) - 1, axis=1).mean()
    assert float(_np(layer.losses[0])) == pytest.approx(beta * kl, rel=1e-4)
    layer(x, training=False)
    assert len(layer.losses) == 0
    no_kl = InformationBottleneck(units=4, beta=0.0)
    no_kl(x, training=True)
    assert len(no_kl.losses) == 0


def test_information_bottleneck_in_fit_and_with_dpsgd():
    x, y = _data()
    model = _mid_model(beta=1.0)
    model.compile("adam", SPARSE_CE)
    h = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    ce = float(SPARSE_CE(y, model.predict(x, verbose=0)))
    assert h.history["loss"][-1] > ce  # the KL term is in the training loss
    dp = DPSGD(noise_multiplier=0.5, num_examples=32, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        h = model.fit(x, y, batch_size=16, epochs=1, callbacks=[dp], verbose=0)
    assert np.isfinite(h.history["loss"][0])


def test_information_bottleneck_save_load(tmp_path):
    model = _mid_model()
    model.compile("adam", SPARSE_CE)
    x, y = _data()
    model.fit(x, y, verbose=0)
    layer = model.layers[1]
    assert InformationBottleneck.from_config(layer.get_config()).get_config() == (
        layer.get_config()
    )
    model.save(tmp_path / "mid.keras")
    loaded = keras.saving.load_model(tmp_path / "mid.keras", safe_mode=True)
    assert isinstance(loaded.layers[1], InformationBottleneck)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("kwargs, match", [(dict(units=0), "units"), (dict(beta=-1), "beta")])
def test_information_bottleneck_errors(kwargs, match):
    with pytest.raises(ValueError, match=f"{match}.*Received"):
        InformationBottleneck(**kwargs)


# -------------------------------------------------------------- negative label smoothing


def test_nls_alpha_zero_is_cross_entropy_and_positive_matches_keras():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 4)).astype("float32")
    y = rng.integers(0, 4, 8)
    onehot = np.eye(4, dtype="float32")[y]
    assert float(NegativeLabelSmoothing(0.0)(y, logits)) == pytest.approx(
        float(SPARSE_CE(y, logits)), rel=1e-5
    )
    keras_ls = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    assert float(NegativeLabelSmoothing(0.2)(onehot, logits)) == pytest.approx(
        float(keras_ls(onehot, logits)), rel=1e-5
    )


def test_nls_negative_alpha_formula_sparse_onehot_and_probabilities():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5)).astype("float32")
    y = rng.integers(0, 5, 6)
    alpha = -0.05
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = (1 - alpha) * np.eye(5)[y] + alpha / 5
    expected = -(targets * log_p).sum(1).mean()
    loss = NegativeLabelSmoothing(alpha)
    assert float(loss(y, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(y[:, None], logits)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.eye(5)[y], logits)) == pytest.approx(expected, rel=1e-5)
    probs = np.exp(log_p)
    assert float(NegativeLabelSmoothing(alpha, from_logits=False)(y, probs)) == pytest.approx(
        expected, rel=1e-4
    )


def test_nls_errors_and_config():
    with pytest.raises(ValueError, match="alpha.*Received"):
        NegativeLabelSmoothing(1.0)
    loss = NegativeLabelSmoothing(-0.1, from_logits=False, sparse=True)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, NegativeLabelSmoothing)
    assert again.get_config() == loss.get_config()


def test_nls_compiled_model_save_load(tmp_path):
    x, y = _data()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile("adam", NegativeLabelSmoothing(-0.05))
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "nls.keras")
    loaded = keras.saving.load_model(tmp_path / "nls.keras", safe_mode=True)
    assert isinstance(loaded.loss, NegativeLabelSmoothing) and loaded.loss.alpha == -0.05
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(
        model.evaluate(x, y, verbose=0), rel=1e-5
    )


def test_label_smoothing_schedule_changes_the_compiled_loss():
    x, y = _data()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.0), NegativeLabelSmoothing(0.0))  # weights frozen
    schedule = LabelSmoothingSchedule(final_alpha=-0.2, ramp_epochs=2)
    h = model.fit(x, y, batch_size=32, epochs=4, callbacks=[schedule], verbose=0)
    alphas = h.history["label_smoothing_alpha"]
    assert alphas == pytest.approx([0.0, -0.1, -0.2, -0.2])
    logits = model.predict(x, verbose=0)
    for alpha, loss in zip(alphas, h.history["loss"]):
        assert loss == pytest.approx(float(NegativeLabelSmoothing(alpha)(y, logits)), rel=1e-4)
    assert schedule.alpha_at(100) == -0.2
    again = LabelSmoothingSchedule.from_config(schedule.get_config())
    assert again.get_config() == schedule.get_config()


def test_label_smoothing_schedule_needs_the_loss():
    x, y = _data()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile("sgd", SPARSE_CE)
    with pytest.raises(ValueError, match="NegativeLabelSmoothing.*Received"):
        model.fit(x, y, callbacks=[LabelSmoothingSchedule()], verbose=0)


# -------------------------------------------------------------------------- freeze_until


def _stack():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, name="a"),
            keras.layers.Dense(4, name="b"),
            keras.layers.Dense(3, name="c"),
        ]
    )


@pytest.mark.parametrize(
    "layer, inclusive, expected",
    [
        ("a", True, [False, True, True]),
        ("b", False, [False, True, True]),
        (1, True, [False, False, True]),
        (-1, False, [False, False, True]),
    ],
)
def test_freeze_until(layer, inclusive, expected):
    model = _stack()
    assert [lay.trainable for lay in freeze_until(model, layer, inclusive=inclusive).layers] == (
        expected
    )


def test_freeze_until_fine_tunes_only_the_head():
    model = _stack()
    freeze_until(model, model.get_layer("b"))
    model.compile("adam", SPARSE_CE)
    before = [w.copy() for w in model.get_weights()]
    x, y = _data()
    model.fit(x, y, verbose=0)
    after = model.get_weights()
    for i in range(4):  # a and b: kernel and bias
        np.testing.assert_array_equal(before[i], after[i])
    assert not np.allclose(before[4], after[4])


@pytest.mark.parametrize("layer", ["nope", 7, -9, 1.5])
def test_freeze_until_errors(layer):
    with pytest.raises(ValueError, match="Received: layer="):
        freeze_until(_stack(), layer)


# ---------------------------------------------------------------------------------- BiDO


def test_hsic_and_coco_measure_dependence():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    dependent = np.tanh(x @ rng.normal(size=(5, 4))).astype("float32")
    independent = rng.normal(size=(64, 4)).astype("float32")
    for measure in (hsic, coco):
        assert float(measure(x, dependent)) > 1.5 * float(measure(x, independent))
    labels = np.eye(3, dtype="float32")[np.argmax(x[:, :3], 1)]
    assert float(hsic(x, labels, y_kernel="linear")) > float(
        hsic(independent, labels, y_kernel="linear")
    )
    with pytest.raises(ValueError, match="kernel.*Received"):
        hsic(x, x, x_kernel="cosine")


def _functional():
    inputs = keras.Input((6,))
    h1 = keras.layers.Dense(8, activation="relu", name="h1")(inputs)
    h2 = keras.layers.Dense(8, activation="relu", name="h2")(h1)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h2))


@pytest.mark.parametrize("measure", ["hsic", "coco"])
def test_bido_loss_is_ce_plus_dependence_terms(measure):
    net = _functional()
    bido = BiDO(net, ["h1", "h2"], measure=measure, lambda_x=0.1, lambda_y=0.7)
    bido.compile("adam", SPARSE_CE)
    x, y = _data()
    y_pred = bido(x)
    hidden = [bido._features(x)[i] for i in (1, 2)]
    dep_x, dep_y = bido.dependence(x, y, hidden)
    loss = bido.compute_loss(x=x, y=y, y_pred=y_pred)
    expected = float(SPARSE_CE(y, y_pred)) + 0.1 * float(dep_x) - 0.7 * float(dep_y)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    h = bido.fit(x, y, batch_size=12, epochs=2, verbose=0)  # a partial last batch
    assert set(h.history) == {"loss", "bido_x", "bido_y"}
    assert np.all(np.isfinite(h.history["loss"]))
    np.testing.assert_allclose(net.predict(x, verbose=0), bido.predict(x, verbose=0), atol=1e-6)


def test_bido_save_load_and_refused_by_dpsgd(tmp_path):
    bido = BiDO(_functional(), ["h2"])
    bido.compile("adam", SPARSE_CE, metrics=["accuracy"])
    x, y = _data()
    bido.fit(x, y, batch_size=16, verbose=0)
    bido.save(tmp_path / "bido.keras")
    loaded = keras.saving.load_model(tmp_path / "bido.keras", safe_mode=True)
    assert isinstance(loaded, BiDO) and loaded.hidden_layers == ["h2"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), bido.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="whole batch"):
        bido.fit(x, y, callbacks=[DPSGD(noise_multiplier=1.0, num_examples=32)], verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden_layers=["nope"]), "hidden_layers"),
        (dict(hidden_layers=[]), "hidden_layers"),
        (dict(hidden_layers=["h1"], measure="mmd"), "measure"),
    ],
)
def test_bido_errors(kwargs, match):
    with pytest.raises(ValueError, match=f"{match}|Received"):
        BiDO(_functional(), **kwargs)
