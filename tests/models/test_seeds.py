"""Seeded builders: the same seed builds the same weights, whatever the global state."""

import keras
import numpy as np
import pytest

from kmi.models import (
    CausalLM,
    KerasMLPClassifier,
    SentenceEncoder,
    TextClassifier,
    cnn_classifier,
    dcgan_critic,
    dcgan_generator,
    evaluation_classifier,
    gcn,
    mlp_classifier,
    softmax_regression,
)
from kmi.models._seeds import SeedStream
from kmi.models.dp_cnn import dp_cnn

TOKENS = np.array([[5, 6, 7, 0]], dtype="int32")


def _built(model):
    model(TOKENS)  # text models create their weights on the first call
    return model


BUILDERS = {
    "softmax_regression": lambda seed: softmax_regression((8, 8, 1), 3, seed=seed),
    "mlp_classifier": lambda seed: mlp_classifier((8, 8, 1), 3, hidden_units=(8, 4), seed=seed),
    "cnn_classifier": lambda seed: cnn_classifier(
        (8, 8, 1), 3, filters=(2, 4), dense_units=8, seed=seed
    ),
    "evaluation_classifier": lambda seed: evaluation_classifier((8, 8, 1), 3, width=2, seed=seed),
    "dcgan_generator": lambda seed: dcgan_generator(4, (8, 8, 1), width=4, seed=seed),
    "dcgan_critic": lambda seed: dcgan_critic((8, 8, 1), width=4, n_classes=3, seed=seed),
    "dp_cnn": lambda seed: dp_cnn((16, 16, 1), 3, seed=seed),
    "gcn": lambda seed: gcn(5, 3, hidden_units=4, seed=seed),
    "CausalLM": lambda seed: _built(CausalLM(20, 4, embedding_dim=8, dropout=0.1, seed=seed)),
    "SentenceEncoder": lambda seed: _built(
        SentenceEncoder(20, 4, embedding_dim=8, output_dim=3, seed=seed)
    ),
    "TextClassifier": lambda seed: _built(
        TextClassifier(20, 4, embedding_dim=8, num_layers=2, seed=seed)
    ),
}


def _weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_seed_same_weights_different_seed_different_weights(name):
    build = BUILDERS[name]
    keras.utils.set_random_seed(1)
    first = _weights(build(7))
    keras.utils.set_random_seed(2)  # the global state plays no part
    assert _same(first, _weights(build(7)))
    assert not _same(first, _weights(build(8)))


@pytest.mark.parametrize("name", ["CausalLM", "TextClassifier"])
def test_text_models_draw_each_kernel_with_a_seed_of_its_own(name):
    """keras-hub clones one initializer for every sublayer: seeded, Q, K and V would match."""
    model = BUILDERS[name](3)
    kernels = [
        keras.ops.convert_to_numpy(v) for v in model.weights if v.name in ("kernel", "embeddings")
    ]
    for i, a in enumerate(kernels):
        for b in kernels[i + 1 :]:
            assert a.shape != b.shape or not np.array_equal(a, b)
    assert model.get_config()["seed"] == 3


def test_text_model_seed_survives_save_and_load(tmp_path):
    model = BUILDERS["SentenceEncoder"](5)
    path = tmp_path / "encoder.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.seed == 5 and _same(_weights(model), _weights(loaded))


def test_seeded_dropout_and_augmentation_repeat():
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    outs = []
    for global_seed in (1, 2):
        keras.utils.set_random_seed(global_seed)
        model = evaluation_classifier((8, 8, 1), 3, width=2, dropout=0.5, seed=4)
        outs.append(keras.ops.convert_to_numpy(model(x, training=True)))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_keras_mlp_classifier_random_state_needs_no_global_seed():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    probas = []
    for global_seed in (1, 2):
        keras.utils.set_random_seed(global_seed)
        clf = KerasMLPClassifier((4,), epochs=2, batch_size=16, random_state=3).fit(X, y)
        probas.append(clf.predict_proba(X))
    np.testing.assert_array_equal(probas[0], probas[1])


def test_seed_stream():
    a, b = SeedStream(0), SeedStream(0)
    draws = [a.next() for _ in range(5)]
    assert draws == [b.next() for _ in range(5)]
    assert len(set(draws)) == 5 and all(0 <= s < 2**31 for s in draws)
    assert SeedStream(1).next() not in draws
    assert SeedStream(None).next() is None
    assert SeedStream(None).initializer("glorot_uniform") == "glorot_uniform"
    zeros = SeedStream(0).initializer("zeros")
    assert isinstance(zeros, keras.initializers.Zeros)
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="Received: seed="):
            SeedStream(bad)
    with pytest.raises(ValueError, match="Received: seed=-1"):
        softmax_regression((8, 8, 1), 3, seed=-1)
    with pytest.raises(ValueError, match="Received: seed=1.5"):
        CausalLM(20, 4, embedding_dim=8, seed=1.5)
