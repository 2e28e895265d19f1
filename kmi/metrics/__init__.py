"""How attack success is measured, one module per modality."""

from kmi.metrics import tabular

__all__ = ["tabular"]
