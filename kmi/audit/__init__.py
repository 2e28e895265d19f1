"""Privacy audits: run the applicable attacks on one model and report what leaked."""

from kmi.audit.report import Report
from kmi.audit.tabular import TABULAR_ATTACKS, run_tabular_attacks

__all__ = ["TABULAR_ATTACKS", "Report", "run_tabular_attacks"]
