"""Defenses against model inversion that drop into an existing ``model.fit``."""

from kmi.defenses.output import label_only, round_confidence, top_k_confidence

__all__ = ["label_only", "round_confidence", "top_k_confidence"]
