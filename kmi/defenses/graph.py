"""Edge-level differential privacy for graphs (Wu et al. 2022): EdgeRand and LapGraph.

Both perturb the adjacency matrix once, before training; the model is then trained
(and served) on the perturbed graph, so everything it releases is edge-DP by
post-processing. Two graphs are neighbours when they differ in one edge; an
undirected edge is one entry of the upper triangle.

They are scikit-learn transformers: ``EdgeRand(epsilon=...).fit_transform(A)``
returns a scipy.sparse CSR matrix, symmetric, binary, with no self-loops. The same
``random_state`` gives the same graph.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

__all__ = ["EdgeRand", "LapGraph"]


def _check_epsilon(epsilon):
    if (
        not isinstance(epsilon, numbers.Real)
        or isinstance(epsilon, bool)
        or not np.isfinite(epsilon)
        or epsilon <= 0
    ):
        raise ValueError(
            f"epsilon must be a positive, finite number. Received: epsilon={epsilon!r}"
        )
    return float(epsilon)


def _upper_edges(adjacency):
    """Validated adjacency -> (n_nodes, rows, cols) of the upper-triangle edges."""
    if not sp.issparse(adjacency):
        adjacency = np.asarray(adjacency)
        if adjacency.ndim != 2:
            raise ValueError(
                "adjacency must be a square (n_nodes, n_nodes) matrix. Received: adjacency "
                f"shape={adjacency.shape}"
            )
        adjacency = sp.csr_matrix(adjacency)
    if adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(
            "adjacency must be a square (n_nodes, n_nodes) matrix. Received: adjacency "
            f"shape={adjacency.shape}"
        )
    if not np.all(np.isfinite(adjacency.data)):
        raise ValueError("adjacency must not contain NaN or inf. Received: non-finite adjacency")
    coo = sp.coo_matrix(adjacency)
    keep = coo.data != 0
    rows, cols = coo.row[keep], coo.col[keep]
    rows, cols = np.minimum(rows, cols), np.maximum(rows, cols)  # undirected
    off = rows != cols
    pairs = np.unique(np.stack([rows[off], cols[off]], 1), axis=0)
    return adjacency.shape[0], pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _row_offsets(n):
    """Flat index of the first upper-triangle cell of each row."""
    i = np.arange(n, dtype=np.int64)
    return i * n - i * (i + 1) // 2


def _flat_to_pair(flat, n):
    offsets = _row_offsets(n)
    rows = np.searchsorted(offsets, flat, side="right") - 1
    cols = flat - offsets[rows] + rows + 1
    return rows, cols


def _pair_to_flat(rows, cols, n):
    return _row_offsets(n)[rows] + (cols - rows - 1)


def _symmetric(n, rows, cols):
    data = np.ones(2 * len(rows), dtype=np.float32)
    out = sp.coo_matrix((data, (np.r_[rows, cols], np.r_[cols, rows])), shape=(n, n)).tocsr()
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


class _EdgeDP(TransformerMixin, BaseEstimator):
    """Base of the edge-DP transformers: validation, and the perturbed graph's format."""

    def fit(self, X: ArrayLike | sp.spmatrix, y: Any = None) -> _EdgeDP:
        """Validate ``epsilon`` and the adjacency ``X``.

        Nothing is learnt from the graph (that would spend privacy budget); only
        its number of nodes is kept, to check ``transform``'s input.

        Parameters
        ----------
        X : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
            The private graph.
        y : None
            Ignored.

        Returns
        -------
        self
            The fitted transformer.

        Raises
        ------
        ValueError
            If ``epsilon`` is not a positive, finite number, or the adjacency is
            not square or holds NaN.
        """
        self.epsilon_ = _check_epsilon(self.epsilon)
        self.n_nodes_ = _upper_edges(X)[0]
        return self

    def transform(self, X: ArrayLike | sp.spmatrix) -> sp.csr_matrix:
        """Perturb the adjacency ``X``.

        Parameters
        ----------
        X : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
            The private graph; non-zero entries are edges, read from both
            triangles (an undirected graph), self-loops dropped.

        Returns
        -------
        scipy.sparse.csr_matrix of shape (n_nodes, n_nodes), float32
            The perturbed graph: binary, symmetric, no self-loops.

        Raises
        ------
        ValueError
            If the adjacency is not square, holds NaN, or has another size than
            the one fitted.
        """
        check_is_fitted(self, "epsilon_")
        n, rows, cols = _upper_edges(X)
        if n != self.n_nodes_:
            raise ValueError(
                f"adjacency must have the {self.n_nodes_} nodes seen in fit. Received: "
                f"adjacency shape={(n, n)}"
            )
        rng = check_random_state(self.random_state)
        rows, cols = self._perturb(n, rows, cols, rng)
        return _symmetric(n, rows, cols)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.random_state is None
        return tags


class EdgeRand(_EdgeDP):
    """EdgeRand: randomized response on every node pair (Wu et al. 2022).

    Each cell of the upper triangle is, with probability ``s = 2 / (exp(epsilon)
    + 1)``, replaced by a fair coin flip, and otherwise kept: an edge survives
    with probability ``1 - s / 2`` and a non-edge becomes an edge with
    probability ``s / 2``, a likelihood ratio of ``exp(epsilon)``, so the
    perturbed graph is ``epsilon``-edge-DP. On a sparse graph a small ``epsilon``
    adds many random edges (Cora at ``epsilon=1``: about a million), which is
    the utility cost :class:`LapGraph` avoids.

    Parameters
    ----------
    epsilon : float, default=1.0
        Privacy budget (edge-level DP).
    random_state : int, RandomState instance or None, default=None
        Seed of the perturbation; the same seed gives the same graph.

    Attributes
    ----------
    epsilon_ : float
        The validated budget.
    n_nodes_ : int
        Number of nodes of the graph seen in ``fit``.

    See Also
    --------
    LapGraph : Keeps the number of edges, at the cost of a small share of the budget.

    References
    ----------
    F. Wu, Y. Long, C. Zhang and B. Li. "LinkTeller: Recovering Private Edges from
    Graph Neural Networks via Influence Analysis." IEEE S&P 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import EdgeRand
    >>> A = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    >>> EdgeRand(epsilon=8.0, random_state=0).fit_transform(A).toarray().astype(int).tolist()
    [[0, 1, 0], [1, 0, 1], [0, 1, 0]]

    A small budget adds many random edges to a sparse graph:

    >>> ring = np.roll(np.eye(200), 1, axis=1) + np.roll(np.eye(200), -1, axis=1)
    >>> noisy = EdgeRand(epsilon=2.0, random_state=0).fit_transform(ring)
    >>> int(ring.sum()) // 2, noisy.nnz // 2  # edges before, after
    (200, 2494)
    """

    def __init__(
        self, epsilon: float = 1.0, *, random_state: int | np.random.RandomState | None = None
    ) -> None:
        self.epsilon = epsilon
        self.random_state = random_state

    def _perturb(self, n, rows, cols, rng):
        s = 2.0 / (np.exp(self.epsilon_) + 1.0)
        n_pairs = n * (n - 1) // 2
        n_random = rng.binomial(n_pairs, s)
        gen = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
        flipped = np.sort(gen.choice(n_pairs, size=n_random, replace=False))
        coins = gen.random(n_random) < 0.5
        edges = _pair_to_flat(rows, cols, n)
        kept = edges[~np.isin(edges, flipped, assume_unique=True)]
        flat = np.union1d(kept, flipped[coins])
        return _flat_to_pair(flat, n)


class LapGraph(_EdgeDP):
    """LapGraph: Laplace noise on every node pair, keep as many edges as there were.

    A share ``epsilon_count = count_share * epsilon`` of the budget releases the
    number of edges ``T = |E| + Lap(1 / epsilon_count)``; the rest adds
    ``Lap(1 / (epsilon - epsilon_count))`` noise to every cell of the upper
    triangle, and the ``T`` largest cells become the edges. The graph is
    ``epsilon``-edge-DP and keeps (about) the original density (Wu et al. 2022).

    Parameters
    ----------
    epsilon : float, default=1.0
        Privacy budget (edge-level DP).
    count_share : float, default=0.01
        Share of ``epsilon`` spent on the number of edges (the paper uses 0.01).
    random_state : int, RandomState instance or None, default=None
        Seed of the perturbation; the same seed gives the same graph.
    block_size : int, default=1_000_000
        Cells drawn at once; memory stays bounded on large graphs.

    Attributes
    ----------
    epsilon_ : float
        The validated budget.
    n_nodes_ : int
        Number of nodes of the graph seen in ``fit``.

    See Also
    --------
    EdgeRand : Randomized response on every pair.

    References
    ----------
    F. Wu, Y. Long, C. Zhang and B. Li. "LinkTeller: Recovering Private Edges from
    Graph Neural Networks via Influence Analysis." IEEE S&P 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.defenses import LapGraph
    >>> A = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]])
    >>> noisy = LapGraph(epsilon=2.0, random_state=0).fit_transform(A)
    >>> noisy.shape, bool((noisy != noisy.T).nnz == 0)
    ((4, 4), True)

    Unlike :class:`EdgeRand`, it keeps about as many edges as there were:

    >>> ring = np.roll(np.eye(200), 1, axis=1) + np.roll(np.eye(200), -1, axis=1)
    >>> noisy = LapGraph(epsilon=2.0, random_state=0).fit_transform(ring)
    >>> int(ring.sum()) // 2, noisy.nnz // 2  # edges before, after
    (200, 205)
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        *,
        count_share: float = 0.01,
        random_state: int | np.random.RandomState | None = None,
        block_size: int = 1_000_000,
    ) -> None:
        self.epsilon = epsilon
        self.count_share = count_share
        self.random_state = random_state
        self.block_size = block_size

    def fit(self, X: ArrayLike | sp.spmatrix, y: Any = None) -> LapGraph:
        """Validate the parameters and the adjacency ``X``.

        Parameters
        ----------
        X : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes)
            The private graph.
        y : None
            Ignored.

        Returns
        -------
        self
            The fitted transformer.

        Raises
        ------
        ValueError
            If ``epsilon``, ``count_share`` or ``block_size`` is out of range, or
            the adjacency is not square or holds NaN.
        """
        if (
            not isinstance(self.count_share, numbers.Real)
            or not 0.0 < float(self.count_share) < 1.0
        ):
            raise ValueError(
                f"count_share must be in (0, 1). Received: count_share={self.count_share!r}"
            )
        if not isinstance(self.block_size, numbers.Integral) or self.block_size < 1:
            raise ValueError(
                f"block_size must be a positive integer. Received: block_size={self.block_size!r}"
            )
        return super().fit(X, y)

    def _perturb(self, n, rows, cols, rng):
        eps_count = self.count_share * self.epsilon_
        eps_cells = self.epsilon_ - eps_count
        n_pairs = n * (n - 1) // 2
        target = int(np.clip(round(len(rows) + rng.laplace(0.0, 1.0 / eps_count)), 0, n_pairs))
        gen = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
        if target == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        edges = np.sort(_pair_to_flat(rows, cols, n))
        best_idx = np.empty(0, dtype=np.int64)
        best_val = np.empty(0, dtype=np.float64)
        for start in range(0, n_pairs, int(self.block_size)):
            stop = min(start + int(self.block_size), n_pairs)
            values = gen.laplace(0.0, 1.0 / eps_cells, size=stop - start)
            lo, hi = np.searchsorted(edges, [start, stop])
            values[edges[lo:hi] - start] += 1.0
            idx = np.concatenate([best_idx, np.arange(start, stop, dtype=np.int64)])
            val = np.concatenate([best_val, values])
            if len(val) > target:
                top = np.argpartition(val, len(val) - target)[len(val) - target :]
                idx, val = idx[top], val[top]
            best_idx, best_val = idx, val
        return _flat_to_pair(np.sort(best_idx), n)
