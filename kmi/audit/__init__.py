"""Privacy audits: run the applicable attacks on one model and report what leaked.

The names below are imported from their modules on first use, so that importing
:mod:`kmi.audit.cli` (the ``kmi`` command) does not import Keras before it has parsed
its arguments.
"""

import importlib

#: Where each public name lives.
_NAMES = {
    "AuditedModel": "kmi.audit.api",
    "IMAGE_ATTACKS": "kmi.audit.image",
    "TABULAR_ATTACKS": "kmi.audit.tabular",
    "Report": "kmi.audit.report",
    "audit": "kmi.audit.api",
    "run_image_attacks": "kmi.audit.image",
    "run_tabular_attacks": "kmi.audit.tabular",
    "train_evaluation_model": "kmi.audit.image",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'kmi.audit' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
