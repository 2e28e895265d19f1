"""How attack success is measured, one module per modality."""

from kmi.metrics import graph, image, tabular, text

__all__ = ["graph", "image", "tabular", "text"]
