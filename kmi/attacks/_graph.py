"""Shared machinery of the link-inference attacks in :mod:`kmi.attacks.graph`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import cdist

from kmi.base import BaseAttack
from kmi.metrics.graph import PAIRS, _check_nodes, edge_auc

#: The eight distances of He et al. (2021), as named by scipy.spatial.distance.
DISTANCES = (
    "cosine",
    "euclidean",
    "correlation",
    "chebyshev",
    "braycurtis",
    "canberra",
    "cityblock",
    "sqeuclidean",
)


def check_features(X, name: str = "X") -> np.ndarray:
    """Node features as a finite float32 matrix of shape (n_nodes, n_features)."""
    if X is None:
        raise ValueError(
            f"{name} must hold the features of the graph's nodes, one row per node. "
            f"Received: {name}=None"
        )
    if sp.issparse(X):
        X = X.toarray()
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be a numeric matrix of node features. Received: {name} of type "
            f"{type(X).__name__}"
        ) from exc
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape (n_nodes, n_features) with at least 2 nodes. Received: "
            f"{name} shape={X.shape}"
        )
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} must not contain NaN or inf. Received: non-finite {name}")
    return X


def check_nodes(nodes, n_nodes: int) -> np.ndarray:
    """Attacked node indices (all nodes for None), at least two of them."""
    nodes = _check_nodes(nodes, n_nodes)
    if len(nodes) < 2:
        raise ValueError(
            "Attack at least two nodes: edges are between pairs of them. "
            f"Received: {len(nodes)} nodes"
        )
    return nodes


def check_adjacency(adjacency, n_nodes: int, name: str = "adjacency"):
    """A square scipy.sparse or dense adjacency with one row per node, without NaN."""
    from kmi.models.graph import _check_adjacency

    return _check_adjacency(adjacency, n_nodes, name=name)


def pair_matrix(values: np.ndarray, k: int) -> np.ndarray:
    """Scatter scores of the pairs ``triu_indices(k, 1)`` into a symmetric matrix."""
    out = np.zeros((k, k), dtype=np.float64)
    rows, cols = np.triu_indices(k, 1)
    out[rows, cols] = values
    out[cols, rows] = values
    return out


def pairwise_distance_scores(P: np.ndarray, metric: str) -> np.ndarray:
    """``-distance(P_i, P_j)`` for every pair of rows, with a zero diagonal."""
    P = np.asarray(P, dtype=np.float64)
    d = cdist(P, P, metric=metric)
    d = np.nan_to_num(d, nan=0.0)  # e.g. correlation of a constant row
    scores = -d
    np.fill_diagonal(scores, 0.0)
    return scores


def paired_distances(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """The eight distances of :data:`DISTANCES` between rows ``U[i]`` and ``V[i]``."""
    U, V = np.asarray(U, np.float64), np.asarray(V, np.float64)
    diff = U - V
    absdiff = np.abs(diff)
    eps = 1e-12

    def cos(a, b):
        num = np.sum(a * b, axis=1)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return np.where(den > eps, num / np.maximum(den, eps), 0.0)

    sq = np.sum(diff**2, axis=1)
    cols = {
        "cosine": 1.0 - cos(U, V),
        "euclidean": np.sqrt(sq),
        "correlation": 1.0 - cos(U - U.mean(1, keepdims=True), V - V.mean(1, keepdims=True)),
        "chebyshev": absdiff.max(axis=1),
        "braycurtis": absdiff.sum(1) / np.maximum(np.abs(U + V).sum(1), eps),
        "canberra": np.sum(
            np.where(np.abs(U) + np.abs(V) > eps, absdiff / np.maximum(np.abs(U) + np.abs(V),
                                                                       eps), 0.0),
            axis=1,
        ),
        "cityblock": absdiff.sum(1),
        "sqeuclidean": sq,
    }
    return np.stack([cols[m] for m in DISTANCES], axis=1)


class GraphAttack(BaseAttack):
    """Base of the link-inference attacks: input checks and ``score``.

    ``invert(X, y=None, nodes=None)`` returns a symmetric (n_attacked, n_attacked)
    matrix of edge scores with a zero diagonal; ``score`` measures it against the
    true adjacency with :func:`kmi.metrics.graph.edge_auc`.
    """

    def score(self, X, y=None, *, adjacency=None, nodes=None, pairs: str = "all",
              random_state=None) -> float:
        """Edge AUC of :meth:`invert` against the true graph (greater is better).

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features)
            Node features, as for :meth:`invert`.
        y : array-like, default=None
            Labels of the attacked nodes, for attacks that use them.
        adjacency : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
            The true graph the auditor holds.
        nodes : array-like of int, default=None
            The attacked nodes; ``None`` means all.
        pairs : {"all", "balanced"}, default="all"
            Node pairs measured; see :mod:`kmi.metrics.graph`.
        random_state : int or None, default=None
            Draws the non-edges when ``pairs="balanced"``.

        Returns
        -------
        float
            Edge AUC over the attacked node pairs.
        """
        if adjacency is None:
            raise ValueError(
                "score needs the true graph to measure the attack against: pass "
                "adjacency=... (the auditor's ground truth). Received: adjacency=None"
            )
        if pairs not in PAIRS:
            raise ValueError(f"pairs must be one of {PAIRS}. Received: pairs={pairs!r}")
        X = check_features(X)
        check_adjacency(adjacency, X.shape[0])
        nodes = check_nodes(nodes, X.shape[0])
        scores = self.invert(X, y, nodes=nodes)
        return edge_auc(adjacency, scores, nodes, pairs=pairs, random_state=random_state)
