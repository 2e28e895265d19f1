"""kmi: model inversion attacks and defenses for Keras 3.

The public API lives in sub-packages, imported on first use so that
``import kmi`` stays cheap:

- :mod:`kmi.targets`: wrap any model as a queryable :class:`~kmi.targets.Target`;
- :mod:`kmi.attacks`: model inversion attacks (scikit-learn estimators);
- :mod:`kmi.defenses`: defenses that drop into ``model.fit``;
- :mod:`kmi.metrics`: how attack success is measured;
- :mod:`kmi.datasets`: data loaders reading from a ``data_home``;
- :mod:`kmi.audit`: run a suite of attacks and write a report.
"""

import importlib

__version__ = "0.1.0.dev0"

_SUBMODULES = (
    "attacks",
    "audit",
    "backend",
    "base",
    "datasets",
    "defenses",
    "metrics",
    "models",
    "targets",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"kmi.{name}")
    raise AttributeError(f"module 'kmi' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
