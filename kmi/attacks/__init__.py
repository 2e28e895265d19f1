"""Model inversion attacks: scikit-learn estimators with fit / invert / score."""

from kmi.attacks.graph import FeatureSimilarity, GraphMI, LinkStealing, LinkTeller
from kmi.attacks.image import DeepInversion, MIFace
from kmi.attacks.tabular import (
    CSMIA,
    LOMIA,
    AttributeInferenceModel,
    DecisionTreeWhiteBox,
    FredriksonMAP,
    ImputationBaseline,
)

__all__ = [
    "CSMIA",
    "LOMIA",
    "AttributeInferenceModel",
    "DecisionTreeWhiteBox",
    "DeepInversion",
    "FeatureSimilarity",
    "FredriksonMAP",
    "GraphMI",
    "ImputationBaseline",
    "LinkStealing",
    "LinkTeller",
    "MIFace",
]
