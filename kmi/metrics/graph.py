"""Success of link-inference attacks on graph models: edge AUC and average precision.

An attack returns a matrix of edge scores over the attacked nodes (greater means
"more likely an edge"). It is measured against the true adjacency on node pairs
``(i, j)``, ``i < j``, both among the attacked nodes, in one of two ways, and every
result states which:

- ``pairs="all"``: every such pair. Graphs are sparse, so this is very unbalanced
  (Cora: about 0.14% of pairs are edges); AUC is insensitive to that, average
  precision is not.
- ``pairs="balanced"``: every edge among the attacked nodes and as many non-edges
  drawn uniformly at random (``random_state``), the protocol of He et al. (2021)
  and Wu et al. (2022); average precision is then comparable across graphs.

:class:`kmi.attacks.FeatureSimilarity` scores pairs without querying the model; an
attack leaks the graph only where it beats it. The adjacency is checked by
:func:`kmi.utils.validation.check_adjacency` and the nodes by
:func:`kmi.utils.validation.check_nodes`; scores that are all NaN are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.utils import check_random_state

from kmi.utils.validation import check_adjacency, check_nodes

__all__ = [
    "PAIRS",
    "edge_ap",
    "edge_auc",
    "edge_labels",
    "edge_metrics",
    "edge_scorer",
]

#: How node pairs are chosen.
PAIRS = ("all", "balanced")


def edge_labels(adjacency: ArrayLike | sp.spmatrix, nodes: ArrayLike | None = None) -> np.ndarray:
    """The true adjacency among ``nodes``, as a dense 0/1 matrix.

    Parameters
    ----------
    adjacency : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
        Any non-zero entry is an edge.
    nodes : array-like of int, default=None
        Attacked nodes, at least one; ``None`` means all.

    Returns
    -------
    ndarray of shape (n_attacked, n_attacked), int8.

    Raises
    ------
    ValueError
        If the adjacency is empty, not square or holds NaN, or the nodes are empty,
        repeated or out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.graph import edge_labels
    >>> A = np.array([[0, 2, 0], [2, 0, 0], [0, 0, 0]])
    >>> edge_labels(A, [0, 1]).tolist()
    [[0, 1], [1, 0]]
    """
    adjacency = check_adjacency(adjacency)
    nodes = check_nodes(nodes, adjacency.shape[0])
    if sp.issparse(adjacency):
        sub = sp.csr_matrix(adjacency)[nodes][:, nodes].toarray()
    else:
        sub = adjacency[np.ix_(nodes, nodes)]
    return (sub != 0).astype(np.int8)


def _pairs(adjacency, scores, nodes, pairs, random_state):
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}. Received: pairs={pairs!r}")
    truth = edge_labels(adjacency, nodes)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != truth.shape:
        raise ValueError(
            "scores must be a square matrix with one row and column per attacked node "
            f"({truth.shape[0]}), as the attack's invert returns. Received: scores "
            f"shape={scores.shape}"
        )
    rows, cols = np.triu_indices(truth.shape[0], k=1)
    y_true, y_score = truth[rows, cols], scores[rows, cols]
    if len(y_score) and np.isnan(y_score).all():
        raise ValueError(
            "scores are all NaN: the attack scored no node pair (an interrupted attack leaves "
            f"NaN where it did not finish). Received: {len(y_score)} NaN scores"
        )
    if np.isnan(y_score).any():
        raise ValueError(
            "scores hold NaN for some node pairs (an interrupted attack leaves NaN where it "
            "did not finish); measure the finished rows only, e.g. with nodes=nodes[:k] and "
            f"scores[:k, :k]. Received: {int(np.isnan(y_score).sum())} NaN scores"
        )
    n_edges = int(y_true.sum())
    if n_edges == 0 or n_edges == len(y_true):
        raise ValueError(
            "The attacked nodes need both edges and non-edges among them to measure an "
            f"attack; attack more nodes. Received: {n_edges} edges among {len(y_true)} pairs"
        )
    if pairs == "balanced":
        rng = check_random_state(random_state)
        pos = np.flatnonzero(y_true)
        neg = rng.choice(
            np.flatnonzero(y_true == 0), size=min(n_edges, len(y_true) - n_edges), replace=False
        )
        keep = np.concatenate([pos, np.sort(neg)])
        y_true, y_score = y_true[keep], y_score[keep]
    return y_true, y_score


def edge_auc(
    adjacency: ArrayLike | sp.spmatrix,
    scores: ArrayLike,
    nodes: ArrayLike | None = None,
    *,
    pairs: str = "all",
    random_state: int | np.random.RandomState | None = None,
) -> float:
    """Area under the ROC curve of edge scores over the attacked node pairs.

    Parameters
    ----------
    adjacency : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
        The true graph.
    scores : ndarray of shape (n_attacked, n_attacked)
        Edge scores for ``nodes`` (row and column ``i`` is ``nodes[i]``), as the
        attacks' ``invert`` returns; only entries above the diagonal are read.
    nodes : array-like of int, default=None
        The attacked nodes; ``None`` means all.
    pairs : {"all", "balanced"}, default="all"
        Every pair, or every edge and as many random non-edges (module docstring).
    random_state : int, RandomState instance or None, default=None
        Draws the non-edges when ``pairs="balanced"``.

    Returns
    -------
    float
        0.5 is chance, 1.0 a perfect ranking.

    Raises
    ------
    ValueError
        On a shape mismatch, NaN scores, nodes out of range, or when the attacked
        nodes have no edge (or no non-edge) among them.

    References
    ----------
    X. He, J. Jia, M. Backes, N. Z. Gong and Y. Zhang. Stealing links from graph
    neural networks. USENIX Security 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.graph import edge_auc
    >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    >>> edge_auc(A, np.array([[0, 0.9, 0.1], [0.9, 0, 0.2], [0.1, 0.2, 0]]))
    1.0
    """
    y_true, y_score = _pairs(adjacency, scores, nodes, pairs, random_state)
    return float(roc_auc_score(y_true, y_score))


def edge_ap(
    adjacency: ArrayLike | sp.spmatrix,
    scores: ArrayLike,
    nodes: ArrayLike | None = None,
    *,
    pairs: str = "all",
    random_state: int | np.random.RandomState | None = None,
) -> float:
    """Average precision of edge scores over the attacked node pairs.

    Chance level is the share of edges among the pairs: 0.5 with
    ``pairs="balanced"``, the graph's density otherwise.

    Parameters
    ----------
    adjacency, scores, nodes, pairs, random_state
        As :func:`edge_auc`.

    Returns
    -------
    float
        1.0 when every edge scores above every non-edge.

    Raises
    ------
    ValueError
        As :func:`edge_auc`.

    References
    ----------
    F. Wu, Y. Long, C. Zhang and B. Li. LinkTeller: recovering private edges from
    graph neural networks via influence analysis. IEEE S&P 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.graph import edge_ap
    >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    >>> round(edge_ap(A, np.array([[0, 0.2, 0.9], [0.2, 0, 0.1], [0.9, 0.1, 0]])), 4)
    0.5
    """
    y_true, y_score = _pairs(adjacency, scores, nodes, pairs, random_state)
    return float(average_precision_score(y_true, y_score))


def edge_metrics(
    adjacency: ArrayLike | sp.spmatrix,
    scores: ArrayLike,
    nodes: ArrayLike | None = None,
    *,
    pairs: str = "all",
    random_state: int | np.random.RandomState | None = None,
) -> dict[str, Any]:
    """AUC and average precision together, with what they were computed on.

    Parameters
    ----------
    adjacency, scores, nodes, pairs, random_state
        As :func:`edge_auc`.

    Returns
    -------
    dict
        ``auc``, ``ap``, ``pairs`` (the protocol), ``n_pairs`` (pairs scored),
        ``n_edges`` (edges among them) and ``chance_ap`` (AP of a random guess).

    Raises
    ------
    ValueError
        As :func:`edge_auc`.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.graph import edge_metrics
    >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    >>> out = edge_metrics(A, np.array([[0, 0.9, 0.1], [0.9, 0, 0.2], [0.1, 0.2, 0]]))
    >>> out["auc"], out["pairs"], out["n_pairs"], out["n_edges"], round(out["chance_ap"], 3)
    (1.0, 'all', 3, 1, 0.333)
    """
    y_true, y_score = _pairs(adjacency, scores, nodes, pairs, random_state)
    return {
        "auc": float(roc_auc_score(y_true, y_score)),
        "ap": float(average_precision_score(y_true, y_score)),
        "pairs": pairs,
        "n_pairs": int(len(y_true)),
        "n_edges": int(y_true.sum()),
        "chance_ap": float(y_true.mean()),
    }


class _EdgeScorer:
    def __init__(self, metric, pairs, random_state):
        self.metric, self.pairs, self.random_state = metric, pairs, random_state

    def __call__(self, attack, X, y=None, *, adjacency, nodes=None) -> float:
        scores = attack.invert(X, y, nodes=nodes)
        fn = edge_auc if self.metric == "auc" else edge_ap
        return fn(adjacency, scores, nodes, pairs=self.pairs, random_state=self.random_state)

    def __repr__(self) -> str:
        return f"edge_scorer({self.metric!r}, pairs={self.pairs!r})"


def edge_scorer(
    metric: str = "auc",
    *,
    pairs: str = "all",
    random_state: int | np.random.RandomState | None = None,
) -> Callable[..., float]:
    """A scorer ``scorer(attack, X, y, adjacency=..., nodes=...)`` for a fitted graph attack.

    It runs ``attack.invert(X, y, nodes=nodes)`` and returns :func:`edge_auc` or
    :func:`edge_ap` against ``adjacency``.

    Parameters
    ----------
    metric : {"auc", "ap"}, default="auc"
        The measure returned.
    pairs : {"all", "balanced"}, default="all"
        As :func:`edge_auc`.
    random_state : int, RandomState instance or None, default=None
        As :func:`edge_auc`.

    Returns
    -------
    callable
        ``scorer(attack, X, y=None, *, adjacency, nodes=None) -> float``.

    Raises
    ------
    ValueError
        On an unknown ``metric`` or ``pairs``.

    Examples
    --------
    >>> from kmi.metrics.graph import edge_scorer
    >>> edge_scorer("ap", pairs="balanced")
    edge_scorer('ap', pairs='balanced')
    """
    if metric not in ("auc", "ap"):
        raise ValueError(f"metric must be 'auc' or 'ap'. Received: metric={metric!r}")
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}. Received: pairs={pairs!r}")
    return _EdgeScorer(metric, pairs, random_state)
