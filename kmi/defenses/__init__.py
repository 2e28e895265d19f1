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
from kmi.defenses.output import label_only, round_confidence, top_k_confidence

__all__ = [
    "DPSGD",
    "PoissonSampler",
    "PrivacyBudget",
    "calibrate_noise",
    "check_dp_compatible",
    "compute_epsilon",
    "label_only",
    "make_private",
    "per_example_gradients",
    "round_confidence",
    "top_k_confidence",
]
