"""Model inversion attacks: scikit-learn estimators with fit / invert / score.

Each attack is imported from its modality's package on first use, so that
``from kmi.attacks import MIFace`` does not import keras-hub (which the text
attacks need, and which takes seconds to import).
"""

import importlib

#: Each attack's module.
_ATTACKS = {
    "FeatureSimilarity": "kmi.attacks.graph",
    "GraphMI": "kmi.attacks.graph",
    "LinkStealing": "kmi.attacks.graph",
    "LinkTeller": "kmi.attacks.graph",
    "BREPMI": "kmi.attacks.image",
    "DeepInversion": "kmi.attacks.image",
    "GMI": "kmi.attacks.image",
    "InversionModel": "kmi.attacks.image",
    "KEDMI": "kmi.attacks.image",
    "LOKT": "kmi.attacks.image",
    "MIFace": "kmi.attacks.image",
    "PLGMI": "kmi.attacks.image",
    "RLBMI": "kmi.attacks.image",
    "AttributeInferenceModel": "kmi.attacks.tabular",
    "CSMIA": "kmi.attacks.tabular",
    "DecisionTreeWhiteBox": "kmi.attacks.tabular",
    "FredriksonMAP": "kmi.attacks.tabular",
    "ImputationBaseline": "kmi.attacks.tabular",
    "LOMIA": "kmi.attacks.tabular",
    "EmbeddingInversion": "kmi.attacks.text",
    "LMExtraction": "kmi.attacks.text",
    "TokenOptimization": "kmi.attacks.text",
}

__all__ = sorted(_ATTACKS)


def __getattr__(name):
    if name in _ATTACKS:
        value = getattr(importlib.import_module(_ATTACKS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'kmi.attacks' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
