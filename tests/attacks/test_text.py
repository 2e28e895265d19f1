"""Text attacks on tiny trained models: each beats its trivial baseline; errors; determinism."""

import keras
import numpy as np
import pytest
from sklearn.base import clone

from kmi.attacks import EmbeddingInversion, LMExtraction, TokenOptimization
from kmi.metrics.text import exposure, sequence_log_perplexity, word_f1
from kmi.models import (
    CausalLM,
    SentenceEncoder,
    TextClassifier,
    TextPipeline,
    byte_tokenizer,
    word_tokenizer,
)
from kmi.targets import AccessError, Target

CANARY = "the code is 4817"
PREFIX = "the code is "
LENGTH = 20


@pytest.fixture(scope="module")
def lm():
    """A byte-level LM that has seen the canary 20 times among two other texts."""
    keras.utils.set_random_seed(0)
    tok = byte_tokenizer(LENGTH + 1)
    texts = [CANARY] * 20 + ["the cat sat on a mat"] * 20 + ["a dog ran far away"] * 20
    ids = np.asarray(tok(texts))
    model = CausalLM(256, LENGTH, embedding_dim=32, intermediate_dim=64)
    x, y, w = CausalLM.lm_targets(ids)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, sample_weight=w, epochs=30, batch_size=20, verbose=0)
    return model, tok


def test_lm_extraction_finds_the_canary_and_it_is_exposed(lm):
    model, tok = lm
    target = Target(model, access="black-box")
    attack = LMExtraction(
        target,
        tokenizer=tok,
        prompts=[PREFIX],
        top_k=3,
        max_new_tokens=4,
        n_samples=8,
        top_n=1,
        ranking="perplexity",
        random_state=0,
    )
    # the trivial baseline guesses one of 10**4 secrets: success 1e-4
    assert attack.fit().score([CANARY]) == 1.0
    assert attack.candidates_["text"][0] == CANARY
    assert target.n_queries_ > 0
    # the same run again gives the same ranking
    first = list(attack.candidates_["text"])
    assert attack.invert(8) == first
    # the canary is more likely than other secrets of its space
    refs = [f"{PREFIX}{s:04d}" for s in np.random.default_rng(0).integers(10_000, size=30)]
    ids = np.asarray(tok([CANARY, *refs]))[:, :LENGTH]
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(model(ids), axis=-1))
    mask = np.zeros_like(ids, dtype=bool)
    mask[:, len(PREFIX) : len(CANARY)] = True
    scores = sequence_log_perplexity(probs, ids, mask=mask)
    assert exposure(scores[0], scores[1:], randomness_space=10_000) > 8


@pytest.mark.parametrize("ranking", ["zlib", "window", "reference", "lowercase"])
def test_lm_extraction_rankings(lm, ranking):
    model, tok = lm
    ref = CausalLM(256, LENGTH, embedding_dim=16)
    attack = LMExtraction(
        model,
        tokenizer=tok,
        prompts=["the ", "a "],
        sampling="temperature",
        temperature=3.0,
        decay_tokens=4,
        max_new_tokens=6,
        ranking=ranking,
        reference=ref,
        window=3,
        random_state=1,
    ).fit()
    out = attack.invert(6)
    assert 1 <= len(out) <= 6 and len(set(out)) == len(out)
    assert np.all(np.diff(attack.candidates_["score"]) >= 0)


def _bigram_lm(transitions, length=4):
    """A byte-level LM whose next-token distribution depends on the last token only."""
    table = np.full((256, 256), -30.0, dtype="float32")
    table[:, ord(".")] = 0.0  # anything else ends the text
    for prev, nxt in transitions.items():
        table[ord(prev)] = -30.0
        for char, p in nxt.items():
            table[ord(prev), ord(char)] = np.log(p)
    model = keras.Sequential(
        [
            keras.Input((length,), dtype="int32"),
            keras.layers.Embedding(256, 256, weights=[table]),
            keras.layers.Softmax(),
        ]
    )
    return model


def test_beam_search_finds_what_greedy_decoding_misses():
    # after "a": "x" (0.55) then anything of ten (0.1 each), or "y" (0.45) then "z" (1.0):
    # greedy takes "x" (0.055 in all); the likeliest text is "ayz" (0.45)
    ten = {c: 0.1 for c in "bcdefghijk"}
    model = _bigram_lm({"a": {"x": 0.55, "y": 0.45}, "x": ten, "y": {"z": 1.0}})
    tok = byte_tokenizer(4)
    common = dict(tokenizer=tok, prompts=["a"], max_new_tokens=2, ranking="perplexity")
    greedy = LMExtraction(model, sampling="greedy", **common).fit().invert(1)
    assert greedy[0].startswith("ax") and "ayz" not in greedy
    target = Target(model, access="black-box")
    beam = LMExtraction(target, sampling="beam", beam_width=2, dedup="exact", **common).fit()
    out = beam.invert(2)
    assert out[0] == "ayz" and out[1].startswith("ax") and len(out) == 2
    # one query per generated token for the beams, one to score them
    assert target.n_queries_ == 2 * 2 + 2
    # prompts of different lengths share a batch; each beam stops at the model's length
    mixed = LMExtraction(
        model, sampling="beam", beam_width=2, **{**common, "prompts": ["a", "xya"]}
    ).set_params(max_new_tokens=3)
    assert any(t.startswith("ayz") for t in mixed.fit().invert(4))
    # a known format (Carlini et al. 2019): greedy decoding within the allowed tokens
    formatted = LMExtraction(model, sampling="greedy", allowed_tokens="yz", **common).fit()
    assert formatted.invert(1) == ["ayz"] and formatted.allowed_ids_.tolist() == [121, 122]
    with pytest.raises(ValueError, match="exactly one token"):
        LMExtraction(model, allowed_tokens=["yz"], **common).fit()


def test_near_duplicates_are_dropped_keeping_the_best_ranked():
    from kmi.attacks.text._common import drop_near_duplicates

    rows = [[5, 6, 7, 8, 9], [1, 2, 3, 4, 0], [5, 6, 7, 8, 1], [4, 3, 2, 1], [1, 2]]
    # row 2 shares 2 of its 3 trigrams with row 0; row 4 is too short for trigrams
    kept = drop_near_duplicates(rows, np.arange(5))
    assert kept.tolist() == [0, 1, 3, 4]
    assert drop_near_duplicates([[1, 2], [1, 2, 0]], np.array([7, 9])).tolist() == [7]


def test_lm_extraction_errors(lm):
    model, tok = lm
    with pytest.raises(ValueError, match="Received: tokenizer=None"):
        LMExtraction(model, prompts=["a"]).fit()
    with pytest.raises(ValueError, match="Received: prompts=None"):
        LMExtraction(model, tokenizer=tok).fit()
    with pytest.raises(ValueError, match="empty or blank"):
        LMExtraction(model, tokenizer=tok, prompts=[""]).fit()
    with pytest.raises(ValueError, match="Received: ranking='nope'"):
        LMExtraction(model, tokenizer=tok, prompts=["a"], ranking="nope").fit()
    with pytest.raises(ValueError, match="Received: reference=None"):
        LMExtraction(model, tokenizer=tok, prompts=["a"], ranking="reference").fit()
    with pytest.raises(AccessError):
        LMExtraction(Target(model, access="label-only"), tokenizer=tok, prompts=["a"]).fit()
    attack = LMExtraction(model, tokenizer=tok, prompts=["a"], top_k=0)
    assert clone(attack).get_params()["prompts"] == ["a"]
    with pytest.raises(ValueError, match="Received: top_k=0"):
        attack.fit()


def test_token_optimization_recovers_the_canary_from_the_lm(lm):
    model, tok = lm
    attack = TokenOptimization(
        model,
        tokenizer=tok,
        n_tokens=4,
        allowed_tokens="0123456789",
        n_restarts=2,
        max_iter=40,
        random_state=0,
    ).fit()
    # baseline: a random digit is right one time in ten
    assert attack.score([CANARY]) == 1.0
    assert attack.invert([PREFIX]) == ["4817"]
    assert attack.candidates_[0][0][0] == "4817"
    assert attack.target_.n_queries_ > 0


def test_token_optimization_chunked_loop_equals_the_step_by_step_loop(lm, monkeypatch):
    from kmi.attacks import _optim

    model, tok = lm
    attack = TokenOptimization(
        model, tokenizer=tok, n_tokens=4, n_restarts=2, max_iter=6, random_state=0
    ).fit()
    monkeypatch.setattr(_optim, "CHUNK_SIZE", 4)  # 6 steps: a chunk of 4, then one of 2
    chunked = attack.invert([CANARY[:-4]])
    chunked_scores = [score for _, score in attack.candidates_[0]]
    monkeypatch.setattr(_optim, "CHUNK_SIZE", 1)
    assert attack.invert([CANARY[:-4]]) == chunked
    np.testing.assert_allclose([s for _, s in attack.candidates_[0]], chunked_scores, atol=1e-4)


def test_token_optimization_classifier_path_and_determinism():
    corpus = ["my pin is one two", "my pin is three four", "the weather is fine"]
    tok = word_tokenizer(corpus, sequence_length=6)
    clf = TextClassifier(len(tok.get_vocabulary()), 6, num_classes=2, embedding_dim=16)
    kwargs = dict(tokenizer=tok, n_tokens=2, n_restarts=2, max_iter=3, random_state=3)
    a = TokenOptimization(clf, **kwargs).fit()
    b = TokenOptimization(clf, **kwargs).fit()
    out = a.invert(["my pin is"], [1])
    assert out == b.invert(["my pin is"], [1])
    assert len(out[0].split()) == 2 and a.task_ == "classifier"
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        a.invert(["my password is"], [1])
    with pytest.raises(ValueError, match="Received: y=None"):
        a.invert(["my pin is"])
    with pytest.raises(ValueError, match=r"Received: y=\[7\]"):
        a.invert(["my pin is"], [7])
    with pytest.raises(ValueError, match="must fit the model"):
        TokenOptimization(clf, **{**kwargs, "n_tokens": 5}).fit().invert(["my pin is"], [0])
    with pytest.raises(ValueError, match="exactly one token"):
        TokenOptimization(clf, **{**kwargs, "allowed_tokens": ["one two"]}).fit()
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        TokenOptimization(clf, **{**kwargs, "allowed_tokens": ["zebra"]}).fit()
    with pytest.raises(AccessError, match="white-box"):
        TokenOptimization(Target(clf, access="black-box"), **kwargs).fit()
    with pytest.raises(TypeError, match="embed_probabilities"):
        plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
        TokenOptimization(plain, **kwargs).fit()


@pytest.fixture(scope="module")
def encoder_data():
    rng = np.random.default_rng(0)
    words = "red blue green cat dog bird runs sleeps eats big small old".split()
    texts = [
        " ".join(rng.choice(words, size=rng.integers(2, 5), replace=False)) for _ in range(400)
    ]
    tok = word_tokenizer(texts, sequence_length=8)
    keras.utils.set_random_seed(0)
    enc = SentenceEncoder(len(tok.get_vocabulary()), 8, embedding_dim=16)
    return Target(TextPipeline(tok, enc), task="embedding"), texts[:340], texts[340:]


def _majority_baseline(aux, private):
    """Predict the 3 most frequent auxiliary words for every text (no target query)."""
    counts = {}
    for t in aux:
        for w in t.split():
            counts[w] = counts.get(w, 0) + 1
    top = " ".join(sorted(counts, key=counts.get, reverse=True)[:3])
    return word_f1(private, [top] * len(private))


def test_embedding_inversion_bow_beats_baseline(encoder_data):
    target, aux, private = encoder_data
    kwargs = dict(head="bow", epochs=60, hidden_dim=64, learning_rate=5e-3, random_state=0)
    attack = EmbeddingInversion(target, **kwargs).fit(aux)
    assert attack.n_queries_fit_ == len(aux)
    f1 = attack.score(private)
    assert f1 > max(0.6, _majority_baseline(aux, private) + 0.25)
    again = EmbeddingInversion(target, **kwargs)
    emb = target.query(private[:5])
    assert again.fit(aux).invert(emb) == attack.invert(emb)


def test_embedding_inversion_decoder_with_correction(encoder_data):
    target, aux, private = encoder_data
    attack = EmbeddingInversion(
        target,
        head="decoder",
        epochs=8,
        sequence_length=6,
        hidden_dim=64,
        embedding_dim=16,
        n_hypotheses=3,
        random_state=0,
    ).fit(aux)
    before = target.n_queries_
    out = attack.invert(target.query(private[:10]))
    assert len(out) == 10 and all(isinstance(t, str) for t in out)
    assert target.n_queries_ > before + 10  # hypotheses were re-embedded
    assert word_f1(private[:10], out) > _majority_baseline(aux, private[:10])


@pytest.mark.parametrize("head", ["bow", "decoder"])
def test_correction_search_brings_the_texts_closer(encoder_data, head):
    from kmi.metrics.text import cosine_similarity, exact_match

    target, aux, private = encoder_data
    private = private[:12]
    attack = EmbeddingInversion(
        target,
        head=head,
        epochs=30 if head == "bow" else 8,
        sequence_length=6,
        hidden_dim=64,
        embedding_dim=16,
        learning_rate=5e-3,
        correction_steps=3,
        beam_width=2,
        n_edits=12,
        random_state=0,
    ).fit(aux)  # a decoder is trained with the word head its edits draw from
    assert attack.proposer_ is not None
    assert head == "bow" or "proposer_loss" in attack.history_
    emb = target.query(private)
    plain = attack.set_params(correction_steps=0).invert(emb)
    plain_cos = cosine_similarity(target.query([p or "?" for p in plain]), emb)
    attack.set_params(correction_steps=3)
    before = target.n_queries_
    fixed = attack.invert(emb)
    spent = target.n_queries_ - before
    # every re-embedding is a counted query, at most beam x edits per text and step
    assert 0 < spent <= len(private) * (1 + 3 * 2 * 12)
    np.testing.assert_allclose(
        attack.cosine_, cosine_similarity(target.query(fixed), emb), atol=1e-5
    )
    assert np.all(attack.cosine_ >= plain_cos - 1e-6) and attack.cosine_.mean() > plain_cos.mean()
    assert exact_match(private, fixed) >= exact_match(private, plain)


def test_white_box_refinement_brings_the_texts_closer(encoder_data):
    """Refinement against the encoder's gradients never moves a text away from its
    embedding, moves it closer on average, and counts every read."""
    from kmi.metrics.text import cosine_similarity

    pipeline, aux, private = encoder_data[0].model, encoder_data[1], encoder_data[2][:12]
    target = Target(pipeline, access="white-box", task="embedding")
    kwargs = dict(head="bow", epochs=3, hidden_dim=16, learning_rate=5e-3, random_state=0)
    attack = EmbeddingInversion(target, **kwargs).fit(aux)  # weak on purpose
    emb = target.query(private)
    plain = attack.invert(emb)
    plain_cos = cosine_similarity(target.query(plain), emb)
    attack.set_params(refine_steps=4, refine_top_k=6, refine_candidates=10)
    before = target.n_queries_
    refined = attack.invert(emb)
    spent = target.n_queries_ - before
    # one score of each text, then per step one gradient and 10 scores per live text
    assert len(private) < spent <= len(private) * (1 + 4 * (1 + 10))
    np.testing.assert_allclose(
        attack.cosine_, cosine_similarity(target.query(refined), emb), atol=1e-4
    )
    assert np.all(attack.cosine_ >= plain_cos - 1e-5)
    assert attack.cosine_.mean() > plain_cos.mean() + 0.01
    assert word_f1(private, refined) >= word_f1(private, plain) - 0.05
    # the same seed gives the same texts
    assert attack.invert(emb) == refined
    # a budget that runs out in the second step: the texts refined so far come back
    from kmi.targets import QueryBudgetExceededError

    budget = len(aux) + len(private) * (1 + 1 + 10) + 5
    small = Target(pipeline, access="white-box", task="embedding", query_budget=budget)
    attack = EmbeddingInversion(small, **kwargs).fit(aux)
    attack.set_params(refine_steps=4, refine_top_k=6, refine_candidates=10)
    with pytest.raises(QueryBudgetExceededError) as info:
        attack.invert(emb)
    texts, cos = info.value.partial_result
    assert len(texts) == len(private) and np.all(cos >= plain_cos - 1e-5)


def test_white_box_refinement_needs_a_white_box_soft_token_encoder(encoder_data):
    target, aux, _ = encoder_data  # black-box: strings in, vectors out
    before = target.n_queries_
    with pytest.raises(AccessError, match="refine_steps > 0 needs white-box"):
        EmbeddingInversion(target, head="bow", epochs=1, refine_steps=2).fit(aux)
    assert target.n_queries_ == before  # refused before any query
    vectors = Target(lambda t: np.ones((len(t), 3)), access="white-box", task="embedding")
    with pytest.raises(TypeError, match="pass refine_steps=0 to invert black-box"):
        EmbeddingInversion(vectors, head="bow", epochs=1, refine_steps=2).fit(aux)


def test_embedding_inversion_errors(encoder_data):
    target, aux, _ = encoder_data
    attack = EmbeddingInversion(target, head="bow", epochs=1, hidden_dim=8).fit(aux[:20])
    with pytest.raises(ValueError, match=r"Received: embeddings.shape=\(2, 5\)"):
        attack.invert(np.zeros((2, 5)))
    width = attack.embedding_dim_
    with pytest.raises(ValueError, match="NaN or inf"):
        attack.invert(np.full((2, width), np.nan))
    with pytest.raises(ValueError, match="empty or blank"):
        EmbeddingInversion(target).fit(["red cat", ""])
    with pytest.raises(TypeError, match="str"):
        EmbeddingInversion(target).fit(["red cat", 3])
    with pytest.raises(ValueError, match="Received: head='rnn'"):
        EmbeddingInversion(target, head="rnn").fit(aux[:5])
    with pytest.raises(ValueError, match="Received: len"):
        attack.score([])
    # a plain callable on strings is wrapped as a black-box embedding target
    plain = EmbeddingInversion(lambda t: np.ones((len(t), 3)), head="bow", epochs=1).fit(aux[:5])
    assert plain.target_.task == "embedding" and plain.embedding_dim_ == 3
    with pytest.raises(AccessError):
        EmbeddingInversion(Target(lambda t: np.ones((len(t), 2)), access="label-only")).fit(aux)


def test_lm_extraction_takes_a_keras_hub_causal_lm_directly():
    """A GPT-2-shaped keras-hub model, trained by kmi, attacked as it is."""
    import keras_hub

    from kmi.models.pretrained import HubCausalLM

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        dropout=0.0,
        max_sequence_length=LENGTH,
    )
    gpt2 = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    tok = byte_tokenizer(LENGTH + 1)
    texts = [CANARY] * 20 + ["the cat sat on a mat"] * 20 + ["a dog ran far away"] * 20
    wrapper = HubCausalLM(gpt2)  # trained on token ids; the weights are gpt2's
    assert wrapper.sequence_length == LENGTH and wrapper.vocabulary_size == 256
    x, y, w = CausalLM.lm_targets(np.asarray(tok(texts)))
    wrapper.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    wrapper.fit(x, y, sample_weight=w, epochs=30, batch_size=20, verbose=0)
    attack = LMExtraction(
        gpt2,
        tokenizer=tok,
        prompts=[PREFIX],
        sampling="beam",
        beam_width=4,
        max_new_tokens=4,
        top_n=1,
        n_samples=4,
        ranking="perplexity",
        reference=gpt2,
    ).fit()
    assert isinstance(attack.target_.model, HubCausalLM) and attack.target_.access == "black-box"
    assert attack.score([CANARY]) == 1.0
    # white-box through the wrapper's soft-token path: the same logits for one-hot tokens
    ids = x[:3]
    soft = keras.ops.one_hot(ids, 256)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(
            wrapper.call_embedded(wrapper.embed_probabilities(soft), ids != 0)
        ),
        keras.ops.convert_to_numpy(wrapper(ids)),
        atol=1e-4,
    )
    tokopt = TokenOptimization(
        wrapper,
        tokenizer=tok,
        n_tokens=4,
        allowed_tokens="0123456789",
        n_restarts=2,
        max_iter=40,
        random_state=0,
    ).fit()
    assert tokopt.score([CANARY]) == 1.0
