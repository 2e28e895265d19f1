"""Link-inference attacks on a small planted-partition graph."""

import keras
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression

from kmi.attacks import FeatureSimilarity, GraphMI, LinkStealing, LinkTeller
from kmi.metrics.graph import edge_auc
from kmi.models import GraphPredictor, gcn
from kmi.targets import AccessError, QueryBudgetExceededError, Target

N = 40


def planted_partition(seed=0, n=N, p_in=0.25, p_out=0.01):
    """Two communities; features carry a noisy community signal."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    prob = np.where(y[:, None] == y[None, :], p_in, p_out)
    A = np.triu((rng.random((n, n)) < prob).astype("float32"), 1)
    A = A + A.T
    X = (
        rng.random((n, 16))
        < np.where(y[:, None] == 1, [0.6] * 8 + [0.1] * 8, [0.1] * 8 + [0.6] * 8)
    ).astype("float32")
    return X, A, y


@pytest.fixture(scope="module")
def graph():
    keras.utils.set_random_seed(0)
    X, A, y = planted_partition()
    model = gcn(X.shape[1], 2, dropout=0.0)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit([X, A], y, batch_size=N, epochs=40, shuffle=False, verbose=0)
    return X, A, y, model


def _attack(cls, model, A, **kw):
    if cls is GraphMI:
        return GraphMI(model, max_iter=30, smoothness_after=10, **kw)
    if cls is FeatureSimilarity:
        return FeatureSimilarity(**kw)
    return cls(Target(GraphPredictor(model, A)), **kw)


ALL = [FeatureSimilarity, GraphMI, LinkStealing, LinkTeller]


@pytest.mark.parametrize("cls", ALL)
def test_attacks_recover_edges(cls, graph):
    X, A, y, model = graph
    attack = _attack(cls, model, A).fit()
    nodes = np.arange(N)
    scores = attack.invert(X, y, nodes=nodes) if cls is GraphMI else attack.invert(X)
    assert scores.shape == (N, N)
    np.testing.assert_allclose(scores, scores.T)
    auc = edge_auc(A, scores)
    # Two communities cap what community-level evidence gives at about 0.77;
    # LinkTeller sees the edges themselves.
    assert auc > (0.8 if cls is LinkTeller else 0.65), auc
    assert attack.score(X, y, adjacency=A, nodes=nodes) == pytest.approx(auc)


def test_graphmi_on_a_subgraph_and_relaxed_output(graph):
    X, A, y, model = graph
    nodes = np.arange(10, 30)
    attack = GraphMI(model, max_iter=30, decode=False).fit()
    relaxed = attack.invert(X[nodes], y[nodes])
    assert relaxed.min() >= 0 and relaxed.max() <= 1
    assert np.all(np.diag(relaxed) == 0)
    assert attack.n_iter_ == 30 and len(attack.loss_curve_) == 30
    assert attack.loss_curve_[-1] < attack.loss_curve_[0]
    budget = GraphMI(model, max_iter=10, edge_budget=5.0, decode=False).fit()
    assert np.triu(budget.invert(X[nodes], y[nodes]), 1).sum() <= 5.0 + 1e-3


def test_graphmi_chunked_loop_equals_the_step_by_step_loop(graph, monkeypatch):
    from kmi.attacks import _optim

    X, A, y, model = graph
    attack = GraphMI(model, max_iter=12, smoothness_after=5, edge_budget=40.0, decode=False)
    monkeypatch.setattr(_optim, "CHUNK_SIZE", 8)
    chunked = attack.fit().invert(X, y)  # a chunk of 8 steps, then one of 4
    curve = attack.loss_curve_
    monkeypatch.setattr(_optim, "CHUNK_SIZE", 1)
    np.testing.assert_allclose(attack.invert(X, y), chunked, atol=1e-4)
    np.testing.assert_allclose(attack.loss_curve_, curve, rtol=1e-4)
    # the budget projection (a bisection inside the compiled loop) holds
    assert np.triu(chunked, 1).sum() <= 40.0 + 1e-2
    assert len(curve) == 12


def test_graphmi_accepts_a_white_box_graph_predictor(graph):
    X, A, y, model = graph
    target = Target(GraphPredictor(model, A), access="white-box")
    scores = GraphMI(target, max_iter=5).fit().invert(X, y)
    assert scores.shape == (N, N)


def test_link_stealing_supervised_with_a_partial_graph(graph):
    X, A, y, model = graph
    known = np.triu(A, 1)
    rng = np.random.default_rng(12345)
    known[rng.random(known.shape) < 0.5] = 0  # the attacker knows about half the edges
    known = known + known.T
    attack = LinkStealing(Target(GraphPredictor(model, A)), random_state=0)
    attack.fit(X, adjacency=sp.csr_matrix(known))
    assert attack.supervised_ and attack.n_train_pairs_ == 2 * int(np.triu(known, 1).sum())
    assert attack.score(X, adjacency=A) > 0.7
    custom = LinkStealing(
        Target(GraphPredictor(model, A)), estimator=LogisticRegression(), random_state=0
    ).fit(X, adjacency=known)
    assert custom.score(X, adjacency=A) > 0.7


@pytest.mark.parametrize(
    "metric",
    [
        "cosine",
        "euclidean",
        "correlation",
        "chebyshev",
        "braycurtis",
        "canberra",
        "cityblock",
        "sqeuclidean",
    ],
)
def test_link_stealing_every_distance(metric, graph):
    X, A, y, model = graph
    attack = LinkStealing(Target(GraphPredictor(model, A)), metric=metric).fit()
    assert attack.score(X, adjacency=A) > 0.6, metric


def test_queries_are_counted(graph):
    X, A, y, model = graph
    target = Target(GraphPredictor(model, A))
    nodes = np.arange(5)
    LinkTeller(target).fit().invert(X, nodes=nodes)
    assert target.n_queries_ == (len(nodes) + 1) * N
    target.reset_queries()
    LinkStealing(target).fit().invert(X, nodes=nodes)
    assert target.n_queries_ == N


def test_link_teller_interrupted_returns_what_it_has(graph):
    X, A, y, model = graph
    predictor = GraphPredictor(model, A)
    calls = []

    def flaky(features):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return predictor(features)

    attack = LinkTeller(Target(flaky)).fit()
    with pytest.warns(RuntimeWarning, match="Interrupted after 2 of 6"):
        scores = attack.invert(X, nodes=np.arange(6))
    assert np.isfinite(attack.influence_[:2]).all() and np.isnan(attack.influence_[2:]).all()
    assert np.isnan(scores[3, 4]) and np.isfinite(scores[0, 1])


def test_graphmi_counts_its_reads_on_the_target(graph):
    X, A, y, model = graph
    target = Target(model)  # a Keras model: white-box
    attack = GraphMI(target, max_iter=4).fit()
    attack.invert(X, y)
    # every step reads the N nodes (forward and backward), and so does the decoding
    assert target.n_queries_ == N * (4 + 1) > 0
    assert attack.target_ is target
    relaxed = Target(model)
    GraphMI(relaxed, max_iter=4, decode=False).fit().invert(X, y)
    assert relaxed.n_queries_ == N * 4
    bare = GraphMI(model, max_iter=2).fit()
    bare.invert(X, y)
    assert bare.target_.n_queries_ == N * 3


def test_graphmi_stops_at_the_query_budget(graph):
    X, A, y, model = graph
    target = Target(model, query_budget=3 * N)
    attack = GraphMI(target, max_iter=10).fit()
    with pytest.raises(QueryBudgetExceededError, match="Query budget exhausted"):
        attack.invert(X, y)
    assert attack.n_iter_ == 3 and target.n_queries_ == 3 * N
    # what it found before the budget ran out is kept
    assert attack.adjacency_.shape == (N, N) and attack.adjacency_.max() > 0
    with pytest.raises(QueryBudgetExceededError):
        GraphMI(Target(model, query_budget=N - 1), max_iter=1).fit().invert(X, y)


def test_same_random_state_same_result(graph):
    """LinkStealing draws randomness (non-edges, the MLP): only from random_state."""
    X, A, y, model = graph
    known = np.triu(A, 1)
    known[np.random.default_rng(1).random(known.shape) < 0.5] = 0
    known = known + known.T
    target = Target(GraphPredictor(model, A))

    def run(seed):
        attack = LinkStealing(target, random_state=seed).fit(X, adjacency=known)
        return attack.invert(X)

    first, second = run(3), run(3)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, run(4))
    rs = [np.random.RandomState(5), np.random.RandomState(5)]
    np.testing.assert_array_equal(run(rs[0]), run(rs[1]))
    # the attacks that draw nothing give the same scores twice as well
    for cls, kwargs, y_arg in ((GraphMI, {"max_iter": 10}, y), (LinkTeller, {}, None)):
        attack_target = model if cls is GraphMI else target
        runs = [cls(attack_target, **kwargs).fit().invert(X, y_arg) for _ in range(2)]
        np.testing.assert_array_equal(*runs)


@pytest.mark.parametrize("cls", ALL)
def test_estimator_basics(cls, graph):
    X, A, y, model = graph
    for target in (model, Target(GraphPredictor(model, A), access="white-box")):
        attack = cls(target)
        copy = clone(attack)
        assert copy.target is attack.target  # shared, never deep-copied
        assert copy.get_params().keys() == attack.get_params().keys()
        with pytest.raises(NotFittedError):
            attack.invert(X, y)
    if "verbose" in attack.get_params():
        assert attack.set_params(verbose=1) is attack and attack.verbose == 1
    attack = _attack(cls, model, A)
    assert attack.fit() is attack
    assert set(cls._parameter_constraints) == set(attack.get_params())


def test_capabilities():
    for cls in ALL:
        assert cls.level == "instance"
        assert cls.needs_public_data is False  # fit works without auxiliary data
        assert cls.needs_batchnorm is False and cls.uses_gan_prior is False
    assert FeatureSimilarity.uses_target is False
    assert all(cls.uses_target for cls in (GraphMI, LinkStealing, LinkTeller))
    assert GraphMI.required_access == "white-box"


def test_access_and_target_errors(graph):
    X, A, y, model = graph
    with pytest.raises(AccessError, match="white-box"):
        GraphMI(Target(GraphPredictor(model, A))).fit()
    dense = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match=r"\[features, adjacency\]"):
        GraphMI(dense).fit()
    with pytest.raises(ValueError, match="Received: target=None"):
        LinkTeller().fit()


def test_bad_inputs(graph):
    X, A, y, model = graph
    bb = Target(GraphPredictor(model, A))
    attack = LinkStealing(bb).fit()
    with pytest.raises(ValueError, match=r"out of range \[40\]"):
        attack.invert(X, nodes=[0, 40])
    with pytest.raises(ValueError, match=r"Received: adjacency shape=\(40, 39\)"):
        attack.score(X, adjacency=A[:, :-1])
    with pytest.raises(ValueError, match=r"one row and column per node.*\(30, 30\)"):
        attack.score(X, adjacency=A[:30, :30])
    with pytest.raises(ValueError, match="adjacency=None"):
        attack.score(X)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        attack.invert(bad)
    with pytest.raises(ValueError, match=r"all 40 nodes.*\(39, 16\)"):
        attack.invert(X[:-1])
    with pytest.raises(ValueError, match="at least 2 node"):
        attack.invert(X, nodes=[3])
    with pytest.raises(ValueError, match=r"one label per attacked node \(40\)"):
        GraphMI(model, max_iter=1).fit().invert(X, y[:5])
    with pytest.raises(ValueError, match="do not match the target's output"):
        GraphMI(model, max_iter=1).fit().invert(X, y + 5)
    with pytest.raises(ValueError, match="0 edges"):
        LinkStealing(bb).fit(X, adjacency=np.zeros((N, N)))
    with pytest.raises(ValueError, match="no non-edge"):
        LinkStealing(bb).fit(X, adjacency=1 - np.eye(N))
    with pytest.raises(ValueError, match="one row of scores per node"):
        LinkStealing(Target(GraphPredictor(model, A), output="label")).fit().invert(X)


@pytest.mark.parametrize(
    "cls, params, message",
    [
        (
            GraphMI,
            {"max_iter": 0},
            r"'max_iter' parameter of GraphMI must be an int in the "
            r"range \[1, inf\)\. Received: max_iter=0",
        ),
        (GraphMI, {"learning_rate": -0.1}, r"'learning_rate'.*Received: learning_rate=-0.1"),
        (GraphMI, {"sparsity": np.inf}, r"'sparsity'.*Received: sparsity=inf"),
        (GraphMI, {"smoothness_after": 1.5}, r"Received: smoothness_after=1.5"),
        (GraphMI, {"edge_budget": 0}, r"'edge_budget'.*or None\. Received: edge_budget=0"),
        (GraphMI, {"decode": "yes"}, r"'decode'.*Received: decode='yes'"),
        (LinkTeller, {"delta": -1}, r"'delta' parameter of LinkTeller.*Received: delta=-1"),
        (LinkTeller, {"verbose": -1}, r"Received: verbose=-1"),
        (
            LinkStealing,
            {"metric": "hamming"},
            r"'metric' parameter of LinkStealing must be a str among .*Received: metric='hamming'",
        ),
        (LinkStealing, {"estimator": "mlp"}, r"'estimator'.*Received: estimator='mlp'"),
        (LinkStealing, {"random_state": "0"}, r"Received: random_state='0'"),
        (FeatureSimilarity, {"metric": "hamming"}, r"Received: metric='hamming'"),
    ],
)
def test_parameters_are_validated_in_fit(cls, params, message, graph):
    X, A, y, model = graph
    target = model if cls is GraphMI else Target(GraphPredictor(model, A))
    attack = cls(target, **params)  # __init__ accepts anything
    with pytest.raises(ValueError, match=message):
        attack.fit()
