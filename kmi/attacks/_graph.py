"""Shared machinery of the link-inference attacks in :mod:`kmi.attacks.graph`."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from kmi.base import BaseAttack
from kmi.metrics.graph import PAIRS, edge_auc
from kmi.utils.validation import check_adjacency, check_features, check_nodes

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
            np.where(
                np.abs(U) + np.abs(V) > eps, absdiff / np.maximum(np.abs(U) + np.abs(V), eps), 0.0
            ),
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

    def score(
        self, X, y=None, *, adjacency=None, nodes=None, pairs: str = "all", random_state=None
    ) -> float:
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
        X = check_features(X, min_samples=2)
        check_adjacency(adjacency, X.shape[0])
        nodes = check_nodes(nodes, X.shape[0], min_nodes=2)
        scores = self.invert(X, y, nodes=nodes)
        return edge_auc(adjacency, scores, nodes, pairs=pairs, random_state=random_state)
