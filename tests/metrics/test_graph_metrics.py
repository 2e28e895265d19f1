import numpy as np
import pytest
import scipy.sparse as sp

from kmi.metrics.graph import edge_ap, edge_auc, edge_labels, edge_metrics, edge_scorer

A = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype="float32")
# Upper-triangle pairs: (0,1)=edge, (0,2), (0,3), (1,2)=edge, (1,3), (2,3).
PERFECT = np.array(
    [[0, 0.9, 0.1, 0.2], [0.9, 0, 0.8, 0.3], [0.1, 0.8, 0, 0.0], [0.2, 0.3, 0.0, 0]]
)


def test_hand_computed_auc_and_ap():
    assert edge_auc(A, PERFECT) == 1.0
    assert edge_ap(sp.csr_matrix(A), PERFECT) == 1.0
    swapped = PERFECT.copy()
    swapped[0, 1] = swapped[1, 0] = 0.15  # edge (0,1) now ranks below (0,3) and (1,3)
    # positives 0.15, 0.8 against negatives 0.1, 0.2, 0.3, 0.0: 6 of 8 pairs ordered
    assert edge_auc(A, swapped) == pytest.approx(6 / 8)


def test_nodes_select_the_attacked_subgraph():
    nodes = [1, 2, 3]
    np.testing.assert_array_equal(edge_labels(A, nodes), [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    scores = PERFECT[np.ix_(nodes, nodes)]
    assert edge_auc(A, scores, nodes) == 1.0


def test_metrics_state_their_protocol():
    rng = np.random.default_rng(0)
    n = 30
    B = np.triu((rng.random((n, n)) < 0.1).astype(float), 1)
    B = B + B.T
    scores = B + rng.normal(0, 0.6, size=B.shape)
    scores = (scores + scores.T) / 2
    full = edge_metrics(B, scores)
    assert full["pairs"] == "all" and full["n_pairs"] == n * (n - 1) // 2
    assert full["chance_ap"] == pytest.approx(full["n_edges"] / full["n_pairs"])
    bal = edge_metrics(B, scores, pairs="balanced", random_state=0)
    assert bal["n_pairs"] == 2 * bal["n_edges"] and bal["chance_ap"] == 0.5
    assert bal == edge_metrics(B, scores, pairs="balanced", random_state=0)
    assert 0.5 < full["auc"] <= 1 and 0.5 < bal["auc"] <= 1


def test_scorer_runs_the_attack():
    class Oracle:
        def invert(self, X, y=None, nodes=None):
            return PERFECT if nodes is None else PERFECT[np.ix_(nodes, nodes)]

    assert edge_scorer("auc")(Oracle(), None, adjacency=A) == 1.0
    assert edge_scorer("ap", pairs="balanced", random_state=0)(Oracle(), None, adjacency=A) == 1
    with pytest.raises(ValueError, match="Received: metric='f1'"):
        edge_scorer("f1")


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"square.*Received: adjacency shape=\(4, 3\)"):
        edge_auc(A[:, :3], PERFECT)
    with pytest.raises(ValueError, match=r"Received: scores shape=\(3, 3\)"):
        edge_auc(A, PERFECT[:3, :3])
    with pytest.raises(ValueError, match=r"out of range \[7\]"):
        edge_auc(A, PERFECT[:2, :2], nodes=[0, 7])
    with pytest.raises(ValueError, match="must not repeat"):
        edge_auc(A, PERFECT[:2, :2], nodes=[1, 1])
    nan = PERFECT.copy()
    nan[0, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN scores"):
        edge_auc(A, nan)
    with pytest.raises(ValueError, match="Received: 0 edges"):
        edge_auc(A, PERFECT[2:, 2:], nodes=[2, 3])
    with pytest.raises(ValueError, match="Received: pairs='some'"):
        edge_ap(A, PERFECT, pairs="some")


def test_empty_or_all_nan_inputs_are_refused():
    with pytest.raises(ValueError, match=r"non-empty square.*Received: adjacency shape=\(0, 0\)"):
        edge_auc(np.zeros((0, 0)), np.zeros((0, 0)))
    with pytest.raises(ValueError, match="at least 1 node"):
        edge_labels(A, [])
    with pytest.raises(ValueError, match="must not contain NaN"):
        edge_metrics(np.full((4, 4), np.nan), PERFECT)
    with pytest.raises(ValueError, match="scores are all NaN.*Received: 6 NaN scores"):
        edge_ap(A, np.full((4, 4), np.nan))
