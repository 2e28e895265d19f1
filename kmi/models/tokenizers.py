"""Tokenizers for the text models: bytes, or whole words counted on a corpus.

Both are keras-hub tokenizers: called on a list of strings, they return an
``(n, sequence_length)`` array of token ids in which 0 pads.
"""

from __future__ import annotations

import numbers
import re
from collections import Counter
from collections.abc import Sequence

import keras_hub

from kmi.utils.validation import check_texts

__all__ = ["SPECIAL_TOKENS", "byte_tokenizer", "word_tokenizer"]

#: Special tokens of :func:`word_tokenizer` vocabularies, at ids 0 to 3.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def byte_tokenizer(sequence_length: int) -> keras_hub.tokenizers.ByteTokenizer:
    """A byte-level tokenizer: ids are UTF-8 bytes (256 of them), 0 pads.

    Parameters
    ----------
    sequence_length : int
        Outputs are padded or truncated to this length.

    Returns
    -------
    keras_hub.tokenizers.ByteTokenizer
        Call it on a list of strings for an (n, sequence_length) array of ids.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import byte_tokenizer
    >>> np.asarray(byte_tokenizer(5)(["hi"])).tolist()
    [[104, 105, 0, 0, 0]]
    """
    return keras_hub.tokenizers.ByteTokenizer(sequence_length=int(sequence_length))


_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def word_tokenizer(
    texts: Sequence[str], *, vocabulary_size: int = 2000, sequence_length: int = 32
) -> keras_hub.tokenizers.WordPieceTokenizer:
    """A word-level keras-hub ``WordPieceTokenizer`` whose vocabulary comes from ``texts``.

    The vocabulary holds :data:`SPECIAL_TOKENS` (``[PAD]`` is id 0) and the most
    frequent lower-cased words and punctuation marks of ``texts``, whole (no
    sub-word pieces); any other word becomes ``[UNK]``.

    Parameters
    ----------
    texts : sequence of str
        Corpus the vocabulary is counted on.
    vocabulary_size : int, default=2000
        Size of the vocabulary, special tokens included.
    sequence_length : int, default=32
        Outputs are padded or truncated to this length.

    Returns
    -------
    keras_hub.tokenizers.WordPieceTokenizer

    Raises
    ------
    ValueError, TypeError
        If ``texts`` is not a non-empty sequence of non-empty strings
        (:func:`kmi.utils.validation.check_texts`), or ``vocabulary_size`` is not an
        integer above the number of special tokens.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import word_tokenizer
    >>> tok = word_tokenizer(["the cat sat", "the dog ran"], sequence_length=4)
    >>> tok.get_vocabulary()[:5]
    ['[PAD]', '[UNK]', '[BOS]', '[EOS]', 'the']
    >>> np.asarray(tok(["the bird sat"])).tolist()
    [[4, 1, 6, 0]]
    """
    texts = check_texts(texts)
    if not isinstance(vocabulary_size, numbers.Integral) or vocabulary_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocabulary_size must be an integer above {len(SPECIAL_TOKENS)}. "
            f"Received: vocabulary_size={vocabulary_size!r}"
        )
    counts = Counter(w for t in texts for w in _WORDS.findall(t.lower()))
    words = [w for w, _ in counts.most_common(vocabulary_size - len(SPECIAL_TOKENS))]
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=[*SPECIAL_TOKENS, *words],
        sequence_length=int(sequence_length),
        lowercase=True,
        oov_token="[UNK]",
    )
