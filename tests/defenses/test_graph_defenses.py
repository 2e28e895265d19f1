import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from kmi.defenses import EdgeRand, LapGraph
from kmi.defenses.graph import _flat_to_pair, _pair_to_flat


def _ring(n=60):
    A = np.zeros((n, n), dtype="float32")
    idx = np.arange(n)
    A[idx, (idx + 1) % n] = 1
    return A + A.T


def test_flat_indexing_round_trip():
    n = 7
    rows, cols = np.triu_indices(n, 1)
    flat = _pair_to_flat(rows, cols, n)
    np.testing.assert_array_equal(flat, np.arange(n * (n - 1) // 2))
    r, c = _flat_to_pair(flat, n)
    np.testing.assert_array_equal(r, rows)
    np.testing.assert_array_equal(c, cols)


@pytest.mark.parametrize("cls", [EdgeRand, LapGraph])
def test_output_is_a_symmetric_binary_graph_and_seeded(cls):
    A = _ring()
    out = cls(epsilon=2.0, random_state=0).fit_transform(sp.csr_matrix(A))
    assert sp.isspmatrix_csr(out) and out.shape == A.shape and out.dtype == np.float32
    assert (out != out.T).nnz == 0
    assert out.diagonal().sum() == 0
    assert set(np.unique(out.data)) <= {1.0}
    again = cls(epsilon=2.0, random_state=0).fit_transform(A)  # dense input, same seed
    assert (out != again).nnz == 0
    other = cls(epsilon=2.0, random_state=1).fit_transform(A)
    assert (out != other).nnz > 0
    assert clone(cls(epsilon=3.0)).get_params()["epsilon"] == 3.0


@pytest.mark.parametrize("cls", [EdgeRand, LapGraph])
def test_large_epsilon_keeps_the_graph_and_small_epsilon_hides_it(cls):
    A = _ring()
    kept = cls(epsilon=50.0, random_state=0).fit_transform(A)
    assert (kept != sp.csr_matrix(A)).nnz == 0
    noisy = cls(epsilon=0.1, random_state=0).fit_transform(A)
    true_edges = np.triu(A, 1) > 0
    recovered = np.triu(noisy.toarray(), 1)[true_edges].mean()
    assert recovered < 0.75  # most edges are no longer told apart


def test_edgerand_flip_rate_matches_randomized_response():
    n, eps = 200, 1.0
    A = np.zeros((n, n))
    out = EdgeRand(epsilon=eps, random_state=0).fit_transform(A)
    s = 2 / (np.exp(eps) + 1)
    rate = out.nnz / 2 / (n * (n - 1) / 2)
    assert rate == pytest.approx(s / 2, rel=0.05)


def test_lapgraph_keeps_the_density():
    A = _ring(100)
    out = LapGraph(epsilon=1.0, random_state=0, block_size=777).fit_transform(A)
    assert abs(out.nnz / 2 - 100) < 20


def test_bad_inputs():
    with pytest.raises(ValueError, match="Received: epsilon=0"):
        EdgeRand(epsilon=0).fit(_ring())
    with pytest.raises(ValueError, match="Received: epsilon=nan"):
        LapGraph(epsilon=float("nan")).fit(_ring())
    with pytest.raises(ValueError, match=r"square.*Received: adjacency shape=\(3, 4\)"):
        EdgeRand().fit(np.zeros((3, 4)))
    bad = _ring()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LapGraph().fit(bad)
    with pytest.raises(ValueError, match="60 nodes seen in fit"):
        EdgeRand(random_state=0).fit(_ring()).transform(_ring(10))
    with pytest.raises(ValueError, match="Received: count_share=1.5"):
        LapGraph(count_share=1.5).fit(_ring())
