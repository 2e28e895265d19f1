"""Data set loaders: real files, real download code, a ``data_home`` cache."""

from kmi.datasets._base import get_data_home
from kmi.datasets.adult import load_adult
from kmi.datasets.att_faces import load_att_faces
from kmi.datasets.digits import load_digits, load_mnist_5k
from kmi.datasets.fashion_mnist import load_fashion_mnist
from kmi.datasets.planetoid import load_planetoid
from kmi.datasets.text import load_fortunes, load_tweets, make_canaries

__all__ = [
    "get_data_home",
    "load_adult",
    "load_att_faces",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist_5k",
    "load_planetoid",
    "load_fortunes",
    "load_tweets",
    "make_canaries",
]
