"""How attack success is measured, one module per modality."""

from kmi.metrics import image, tabular

__all__ = ["image", "tabular"]
