"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 70,000 28x28 grey images, 10 classes."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from kmi.datasets._base import fetch_file, get_data_home

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

__all__ = ["CLASSES", "load_fashion_mnist", "read_idx"]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        The file; a name ending in ``.gz`` is read through gzip.

    Returns
    -------
    ndarray of uint8
        Of the shape its header gives.

    Raises
    ------
    ValueError
        If the file is not an unsigned-byte IDX file or its size does not match
        its header.

    Examples
    --------
    >>> import os, tempfile
    >>> from kmi.datasets.fashion_mnist import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny-idx1-ubyte")
    >>> with open(path, "wb") as fh:  # magic 0 0 8 (unsigned bytes), 1 dimension of 3
    ...     _ = fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(path).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            "Expected an IDX file of unsigned bytes (magic 0x00 0x00 0x08 ndim). "
            f"Received: path={str(path)!r}"
        )
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    size = int(np.prod(shape))
    if len(data) - offset != size:
        raise ValueError(
            f"IDX header announces {size} values but the file holds {len(data) - offset}. "
            f"Received: path={str(path)!r}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _locate(filename, data_home, download):
    local = get_data_home(data_home) / "fashion-mnist" / filename
    if local.exists():
        return local
    system = SYSTEM_DIR / filename
    if system.exists():
        return system
    return fetch_file(FASHION_MNIST_URL + filename, local, name="Fashion-MNIST", download=download)


def load_fashion_mnist(
    data_home: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST: 60,000 training and 10,000 test images of clothes.

    Files are read from ``<data_home>/fashion-mnist/``, else from the folder the
    Debian package ``dataset-fashion-mnist`` installs
    (``/usr/share/datasets/fashion-mnist``), else downloaded from the authors'
    server into ``<data_home>/fashion-mnist/`` when ``download`` is true.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Data folder; see :func:`kmi.datasets.get_data_home`.
    download : bool, default=True
        Whether to download missing files.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of ndarray
        Images as uint8 arrays of shape (n, 28, 28), labels as uint8 arrays of
        shape (n,), as ``keras.datasets.fashion_mnist.load_data`` returns them.
        Class names are in ``kmi.datasets.fashion_mnist.CLASSES``.

    Raises
    ------
    FileNotFoundError
        If a file is missing and cannot be downloaded, naming where it is expected.

    References
    ----------
    Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
    Benchmarking Machine Learning Algorithms", 2017.

    Examples
    --------
    >>> from kmi.datasets import load_fashion_mnist
    >>> # reads fashion-mnist/*-ubyte.gz under data_home (or the Debian package's folder)
    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist(
    ...     data_home="../shared/data", download=False)  # doctest: +SKIP
    >>> x_train.shape, x_test.shape  # doctest: +SKIP
    ((60000, 28, 28), (10000, 28, 28))
    """
    arrays = {
        key: read_idx(_locate(filename, data_home, download)) for key, filename in FILES.items()
    }
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
