"""The Planetoid citation graphs: Cora, CiteSeer and PubMed."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch

from kmi.datasets._base import fetch_file, get_data_home
from kmi.datasets._pickle import restricted_load

__all__ = ["PLANETOID_NAMES", "load_planetoid"]

PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/ind.{name}.{ext}"
PLANETOID_NAMES = ("cora", "citeseer", "pubmed")
_EXTENSIONS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


def _dict_of_lists_to_adjacency(graph, n_nodes: int) -> sp.csr_matrix:
    rows, cols = [], []
    for u, neighbours in graph.items():
        rows.extend([int(u)] * len(neighbours))
        cols.extend(int(v) for v in neighbours)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    n = max(n_nodes, int(rows.max(initial=-1)) + 1, int(cols.max(initial=-1)) + 1)
    keep = rows != cols  # no self-loops
    rows, cols = rows[keep], cols[keep]
    adj = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)).tocsr()
    adj = adj + adj.T  # symmetric
    adj.data[:] = 1.0  # binary (duplicates and both directions count once)
    adj.eliminate_zeros()
    return adj.astype(np.float32).tocsr()


def load_planetoid(
    name: str = "cora",
    data_home: str | os.PathLike | None = None,
    *,
    row_normalize: bool = False,
    download: bool = True,
) -> Bunch:
    """Load a Planetoid citation graph (Yang et al. 2016) with its standard split.

    Reads the eight ``ind.<name>.*`` files of the Planetoid release from
    ``<data_home>/planetoid/``, downloading the missing ones from the Planetoid
    repository when ``download`` is true. The files are Python 2 pickles: they are
    read with a restricted unpickler that admits only NumPy arrays, SciPy CSR
    matrices, lists and ``collections.defaultdict``.

    =========  =======  =====  ========  =======  =====  ===  =====
    name       nodes    edges  features  classes  train  val  test
    =========  =======  =====  ========  =======  =====  ===  =====
    cora       2,708    5,278  1,433     7        140    500  1,000
    citeseer   3,327    4,552  3,703     6        120    500  1,000
    pubmed     19,717   44,324 500       3        60     500  1,000
    =========  =======  =====  ========  =======  =====  ===  =====

    Parameters
    ----------
    name : {"cora", "citeseer", "pubmed"}, default="cora"
        The graph (case-insensitive).
    data_home : str or path-like, default=None
        Data folder; see :func:`kmi.datasets.get_data_home`.
    row_normalize : bool, default=False
        Divide each feature row by its sum, as Kipf and Welling (2017) do.
    download : bool, default=True
        Download missing files.

    Returns
    -------
    Bunch with

    - ``features``: ndarray of shape (n_nodes, n_features), float32;
    - ``adjacency``: scipy.sparse CSR matrix of shape (n_nodes, n_nodes), float32,
      binary, symmetric, with no self-loops;
    - ``labels``: ndarray of shape (n_nodes,), int64; ``-1`` for the few CiteSeer
      nodes that have no label;
    - ``idx_train``, ``idx_val``, ``idx_test``: the standard split of Kipf and
      Welling (the first ``20 * n_classes`` nodes, the next 500, and the 1,000
      test nodes);
    - ``n_classes``, ``name`` and ``DESCR``.

    Raises
    ------
    ValueError
        If ``name`` is not a Planetoid data set.
    FileNotFoundError
        If a file is missing and cannot be downloaded.
    pickle.UnpicklingError
        If a file holds anything but the data types listed above.

    References
    ----------
    Z. Yang, W. Cohen and R. Salakhutdinov. "Revisiting Semi-Supervised Learning
    with Graph Embeddings." ICML 2016.

    T. N. Kipf and M. Welling. "Semi-Supervised Classification with Graph
    Convolutional Networks." ICLR 2017.

    Examples
    --------
    >>> from kmi.datasets import load_planetoid
    >>> # reads planetoid/ind.cora.* under data_home
    >>> cora = load_planetoid("cora", data_home="../shared/data")  # doctest: +SKIP
    >>> cora.features.shape, cora.adjacency.nnz // 2, len(cora.idx_test)  # doctest: +SKIP
    ((2708, 1433), 5278, 1000)
    """
    if not isinstance(name, str) or name.lower() not in PLANETOID_NAMES:
        raise ValueError(f"name must be one of {PLANETOID_NAMES}. Received: name={name!r}")
    name = name.lower()
    folder = get_data_home(data_home) / "planetoid"
    paths = {
        ext: fetch_file(
            PLANETOID_URL.format(name=name, ext=ext),
            folder / f"ind.{name}.{ext}",
            name=f"The Planetoid file ind.{name}.{ext}",
            download=download,
        )
        for ext in _EXTENSIONS
    }
    x, y, tx, ty, allx, ally, graph = (
        restricted_load(paths[ext]) for ext in ("x", "y", "tx", "ty", "allx", "ally", "graph")
    )
    test_idx_reorder = np.loadtxt(paths["test.index"], dtype=np.int64, ndmin=1)
    test_idx_range = np.sort(test_idx_reorder)
    tx, allx, x = (sp.csr_matrix(m) for m in (tx, allx, x))
    ty, ally, y = (np.asarray(m) for m in (ty, ally, y))

    if name == "citeseer":
        # Some CiteSeer test nodes are isolated and missing from tx/ty: give them
        # zero features and no label, as Kipf and Welling's loader does.
        full = np.arange(test_idx_range.min(), test_idx_range.max() + 1)
        tx_ext = sp.lil_matrix((len(full), x.shape[1]), dtype=np.float32)
        tx_ext[test_idx_range - full[0], :] = tx
        tx = tx_ext.tocsr()
        ty_ext = np.zeros((len(full), y.shape[1]), dtype=ty.dtype)
        ty_ext[test_idx_range - full[0], :] = ty
        ty = ty_ext

    features = sp.vstack((allx, tx)).toarray().astype(np.float32)
    features[test_idx_reorder, :] = features[test_idx_range, :]
    onehot = np.vstack((ally, ty))
    onehot[test_idx_reorder, :] = onehot[test_idx_range, :]
    labels = np.where(onehot.sum(axis=1) > 0, onehot.argmax(axis=1), -1).astype(np.int64)
    adjacency = _dict_of_lists_to_adjacency(graph, features.shape[0])
    if adjacency.shape[0] != features.shape[0]:  # pragma: no cover - corrupt files
        raise ValueError(
            f"The graph of {name} has {adjacency.shape[0]} nodes but its feature matrix has "
            f"{features.shape[0]} rows; the files are inconsistent. "
            f"Received: adjacency shape={adjacency.shape}"
        )
    if row_normalize:
        sums = features.sum(axis=1, keepdims=True)
        features = np.divide(features, sums, out=np.zeros_like(features), where=sums > 0)
    return Bunch(
        features=features,
        adjacency=adjacency,
        labels=labels,
        idx_train=np.arange(len(y)),
        idx_val=np.arange(len(y), len(y) + 500),
        idx_test=test_idx_range,
        n_classes=int(onehot.shape[1]),
        name=name,
        DESCR=load_planetoid.__doc__,
    )
