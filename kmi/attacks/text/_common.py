"""Pieces shared by the text attacks: token handling, generation, inverter networks."""

from __future__ import annotations

import zlib

import keras
import keras_hub
import numpy as np

from kmi.metrics.text import sequence_log_perplexity
from kmi.models.text import SPECIAL_TOKENS

PAD, UNK, BOS, EOS = range(len(SPECIAL_TOKENS))

#: Parameter text shared by the text attacks' docstrings (see :mod:`kmi._docstring`).
PARAMS_DOC = {
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Seeds every random draw of the attack (sampling, noise, network initialisation
    and shuffling), so the same seed gives the same texts.""",
    "verbose": """\
verbose : int, default=0
    Show progress of long loops.""",
}


# ----------------------------------------------------------------------------- tokens
def check_tokenizer(tokenizer, attack: str):
    if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "detokenize"):
        raise ValueError(
            f"{attack} needs the target's tokenizer (a keras-hub tokenizer with "
            "detokenize, e.g. kmi.models.byte_tokenizer), to turn texts into the token ids "
            f"the model reads. Received: tokenizer={tokenizer!r}"
        )
    return tokenizer


def unknown_id(tokenizer):
    """The id of the tokenizer's out-of-vocabulary token, or None (byte tokenizers)."""
    oov = getattr(tokenizer, "oov_token", None)
    if oov is None:
        return None
    try:
        return int(tokenizer.token_to_id(oov))
    except (KeyError, ValueError):  # pragma: no cover - a vocabulary without it
        return None


def encode(tokenizer, texts, name="texts") -> list[np.ndarray]:
    """Token ids of each text, without padding; unknown tokens raise ValueError."""
    ids = np.asarray(tokenizer(list(texts)))
    if ids.ndim == 1:
        ids = ids[None]
    unk = unknown_id(tokenizer)
    out = []
    for i, row in enumerate(ids):
        row = np.asarray(row, dtype="int64")
        nz = np.nonzero(row)[0]
        row = row[: nz[-1] + 1] if nz.size else row[:0]
        if unk is not None and np.any(row == unk):
            raise ValueError(
                f"{name}[{i}] holds words outside the tokenizer's vocabulary (they become "
                f"the unknown token {getattr(tokenizer, 'oov_token', '')!r}), which the "
                f"attack cannot use as known text. Received: {name}[{i}]={list(texts)[i]!r}"
            )
        out.append(row)
    return out


def token_ids_of(tokenizer, items, vocabulary_size=None) -> np.ndarray:
    """Sorted ids of allowed tokens: a string of one-token characters, or a list of
    token strings or ids, each exactly one token and not the unknown one."""
    import numbers

    if isinstance(items, str):
        items = list(items)
    ids = []
    unk = unknown_id(tokenizer)
    upper = int(vocabulary_size) if vocabulary_size is not None else None
    for item in items:
        if isinstance(item, numbers.Integral):
            i = int(item)
        else:
            row = encode(tokenizer, [str(item)], "allowed_tokens") if str(item).strip() else []
            if not row or len(row[0]) != 1:
                raise ValueError(
                    "Each allowed token must be exactly one token of the tokenizer. "
                    f"Received: allowed token {item!r}"
                )
            i = int(row[0][0])
        if i < 1 or (upper is not None and i >= upper) or i == unk:
            raise ValueError(
                f"Allowed token ids must lie in [1, {upper if upper else 'vocabulary_size'}) "
                f"and not be the unknown token. Received: allowed token {item!r}"
            )
        ids.append(i)
    if not ids:
        raise ValueError("allowed_tokens is empty. Received: allowed_tokens=[]")
    return np.unique(ids)


def decode(tokenizer, ids) -> str:
    """Text of a row of token ids (padding dropped)."""
    ids = np.asarray(ids, dtype="int32")
    ids = ids[ids != 0]
    if ids.size == 0:
        return ""
    text = tokenizer.detokenize(ids[None])
    text = np.asarray(text).ravel()[0]
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return str(text)


def drop_near_duplicates(rows, order) -> np.ndarray:
    """``order`` without the rows that repeat a row before them (Carlini et al. 2021).

    A row (of token ids, padding 0 ignored) is a near-duplicate when at least half of
    its token trigrams, counted as a multiset, are among those of a row kept before
    it. Rows of fewer than three tokens are compared exactly.
    """
    from collections import Counter

    kept, seen, exact = [], [], set()
    for row, i in zip(rows, order):
        row = tuple(int(t) for t in row if t != 0)
        tri = Counter(zip(row, row[1:], row[2:]))
        if row in exact or (
            tri and any(2 * sum((tri & s).values()) >= sum(tri.values()) for s in seen)
        ):
            continue
        kept.append(i)
        exact.add(row)
        if tri:
            seen.append(tri)
    return np.asarray(kept, dtype=np.int64)


def zlib_entropy(text: str) -> int:
    """Bits-in-bytes of the zlib-compressed text (Carlini et al. 2021's zlib entropy)."""
    return len(zlib.compress(text.encode("utf-8")))


# ----------------------------------------------------------------------------- LM queries
def lm_probabilities(target, ids) -> np.ndarray:
    """Next-token probabilities (n, length, vocabulary) of a language-model target."""
    probs = np.asarray(target.query(np.asarray(ids, dtype="int32")))
    if probs.ndim != 3:
        raise ValueError(
            "The target must be a causal language model returning next-token scores of "
            "shape (n, length, vocabulary_size) for token ids of shape (n, length). "
            f"Received: output shape={probs.shape}"
        )
    return probs


def token_nll(probs, ids) -> np.ndarray:
    """Negative log-likelihood of tokens 1..L-1 of each row, shape (n, L - 1)."""
    nxt = np.asarray(ids)[:, 1:]
    p = np.take_along_axis(probs[:, :-1], nxt[..., None], axis=2)[..., 0]
    return -np.log(np.clip(p, 1e-30, 1.0))


def window_log_perplexity(nll, mask, window: int) -> np.ndarray:
    """Lowest mean NLL over any ``window`` consecutive scored tokens of each row."""
    out = np.full(len(nll), np.nan)
    for i in range(len(nll)):
        v = nll[i][mask[i]]
        if v.size == 0:
            continue
        w = min(window, v.size)
        c = np.concatenate([[0.0], np.cumsum(v)])
        out[i] = np.min((c[w:] - c[:-w]) / w)
    return out


def sequence_scores(probs, ids, start) -> np.ndarray:
    """Log-perplexity of each row's tokens from position ``start[i]`` on (padding off)."""
    ids = np.asarray(ids)
    pos = np.arange(ids.shape[1])[None]
    mask = (pos >= np.asarray(start)[:, None]) & (ids != 0)
    return sequence_log_perplexity(probs, ids, mask=mask)


# ----------------------------------------------------------------------------- inverters
def _init(seed, i):
    return keras.initializers.GlorotUniform(seed=int(seed) + i)


def bow_inverter(input_dim: int, vocabulary_size: int, hidden_dim: int, *, seed=0) -> keras.Model:
    """Embedding -> independent probability of each word (Song and Raghunathan 2020)."""
    inp = keras.Input((input_dim,), name="embedding")
    h = keras.layers.Dense(hidden_dim, activation="relu", kernel_initializer=_init(seed, 0))(inp)
    h = keras.layers.Dense(hidden_dim, activation="relu", kernel_initializer=_init(seed, 1))(h)
    out = keras.layers.Dense(
        vocabulary_size, kernel_initializer=_init(seed, 2), name="word_logits"
    )(h)
    return keras.Model(inp, out, name="bow_inverter")


def decoder_inverter(
    input_dim: int,
    vocabulary_size: int,
    sequence_length: int,
    *,
    embedding_dim: int,
    hidden_dim: int,
    num_heads: int = 2,
    num_layers: int = 1,
    n_prefix: int = 4,
    seed: int = 0,
) -> keras.Model:
    """Transformer decoder over words, cross-attending to the projected embedding.

    The target embedding is mapped to ``n_prefix`` vectors that the decoder attends
    to (the vec2text hypothesiser's conditioning, small scale). Inputs:
    ``[embedding (n, input_dim), tokens (n, sequence_length)]`` with ``[BOS]`` first;
    output: next-token logits (n, sequence_length, vocabulary_size).
    """
    emb = keras.Input((input_dim,), name="embedding")
    tok = keras.Input((sequence_length,), dtype="int32", name="tokens")
    cond = keras.layers.Dense(hidden_dim, activation="relu", kernel_initializer=_init(seed, 0))(
        emb
    )
    cond = keras.layers.Dense(n_prefix * embedding_dim, kernel_initializer=_init(seed, 1))(cond)
    cond = keras.layers.Reshape((n_prefix, embedding_dim))(cond)
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size,
        sequence_length,
        embedding_dim,
        mask_zero=True,
        embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=int(seed) + 2),
    )(tok)
    for i in range(num_layers):
        x = keras_hub.layers.TransformerDecoder(
            hidden_dim, num_heads, kernel_initializer=_init(seed, 3 + i)
        )(x, encoder_sequence=cond)
    out = keras.layers.Dense(
        vocabulary_size, kernel_initializer=_init(seed, 99), name="next_token_logits"
    )(x)
    return keras.Model([emb, tok], out, name="decoder_inverter")


def gumbel_noise(shape, rng) -> np.ndarray:
    u = rng.uniform(1e-9, 1.0 - 1e-9, size=shape)
    return (-np.log(-np.log(u))).astype("float32")


def model_length(target, attack):
    """The sequence length of a text model, or a clear error."""
    model = target.model
    length = getattr(model, "sequence_length", None)
    if length is None and getattr(model, "inputs", None):
        length = model.inputs[0].shape[1]
    if length is None:
        raise ValueError(
            f"{attack} needs the model's sequence length: pass a kmi text model or a Keras "
            f"model built with keras.Input((length,)). Received: model={model!r}"
        )
    return int(length)
