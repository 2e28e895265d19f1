"""Model inversion attacks: scikit-learn estimators with fit / invert / score."""

from kmi.attacks.graph import FeatureSimilarity, GraphMI, LinkStealing, LinkTeller
from kmi.attacks.image import BREPMI, GMI, KEDMI, DeepInversion, InversionModel, MIFace
from kmi.attacks.tabular import (
    CSMIA,
    LOMIA,
    AttributeInferenceModel,
    DecisionTreeWhiteBox,
    FredriksonMAP,
    ImputationBaseline,
)
from kmi.attacks.text import EmbeddingInversion, LMExtraction, TokenOptimization

__all__ = [
    "EmbeddingInversion",
    "LMExtraction",
    "TokenOptimization",
    "BREPMI",
    "CSMIA",
    "LOMIA",
    "AttributeInferenceModel",
    "DecisionTreeWhiteBox",
    "DeepInversion",
    "FeatureSimilarity",
    "FredriksonMAP",
    "GMI",
    "GraphMI",
    "ImputationBaseline",
    "InversionModel",
    "KEDMI",
    "LinkStealing",
    "LinkTeller",
    "MIFace",
]
