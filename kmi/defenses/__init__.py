"""Defenses against model inversion that drop into an existing ``model.fit``.

- :mod:`kmi.defenses.dp`: DP-SGD (:class:`DPSGD`, :func:`make_private`,
  :class:`PrivacyBudget`, :class:`PoissonSampler`); its training step, checks and
  ghost clipping live in private modules (``_dp_step``, ``_dp_checks``,
  ``_sampling``, ``_ghost*``).
- :mod:`kmi.defenses.accounting`: privacy accounting over ``dp-accounting``.
- :mod:`kmi.defenses.layers`, :mod:`kmi.defenses.losses`,
  :mod:`kmi.defenses.regularizers`: training-time penalties (MID, negative label
  smoothing, BiDO).
- :mod:`kmi.defenses.output`: output hardening of a served model.
- :mod:`kmi.defenses.graph`: edge-level DP of a graph (EdgeRand, LapGraph).
- :mod:`kmi.defenses.transfer`: fine-tune only the last layers (TL-DMI).
- :mod:`kmi.defenses.trapdoor`: trapdoor triggers that decoy inversion (Trap-MID).
"""

from kmi.defenses.accounting import calibrate_noise, compute_epsilon
from kmi.defenses.dp import (
    DPSGD,
    PoissonSampler,
    PrivacyBudget,
    check_dp_compatible,
    make_private,
    per_example_gradients,
)
from kmi.defenses.graph import EdgeRand, LapGraph
from kmi.defenses.layers import InformationBottleneck
from kmi.defenses.losses import LabelSmoothingSchedule, NegativeLabelSmoothing
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
from kmi.defenses.regularizers import BiDO, coco, hsic
from kmi.defenses.transfer import freeze_until
from kmi.defenses.trapdoor import TrapMID

__all__ = [
    "BiDO",
    "ConfidenceNoise",
    "DPSGD",
    "EdgeRand",
    "InformationBottleneck",
    "LabelOnly",
    "LabelSmoothingSchedule",
    "LapGraph",
    "NegativeLabelSmoothing",
    "PoissonSampler",
    "PrivacyBudget",
    "ReverseSigmoid",
    "RoundConfidence",
    "TopK",
    "TrapMID",
    "calibrate_noise",
    "check_dp_compatible",
    "coco",
    "compute_epsilon",
    "confidence_noise",
    "freeze_until",
    "hsic",
    "label_only",
    "make_private",
    "per_example_gradients",
    "reverse_sigmoid",
    "round_confidence",
    "top_k_confidence",
]
