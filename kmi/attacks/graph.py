"""Link-inference attacks on graph neural networks: recover the private edges.

The attacked model is a node classifier whose graph is private. Every attack has the
same interface:

- ``Attack(target, *, ...)``; the target is a :class:`kmi.targets.Target` around a
  :class:`kmi.models.GraphPredictor` (node features in, the model's output for every
  node out, the graph held by the server) or, for the white-box :class:`GraphMI`,
  around the Keras model itself (inputs ``[features, adjacency]``);
- ``fit(X=None, y=None)`` validates the parameters and the target (and, for the
  supervised :class:`LinkStealing`, learns from a partial graph);
- ``invert(X, y=None, nodes=None)`` returns a symmetric (n_attacked, n_attacked)
  matrix of edge scores over ``nodes`` (greater means more likely an edge; the
  diagonal is zero and meaningless);
- ``score(X, y=None, adjacency=..., nodes=None)``: edge AUC against the true graph
  (:mod:`kmi.metrics.graph` also gives average precision and balanced pairs).

:class:`FeatureSimilarity` never queries the target: an attack leaks the graph only
where it beats it. The machinery the attacks share lives in :mod:`kmi.attacks._graph`.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from kmi._docstring import fill_doc
from kmi._progress import chunks, warn_interrupted
from kmi.attacks._graph import (
    DISTANCES,
    GRAPH_DOC,
    GraphAttack,
    decode_edges,
    edges_and_non_edges,
    first_graph_layer,
    keras_graph_model,
    link_classifier,
    node_label_onehot,
    optimise_relaxed_adjacency,
    pair_features,
    pair_matrix,
    pairwise_distance_scores,
    query_all,
    relaxed_adjacency_data,
    unit_rows,
)
from kmi.targets import QueryBudgetExceededError
from kmi.utils.validation import check_adjacency, check_features

__all__ = ["FeatureSimilarity", "GraphMI", "LinkStealing", "LinkTeller"]

_METRICS = StrOptions(set(DISTANCES))


@fill_doc(**GRAPH_DOC)
class FeatureSimilarity(GraphAttack):
    """Baseline: score each node pair by the similarity of the two nodes' features.

    It never queries the target, so it measures what the public features alone
    reveal about the graph (citation graphs are homophilous: linked papers share
    words). Every graph report shows it next to the attacks.

    Parameters
    ----------
    target : object, default=None
        Not queried (kept so that every graph attack has the same signature).
    metric : {"cosine", "euclidean", "correlation", "chebyshev", "braycurtis", \
"canberra", "cityblock", "sqeuclidean"}, default="cosine"
        One of the eight distances of :class:`LinkStealing`; the score is minus
        the distance.

    Attributes
    ----------
    n_features_in_ : int
        Features per node seen in ``fit`` (0 when fitted without ``X``).

    See Also
    --------
    LinkStealing : The same distances between the target's posteriors.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import FeatureSimilarity
    >>> X = np.array([[1, 0], [1, 0.1], [0, 1]], dtype="float32")
    >>> FeatureSimilarity().fit().invert(X).round(3)
    array([[ 0.   , -0.005, -1.   ],
           [-0.005,  0.   , -0.9  ],
           [-1.   , -0.9  ,  0.   ]])
    """

    required_access = "label-only"
    uses_target = False
    _parameter_constraints = {"target": "no_validation", "metric": [_METRICS]}

    def __init__(self, target: Any = None, *, metric: str = "cosine"):
        self.target = target
        self.metric = metric

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Validate the parameters (the target is not used).

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features), default=None
            Node features; only their number is recorded.
        y : ignored

        Returns
        -------
        self
        """
        self.n_features_in_ = 0 if X is None else check_features(X, min_samples=2).shape[1]
        return self

    @fill_doc(**GRAPH_DOC)
    def invert(
        self, X: ArrayLike, y: ArrayLike | None = None, nodes: ArrayLike | None = None
    ) -> np.ndarray:
        """Edge scores ``-distance(x_i, x_j)`` over the attacked nodes.

        Parameters
        ----------
        {invert_X}
        y : ignored
        {invert_nodes}

        Returns
        -------
        {invert_returns}
        """
        X, nodes = self._check_invert_input(X, nodes)
        return pairwise_distance_scores(X[nodes], self.metric)


@fill_doc(**GRAPH_DOC)
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
    {verbose}

    Attributes
    ----------
    target_ : Target
        The wrapped target; every step is counted in its ``n_queries_``.
    model_ : keras.Model
        The attacked Keras model (inputs ``[features, adjacency]``).
    adjacency_ : ndarray of shape (n_nodes, n_nodes)
        The relaxed adjacency found by the last :meth:`invert` (so far, if it was
        interrupted or ran out of query budget).
    loss_curve_ : list of float
        Objective after each step of the last :meth:`invert`.
    n_iter_ : int
        Steps taken by the last :meth:`invert` (fewer if interrupted).

    See Also
    --------
    LinkStealing, LinkTeller : Black-box link inference.
    FeatureSimilarity : The baseline that never queries the target.

    Notes
    -----
    Each step runs the target forward and backward on the ``n`` rows of ``X``,
    and the decoding runs its first layer on them: :meth:`invert` records
    ``n * (max_iter + 1)`` queries on the target (``Target.record_queries``), which
    enforces the target's ``query_budget`` before each step.

    References
    ----------
    Z. Zhang, Q. Liu, Z. Huang, H. Wang, C. Lu, C. Liu and E. Chen. "GraphMI:
    Extracting Private Graph Data from Graph Neural Networks." IJCAI 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import GraphMI
    >>> from kmi.models import gcn
    >>> from kmi.targets import Target
    >>> target = Target(gcn(4, 2))
    >>> X = np.random.default_rng(0).random((6, 4)).astype("float32")
    >>> attack = GraphMI(target, max_iter=5).fit()
    >>> attack.invert(X, [0, 1, 0, 1, 0, 1]).shape, attack.n_iter_, target.n_queries_
    ((6, 6), 5, 36)
    """

    required_access = "white-box"
    _parameter_constraints = {
        "target": "no_validation",
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, np.inf, closed="neither")],
        "sparsity": [Interval(Real, 0, np.inf, closed="left")],
        "smoothness": [Interval(Real, 0, np.inf, closed="left")],
        "smoothness_after": [Interval(Integral, 0, None, closed="left")],
        "edge_budget": [Interval(Real, 0, np.inf, closed="neither"), None],
        "decode": ["boolean"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        target: Any = None,
        *,
        max_iter: int = 100,
        learning_rate: float = 0.1,
        sparsity: float = 1e-3,
        smoothness: float = 1e-4,
        smoothness_after: int = 50,
        edge_budget: float | None = None,
        decode: bool = True,
        verbose: int = 0,
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

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Validate the target and the parameters (``X`` and ``y`` are unused).

        Returns
        -------
        self

        Raises
        ------
        kmi.targets.AccessError
            If the target is not white-box.
        ValueError
            If the target is not a Keras model on ``[features, adjacency]``, or has
            no graph convolution to decode with (``decode=True``).
        """
        self.model_ = keras_graph_model(self.target_, type(self).__name__)
        if self.decode:
            first_graph_layer(self.model_, type(self).__name__)
        return self

    def _keep_relaxed(self, result):
        Pu = np.triu(result.x[0], 1)
        self.adjacency_ = Pu + Pu.T
        self.loss_curve_ = result.loss_curve.tolist()
        self.n_iter_ = result.n_iter

    @fill_doc(**GRAPH_DOC)
    def invert(
        self, X: ArrayLike, y: ArrayLike | None = None, nodes: ArrayLike | None = None
    ) -> np.ndarray:
        """Reconstruct the edges among ``nodes``.

        Parameters
        ----------
        X : array-like of shape (n_nodes, n_features)
            Features of the nodes of the graph the target runs on (all of them, or
            only the attacked ones: the relaxed adjacency spans the rows of ``X``).
        y : array-like of shape (n_attacked,)
            Labels of the attacked nodes (classes of the target's output).
        {invert_nodes}

        Returns
        -------
        ndarray of shape (n_attacked, n_attacked)
            Edge scores (in [0, 1]).

        Raises
        ------
        ValueError
            On bad features, nodes out of range, or labels that are not one per
            attacked node or not classes of the target.
        kmi.targets.QueryBudgetExceededError
            If the target's ``query_budget`` cannot pay for the next step (or the
            decoding); ``adjacency_`` then holds the relaxed adjacency so far.
        """
        X, nodes = self._check_invert_input(X, nodes)
        n = X.shape[0]
        onehot = node_label_onehot(self.target_, self.model_, y, len(nodes))
        try:
            result = optimise_relaxed_adjacency(
                self.model_,
                self.target_,
                relaxed_adjacency_data(X, onehot, nodes),
                max_iter=int(self.max_iter),
                learning_rate=float(self.learning_rate),
                sparsity=float(self.sparsity),
                smoothness=(float(self.smoothness), int(self.smoothness_after)),
                edge_budget=self.edge_budget,
                verbose=self.verbose,
            )
        except QueryBudgetExceededError as exc:
            partial = getattr(exc, "partial_result", None)
            if partial is None:  # not even one step
                self.adjacency_, self.loss_curve_, self.n_iter_ = np.zeros((n, n)), [], 0
            else:
                self._keep_relaxed(partial)
            raise
        self._keep_relaxed(result)
        A = self.adjacency_
        if not self.decode:
            return A[np.ix_(nodes, nodes)].astype(np.float64)
        self.target_.record_queries(n)  # the first layer runs on the n nodes
        return decode_edges(first_graph_layer(self.model_, type(self).__name__), X, A, nodes)


@fill_doc(**GRAPH_DOC)
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
    {black_box_target}
    metric : {"cosine", "euclidean", "correlation", "chebyshev", "braycurtis", \
"canberra", "cityblock", "sqeuclidean"}, default="correlation"
        Distance of the unsupervised attack.
    estimator : scikit-learn classifier, default=None
        Classifier of the supervised attack (cloned); ``None`` is a standardised
        MLP with two hidden layers of 32 units (the paper uses an MLP).
    random_state : int, RandomState instance or None, default=None
        Draws the non-edges, and a seed for every ``random_state`` of the
        classifier (the given ``estimator``'s are overridden).

    Attributes
    ----------
    target_ : Target
        The wrapped target.
    supervised_ : bool
        Whether ``fit`` was given a partial graph.
    estimator_ : classifier
        The fitted classifier (supervised only).
    n_train_pairs_ : int
        Pairs it was trained on (supervised only).

    See Also
    --------
    FeatureSimilarity : The same distances between node features, without queries.

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
    >>> from kmi.targets import Target
    >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype="float32")
    >>> target = Target(GraphPredictor(gcn(2, 2), A))
    >>> attack = LinkStealing(target).fit()
    >>> attack.invert(np.eye(3, 2, dtype="float32")).shape, target.n_queries_
    ((3, 3), 3)
    """

    required_access = "black-box"
    _parameter_constraints = {
        "target": "no_validation",
        "metric": [_METRICS],
        "estimator": [HasMethods(["fit", "predict_proba"]), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        target: Any = None,
        *,
        metric: str = "correlation",
        estimator: Any = None,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.target = target
        self.metric = metric
        self.estimator = estimator
        self.random_state = random_state

    def fit(self, X: ArrayLike | None = None, y: None = None, *, adjacency: Any = None) -> Self:
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

        Raises
        ------
        ValueError
            If ``adjacency`` does not match ``X``, or has no edge (or no non-edge).
        """
        self.supervised_ = adjacency is not None
        if not self.supervised_:
            return self
        X = check_features(X, min_samples=2)
        adjacency = check_adjacency(adjacency, X.shape[0])
        rng = check_random_state(self.random_state)
        pairs, labels = edges_and_non_edges(adjacency, rng)
        P = query_all(self.target_, X)
        feats = pair_features(P, unit_rows(X), pairs[:, 0], pairs[:, 1])
        estimator = link_classifier(self.estimator, rng.randint(np.iinfo(np.int32).max))
        self.estimator_ = estimator.fit(feats, labels)
        self.n_train_pairs_ = int(len(labels))
        return self

    @fill_doc(**GRAPH_DOC)
    def invert(
        self, X: ArrayLike, y: ArrayLike | None = None, nodes: ArrayLike | None = None
    ) -> np.ndarray:
        """Score every pair of attacked nodes from the target's posteriors.

        Parameters
        ----------
        {invert_X}
            The target is queried once with all of them.
        y : ignored
        {invert_nodes}

        Returns
        -------
        {invert_returns}
        """
        X, nodes = self._check_invert_input(X, nodes)
        P = query_all(self.target_, X)[nodes]
        if not self.supervised_:
            return pairwise_distance_scores(P, self.metric)
        k = len(nodes)
        rows, cols = np.triu_indices(k, 1)
        Xn = unit_rows(X[nodes])
        out = np.empty(len(rows))
        for sl in chunks(len(rows), 200_000):
            feats = pair_features(P, Xn, rows[sl], cols[sl])
            out[sl] = self.estimator_.predict_proba(feats)[:, 1]
        return pair_matrix(out, k)


@fill_doc(**GRAPH_DOC)
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
    {black_box_target}
        Output-side defenses (rounding, top-k) on the target blunt it.
    delta : float, default=1e-3
        Relative feature perturbation.
    {verbose}

    Attributes
    ----------
    target_ : Target
        The wrapped target.
    influence_ : ndarray of shape (n_attacked, n_attacked)
        ``influence_[u, v]``: influence of attacked node ``u`` on ``v`` (last
        :meth:`invert`; rows not reached before an interruption are NaN).

    See Also
    --------
    LinkStealing : One query of the whole graph, scored by posterior distances.

    References
    ----------
    F. Wu, Y. Long, C. Zhang and B. Li. "LinkTeller: Recovering Private Edges from
    Graph Neural Networks via Influence Analysis." IEEE S&P 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.attacks import LinkTeller
    >>> from kmi.models import GraphPredictor, gcn
    >>> from kmi.targets import Target
    >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype="float32")
    >>> target = Target(GraphPredictor(gcn(2, 2), A))
    >>> scores = LinkTeller(target).fit().invert(np.ones((3, 2), dtype="float32"))
    >>> bool(scores[0, 1] > scores[0, 2]), float(scores[0, 2]), target.n_queries_
    (True, 0.0, 12)
    """

    required_access = "black-box"
    _parameter_constraints = {
        "target": "no_validation",
        "delta": [Interval(Real, 0, np.inf, closed="neither")],
        "verbose": ["verbose"],
    }

    def __init__(self, target: Any = None, *, delta: float = 1e-3, verbose: int = 0):
        self.target = target
        self.delta = delta
        self.verbose = verbose

    def fit(self, X: ArrayLike | None = None, y: None = None) -> Self:
        """Validate the target and ``delta`` (``X`` and ``y`` are unused).

        Returns
        -------
        self
        """
        return self

    @fill_doc(**GRAPH_DOC)
    def invert(
        self, X: ArrayLike, y: ArrayLike | None = None, nodes: ArrayLike | None = None
    ) -> np.ndarray:
        """Influence scores between every pair of attacked nodes.

        Parameters
        ----------
        {invert_X}
        y : ignored
        {invert_nodes}

        Returns
        -------
        ndarray of shape (n_attacked, n_attacked)
            Symmetric influence scores; NaN where an interruption left them unknown.
        """
        X, nodes = self._check_invert_input(X, nodes)
        k = len(nodes)
        base = query_all(self.target_, X).astype(np.float64)[nodes]
        influence = np.full((k, k), np.nan)
        done = 0
        try:
            for sl in chunks(k, 1, verbose=self.verbose, desc="LinkTeller"):
                i = sl.start
                Xp = X.copy()
                Xp[nodes[i]] = X[nodes[i]] * (1.0 + self.delta)
                moved = query_all(self.target_, Xp).astype(np.float64)[nodes]
                influence[i] = np.linalg.norm(moved - base, axis=1) / self.delta
                done += 1
        except KeyboardInterrupt:
            warn_interrupted(done, k, "attacked nodes")
        self.influence_ = influence
        scores = influence + influence.T
        np.fill_diagonal(scores, 0.0)
        return scores
