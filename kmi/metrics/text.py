"""Success of text model-inversion attacks, measured rather than shown.

- :func:`word_precision`, :func:`word_recall`, :func:`word_f1`: overlap of the sets
  of words of each recovered text and its original (Song and Raghunathan 2020 report
  these for embedding inversion), averaged over texts;
- :func:`bleu`: corpus BLEU (Papineni et al. 2002) with add-one smoothing of the
  higher-order precisions (Lin and Och 2004), in [0, 1];
- :func:`exact_match`: fraction of texts recovered word for word;
- :func:`cosine_similarity`: row-wise cosine of two sets of vectors (re-embed the
  recovered texts through the encoder to compare them in its space);
- :func:`sequence_log_perplexity`: log-perplexity of token sequences from a language
  model's next-token probabilities;
- :func:`exposure`: Carlini et al. (2019)'s exposure of a canary, by its rank in the
  randomness space or by the skew-normal extrapolation.

Words are maximal runs of letters and digits, lower-cased (``"Hello, World!"`` has the
words ``hello`` and ``world``). Original texts are checked by
:func:`kmi.utils.validation.check_texts` (a non-empty sequence of non-blank strings);
recovered texts may hold ``None`` for texts an interrupted attack did not recover
(counted wrong), but not only ``None``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from kmi.utils.validation import check_features, check_texts

__all__ = [
    "bleu",
    "cosine_similarity",
    "exact_match",
    "exposure",
    "sequence_log_perplexity",
    "text_attack_metrics",
    "tokenize_words",
    "word_f1",
    "word_precision",
    "word_recall",
]

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (maximal runs of letters, digits and ``_``).

    Parameters
    ----------
    text : str

    Returns
    -------
    list of str

    Raises
    ------
    TypeError
        If ``text`` is not a string.

    Examples
    --------
    >>> from kmi.metrics.text import tokenize_words
    >>> tokenize_words("Hello, World! 123-45")
    ['hello', 'world', '123', '45']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string. Received: text of type {type(text).__name__}")
    return _WORD.findall(text.lower())


def _pairs(y_true, y_pred):
    y_true = check_texts(y_true, "y_true")
    if isinstance(y_pred, (str, bytes)) or y_pred is None:
        raise TypeError(
            "y_pred must be a sequence of strings (None for a text not recovered), not "
            f"{'one string' if y_pred is not None else 'None'}; wrap one text in a list. "
            f"Received: y_pred of type {type(y_pred).__name__}"
        )
    y_pred = list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(
            "y_true and y_pred must hold the same number of texts. "
            f"Received: len(y_true)={len(y_true)}, len(y_pred)={len(y_pred)}"
        )
    if all(p is None for p in y_pred):
        raise ValueError(
            "y_pred holds only None: the attack recovered no text, so there is nothing to "
            f"measure. Received: {len(y_pred)} None"
        )
    out = []
    for t, p in zip(y_true, y_pred):
        # None stands for a text an interrupted attack did not recover: it is wrong
        out.append((tokenize_words(t), [] if p is None else tokenize_words(p)))
    return out


def _prf(y_true, y_pred):
    prec, rec, f1 = [], [], []
    for t, p in _pairs(y_true, y_pred):
        t, p = set(t), set(p)
        hit = len(t & p)
        pr = hit / len(p) if p else 0.0
        rc = hit / len(t) if t else float(not p)
        prec.append(pr)
        rec.append(rc)
        f1.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
    return float(np.mean(prec)), float(np.mean(rec)), float(np.mean(f1))


def word_precision(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Mean fraction of the distinct words of each recovered text found in the original.

    Parameters
    ----------
    y_true : sequence of str
        Original texts.
    y_pred : sequence of str
        Recovered texts, one per original (``None`` counts as an empty text).

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    TypeError
        If ``y_true`` or ``y_pred`` is a single string, or holds something else than
        strings (and ``None`` in ``y_pred``).
    ValueError
        If they differ in length, ``y_true`` is empty or holds a blank text, or
        ``y_pred`` holds only ``None`` (as every metric of texts here).

    Examples
    --------
    >>> from kmi.metrics.text import word_precision
    >>> round(word_precision(["the cat sat"], ["the cat ran"]), 4)
    0.6667
    """
    return _prf(y_true, y_pred)[0]


def word_recall(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Mean fraction of the distinct words of each original text that were recovered.

    Parameters
    ----------
    y_true, y_pred : sequence of str
        As :func:`word_precision`.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    TypeError, ValueError
        As :func:`word_precision`.

    Examples
    --------
    >>> from kmi.metrics.text import word_recall
    >>> word_recall(["the cat sat down"], ["the cat"])
    0.5
    """
    return _prf(y_true, y_pred)[1]


def word_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Mean F1 of word precision and recall, text by text (Song and Raghunathan 2020).

    Word order is ignored: this is the measure of a bag-of-words inversion.

    Parameters
    ----------
    y_true, y_pred : sequence of str
        As :func:`word_precision`.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    TypeError, ValueError
        As :func:`word_precision`.

    References
    ----------
    C. Song and A. Raghunathan. Information Leakage in Embedding Models. CCS 2020.

    Examples
    --------
    >>> from kmi.metrics.text import word_f1
    >>> word_f1(["the cat sat"], ["cat the sat"])
    1.0
    """
    return _prf(y_true, y_pred)[2]


def exact_match(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Fraction of texts whose words are recovered exactly, in order.

    Case, punctuation and spacing are ignored (texts are compared as word lists).

    Parameters
    ----------
    y_true, y_pred : sequence of str
        As :func:`word_precision`.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    TypeError, ValueError
        As :func:`word_precision`.

    Examples
    --------
    >>> from kmi.metrics.text import exact_match
    >>> exact_match(["Hello, world!", "a b"], ["hello world", "b a"])
    0.5
    """
    return float(np.mean([t == p for t, p in _pairs(y_true, y_pred)]))


def _ngrams(words, n):
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(
    y_true: Sequence[str], y_pred: Sequence[str], *, max_order: int = 4, smooth: bool = True
) -> float:
    """Corpus BLEU of recovered texts against their originals (one reference each).

    Parameters
    ----------
    y_true : sequence of str
        Original texts (the references).
    y_pred : sequence of str
        Recovered texts (the hypotheses).
    max_order : int, default=4
        Longest n-gram counted.
    smooth : bool, default=True
        Add one to the matches and counts of orders above 1 (Lin and Och 2004), so that
        short texts without a 4-gram match do not score 0.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    TypeError, ValueError
        As :func:`word_precision`, or if ``max_order`` is not a positive integer.

    References
    ----------
    K. Papineni, S. Roukos, T. Ward and W.-J. Zhu. BLEU: a Method for Automatic
    Evaluation of Machine Translation. ACL 2002.

    C.-Y. Lin and F. J. Och. ORANGE: a method for evaluating automatic evaluation
    metrics for machine translation. COLING 2004.

    Examples
    --------
    >>> from kmi.metrics.text import bleu
    >>> bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    1.0
    >>> round(bleu(["the cat sat on the mat"], ["the cat sat on a mat"]), 4)
    0.6389
    """
    if not isinstance(max_order, int) or max_order < 1:
        raise ValueError(
            f"max_order must be a positive integer. Received: max_order={max_order!r}"
        )
    matches = np.zeros(max_order)
    totals = np.zeros(max_order)
    ref_len = hyp_len = 0
    for t, p in _pairs(y_true, y_pred):
        ref_len += len(t)
        hyp_len += len(p)
        for n in range(1, max_order + 1):
            hyp = _ngrams(p, n)
            ref = _ngrams(t, n)
            matches[n - 1] += sum(min(c, ref[g]) for g, c in hyp.items())
            totals[n - 1] += max(len(p) - n + 1, 0)
    if hyp_len == 0:
        return 0.0
    if smooth:
        matches[1:] += 1.0
        totals[1:] += 1.0
    if np.any(matches == 0):
        return 0.0
    log_p = np.mean(np.log(matches / totals))
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return float(min(brevity * math.exp(log_p), 1.0))


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``.

    Parameters
    ----------
    a, b : array-like of shape (n_samples, n_features)
        Finite vectors, one per row (e.g. original and recovered texts re-embedded).

    Returns
    -------
    ndarray of shape (n_samples,)
        0 where a row is all zeros.

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is not a non-empty finite matrix
        (:func:`kmi.utils.validation.check_features`), or they differ in shape.

    Examples
    --------
    >>> from kmi.metrics.text import cosine_similarity
    >>> cosine_similarity([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [-1.0, -1.0]]).round(6).tolist()
    [1.0, -1.0]
    """
    check_features(a, name="a")
    check_features(b, name="b")
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    if a.shape != b.shape:
        raise ValueError(
            "a and b must be 2-D arrays of the same shape (one vector per row). "
            f"Received: a.shape={a.shape}, b.shape={b.shape}"
        )
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    den = na * nb
    dot = np.sum(a * b, axis=1)
    return np.where(den > 0, dot / np.where(den > 0, den, 1.0), 0.0)


def sequence_log_perplexity(
    probs: ArrayLike, token_ids: ArrayLike, *, mask: ArrayLike | None = None
) -> np.ndarray:
    """Log-perplexity (mean negative log-likelihood, nats) of each token sequence.

    Parameters
    ----------
    probs : array-like of shape (n_samples, length, vocabulary_size)
        Next-token probabilities of a causal language model: ``probs[i, t]`` is the
        distribution of token ``t + 1`` given tokens ``0 .. t`` of sequence ``i``.
    token_ids : array-like of int, shape (n_samples, length)
        The sequences.
    mask : array-like of bool, shape (n_samples, length), default=None
        Which tokens to score (e.g. only a canary's secret, not its prefix).
        Token 0 is never scored (nothing predicts it). ``None`` scores tokens
        ``1 .. length - 1``.

    Returns
    -------
    ndarray of shape (n_samples,)
        Lower is more likely. NaN for a sequence with no scored token.

    Raises
    ------
    ValueError
        If ``probs`` is empty or holds NaN, the shapes do not match, or a token id
        is out of the vocabulary.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.text import sequence_log_perplexity
    >>> probs = np.full((1, 3, 2), 0.5)
    >>> round(float(sequence_log_perplexity(probs, [[0, 1, 1]])[0]), 4)
    0.6931
    """
    probs = np.asarray(probs, dtype="float64")
    ids = np.asarray(token_ids)
    if probs.ndim != 3 or ids.shape != probs.shape[:2] or not probs.size:
        raise ValueError(
            "probs must be a non-empty array of shape (n_samples, length, vocabulary_size) "
            "and token_ids of shape (n_samples, length). Received: "
            f"probs.shape={probs.shape}, token_ids.shape={ids.shape}"
        )
    if np.isnan(probs).any():
        what = "only NaN" if np.isnan(probs).all() else "NaN"
        raise ValueError(
            f"probs contains {what}; a language model's probabilities are finite. "
            f"Received: {int(np.isnan(probs).sum())} NaN values"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= probs.shape[2]):
        raise ValueError(
            f"token_ids must lie in [0, {probs.shape[2]}). "
            f"Received: token_ids between {ids.min()} and {ids.max()}"
        )
    nxt = ids[:, 1:]
    p = np.take_along_axis(probs[:, :-1], nxt[..., None], axis=2)[..., 0]
    nll = -np.log(np.clip(p, 1e-30, 1.0))
    m = np.ones_like(nxt, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)[:, 1:]
    if mask is not None and np.asarray(mask).shape != ids.shape:
        raise ValueError(
            f"mask must have the shape of token_ids {ids.shape}. "
            f"Received: mask.shape={np.asarray(mask).shape}"
        )
    count = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (nll * m).sum(axis=1) / np.maximum(count, 1), np.nan)


def exposure(
    canary_scores: float | ArrayLike,
    reference_scores: ArrayLike,
    *,
    randomness_space: int | float | None = None,
    method: str = "rank",
) -> np.ndarray | float:
    """Exposure of canaries: how much more likely the model finds them than chance.

    Carlini et al. (2019) insert a canary ``s[r]`` (a template ``s`` filled with a
    secret ``r`` drawn from a randomness space ``R``) into the training data and
    measure

    ``exposure = log2 |R| - log2 rank(s[r])``,

    where the rank orders every candidate of ``R`` by the model's log-perplexity
    (rank 1 is the most likely). It ranges from 0 to ``log2 |R|``; the maximum means
    the canary is the most likely of all, and extraction by enumeration succeeds.

    Parameters
    ----------
    canary_scores : float or array-like
        Log-perplexity of each canary (lower is more likely).
    reference_scores : array-like of shape (n_references,)
        Log-perplexity of other candidates drawn uniformly from ``R``
        (:func:`kmi.datasets.make_canaries` returns their texts).
    randomness_space : int, default=None
        ``|R|``. ``None`` means the references are all of ``R`` but the canary
        (``|R| = n_references + 1``) and the rank is exact.
    method : {"rank", "skew-normal"}, default="rank"
        ``"rank"``: the rank counts the references less likely than the canary; when
        they are a sample of a larger ``R``, the fraction below the canary is scaled up
        to ``|R|`` (its resolution is ``log2(n_references)`` bits). ``"skew-normal"``:
        Carlini et al.'s extrapolation: fit a skew-normal distribution to the
        reference scores and take ``-log2`` of its CDF at the canary's score; it
        resolves exposures beyond what the sample can rank, and is capped at
        ``log2 |R|`` when ``randomness_space`` is given.

    Returns
    -------
    float or ndarray
        A float for one canary, else one exposure per canary, in bits.

    Raises
    ------
    ValueError
        On an unknown method, a space smaller than the references, empty or
        non-finite scores.

    References
    ----------
    N. Carlini, C. Liu, U. Erlingsson, J. Kos and D. Song. The Secret Sharer:
    Evaluating and Testing Unintended Memorization in Neural Networks. USENIX
    Security 2019.

    Examples
    --------
    >>> from kmi.metrics.text import exposure
    >>> float(exposure(0.1, [1.0, 2.0, 3.0]))  # the most likely of 4 candidates
    2.0
    """
    if method not in ("rank", "skew-normal"):
        raise ValueError(f"method must be 'rank' or 'skew-normal'. Received: method={method!r}")
    scalar = np.ndim(canary_scores) == 0
    canary = np.atleast_1d(np.asarray(canary_scores, dtype="float64"))
    ref = np.asarray(reference_scores, dtype="float64").ravel()
    if ref.size == 0 or canary.size == 0:
        name = "reference_scores" if ref.size == 0 else "canary_scores"
        raise ValueError(f"{name} is empty. Received: len({name})=0")
    if not (np.isfinite(ref).all() and np.isfinite(canary).all()):
        raise ValueError(
            "canary_scores and reference_scores must be finite. Received: NaN or infinite scores"
        )
    space = ref.size + 1 if randomness_space is None else float(randomness_space)
    if space < ref.size + 1:
        raise ValueError(
            "randomness_space must be larger than the number of references (they are "
            f"other members of it). Received: randomness_space={randomness_space}, "
            f"len(reference_scores)={ref.size}"
        )
    log_space = math.log2(space)
    if method == "rank":
        below = (ref[None, :] < canary[:, None]).sum(axis=1)
        if randomness_space is None:
            rank = below + 1.0
        else:
            rank = 1.0 + below / ref.size * (space - 1.0)
        out = log_space - np.log2(rank)
    else:
        from scipy import stats

        if np.ptp(ref) == 0:
            raise ValueError(
                "The skew-normal fit needs reference scores that vary. "
                "Received: all reference_scores equal"
            )
        a, loc, scale = stats.skewnorm.fit(ref)
        log_cdf = stats.skewnorm.logcdf(canary, a, loc, scale)
        out = -log_cdf / math.log(2.0)
        if randomness_space is not None:
            out = np.minimum(out, log_space)
        out = np.maximum(out, 0.0)
    return float(out[0]) if scalar else out


def text_attack_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Word precision, recall and F1, BLEU and exact match of recovered texts, in a dict.

    Parameters
    ----------
    y_true, y_pred : sequence of str
        As :func:`word_precision`.

    Returns
    -------
    dict
        ``word_precision``, ``word_recall``, ``word_f1``, ``bleu`` and ``exact_match``.

    Raises
    ------
    TypeError, ValueError
        As :func:`word_precision`.

    Examples
    --------
    >>> from kmi.metrics.text import text_attack_metrics
    >>> out = text_attack_metrics(["the cat sat", "a dog"], ["the cat sat", None])
    >>> {name: round(value, 3) for name, value in out.items()}
    {'word_precision': 0.5, 'word_recall': 0.5, 'word_f1': 0.5, 'bleu': 0.513, 'exact_match': 0.5}
    """
    p, r, f = _prf(y_true, y_pred)
    return {
        "word_precision": p,
        "word_recall": r,
        "word_f1": f,
        "bleu": bleu(y_true, y_pred),
        "exact_match": exact_match(y_true, y_pred),
    }
