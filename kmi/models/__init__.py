"""Small reference architectures: target models, evaluation models, priors."""

from kmi.models.image import (
    cnn_classifier,
    dcgan_critic,
    dcgan_generator,
    evaluation_classifier,
    feature_extractor,
    mlp_classifier,
    softmax_regression,
)
from kmi.models.tabular import KerasMLPClassifier

__all__ = [
    "KerasMLPClassifier",
    "cnn_classifier",
    "dcgan_critic",
    "dcgan_generator",
    "evaluation_classifier",
    "feature_extractor",
    "mlp_classifier",
    "softmax_regression",
]
