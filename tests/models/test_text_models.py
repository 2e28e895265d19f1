"""Text models: shapes, embedding paths, training, errors, save/load round trips."""

import keras
import numpy as np
import pytest

from kmi.models import (
    CausalLM,
    SentenceEncoder,
    TextClassifier,
    TextPipeline,
    byte_tokenizer,
    word_tokenizer,
)
from kmi.targets import Target


def _ids(n=4, length=8, vocab=20, seed=0):
    ids = np.random.default_rng(seed).integers(1, vocab, size=(n, length)).astype("int32")
    ids[:, -2:] = 0  # padding
    return ids


@pytest.mark.parametrize(
    "model, width",
    [
        (CausalLM(20, 8, embedding_dim=16), (8, 20)),
        (SentenceEncoder(20, 8, embedding_dim=16, output_dim=6), (6,)),
        (TextClassifier(20, 8, num_classes=3, embedding_dim=16), (3,)),
    ],
    ids=["lm", "encoder", "classifier"],
)
def test_shapes_soft_tokens_and_round_trip(model, width, tmp_path):
    ids = _ids()
    out = keras.ops.convert_to_numpy(model(ids))
    assert out.shape == (4, *width)
    # one-hot "soft" tokens through the embedding matrix give the same outputs
    soft = keras.ops.one_hot(ids, 20)
    via_probs = model.call_embedded(model.embed_probabilities(soft), ids != 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(via_probs), out, atol=1e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(ids)), out, atol=1e-6)


def test_encoder_is_normalised_and_ignores_padding():
    enc = SentenceEncoder(20, 8, embedding_dim=16)
    ids = _ids()
    out = keras.ops.convert_to_numpy(enc(ids))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the causal LM's prediction at t does not depend on later tokens
    lm = CausalLM(20, 8, embedding_dim=16)
    changed = ids.copy()
    changed[:, 5] = 3
    a = keras.ops.convert_to_numpy(lm(ids))[:, :5]
    b = keras.ops.convert_to_numpy(lm(changed))[:, :5]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_lm_learns_a_repeated_text():
    keras.utils.set_random_seed(0)
    tok = byte_tokenizer(12)
    ids = np.asarray(tok(["abcabcabcab"] * 32))
    lm = CausalLM(256, 11, embedding_dim=32)
    x, y, w = CausalLM.lm_targets(ids)
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    hist = lm.fit(x, y, sample_weight=w, epochs=15, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < 0.2 * hist.history["loss"][0]


def test_errors():
    with pytest.raises(ValueError, match="Received: embedding_dim=10, num_heads=3"):
        CausalLM(20, 8, embedding_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="Received: vocabulary_size=0"):
        SentenceEncoder(0, 8)
    with pytest.raises(ValueError, match="Received: num_classes=1"):
        TextClassifier(20, 8, num_classes=1)
    lm = CausalLM(20, 8, embedding_dim=16)
    with pytest.raises(ValueError, match="Received: token_ids.shape"):
        lm(np.ones((2, 9), dtype="int32"))
    with pytest.raises(ValueError, match="Received: probs.shape"):
        lm.embed_probabilities(keras.ops.ones((1, 8, 7)))


def test_word_tokenizer_and_pipeline():
    corpus = ["the cat sat", "the dog ran", "a cat ran"]
    tok = word_tokenizer(corpus, vocabulary_size=10, sequence_length=5)
    vocab = tok.get_vocabulary()
    assert vocab[:4] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] and vocab[4] in ("the", "cat", "ran")
    ids = np.asarray(tok(["The cat flew"]))
    assert ids[0, 2] == 1 and ids[0, 3] == 0  # unknown word, then padding
    enc = SentenceEncoder(10, 5, embedding_dim=8)
    target = Target(TextPipeline(tok, enc), task="embedding")
    assert target.query(["the cat", "a dog"]).shape == (2, 8)
    pipe = TextPipeline(tok, enc)
    with pytest.raises(ValueError, match="empty or blank"):
        pipe(["the cat", "  "])
    with pytest.raises(ValueError, match="Received: len"):
        pipe([])
    with pytest.raises(TypeError, match="not one string"):
        pipe("the cat")
    with pytest.raises(TypeError, match="of type int"):
        pipe(["a", 3])
    with pytest.raises(ValueError, match="Received: vocabulary_size=3"):
        word_tokenizer(corpus, vocabulary_size=3)
