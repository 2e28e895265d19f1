"""Ghost clipping's per-layer rules: which rule covers which layer.

A rule knows one kind of layer (matched with ``isinstance``, so subclasses are
covered). During the batch's ordinary forward pass it records what the layer's
weight gradients are made of: the layer's input ``a`` and a *tap* on its
(pre-activation) output ``z``, whose gradient ``g`` the backward pass delivers
for every example at once. From ``a`` and ``g`` the rule gives

- each example's squared gradient norm over the layer's trainable variables, and
- the clipped sum ``sum_i c_i grad_i`` for any clip factors ``c``.

The rules live in three modules:

- :mod:`kmi.defenses._ghost_base`: the :class:`~kmi.defenses._ghost_base.Rule`
  interface and the algebra the rules share (ghost norms, book-keeping sums);
- :mod:`kmi.defenses._ghost_linear`: layers linear in their weights (``Dense``,
  ``EinsumDense``, convolutions, the embeddings), ``grad_i = a_i^T g_i``;
- :mod:`kmi.defenses._ghost_recompute`: normalisation layers, whose per-example
  gradients are formed outright (they are vectors), and
  :class:`~kmi.defenses._ghost_recompute.PerExampleRule` for any other layer that
  does not mix examples, recomputed alone, per example.

This module is the registry: :func:`rule_for` picks a layer's rule,
:func:`covered_classes` names the covered classes for messages.
"""

from __future__ import annotations

import importlib
import sys

from kmi.defenses._ghost_linear import (
    ConvRule,
    DenseRule,
    EinsumDenseRule,
    EmbeddingRule,
    PositionEmbeddingRule,
    ReversibleEmbeddingRule,
)
from kmi.defenses._ghost_recompute import AffineNormRule, PerExampleRule

#: keras-hub classes, by module and name, resolved once keras_hub is imported.
_KERAS_HUB = {
    "PositionEmbeddingRule": [
        ("keras_hub.src.layers.modeling.position_embedding", "PositionEmbedding"),
    ],
    "AffineNormRule": [
        ("keras_hub.src.layers.modeling.rms_normalization", "RMSNormalization"),
        ("keras_hub.src.models.gemma.rms_normalization", "RMSNormalization"),
        ("keras_hub.src.models.gemma3.gemma3_layers", "RMSNormalization"),
        ("keras_hub.src.models.llama.llama_layernorm", "LlamaLayerNorm"),
        ("keras_hub.src.models.mistral.mistral_layer_norm", "MistralLayerNormalization"),
        ("keras_hub.src.models.mixtral.mixtral_layer_norm", "MixtralLayerNormalization"),
        ("keras_hub.src.models.qwen.qwen_layernorm", "QwenLayerNorm"),
        ("keras_hub.src.models.qwen3.qwen3_layernorm", "Qwen3LayerNorm"),
        ("keras_hub.src.models.phi3.phi3_layernorm", "Phi3LayerNorm"),
        ("keras_hub.src.models.t5.t5_layer_norm", "T5LayerNorm"),
    ],
}

# Most specific first: ReversibleEmbedding is an Embedding.
RULES = [
    ReversibleEmbeddingRule(),
    EmbeddingRule(),
    EinsumDenseRule(),
    DenseRule(),
    ConvRule(),
    PositionEmbeddingRule(),
    AffineNormRule(),
]
PER_EXAMPLE = PerExampleRule()


def _keras_hub_classes(rule):
    if "keras_hub" not in sys.modules:  # no keras-hub layer can be in the model
        return ()
    found = []
    for module, name in _KERAS_HUB.get(type(rule).__name__, []):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def rule_for(layer):
    """The rule covering ``layer``'s class (by ``isinstance``), or ``None``."""
    for rule in RULES:
        if isinstance(layer, rule.classes + _keras_hub_classes(rule)):
            return rule
    return None


def covered_classes():
    """Names of the layer classes ghost clipping covers, for messages."""
    names = []
    for rule in RULES:
        names += [c.__name__ for c in rule.classes + _keras_hub_classes(rule)]
    return names
