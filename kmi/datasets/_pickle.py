"""A restricted unpickler for the data files kmi reads.

``pickle.load`` runs whatever code a file names; a data file from the internet must
never get that power. :func:`restricted_load` admits only the few classes the
Planetoid files hold (NumPy arrays and dtypes, SciPy CSR matrices, lists and
``collections.defaultdict``) and refuses everything else before it is imported.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

#: (module, name) pairs a pickle may name, and the object each one resolves to.
#: Python 2 files name ``__builtin__`` and pre-1.8 SciPy module paths.
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("scipy.sparse.csr", "csr_matrix"): sp.csr_matrix,
    ("scipy.sparse._csr", "csr_matrix"): sp.csr_matrix,
    ("scipy.sparse", "csr_matrix"): sp.csr_matrix,
    ("collections", "defaultdict"): collections.defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`.

    Raises
    ------
    pickle.UnpicklingError
        When the pickle names any other global (a function to call, a class to build).
    """

    def find_class(self, module: str, name: str) -> object:
        """The allowed object named ``module.name``; anything else is refused."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                "Refusing to unpickle a global this data file should not contain; only "
                "NumPy arrays, SciPy CSR matrices, lists and collections.defaultdict are "
                "allowed. The file may be corrupted or malicious: delete it and download "
                f"it again. Received: global={module}.{name}"
            ) from None


def restricted_load(
    file: str | os.PathLike | bytes | bytearray | BinaryIO, *, encoding: str = "latin1"
) -> object:
    """Unpickle ``file`` (a path or a binary file object) with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` reads NumPy arrays written by Python 2.
    """
    if isinstance(file, bytes | bytearray):
        file = io.BytesIO(file)
    if hasattr(file, "read"):
        return RestrictedUnpickler(file, encoding=encoding).load()
    with open(file, "rb") as fh:
        return RestrictedUnpickler(fh, encoding=encoding).load()
