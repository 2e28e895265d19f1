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
from kmi.targets import AccessError, Target

N = 40


def planted_partition(seed=0, n=N, p_in=0.25, p_out=0.01):
    """Two communities; features carry a noisy community signal."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    prob = np.where(y[:, None] == y[None, :], p_in, p_out)
    A = np.triu((rng.random((n, n)) < prob).astype("float32"), 1)
    A = A + A.T
    X = (rng.random((n, 16)) < np.where(y[:, None] == 1, [0.6] * 8 + [0.1] * 8,
                                        [0.1] * 8 + [0.6] * 8)).astype("float32")
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
    custom = LinkStealing(Target(GraphPredictor(model, A)), estimator=LogisticRegression(),
                          random_state=0).fit(X, adjacency=known)
    assert custom.score(X, adjacency=A) > 0.7


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "correlation", "chebyshev",
                                    "braycurtis", "canberra", "cityblock", "sqeuclidean"])
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


def test_determinism(graph):
    X, A, y, model = graph
    target = Target(GraphPredictor(model, A))
    for make in (lambda: GraphMI(model, max_iter=10), lambda: LinkTeller(target),
                 lambda: LinkStealing(target, random_state=3)):
        kw = {"adjacency": A, "X": X} if isinstance(make(), LinkStealing) else {}
        first = make().fit(**kw)
        second = make().fit(**kw)
        y_arg = y if isinstance(first, GraphMI) else None
        np.testing.assert_array_equal(first.invert(X, y_arg), second.invert(X, y_arg))


def test_estimator_basics(graph):
    X, A, y, model = graph
    target = Target(GraphPredictor(model, A))
    for attack in (GraphMI(model), LinkStealing(target), LinkTeller(target), FeatureSimilarity()):
        copy = clone(attack)
        assert copy.get_params()["target"] is attack.get_params()["target"] or isinstance(
            attack.target, keras.Model)
        assert attack.set_params(verbose=1) is attack if "verbose" in attack.get_params() else True
        with pytest.raises(NotFittedError):
            attack.invert(X, y)
        assert attack.fit() is attack


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
    with pytest.raises(ValueError, match="Received: max_iter=0"):
        GraphMI(model, max_iter=0).fit()
    with pytest.raises(ValueError, match="Received: delta=-1"):
        LinkTeller(bb, delta=-1).fit()
    with pytest.raises(ValueError, match="Received: metric='hamming'"):
        LinkStealing(bb, metric="hamming").fit()
    with pytest.raises(ValueError, match="0 edges"):
        LinkStealing(bb).fit(X, adjacency=np.zeros((N, N)))
    with pytest.raises(ValueError, match="one row of scores per node"):
        LinkStealing(Target(GraphPredictor(model, A), output="label")).fit().invert(X)
