"""Shared machinery of the link-inference attacks in :mod:`kmi.attacks.graph`.

- :class:`GraphAttack`, their base: capabilities, input checks and ``score``;
- the eight posterior distances of He et al. (2021) and the pair features and
  non-edge sampling of the supervised link-stealing attack;
- talking to a graph target: one query for every node, the Keras model and the first
  graph convolution behind a white-box target;
- GraphMI's pieces: labels of the attacked nodes, the compiled projected-gradient
  step on a relaxed adjacency, the edge-budget projection and the decoding.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
from keras import ops
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

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

#: Text shared by the graph attacks' docstrings (see :mod:`kmi._docstring`).
GRAPH_DOC = {
    "black_box_target": """\
target : Target or GraphPredictor
    The node classifier behind its private graph: a
    :class:`kmi.models.GraphPredictor` (node features in, every node's output
    out), wrapped with :class:`kmi.targets.Target` in ``fit``. Black-box access
    is enough.""",
    "verbose": """\
verbose : int, default=0
    Show a progress bar.""",
    "invert_X": """\
X : array-like of shape (n_nodes, n_features)
    Features of all nodes of the target's graph.""",
    "invert_nodes": """\
nodes : array-like of int, default=None
    The attacked nodes, as rows of ``X``; ``None`` means all.""",
    "invert_returns": """\
ndarray of shape (n_attacked, n_attacked)
    Symmetric edge scores over ``nodes`` (greater means more likely an edge;
    the diagonal is zero).""",
}


def pair_matrix(values: np.ndarray, k: int) -> np.ndarray:
    """Scatter scores of the pairs ``triu_indices(k, 1)`` into a symmetric matrix.

    Examples
    --------
    >>> from kmi.attacks._graph import pair_matrix
    >>> pair_matrix([1.0, 2.0, 3.0], 3)
    array([[0., 1., 2.],
           [1., 0., 3.],
           [2., 3., 0.]])
    """
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
    abs_sum = np.abs(U) + np.abs(V)
    cols = {
        "cosine": 1.0 - cos(U, V),
        "euclidean": np.sqrt(sq),
        "correlation": 1.0 - cos(U - U.mean(1, keepdims=True), V - V.mean(1, keepdims=True)),
        "chebyshev": absdiff.max(axis=1),
        "braycurtis": absdiff.sum(1) / np.maximum(np.abs(U + V).sum(1), eps),
        "canberra": np.sum(
            np.where(abs_sum > eps, absdiff / np.maximum(abs_sum, eps), 0.0), axis=1
        ),
        "cityblock": absdiff.sum(1),
        "sqeuclidean": sq,
    }
    return np.stack([cols[m] for m in DISTANCES], axis=1)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 norm (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def pair_features(P: np.ndarray, Xn: np.ndarray, rows, cols) -> np.ndarray:
    """Supervised link stealing's features of pairs ``(rows[i], cols[i])``.

    The eight distances between the two nodes' posteriors ``P`` and the cosine
    similarity of their unit-norm features ``Xn``.
    """
    dist = paired_distances(P[rows], P[cols])
    feat_cos = np.sum(Xn[rows] * Xn[cols], axis=1, keepdims=True)
    return np.hstack([dist, feat_cos])


def edges_and_non_edges(adjacency, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """The edges ``(i < j)`` of a known graph and as many non-edges drawn from ``rng``.

    Returns
    -------
    pairs : ndarray of shape (2 * n_edges, 2)
        The edges, then the non-edges (drawn with replacement).
    labels : ndarray of shape (2 * n_edges,)
        1 for an edge, 0 for a non-edge.
    """
    n = adjacency.shape[0]
    upper = sp.triu(sp.csr_matrix(adjacency), k=1).tocoo()
    pos = np.stack([upper.row, upper.col], axis=1)[upper.data != 0]
    if len(pos) == 0:
        raise ValueError(
            "The partial graph given to fit has no edge to learn from. "
            "Received: adjacency with 0 edges"
        )
    if len(pos) == n * (n - 1) // 2:
        raise ValueError(
            "The partial graph given to fit links every pair of nodes: there is no non-edge "
            f"to learn from. Received: adjacency with {len(pos)} edges"
        )
    known = set(map(tuple, pos.tolist()))
    neg = []
    while len(neg) < len(pos):
        i, j = rng.randint(0, n, size=2)
        a, b = (int(i), int(j)) if i < j else (int(j), int(i))
        if a != b and (a, b) not in known:
            neg.append((a, b))
    pairs = np.vstack([pos, np.asarray(neg)])
    return pairs, np.r_[np.ones(len(pos)), np.zeros(len(neg))]


def link_classifier(estimator, seed: int):
    """Supervised link stealing's classifier: a clone of ``estimator`` seeded with
    ``seed`` (every ``random_state`` in it), or by default a standardised MLP."""
    if estimator is None:
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(32, 32), max_iter=500, random_state=seed),
        )
    estimator = clone(estimator)
    seeded = [k for k in estimator.get_params() if k.split("__")[-1] == "random_state"]
    return estimator.set_params(**dict.fromkeys(seeded, seed))


# ---------------------------------------------------------------------- targets
def query_all(target, X: np.ndarray) -> np.ndarray:
    """The target's answer for every node of ``X`` in one query."""
    P = np.asarray(target.query(X))
    if P.ndim != 2 or P.shape[0] != X.shape[0]:
        raise ValueError(
            "A graph target must return one row of scores per node (use output "
            "'probabilities', 'logits', 'top-k' or 'rounded', not 'label'). Received: "
            f"output shape={P.shape}"
        )
    return P


def keras_graph_model(target, attack: str) -> keras.Model:
    """The Keras model taking [features, adjacency] behind a white-box target."""
    model = target.model
    inner = getattr(model, "model", None)
    if not isinstance(model, keras.Model) and isinstance(inner, keras.Model):
        model = inner  # a GraphPredictor
    if not isinstance(model, keras.Model) or len(model.inputs or []) != 2:
        raise ValueError(
            f"{attack} needs a Keras model whose inputs are [features, adjacency] (e.g. "
            "kmi.models.gcn), or a GraphPredictor around one. Received: target model of type "
            f"{type(target.model).__name__}"
        )
    return model


def first_graph_layer(model: keras.Model, attack: str):
    """The first :class:`kmi.models.graph.GCNConv` of ``model``, or a clear error."""
    from kmi.models.graph import GCNConv

    for layer in model._flatten_layers(include_self=False, recursive=True):
        # The name check also finds a GCNConv whose module was imported twice
        # (doctest collection, reloaded modules), where isinstance fails.
        if isinstance(layer, GCNConv) or (
            type(layer).__name__ == "GCNConv" and hasattr(layer, "propagate")
        ):
            return layer
    raise ValueError(
        f"{attack} decodes edges with the target's first graph convolution, and this model "
        f"has no GCNConv layer. Pass decode=False. Received: model {model.name!r}"
    )


# ---------------------------------------------------------------------- GraphMI
def node_label_onehot(target, model: keras.Model, y, n_attacked: int) -> np.ndarray:
    """One-hot rows of the attacked nodes' labels over the model's output columns."""
    n_classes = int(model.outputs[0].shape[-1])
    return np.eye(n_classes, dtype=np.float32)[
        _node_label_indices(target, n_classes, y, n_attacked)
    ]


def _node_label_indices(target, n_classes: int, y, n_attacked: int) -> np.ndarray:
    if y is None:
        raise ValueError("GraphMI needs the labels of the attacked nodes. Received: y=None")
    y = np.asarray(y)
    if y.shape != (n_attacked,):
        raise ValueError(
            f"y must hold one label per attacked node ({n_attacked}). Received: y shape={y.shape}"
        )
    if target.classes_ is not None:
        return target.label_index(y)
    if np.issubdtype(y.dtype, np.integer) and y.min() >= 0 and y.max() < n_classes:
        return y
    raise ValueError(
        f"y must hold class indices in [0, {n_classes}) of the target's output, or "
        "the target must name its classes (Target(..., classes=...)). Received: y "
        f"values {np.unique(y)[:5].tolist()!r}"
    )


def relaxed_adjacency_loss(model, *, sparsity: float):
    """GraphMI's objective for :func:`kmi.attacks._optim.minimize`.

    ``loss_fn(P, aux)``: ``P`` of shape (1, n, n) holds the relaxed adjacency in its
    upper triangle (``aux["upper"]`` masks it, so the rest never gets a gradient);
    the loss is the cross-entropy of the target's output on the attacked nodes,
    plus ``sparsity`` times the L2 norm of ``P``, plus ``aux["smooth_w"]`` times the
    feature smoothness ``tr(X' L X)`` under the normalised Laplacian. ``aux`` holds
    the features ``X``, their Gram matrix and squared norms, the attacked ``nodes``
    and their ``onehot`` labels (:func:`relaxed_adjacency_data`).
    """
    sparsity = float(sparsity)

    def loss_fn(P, aux):
        Pu = P[0] * aux["upper"]
        A = Pu + ops.transpose(Pu)
        probs = model([aux["X"], A], training=False)
        picked = ops.take(probs, aux["nodes"], axis=0)
        ce = -ops.mean(ops.sum(aux["onehot"] * ops.log(picked + 1e-10), axis=1))
        norm = ops.sqrt(ops.sum(Pu * Pu) + 1e-12)
        degree = ops.sum(A, axis=1)
        r = ops.rsqrt(degree + 1e-3)
        smooth = ops.sum(degree * r * r * aux["sq"]) - ops.sum(
            A * aux["gram"] * r[:, None] * r[None, :]
        )
        return ops.reshape(ce + sparsity * norm + aux["smooth_w"] * smooth, (1,))

    return loss_fn


def relaxed_adjacency_data(X: np.ndarray, onehot: np.ndarray, nodes: np.ndarray) -> dict:
    """The constant inputs of :func:`relaxed_adjacency_loss` for one graph."""
    n = X.shape[0]
    return {
        "upper": np.triu(np.ones((n, n), np.float32), 1),
        "X": X.astype(np.float32),
        "gram": (X @ X.T).astype(np.float32),
        "sq": np.sum(X * X, axis=1).astype(np.float32),
        "onehot": onehot.astype(np.float32),
        "nodes": nodes.astype(np.int32),
    }


def budget_projection(edge_budget: float):
    """``project(P, aux)``: shift the upper triangle ``P`` down so that it sums to
    at most ``edge_budget`` (a bisection on the shift, 50 halvings, in ``keras.ops``
    so that it runs inside the compiled loop)."""
    budget = float(edge_budget)

    def project(P, aux):
        def halve(_, bounds):
            lo, hi = bounds
            mid = (lo + hi) / 2.0
            over = ops.sum(ops.clip(P - mid, 0.0, 1.0)) > budget
            return ops.where(over, mid, lo), ops.where(over, hi, mid)

        _, shift = ops.fori_loop(0, 50, halve, (ops.min(P) - 1.0, ops.max(P)))
        shifted = ops.clip(P - shift, 0.0, 1.0) * aux["upper"]
        return ops.where(ops.sum(P) <= budget, P, shifted)

    return project


def optimise_relaxed_adjacency(
    model,
    target,
    data: dict,
    *,
    max_iter: int,
    learning_rate: float,
    sparsity: float,
    smoothness: tuple[float, int],
    edge_budget: float | None,
    verbose: int = 0,
):
    """GraphMI's projected gradient descent on the relaxed adjacency, through
    :func:`kmi.attacks._optim.minimize` (one compiled loop; every step reads the
    ``n`` nodes of the target, counted on ``target``). ``smoothness`` is the weight
    of the feature-smoothness term and the step from which it applies."""
    from kmi.attacks._optim import minimize

    n = data["X"].shape[0]
    weight, after = smoothness

    def smoothness_weight(step, rng):
        return {"smooth_w": np.float32(weight if step >= after else 0.0)}

    return minimize(
        relaxed_adjacency_loss(model, sparsity=sparsity),
        np.zeros((1, n, n), dtype="float32"),
        max_iter=max_iter,
        learning_rate=learning_rate,
        clip=(0.0, 1.0),
        project=None if edge_budget is None else budget_projection(edge_budget),
        keep_best=False,
        score_last=False,
        aux_fn=smoothness_weight,
        data=data,
        models=[model],
        program=("GraphMI", float(sparsity), edge_budget),
        queries=target,
        queries_per_row=n,  # a forward and backward pass over the n nodes
        verbose=verbose,
        desc="GraphMI",
    )


def decode_edges(conv, X: np.ndarray, A: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Graph auto-encoder decoding: clipped cosine similarity of ``conv([X, A])`` rows."""
    H = ops.convert_to_numpy(conv([X, A]))[nodes].astype(np.float64)
    H = unit_rows(H)
    scores = np.maximum(H @ H.T, 0.0)
    np.fill_diagonal(scores, 0.0)
    return scores


# ---------------------------------------------------------------------- base class
class GraphAttack(BaseAttack):
    """Base of the link-inference attacks: capabilities, input checks and ``score``.

    ``invert(X, y=None, nodes=None)`` returns a symmetric (n_attacked, n_attacked)
    matrix of edge scores with a zero diagonal; ``score`` measures it against the
    true adjacency with :func:`kmi.metrics.graph.edge_auc`.
    """

    #: The edges of the given nodes are recovered, not a class representative.
    level = "instance"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # node features may be scipy.sparse (made dense)
        return tags

    def _check_invert_input(self, X: ArrayLike, nodes: ArrayLike | None):
        """Fitted? Then the node features and the attacked nodes, checked."""
        check_is_fitted(self)
        X = check_features(X, min_samples=2)
        return X, check_nodes(nodes, X.shape[0], min_nodes=2)

    def score(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        *,
        adjacency: Any = None,
        nodes: ArrayLike | None = None,
        pairs: str = "all",
        random_state: int | None = None,
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

        Raises
        ------
        ValueError
            If ``adjacency`` is missing or does not match ``X``, or on an unknown
            ``pairs``.
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
