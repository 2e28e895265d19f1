"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 70,000 28x28 grey images, 10 classes."""

from __future__ import annotations

import gzip
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


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a NumPy array.

    Raises
    ------
    ValueError
        If the file is not an unsigned-byte IDX file or its size does not match
        its header.
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


def load_fashion_mnist(data_home=None, *, download: bool = True):
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
    """
    arrays = {
        key: read_idx(_locate(filename, data_home, download)) for key, filename in FILES.items()
    }
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
