"""Small reference architectures: target models, evaluation models, priors.

Every builder of trainable weights takes ``seed``: the same integer builds the same
weights on a given backend, without global seeding.
"""

from kmi.models.graph import GCNConv, GraphPredictor, gcn, normalize_adjacency
from kmi.models.image import (
    cnn_classifier,
    evaluation_classifier,
    feature_extractor,
    mlp_classifier,
    softmax_regression,
)
from kmi.models.pretrained import HubCausalLM, load_sentence_encoder
from kmi.models.priors import dcgan_critic, dcgan_generator, pca_prior
from kmi.models.tabular import KerasMLPClassifier
from kmi.models.text import CausalLM, SentenceEncoder, TextClassifier, TextPipeline
from kmi.models.tokenizers import byte_tokenizer, word_tokenizer

__all__ = [
    "CausalLM",
    "HubCausalLM",
    "SentenceEncoder",
    "TextClassifier",
    "TextPipeline",
    "byte_tokenizer",
    "load_sentence_encoder",
    "word_tokenizer",
    "GCNConv",
    "GraphPredictor",
    "KerasMLPClassifier",
    "cnn_classifier",
    "dcgan_critic",
    "dcgan_generator",
    "evaluation_classifier",
    "feature_extractor",
    "gcn",
    "mlp_classifier",
    "normalize_adjacency",
    "pca_prior",
    "softmax_regression",
]
