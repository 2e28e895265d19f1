"""Small text models: a classifier, a causal language model and a sentence encoder.

All three are Keras models on integer token ids (0 is padding), built from keras-hub
layers (``TokenAndPositionEmbedding``, ``TransformerEncoder``, ``TransformerDecoder``),
trainable on a CPU in minutes and serialisable (``model.save`` /
``keras.saving.load_model``). No pretrained weights are used. Given a ``seed``, each
draws its weights (and its blocks' dropout) from seeds derived from it.

Each of them also runs from *embeddings* rather than token ids, which white-box
attacks need (:class:`kmi.attacks.TokenOptimization` feeds relaxed, soft one-hot
tokens):

- ``model.embed(token_ids)``: token plus position embeddings;
- ``model.embed_probabilities(probs)``: the same for distributions over the vocabulary
  (``probs @ token_embedding_matrix`` plus positions);
- ``model.call_embedded(x, padding_mask)``: the rest of the network.

Strings are turned into token ids by a keras-hub tokenizer of
:mod:`kmi.models.tokenizers` (importable from here too): :func:`byte_tokenizer`
(bytes, a vocabulary of 256) or :func:`word_tokenizer` (a word-level
``WordPieceTokenizer`` whose vocabulary is built from a corpus).
:class:`TextPipeline` joins a tokenizer and a model into the callable on strings that a
black-box :class:`kmi.targets.Target` wraps.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras
import keras_hub
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from kmi.models._seeds import SeedStream
from kmi.models.tokenizers import SPECIAL_TOKENS, byte_tokenizer, word_tokenizer
from kmi.utils.validation import check_texts

__all__ = [
    "SPECIAL_TOKENS",
    "CausalLM",
    "SentenceEncoder",
    "TextClassifier",
    "TextPipeline",
    "byte_tokenizer",
    "check_texts",
    "word_tokenizer",
]


# ----------------------------------------------------------------------------- models
class _TextTransformer(keras.Model):
    """Token and position embedding, then transformer blocks (the shared trunk)."""

    _decoder_blocks = False

    def __init__(
        self,
        vocabulary_size: int,
        sequence_length: int,
        *,
        embedding_dim: int = 64,
        num_heads: int = 2,
        intermediate_dim: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("sequence_length", sequence_length),
            ("embedding_dim", embedding_dim),
            ("num_heads", num_heads),
            ("num_layers", num_layers),
        ):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
        if embedding_dim % num_heads:
            raise ValueError(
                "embedding_dim must be a multiple of num_heads. "
                f"Received: embedding_dim={embedding_dim}, num_heads={num_heads}"
            )
        self.seed = SeedStream(seed).seed  # checked here, drawn in build
        self.vocabulary_size = int(vocabulary_size)
        self.sequence_length = int(sequence_length)
        self.embedding_dim = int(embedding_dim)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.token_and_position = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=self.vocabulary_size,
            sequence_length=self.sequence_length,
            embedding_dim=self.embedding_dim,
            name="token_and_position",
        )
        block = (
            keras_hub.layers.TransformerDecoder
            if self._decoder_blocks
            else keras_hub.layers.TransformerEncoder
        )
        self.blocks = [
            block(
                intermediate_dim=self.intermediate_dim,
                num_heads=self.num_heads,
                dropout=self.dropout,
                name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]

    def build(self, input_shape: tuple | None = None) -> None:
        """Create every weight (inputs are ``(batch, sequence_length)`` token ids).

        With a ``seed``, the random weights of each part are then drawn again from
        its own initializers with seeds derived from ``seed``, and the dropout inside
        the blocks restarts from them (keras-hub hands one initializer to all the
        sublayers of a block, so they cannot be seeded one by one when created).
        """
        shape = (None, self.sequence_length)
        self.token_and_position.build(shape)
        for blk in self.blocks:
            blk.build((None, self.sequence_length, self.embedding_dim))
        self._build_head()
        seeds = SeedStream(self.seed)
        for part in (self.token_and_position, *self.blocks, *self._head_layers()):
            seeds.redraw(part)
        self.built = True

    def _build_head(self):
        pass

    def _head_layers(self):
        return []

    @property
    def token_embedding_matrix(self) -> keras.Variable:
        """The (vocabulary_size, embedding_dim) token embedding variable."""
        return self.token_and_position.token_embedding.embeddings

    def _check_ids(self, token_ids):
        shape = ops.shape(token_ids)
        if len(shape) != 2 or (shape[1] is not None and shape[1] > self.sequence_length):
            raise ValueError(
                "token_ids must have shape (batch, length) with length at most "
                f"{self.sequence_length}. Received: token_ids.shape={tuple(shape)}"
            )

    def embed(self, token_ids: Any) -> Any:
        """Token plus position embeddings of a batch of token ids.

        Parameters
        ----------
        token_ids : tensor or array of int, shape (batch, length)
            ``length`` at most ``sequence_length``.

        Returns
        -------
        tensor of shape (batch, length, embedding_dim)

        Raises
        ------
        ValueError
            If ``token_ids`` is not 2-d or is longer than ``sequence_length``.
        """
        self._check_ids(token_ids)
        return self.token_and_position(ops.cast(token_ids, "int32"))

    def embed_probabilities(self, probs: Any) -> Any:
        """Embeddings of distributions over the vocabulary (soft one-hot tokens).

        ``probs`` has shape (batch, length, vocabulary_size); the result is
        ``probs @ token_embedding_matrix`` plus position embeddings, which equals
        :meth:`embed` for one-hot ``probs``.

        Parameters
        ----------
        probs : tensor of shape (batch, length, vocabulary_size)

        Returns
        -------
        tensor of shape (batch, length, embedding_dim)

        Raises
        ------
        ValueError
            If the last axis of ``probs`` is not ``vocabulary_size``.
        """
        if probs.shape[-1] != self.vocabulary_size:
            raise ValueError(
                f"probs must have a last axis of vocabulary_size={self.vocabulary_size}. "
                f"Received: probs.shape={tuple(probs.shape)}"
            )
        tokens = ops.matmul(probs, ops.cast(self.token_embedding_matrix, probs.dtype))
        return tokens + self.token_and_position.position_embedding(tokens)

    def _trunk(self, x, padding_mask, training=None):
        for blk in self.blocks:
            if self._decoder_blocks:
                x = blk(x, decoder_padding_mask=padding_mask, training=training)
            else:
                x = blk(x, padding_mask=padding_mask, training=training)
        return x

    def call(self, token_ids: Any, training: bool | None = None) -> Any:
        """The model's output for a batch of token ids (0 is padding)."""
        token_ids = ops.cast(token_ids, "int32")
        return self.call_embedded(self.embed(token_ids), token_ids != 0, training=training)

    def call_embedded(
        self, x: Any, padding_mask: Any = None, training: bool | None = None
    ) -> Any:  # pragma: no cover
        raise NotImplementedError

    def get_config(self) -> dict:
        """The constructor's arguments, for ``from_config`` and ``model.save``."""
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "embedding_dim": self.embedding_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "seed": self.seed,
        }


def _masked_mean(x, padding_mask):
    if padding_mask is None:
        return ops.mean(x, axis=1)
    m = ops.cast(padding_mask, x.dtype)[..., None]
    return ops.sum(x * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="kmi")
class CausalLM(_TextTransformer):
    """A small causal (left-to-right) transformer language model.

    ``model(token_ids)`` returns next-token logits of shape (batch, length,
    vocabulary_size): position ``t`` predicts token ``t + 1``. The output layer is
    the transposed token embedding (tied weights). Train it with
    ``SparseCategoricalCrossentropy(from_logits=True)`` on ``(ids[:, :-1], ids[:, 1:])``
    (see :meth:`lm_targets`).

    Parameters
    ----------
    vocabulary_size : int
        Number of token ids (256 for :func:`byte_tokenizer`).
    sequence_length : int
        Longest input.
    embedding_dim : int, default=64
        Width of the token and position embeddings and of the blocks.
    num_heads : int, default=2
        Attention heads; ``embedding_dim`` must be a multiple of it.
    intermediate_dim : int, default=128
        Width of each block's feed-forward layer.
    num_layers : int, default=1
        Transformer decoder blocks (self-attention with a causal mask).
    dropout : float, default=0.0
        Dropout rate inside the blocks.
    seed : int, default=None
        Seeds the weights and the blocks' dropout: once built, every random weight
        is drawn again from its layer's initializer with a seed of its own derived
        from ``seed`` (see :meth:`build`). ``None`` draws as Keras does.
    **kwargs
        Passed to :class:`keras.Model` (e.g. ``name``).

    Raises
    ------
    ValueError
        On a size that is not a positive integer, an ``embedding_dim`` that is not a
        multiple of ``num_heads``, or a bad ``seed``.

    References
    ----------
    A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez,
    L. Kaiser and I. Polosukhin. Attention is all you need. NeurIPS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import CausalLM
    >>> lm = CausalLM(vocabulary_size=256, sequence_length=8, embedding_dim=16, seed=0)
    >>> tuple(lm(np.ones((2, 8), dtype="int32")).shape)
    (2, 8, 256)
    """

    _decoder_blocks = True

    def call_embedded(self, x: Any, padding_mask: Any = None, training: bool | None = None) -> Any:
        """Next-token logits from input embeddings (see :meth:`embed_probabilities`).

        Parameters
        ----------
        x : tensor of shape (batch, length, embedding_dim)
        padding_mask : tensor of bool, shape (batch, length), optional
            False at padding positions.
        training : bool, optional

        Returns
        -------
        tensor of shape (batch, length, vocabulary_size)
        """
        h = self._trunk(x, padding_mask, training=training)
        return self.token_and_position.token_embedding(h, reverse=True)

    @staticmethod
    def lm_targets(token_ids: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(inputs, targets, sample_weight)`` for next-token training, pads weighted 0.

        Parameters
        ----------
        token_ids : array-like of int, shape (n, length)

        Returns
        -------
        inputs, targets : ndarray of shape (n, length - 1)
            ``token_ids[:, :-1]`` and ``token_ids[:, 1:]``.
        sample_weight : ndarray of shape (n, length - 1), float32
            0 where the target is padding (id 0), else 1.

        Examples
        --------
        >>> from kmi.models import CausalLM
        >>> x, y, w = CausalLM.lm_targets([[5, 6, 7, 0]])
        >>> x.tolist(), y.tolist(), w.tolist()
        ([[5, 6, 7]], [[6, 7, 0]], [[1.0, 1.0, 0.0]])
        """
        ids = np.asarray(token_ids)
        x, y = ids[:, :-1], ids[:, 1:]
        return x, y, (y != 0).astype("float32")


@keras.saving.register_keras_serializable(package="kmi")
class SentenceEncoder(_TextTransformer):
    """A transformer sentence encoder: mean of its token states over non-padding tokens.

    ``model(token_ids)`` returns one vector per text, of width ``output_dim`` (a
    linear projection) or ``embedding_dim``, L2-normalised when ``normalize``.

    Parameters
    ----------
    vocabulary_size, sequence_length : int
        As :class:`CausalLM`.
    embedding_dim, num_heads, intermediate_dim, num_layers, dropout, seed
        As :class:`CausalLM`; the blocks are ``TransformerEncoder`` blocks.
    output_dim : int, default=None
        Width of the output projection; ``None`` for no projection.
    normalize : bool, default=True
        Divide each output by its L2 norm.
    **kwargs
        Passed to :class:`keras.Model` (e.g. ``name``).

    Raises
    ------
    ValueError
        As :class:`CausalLM`, or if ``output_dim`` is not a positive integer.

    References
    ----------
    A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez,
    L. Kaiser and I. Polosukhin. Attention is all you need. NeurIPS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import SentenceEncoder
    >>> enc = SentenceEncoder(vocabulary_size=50, sequence_length=6, embedding_dim=16)
    >>> vectors = np.asarray(enc(np.array([[5, 6, 7, 0, 0, 0]])))
    >>> vectors.shape, round(float(np.linalg.norm(vectors)), 4)
    ((1, 16), 1.0)
    """

    def __init__(
        self,
        *args: Any,
        output_dim: int | None = None,
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if output_dim is not None and (
            not isinstance(output_dim, numbers.Integral) or output_dim < 1
        ):
            raise ValueError(
                "output_dim must be a positive integer or None. "
                f"Received: output_dim={output_dim!r}"
            )
        self.output_dim = None if output_dim is None else int(output_dim)
        self.normalize = bool(normalize)
        self.projection = (
            None if self.output_dim is None else keras.layers.Dense(self.output_dim, name="proj")
        )

    def _build_head(self):
        if self.projection is not None:
            self.projection.build((None, self.embedding_dim))

    def _head_layers(self):
        return [] if self.projection is None else [self.projection]

    def call_embedded(self, x: Any, padding_mask: Any = None, training: bool | None = None) -> Any:
        """Sentence vectors from input embeddings.

        Parameters
        ----------
        x : tensor of shape (batch, length, embedding_dim)
        padding_mask : tensor of bool, shape (batch, length), optional
            False at padding positions, which the mean leaves out.
        training : bool, optional

        Returns
        -------
        tensor of shape (batch, output_dim or embedding_dim)
        """
        h = _masked_mean(self._trunk(x, padding_mask, training=training), padding_mask)
        if self.projection is not None:
            h = self.projection(h)
        if self.normalize:
            h = h / ops.maximum(ops.norm(h, axis=-1, keepdims=True), 1e-12)
        return h

    def get_config(self) -> dict:
        """The constructor's arguments, for ``from_config`` and ``model.save``."""
        return {**super().get_config(), "output_dim": self.output_dim, "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="kmi")
class TextClassifier(_TextTransformer):
    """A transformer text classifier: encoder blocks, masked mean pooling, a linear head.

    ``model(token_ids)`` returns class logits of shape (batch, num_classes); train it
    with ``SparseCategoricalCrossentropy(from_logits=True)``.

    Parameters
    ----------
    vocabulary_size, sequence_length : int
        As :class:`CausalLM`.
    embedding_dim, num_heads, intermediate_dim, num_layers, dropout, seed
        As :class:`CausalLM`; the blocks are ``TransformerEncoder`` blocks.
    num_classes : int, default=2
        Width of the output layer, at least 2.
    **kwargs
        Passed to :class:`keras.Model` (e.g. ``name``).

    Raises
    ------
    ValueError
        As :class:`CausalLM`, or if ``num_classes`` is below 2.

    References
    ----------
    A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez,
    L. Kaiser and I. Polosukhin. Attention is all you need. NeurIPS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import TextClassifier
    >>> clf = TextClassifier(vocabulary_size=50, sequence_length=6, num_classes=3,
    ...                      embedding_dim=16, seed=0)
    >>> tuple(clf(np.array([[5, 6, 7, 0, 0, 0]])).shape)
    (1, 3)
    """

    def __init__(self, *args: Any, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(num_classes, numbers.Integral) or num_classes < 2:
            raise ValueError(
                "num_classes must be an integer of at least 2. "
                f"Received: num_classes={num_classes!r}"
            )
        self.num_classes = int(num_classes)
        self.head = keras.layers.Dense(self.num_classes, name="head")

    def _build_head(self):
        self.head.build((None, self.embedding_dim))

    def _head_layers(self):
        return [self.head]

    def call_embedded(self, x: Any, padding_mask: Any = None, training: bool | None = None) -> Any:
        """Class logits from input embeddings.

        Parameters
        ----------
        x : tensor of shape (batch, length, embedding_dim)
        padding_mask : tensor of bool, shape (batch, length), optional
            False at padding positions, which the pooling leaves out.
        training : bool, optional

        Returns
        -------
        tensor of shape (batch, num_classes)
        """
        return self.head(
            _masked_mean(self._trunk(x, padding_mask, training=training), padding_mask)
        )

    def get_config(self) -> dict:
        """The constructor's arguments, for ``from_config`` and ``model.save``."""
        return {**super().get_config(), "num_classes": self.num_classes}


# ----------------------------------------------------------------------------- pipeline
class TextPipeline:
    """A tokenizer and a Keras model on token ids, callable on a list of strings.

    This is what a black-box text target looks like to an attacker: strings in,
    vectors (a sentence encoder) or scores (a classifier) out. Wrap it with
    ``Target(TextPipeline(tok, enc), task="embedding")`` for an encoder.

    Parameters
    ----------
    tokenizer : keras-hub tokenizer
        Maps a list of strings to a (n, sequence_length) array of token ids.
    model : keras.Model
        Maps token ids to outputs.
    batch_size : int, default=256
        Texts per forward pass.

    Raises
    ------
    ValueError, TypeError
        When called on something other than a non-empty list of non-empty strings
        (:func:`kmi.utils.validation.check_texts`).

    Examples
    --------
    >>> from kmi.models import SentenceEncoder, TextPipeline, byte_tokenizer
    >>> pipe = TextPipeline(byte_tokenizer(12), SentenceEncoder(256, 12, embedding_dim=8))
    >>> pipe(["a secret", "another one"]).shape
    (2, 8)
    """

    def __init__(self, tokenizer: Any, model: keras.Model, *, batch_size: int = 256) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.batch_size = batch_size

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids of ``texts``, shape (n, sequence_length), int32.

        Raises
        ------
        ValueError, TypeError
            If ``texts`` is not a non-empty sequence of non-empty strings.

        Examples
        --------
        >>> from kmi.models import SentenceEncoder, TextPipeline, byte_tokenizer
        >>> pipe = TextPipeline(byte_tokenizer(4), SentenceEncoder(256, 4, embedding_dim=8))
        >>> pipe.tokenize(["hi"]).tolist()
        [[104, 105, 0, 0]]
        """
        texts = check_texts(texts)
        return np.asarray(self.tokenizer(texts), dtype="int32")

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """The model's outputs for ``texts``, one row per text (NumPy)."""
        from kmi.backend import predict

        # compiled once per padded number of rows, the weights passed in (not
        # captured as constants: a later fit is seen, and compiling stays cheap)
        return predict(self.model, self.tokenize(texts), batch_size=self.batch_size)

    def __repr__(self) -> str:
        return f"TextPipeline({type(self.tokenizer).__name__}, {type(self.model).__name__})"
