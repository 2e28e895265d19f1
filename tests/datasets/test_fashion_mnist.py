import gzip

import numpy as np
import pytest

from kmi.datasets import fashion_mnist
from kmi.datasets.fashion_mnist import load_fashion_mnist, read_idx


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="unsigned bytes"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="announces 5"):
        read_idx(tmp_path / "short")


def test_load_from_data_home(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for key, name in fashion_mnist.FILES.items():
        n = 5 if "train" in key else 3
        shape = (n, 28, 28) if key.startswith("x") else (n,)
        _write_idx(folder / name, rng.integers(0, 256 if key.startswith("x") else 10, shape))
    (x, y), (xt, yt) = load_fashion_mnist(tmp_path, download=False)
    assert x.shape == (5, 28, 28) and y.shape == (5,) and xt.shape == (3, 28, 28)
    assert x.dtype == np.uint8 and yt.dtype == np.uint8


def test_missing_files_raise_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-copy")
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST was not found"):
        load_fashion_mnist(tmp_path, download=False)
