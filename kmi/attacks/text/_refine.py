"""White-box refinement of inverted texts against the target encoder's gradients.

A text (a hypothesis of :class:`~kmi.attacks.EmbeddingInversion`) is tokenized with
the target encoder's own tokenizer and improved one token at a time:

1. the gradient of the cosine between the encoder's vector of the text and the
   target embedding, with respect to the token embeddings, ranks at every position
   the ``top_k`` substitutions of largest first-order gain (HotFlip, Ebrahimi et
   al. 2018: the gain of token ``v`` at position ``p`` is ``g_p . E_v``);
2. ``n_candidates`` single-token substitutions are drawn from those and scored
   exactly by a forward pass; the best is kept when it is closer than the text
   (the greedy coordinate gradient search of Zou et al. 2023).

A text stops when no candidate of a step is closer. The refined text may hold
sub-word tokens outside the inverter's own vocabulary (names, hashtags), which is
what the black-box inverter cannot write. Every text the encoder reads, for a
gradient or a score, is a counted query of the target.
"""

from __future__ import annotations

import re
import warnings
import weakref

import keras
import numpy as np
from keras import ops

from kmi import backend
from kmi.attacks._optim import _variables
from kmi.attacks.text import _common as _text
from kmi.targets import QueryBudgetExceededError

_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BLOCK = 16  # texts per gradient call: (16, length, vocabulary) gains at most
_SCORE_BLOCK = 256  # texts per scoring call


def _blocks(fn, rows, size, *arrays):
    """``fn`` over blocks of at most ``size`` rows of ``arrays``, each block padded
    with zero rows to a power of two (at least 8), so that a compiled ``fn`` sees a
    few shapes however many texts are still refined; the padding is dropped."""
    out = []
    for s in range(0, len(rows), size):
        block = [a[s : s + size] for a in arrays]
        n = len(block[0])
        width = min(size, max(8, 1 << (n - 1).bit_length()))
        block = [np.concatenate([a, np.zeros((width - n, *a.shape[1:]), a.dtype)]) for a in block]
        out.append(ops.convert_to_numpy(fn(*block))[:n])
    return np.concatenate(out)


def soft_token_pipeline(target, attack: str):
    """The (tokenizer, encoder) of a white-box text target whose encoder runs from
    token embeddings; TypeError otherwise."""
    pipe = target.model
    tok, enc = getattr(pipe, "tokenizer", None), getattr(pipe, "model", None)
    needed = ("embed", "call_embedded", "token_embedding_matrix", "vocabulary_size")
    if tok is None or enc is None or not all(hasattr(enc, a) for a in needed):
        raise TypeError(
            f"{attack}'s white-box refinement needs a target that is a "
            "kmi.models.TextPipeline of a tokenizer and an encoder with embed and "
            "call_embedded (kmi.models.SentenceEncoder, or the encoder of "
            "kmi.models.load_sentence_encoder). Received: target model of type "
            f"{type(pipe).__name__}; pass refine_steps=0 to invert black-box."
        )
    return tok, enc


def _allowed_tokens(tok, vocabulary_size: int, special: set[int]) -> np.ndarray:
    """Token ids a substitution may bring in: not special, and not a bracketed
    placeholder of a word-piece vocabulary (``[UNK]``, ``[MASK]``, ``[unused7]``)."""
    allowed = np.ones(vocabulary_size, dtype=bool)
    allowed[[i for i in special if 0 <= i < vocabulary_size]] = False
    inner = getattr(tok, "tokenizer", tok)
    get_vocabulary = getattr(inner, "get_vocabulary", None)
    if get_vocabulary is not None:
        try:
            vocab = get_vocabulary()
        except (AttributeError, ValueError, TypeError):  # pragma: no cover - no vocabulary
            vocab = None
        if vocab is not None and len(vocab) == vocabulary_size:
            placeholder = re.compile(r"^\[.*\]$")
            allowed &= np.array([not placeholder.match(str(t)) for t in vocab])
    return allowed


def _programs(encoder, k: int):
    """Compiled (top-k gains, cosines) of an encoder, its weights passed in per call."""
    cache = _PROGRAMS.setdefault(encoder, {})
    if k in cache:
        return cache[k]
    variables = _variables([encoder])

    def cosine(x, mask, target):
        v = encoder.call_embedded(x, mask, training=False)
        v = v / ops.maximum(ops.norm(v, axis=-1, keepdims=True), 1e-12)
        return ops.sum(v * target, axis=-1)

    def gains(values, ids, mask, target, bias):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            x = encoder.embed(ids)
            _, g = backend.value_and_grad(lambda e: ops.sum(cosine(e, mask, target)), x)
            matrix = ops.cast(encoder.token_embedding_matrix, g.dtype)
            gain = ops.einsum("bld,vd->blv", g, matrix) + bias
            return ops.top_k(gain, k)[1]

    def cosines(values, ids, mask, target):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return cosine(encoder.embed(ids), mask, target)

    cache[k] = (backend.jit(gains), backend.jit(cosines), variables)
    return cache[k]


def refine(target, texts, embeddings, *, steps, top_k, n_candidates, rng, attack, verbose=0):
    """Refine ``texts`` towards ``embeddings`` through a white-box text ``target``.

    Returns
    -------
    texts : list of str
        The refined texts (the given one where nothing closer was found).
    cosine : ndarray of shape (n,)
        The encoder's cosine between each returned text and its embedding.

    Raises
    ------
    QueryBudgetExceededError
        When the target's budget runs out; its ``partial_result`` holds the
        (texts, cosine) refined so far.
    """
    tok, enc = soft_token_pipeline(target, attack)
    n = len(texts)
    pad = int(getattr(tok, "pad_id", 0) or 0)
    special = set(getattr(tok, "special_ids", ())) | {pad}
    V = int(enc.vocabulary_size)
    allowed = _allowed_tokens(tok, V, special)
    # at most as many as are allowed, so a refused token (gain -1e9) is never proposed
    k = max(1, min(int(top_k), int(allowed.sum())))
    gains_c, cosines_c, variables = _programs(enc, k)
    bias = np.where(allowed, 0.0, -1e9).astype("float32")
    placeholder = [t if t.strip() else "a" for t in texts]  # an empty hypothesis: one word
    ids = np.asarray(tok(placeholder), dtype="int32")
    # the trailing padding every row shares is cut: masked, it changes no vector, and
    # a sentence in a 128-token encoder then costs its own length, not 128
    width = int(max(np.nonzero((ids != pad).any(axis=0))[0], default=0)) + 1
    ids = ids[:, :width].copy()
    mask = ids != pad
    free = mask & ~np.isin(ids, list(special))
    goal = np.asarray(embeddings, dtype="float32")
    goal = goal / np.maximum(np.linalg.norm(goal, axis=1, keepdims=True), 1e-12)

    def values():
        return [v.value for v in variables]

    def score(rows_ids, rows):
        target.record_queries(len(rows))  # raises on an exhausted budget, before reading
        w = values()
        c = _blocks(
            lambda b, m, g: cosines_c(w, b, m, g),
            rows,
            _SCORE_BLOCK,
            rows_ids,
            mask[rows],
            goal[rows],
        )
        return c.astype("float64")

    def top_tokens(rows):
        target.record_queries(len(rows))
        w = values()
        return _blocks(
            lambda b, m, g: gains_c(w, b, m, g, bias),
            rows,
            _BLOCK,
            ids[rows],
            mask[rows],
            goal[rows],
        )

    def texts_now():
        if hasattr(tok, "special_ids"):  # a PresetTokenizer drops its special tokens
            decoded = list(tok.detokenize(ids))
        else:
            decoded = [_text.decode(tok, row) for row in ids]
        return [d if c else t for d, c, t in zip(decoded, changed, texts)]

    changed = np.zeros(n, dtype=bool)
    best = score(ids, np.arange(n))
    live = free.any(axis=1) & allowed.any()
    m = int(n_candidates)
    bar = keras.utils.Progbar(int(steps), unit_name="step") if verbose and steps else None
    try:
        for step in range(int(steps)):
            rows = np.nonzero(live)[0]
            if rows.size == 0:
                break
            top = top_tokens(rows)  # (rows, length, k)
            cand_ids = np.repeat(ids[rows], m, axis=0)
            for j, i in enumerate(rows):
                pos = rng.choice(np.nonzero(free[i])[0], size=m)
                cand_ids[j * m + np.arange(m), pos] = top[j, pos, rng.integers(0, k, size=m)]
            cos = score(cand_ids, np.repeat(rows, m)).reshape(len(rows), m)
            for j, i in enumerate(rows):
                b = int(np.argmax(cos[j]))
                if cos[j, b] > best[i]:
                    best[i], ids[i], changed[i] = cos[j, b], cand_ids[j * m + b], True
                else:
                    live[i] = False
            if bar is not None:
                bar.update(step + 1, [("cosine", float(best.mean()))])
    except QueryBudgetExceededError as exc:
        exc.partial_result = (texts_now(), best.copy())  # the texts refined so far
        raise
    except KeyboardInterrupt:
        warnings.warn(
            "Interrupted during the white-box refinement; returning the closest texts so far.",
            RuntimeWarning,
            stacklevel=3,
        )
    return texts_now(), best
