"""Link-inference attacks on graph neural networks: recover the private edges.

The attacked model is a node classifier whose graph is private. Every attack has the
same interface:

- ``Attack(target, *, ...)``; the target is a :class:`kmi.targets.Target` around a
  :class:`kmi.models.GraphPredictor` (node features in, the model's output for every
  node out, the graph held by the server) or, for the white-box :class:`GraphMI`,
  around the Keras model itself (inputs ``[features, adjacency]``);
- ``fit(X=None, y=None)`` validates the target (and, for the supervised
  :class:`LinkStealing`, learns from a partial graph);
- ``invert(X, y=None, nodes=None)`` returns a symmetric (n_attacked, n_attacked)
  matrix of edge scores over ``nodes`` (greater means more likely an edge; the
  diagonal is zero and meaningless);
- ``score(X, y=None, adjacency=..., nodes=None)``: edge AUC against the true graph
  (:mod:`kmi.metrics.graph` also gives average precision and balanced pairs).

:class:`FeatureSimilarity` never queries the target: an attack leaks the graph only
where it beats it.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import scipy.sparse as sp
from keras import ops
from sklearn.base import clone
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from kmi import backend
from kmi._progress import chunks, warn_interrupted
from kmi.attacks._graph import (
    DISTANCES,
    GraphAttack,
    pair_matrix,
    paired_distances,
    pairwise_distance_scores,
)
from kmi.utils.validation import check_adjacency, check_features, check_nodes

__all__ = ["FeatureSimilarity", "GraphMI", "LinkStealing", "LinkTeller"]


def _check_positive(name, value, *, integer=False, allow_zero=False):
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "integer" if integer else "number"
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {sign} {what}. Received: {name}={value!r}")


def _query_all(target, X):
    """The target's answer for every node of ``X`` in one query."""
    P = np.asarray(target.query(X))
    if P.ndim != 2 or P.shape[0] != X.shape[0]:
        raise ValueError(
            "A graph target must return one row of scores per node (use output "
            "'probabilities', 'logits', 'top-k' or 'rounded', not 'label'). Received: "
            f"output shape={P.shape}"
        )
    return P


class FeatureSimilarity(GraphAttack):
    """Baseline: score each node pair by the similarity of the two nodes' features.

    It never queries the target, so it measures what the public features alone
    reveal about the graph (citation graphs are homophilous: linked papers share
    words). Every graph report shows it next to the attacks.

    Parameters
    ----------
    target : object, default=None
        Ignored (kept so that every graph attack has the same signature).
    metric : str, default="cosine"
        One of the eight distances of :class:`LinkStealing`; the score is minus
        the distance.

    Attributes
    ----------
    n_features_in_ : int
        Features per node seen in ``fit`` (0 when fitted without ``X``).

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import FeatureSimilarity
    >>> X = np.array([[1, 0], [1, 0.1], [0, 1]], dtype="float32")
    >>> scores = FeatureSimilarity().fit().invert(X)
    >>> bool(scores[0, 1] > scores[0, 2])
    True
    """

    required_access = "label-only"

    def __init__(self, target=None, *, metric="cosine"):
        self.target = target
        self.metric = metric

    def fit(self, X=None, y=None):
        """Validate the parameters (the target is not used); return self."""
        if self.metric not in DISTANCES:
            raise ValueError(
                f"metric must be one of {DISTANCES}. Received: metric={self.metric!r}"
            )
        self.n_features_in_ = 0 if X is None else check_features(X, min_samples=2).shape[1]
        return self

    def invert(self, X, y=None, nodes=None):
        """Edge scores ``-distance(x_i, x_j)`` over the attacked nodes.

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features)
        y : ignored
        nodes : array-like of int, default=None

        Returns
        -------
        ndarray of shape (n_attacked, n_attacked)
        """
        check_is_fitted(self, "n_features_in_")
        X = check_features(X, min_samples=2)
        nodes = check_nodes(nodes, X.shape[0], min_nodes=2)
        return pairwise_distance_scores(X[nodes], self.metric)


def _keras_graph_model(target, attack: str):
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


def _first_graph_layer(model, attack: str):
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


class GraphMI(GraphAttack):
    """Graph model inversion (Zhang et al. 2021): recover edges from a white-box GCN.

    Given the features of the graph's nodes and the labels of the attacked nodes,
    GraphMI searches a relaxed adjacency ``A`` in ``[0, 1]^(n x n)`` (symmetric,
    zero diagonal) that makes the target predict those labels, by projected
    gradient descent on

        CE(f(X, A)[nodes], y) + sparsity * ||A||_2 + smoothness * tr(X' L X)

    where ``tr(X' L X)`` is the feature smoothness under the normalised Laplacian
    of ``A`` (linked nodes should have similar features; it is switched on after
    ``smoothness_after`` steps, as in the authors' code). The relaxed adjacency is
    then decoded with the target's first graph convolution, as a graph
    auto-encoder: ``H = conv_1(X, A)``, and the score of ``(i, j)`` is the cosine
    similarity of ``H_i`` and ``H_j`` (clipped at zero).

    Parameters
    ----------
    target : Target or keras.Model
        White-box: a Keras model with inputs ``[features, adjacency]`` (e.g.
        :func:`kmi.models.gcn`), or a :class:`kmi.models.GraphPredictor` around
        one wrapped with ``Target(..., access="white-box")``.
    max_iter : int, default=100
        Projected gradient steps.
    learning_rate : float, default=0.1
        Step size (plain gradient descent, as in the paper).
    sparsity : float, default=1e-3
        Weight of the L2 norm of the relaxed adjacency.
    smoothness : float, default=1e-4
        Weight of the feature-smoothness term.
    smoothness_after : int, default=50
        Step from which the smoothness term is used.
    edge_budget : float, default=None
        If set, the sum of the relaxed adjacency's upper triangle is projected
        onto at most this many edges after each step (the authors' code uses the
        true number of edges, which an attacker does not know).
    decode : bool, default=True
        Decode with the first graph convolution; ``False`` returns the relaxed
        adjacency itself.
    verbose : int, default=0
        Show a progress bar.

    Attributes
    ----------
    target_ : Target
    model_ : keras.Model
        The attacked Keras model (inputs ``[features, adjacency]``).
    adjacency_ : ndarray of shape (n_nodes, n_nodes)
        The relaxed adjacency found by the last :meth:`invert`.
    loss_curve_ : list of float
        Objective after each step of the last :meth:`invert`.
    n_iter_ : int
        Steps taken by the last :meth:`invert` (fewer if interrupted).

    See Also
    --------
    LinkStealing, LinkTeller : Black-box link inference.
    FeatureSimilarity : The baseline that never queries the target.

    References
    ----------
    Z. Zhang, Q. Liu, Z. Huang, H. Wang, C. Lu, C. Liu and E. Chen. "GraphMI:
    Extracting Private Graph Data from Graph Neural Networks." IJCAI 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import GraphMI
    >>> from kmi.models import gcn
    >>> model = gcn(4, 2)
    >>> X = np.random.default_rng(0).random((6, 4)).astype("float32")
    >>> attack = GraphMI(model, max_iter=5).fit()
    >>> attack.invert(X, [0, 1, 0, 1, 0, 1]).shape
    (6, 6)
    """

    required_access = "white-box"

    def __init__(
        self,
        target=None,
        *,
        max_iter=100,
        learning_rate=0.1,
        sparsity=1e-3,
        smoothness=1e-4,
        smoothness_after=50,
        edge_budget=None,
        decode=True,
        verbose=0,
    ):
        self.target = target
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.sparsity = sparsity
        self.smoothness = smoothness
        self.smoothness_after = smoothness_after
        self.edge_budget = edge_budget
        self.decode = decode
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Validate the target and the parameters; return self (``X``, ``y`` are unused)."""
        _check_positive("max_iter", self.max_iter, integer=True)
        _check_positive("learning_rate", self.learning_rate)
        _check_positive("sparsity", self.sparsity, allow_zero=True)
        _check_positive("smoothness", self.smoothness, allow_zero=True)
        _check_positive("smoothness_after", self.smoothness_after, integer=True, allow_zero=True)
        if self.edge_budget is not None:
            _check_positive("edge_budget", self.edge_budget)
        target = self._validate_target()
        self.model_ = _keras_graph_model(target, type(self).__name__)
        if self.decode:
            _first_graph_layer(self.model_, type(self).__name__)
        return self

    def _step_fn(self, X, onehot, nodes, n):
        model = self.model_
        upper = ops.convert_to_tensor(np.triu(np.ones((n, n), np.float32), 1))
        Xt = ops.convert_to_tensor(X)
        gram = ops.convert_to_tensor(X @ X.T)
        sq = ops.convert_to_tensor(np.sum(X * X, axis=1))
        onehot = ops.convert_to_tensor(onehot)
        nodes_t = ops.convert_to_tensor(nodes.astype(np.int32))

        def objective(P, smooth_w):
            Pu = P * upper
            A = Pu + ops.transpose(Pu)
            probs = model([Xt, A], training=False)
            picked = ops.take(probs, nodes_t, axis=0)
            ce = -ops.mean(ops.sum(onehot * ops.log(picked + 1e-10), axis=1))
            norm = ops.sqrt(ops.sum(Pu * Pu) + 1e-12)
            degree = ops.sum(A, axis=1)
            r = ops.rsqrt(degree + 1e-3)
            smooth = ops.sum(degree * r * r * sq) - ops.sum(A * gram * r[:, None] * r[None, :])
            return ce + self.sparsity * norm + smooth_w * smooth

        lr = float(self.learning_rate)

        def step(P, smooth_w):
            loss, _, grad = backend.value_and_grad_with_aux(
                lambda p: (objective(p, smooth_w), ()), P
            )
            return ops.clip(P - lr * grad, 0.0, 1.0) * upper, loss

        return backend.jit(step)

    def _project_budget(self, P):
        """Shift the upper triangle down so that it sums to at most ``edge_budget``."""
        if self.edge_budget is None or P.sum() <= self.edge_budget:
            return P
        lo, hi = float(P.min()) - 1.0, float(P.max())
        for _ in range(50):
            mid = (lo + hi) / 2
            if np.clip(P - mid, 0, 1).sum() > self.edge_budget:
                lo = mid
            else:
                hi = mid
        return np.triu(np.clip(P - hi, 0, 1), 1)

    def invert(self, X, y, nodes=None):
        """Reconstruct the edges among ``nodes``.

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features)
            Features of the nodes of the graph the target runs on (all of them, or
            only the attacked ones: the relaxed adjacency spans the rows of ``X``).
        y : array-like of shape (n_attacked,)
            Labels of the attacked nodes (classes of the target's output).
        nodes : array-like of int, default=None
            The attacked nodes, as rows of ``X``; ``None`` means all.

        Returns
        -------
        ndarray of shape (n_attacked, n_attacked)
            Edge scores (in [0, 1]).

        Raises
        ------
        ValueError
            On bad features, nodes out of range, or labels that are not one per
            attacked node or not classes of the target.
        """
        check_is_fitted(self, "model_")
        X = check_features(X, min_samples=2)
        n = X.shape[0]
        nodes = check_nodes(nodes, n, min_nodes=2)
        if y is None:
            raise ValueError("GraphMI needs the labels of the attacked nodes. Received: y=None")
        y = np.asarray(y)
        if y.shape != (len(nodes),):
            raise ValueError(
                f"y must hold one label per attacked node ({len(nodes)}). "
                f"Received: y shape={y.shape}"
            )
        n_classes = int(self.model_.outputs[0].shape[-1])
        if self.target_.classes_ is not None:
            idx = self.target_.label_index(y)
        elif np.issubdtype(y.dtype, np.integer) and y.min() >= 0 and y.max() < n_classes:
            idx = y
        else:
            raise ValueError(
                f"y must hold class indices in [0, {n_classes}) of the target's output, or "
                "the target must name its classes (Target(..., classes=...)). Received: y "
                f"values {np.unique(y)[:5].tolist()!r}"
            )
        onehot = np.eye(n_classes, dtype=np.float32)[idx]
        step = self._step_fn(X, onehot, nodes, n)
        P = ops.zeros((n, n), dtype="float32")
        self.loss_curve_ = []
        self.n_iter_ = 0
        try:
            for _ in chunks(self.max_iter, 1, verbose=self.verbose, desc="GraphMI"):
                smooth_w = self.smoothness if self.n_iter_ >= self.smoothness_after else 0.0
                P, loss = step(P, ops.convert_to_tensor(smooth_w, dtype="float32"))
                if self.edge_budget is not None:
                    P = ops.convert_to_tensor(self._project_budget(ops.convert_to_numpy(P)))
                self.loss_curve_.append(float(loss))
                self.n_iter_ += 1
        except KeyboardInterrupt:
            warn_interrupted(self.n_iter_, self.max_iter, "steps")
        Pu = np.triu(ops.convert_to_numpy(P), 1)
        A = Pu + Pu.T
        self.adjacency_ = A
        if not self.decode:
            return A[np.ix_(nodes, nodes)].astype(np.float64)
        conv = _first_graph_layer(self.model_, type(self).__name__)
        H = ops.convert_to_numpy(conv([X, A]))[nodes].astype(np.float64)
        H /= np.maximum(np.linalg.norm(H, axis=1, keepdims=True), 1e-12)
        scores = np.maximum(H @ H.T, 0.0)
        np.fill_diagonal(scores, 0.0)
        return scores


class LinkStealing(GraphAttack):
    """Link stealing from posteriors (He et al. 2021), black-box.

    The target is queried once with every node's features; a pair of nodes is
    scored by how close their posteriors are. Unsupervised (the paper's
    Attack-0): the score is minus one of eight distances. Supervised (when
    ``fit`` is given a partial graph the attacker knows): a classifier learns
    edges from the eight posterior distances of each pair plus the cosine
    similarity of their features, on the known edges and as many random
    non-edges of the partial graph.

    Parameters
    ----------
    target : Target or GraphPredictor
        Black-box access to the node classifier is enough.
    metric : {"cosine", "euclidean", "correlation", "chebyshev", "braycurtis", \
"canberra", "cityblock", "sqeuclidean"}, default="correlation"
        Distance of the unsupervised attack.
    estimator : scikit-learn classifier, default=None
        Classifier of the supervised attack; ``None`` is a standardised MLP with
        two hidden layers of 32 units (the paper uses an MLP).
    random_state : int, RandomState instance or None, default=None
        Draws the non-edges and seeds the default estimator.

    Attributes
    ----------
    target_ : Target
    supervised_ : bool
        Whether ``fit`` was given a partial graph.
    estimator_ : classifier
        The fitted classifier (supervised only).
    n_train_pairs_ : int
        Pairs it was trained on (supervised only).

    Notes
    -----
    The supervised scores of the pairs it was trained on are those of known
    edges; measure it on nodes whose edges were not in the partial graph.

    References
    ----------
    X. He, J. Jia, M. Backes, N. Z. Gong and Y. Zhang. "Stealing Links from Graph
    Neural Networks." USENIX Security 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import LinkStealing
    >>> from kmi.models import GraphPredictor, gcn
    >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype="float32")
    >>> attack = LinkStealing(GraphPredictor(gcn(2, 2), A)).fit()
    >>> attack.invert(np.eye(3, 2, dtype="float32")).shape
    (3, 3)
    """

    required_access = "black-box"

    def __init__(self, target=None, *, metric="correlation", estimator=None, random_state=None):
        self.target = target
        self.metric = metric
        self.estimator = estimator
        self.random_state = random_state

    @staticmethod
    def _pair_features(P, Xn, rows, cols):
        dist = paired_distances(P[rows], P[cols])
        feat_cos = np.sum(Xn[rows] * Xn[cols], axis=1, keepdims=True)
        return np.hstack([dist, feat_cos])

    @staticmethod
    def _unit_rows(X):
        X = X.astype(np.float64)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    def fit(self, X=None, y=None, *, adjacency=None):
        """Validate the target; with a partial graph, train the supervised attack.

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features), default=None
            Node features (needed with ``adjacency``).
        y : ignored
        adjacency : ndarray or scipy.sparse matrix of shape (n_nodes, n_nodes), default=None
            The edges the attacker knows. Its non-zero entries are edges; an
            equal number of its zero entries are drawn as non-edges.

        Returns
        -------
        self
        """
        if self.metric not in DISTANCES:
            raise ValueError(
                f"metric must be one of {DISTANCES}. Received: metric={self.metric!r}"
            )
        target = self._validate_target()
        self.supervised_ = adjacency is not None
        if not self.supervised_:
            return self
        X = check_features(X, min_samples=2)
        adjacency = check_adjacency(adjacency, X.shape[0])
        rng = check_random_state(self.random_state)
        upper = sp.triu(sp.csr_matrix(adjacency), k=1).tocoo()
        pos = np.stack([upper.row, upper.col], axis=1)
        pos = pos[upper.data != 0]
        if len(pos) == 0:
            raise ValueError(
                "The partial graph given to fit has no edge to learn from. "
                "Received: adjacency with 0 edges"
            )
        known = set(map(tuple, pos.tolist()))
        n = X.shape[0]
        neg = []
        while len(neg) < len(pos):
            i, j = rng.randint(0, n, size=2)
            a, b = (int(i), int(j)) if i < j else (int(j), int(i))
            if a != b and (a, b) not in known:
                neg.append((a, b))
        pairs = np.vstack([pos, np.asarray(neg)])
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        P = _query_all(target, X)
        feats = self._pair_features(P, self._unit_rows(X), pairs[:, 0], pairs[:, 1])
        if self.estimator is None:
            seed = rng.randint(np.iinfo(np.int32).max)
            estimator = make_pipeline(
                StandardScaler(),
                MLPClassifier(hidden_layer_sizes=(32, 32), max_iter=500, random_state=seed),
            )
        else:
            estimator = clone(self.estimator)
        self.estimator_ = estimator.fit(feats, labels)
        self.n_train_pairs_ = int(len(labels))
        return self

    def invert(self, X, y=None, nodes=None):
        """Score every pair of attacked nodes from the target's posteriors.

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features)
            Features of all nodes of the target's graph (one query).
        y : ignored
        nodes : array-like of int, default=None

        Returns
        -------
        ndarray of shape (n_attacked, n_attacked)
        """
        check_is_fitted(self, "supervised_")
        X = check_features(X, min_samples=2)
        nodes = check_nodes(nodes, X.shape[0], min_nodes=2)
        P = _query_all(self.target_, X)[nodes]
        if not self.supervised_:
            return pairwise_distance_scores(P, self.metric)
        k = len(nodes)
        rows, cols = np.triu_indices(k, 1)
        Xn = self._unit_rows(X[nodes])
        out = np.empty(len(rows))
        for sl in chunks(len(rows), 200_000):
            feats = self._pair_features(P, Xn, rows[sl], cols[sl])
            out[sl] = self.estimator_.predict_proba(feats)[:, 1]
        return pair_matrix(out, k)


class LinkTeller(GraphAttack):
    """LinkTeller (Wu et al. 2022): influence analysis with perturbed feature queries.

    For each attacked node ``u``, the target is queried again with ``u``'s
    features scaled by ``1 + delta``; the influence of ``u`` on ``v`` is how much
    ``v``'s output moves, ``||f(X')_v - f(X)_v||_2 / delta``. In a GCN, only nodes
    within two hops influence each other, and neighbours the most. The score of
    ``(u, v)`` is the sum of both influences. The attack costs
    ``n_attacked + 1`` queries of the whole graph.

    Parameters
    ----------
    target : Target or GraphPredictor
        Black-box access is enough; output-side defenses (rounding, top-k) on the
        target blunt it.
    delta : float, default=1e-3
        Relative feature perturbation.
    verbose : int, default=0
        Show a progress bar over the attacked nodes.

    Attributes
    ----------
    target_ : Target
    influence_ : ndarray of shape (n_attacked, n_attacked)
        ``influence_[u, v]``: influence of attacked node ``u`` on ``v`` (last
        :meth:`invert`; rows not reached before an interruption are NaN).

    References
    ----------
    F. Wu, Y. Long, C. Zhang and B. Li. "LinkTeller: Recovering Private Edges from
    Graph Neural Networks via Influence Analysis." IEEE S&P 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import LinkTeller
    >>> from kmi.models import GraphPredictor, gcn
    >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype="float32")
    >>> attack = LinkTeller(GraphPredictor(gcn(2, 2), A)).fit()
    >>> scores = attack.invert(np.ones((3, 2), dtype="float32"))
    >>> bool(scores[0, 1] > scores[0, 2])
    True
    """

    required_access = "black-box"

    def __init__(self, target=None, *, delta=1e-3, verbose=0):
        self.target = target
        self.delta = delta
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Validate the target and ``delta``; return self (``X``, ``y`` are unused)."""
        _check_positive("delta", self.delta)
        self._validate_target()
        self.n_queries_per_node_ = 1
        return self

    def invert(self, X, y=None, nodes=None):
        """Influence scores between every pair of attacked nodes.

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features)
            Features of all nodes of the target's graph.
        y : ignored
        nodes : array-like of int, default=None

        Returns
        -------
        ndarray of shape (n_attacked, n_attacked)
            Symmetric influence scores; NaN where an interruption left them unknown.
        """
        check_is_fitted(self, "n_queries_per_node_")
        X = check_features(X, min_samples=2)
        nodes = check_nodes(nodes, X.shape[0], min_nodes=2)
        k = len(nodes)
        base = _query_all(self.target_, X).astype(np.float64)[nodes]
        influence = np.full((k, k), np.nan)
        done = 0
        try:
            for sl in chunks(k, 1, verbose=self.verbose, desc="LinkTeller"):
                i = sl.start
                Xp = X.copy()
                Xp[nodes[i]] = X[nodes[i]] * (1.0 + self.delta)
                moved = _query_all(self.target_, Xp).astype(np.float64)[nodes]
                influence[i] = np.linalg.norm(moved - base, axis=1) / self.delta
                done += 1
        except KeyboardInterrupt:
            warn_interrupted(done, k, "attacked nodes")
        self.influence_ = influence
        scores = influence + influence.T
        np.fill_diagonal(scores, 0.0)
        return scores
