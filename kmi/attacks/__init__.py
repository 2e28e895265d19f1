"""Model inversion attacks: scikit-learn estimators with fit / invert / score."""

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
    "FredriksonMAP",
    "ImputationBaseline",
]
