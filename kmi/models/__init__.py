"""Small reference architectures: target models, evaluation models, priors."""

from kmi.models.tabular import KerasMLPClassifier

__all__ = ["KerasMLPClassifier"]
