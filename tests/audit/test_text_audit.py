"""The text audit of a sentence encoder: embeddings inverted, recovered texts shown."""

import keras
import numpy as np
import pytest

from kmi.audit import audit
from kmi.models import SentenceEncoder, TextPipeline, word_tokenizer
from kmi.targets import Target


@pytest.fixture(scope="module")
def encoder_and_texts():
    rng = np.random.default_rng(0)
    words = "red blue green cat dog bird runs sleeps eats big small old".split()
    sizes = rng.integers(2, 5, size=300)
    texts = [" ".join(rng.choice(words, size=k, replace=False)) for k in sizes]
    tok = word_tokenizer(texts, sequence_length=8)
    keras.utils.set_random_seed(0)
    enc = SentenceEncoder(len(tok.get_vocabulary()), 8, embedding_dim=16)
    return Target(TextPipeline(tok, enc), task="embedding"), texts[:260], texts[260:]


SMALL = {"EmbeddingInversion-bow": {"epochs": 30, "hidden_dim": 64, "learning_rate": 5e-3}}


def test_encoder_audit_inverts_embeddings_and_shows_texts(encoder_and_texts, tmp_path):
    target, public, private = encoder_and_texts
    from kmi.audit.text import ENCODER_ATTACKS

    # the decoder is left out here for time (its own tests are in tests/attacks)
    assert [a[0] for a in ENCODER_ATTACKS] == [*SMALL, "EmbeddingInversion-decoder"]
    report = audit(
        target,
        modality="text",
        private_data=private,
        public_data=public,
        attacks=ENCODER_ATTACKS[:1],
        attack_params=SMALL,
        name="encoder",
        verbose=0,
    )
    by = {r["attack"]: r for r in report.rows}
    assert set(by) == {"FrequentWordsBaseline", *SMALL}
    assert by["FrequentWordsBaseline"]["queries"] == 0
    bow = by["EmbeddingInversion-bow"]
    assert bow["word_f1"] > by["FrequentWordsBaseline"]["word_f1"] + 0.2
    assert bow["queries"] == len(public) + len(private)  # fit, then re-embedding
    assert 0 <= bow["cosine"] <= 1
    (verdict,) = report.verdicts
    assert verdict["metric"] == "word_f1" and verdict["risk"] in ("high", "medium")
    (texts,) = report.texts
    assert texts["title"] == f"encoder: {verdict['attack']}"
    assert [a for a, _ in texts["pairs"]] == private[:10]
    html = report.to_html(tmp_path / "r.html")
    assert "Recovered texts" in html and private[0] in html
    assert "| Private text | Recovered |" in report.to_markdown()
    assert report.summary[0].startswith("encoder: EmbeddingInversion")


def test_encoder_audit_needs_public_texts(encoder_and_texts):
    target, public, private = encoder_and_texts
    with pytest.raises(ValueError, match="public_data=None"):
        audit(target, modality="text", private_data=private, verbose=0)
    with pytest.raises(ValueError, match="empty or blank"):
        audit(target, modality="text", private_data=["a", ""], public_data=public, verbose=0)
    with pytest.raises(ValueError, match="references apply to a language model"):
        audit(
            target,
            modality="text",
            private_data=private,
            public_data=public,
            references=["x"],
            verbose=0,
        )
