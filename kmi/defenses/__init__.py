"""Defenses against model inversion that drop into an existing ``model.fit``."""

from kmi.defenses.accounting import calibrate_noise, compute_epsilon
from kmi.defenses.dp import (
    DPSGD,
    PoissonSampler,
    PrivacyBudget,
    check_dp_compatible,
    make_private,
    per_example_gradients,
)
from kmi.defenses.output import (
    ConfidenceNoise,
    LabelOnly,
    ReverseSigmoid,
    RoundConfidence,
    TopK,
    confidence_noise,
    label_only,
    reverse_sigmoid,
    round_confidence,
    top_k_confidence,
)

__all__ = [
    "ConfidenceNoise",
    "DPSGD",
    "LabelOnly",
    "PoissonSampler",
    "PrivacyBudget",
    "ReverseSigmoid",
    "RoundConfidence",
    "TopK",
    "calibrate_noise",
    "check_dp_compatible",
    "compute_epsilon",
    "confidence_noise",
    "label_only",
    "make_private",
    "per_example_gradients",
    "reverse_sigmoid",
    "round_confidence",
    "top_k_confidence",
]
