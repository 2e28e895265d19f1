"""Privacy audits: run the applicable attacks on one model and report what leaked."""

from kmi.audit.api import audit
from kmi.audit.image import IMAGE_ATTACKS, run_image_attacks, train_evaluation_model
from kmi.audit.report import Report
from kmi.audit.tabular import TABULAR_ATTACKS, run_tabular_attacks

__all__ = [
    "IMAGE_ATTACKS",
    "TABULAR_ATTACKS",
    "Report",
    "audit",
    "run_image_attacks",
    "run_tabular_attacks",
    "train_evaluation_model",
]
