import keras
import numpy as np
import pytest
import scipy.sparse as sp

from kmi.models import GCNConv, GraphPredictor, gcn, normalize_adjacency
from kmi.targets import Target

# A path 0 - 1 - 2 - 3. With self-loops the degrees are 2, 3, 3, 2, so
# D^-1/2 (A + I) D^-1/2 has entries 1 / sqrt(d_i d_j) on the edges and the diagonal.
PATH = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype="float32")
S6 = 1 / np.sqrt(6)
HAND_NORMALISED = np.array(
    [
        [1 / 2, S6, 0, 0],
        [S6, 1 / 3, 1 / 3, 0],
        [0, 1 / 3, 1 / 3, S6],
        [0, 0, S6, 1 / 2],
    ],
    dtype="float32",
)
X4 = np.array([[1, 0], [0, 1], [2, 0], [1, 1]], dtype="float32")


def test_gcnconv_matches_hand_computed_propagation():
    np.testing.assert_allclose(normalize_adjacency(PATH), HAND_NORMALISED, rtol=1e-6)
    np.testing.assert_allclose(
        normalize_adjacency(sp.csr_matrix(PATH)).toarray(), HAND_NORMALISED, rtol=1e-6
    )
    layer = GCNConv(2, kernel_initializer="identity", bias_initializer="ones")
    out = keras.ops.convert_to_numpy(layer([X4, PATH]))
    # Row 1: (1/sqrt6) x0 + (1/3) x1 + (1/3) x2, plus the bias 1.
    np.testing.assert_allclose(out[1], [S6 * 1 + 2 / 3 + 1, 1 / 3 + 1], rtol=1e-5)
    np.testing.assert_allclose(out, HAND_NORMALISED @ X4 + 1.0, rtol=1e-5)


def test_gcnconv_without_normalisation_and_activation():
    layer = GCNConv(
        2,
        activation="relu",
        normalize=False,
        add_self_loops=False,
        kernel_initializer="identity",
        use_bias=False,
    )
    out = keras.ops.convert_to_numpy(layer([X4, -PATH]))
    np.testing.assert_allclose(out, np.maximum(-PATH @ X4, 0))


def test_sparse_and_dense_adjacency_agree():
    rng = np.random.default_rng(0)
    A = (rng.random((12, 12)) < 0.3).astype("float32")
    A = np.triu(A, 1)
    A = A + A.T
    X = rng.normal(size=(12, 5)).astype("float32")
    dense = gcn(5, 3, dropout=0.0)
    sparse = gcn(5, 3, dropout=0.0, sparse=True)
    sparse.set_weights(dense.get_weights())
    p_dense = dense.predict([X, A], batch_size=12, verbose=0)
    p_sparse = sparse.predict([X, sp.csr_matrix(A)], batch_size=12, verbose=0)
    np.testing.assert_allclose(p_dense, p_sparse, atol=1e-5)
    np.testing.assert_allclose(p_dense.sum(axis=1), 1.0, rtol=1e-5)
    # The same numbers as a NumPy two-layer GCN.
    (w1, b1, w2, b2) = dense.get_weights()
    a_hat = normalize_adjacency(A)
    h = np.maximum(a_hat @ X @ w1 + b1, 0)
    z = a_hat @ h @ w2 + b2
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p_dense, expected / expected.sum(1, keepdims=True), atol=1e-5)


def test_gcn_trains_on_a_planted_partition():
    rng = np.random.default_rng(0)
    n = 40
    y = np.repeat([0, 1], n // 2)
    A = (rng.random((n, n)) < np.where(y[:, None] == y[None, :], 0.3, 0.02)).astype("float32")
    A = np.triu(A, 1)
    A = A + A.T
    X = rng.normal(size=(n, 4)).astype("float32") + 0.5 * y[:, None]
    model = gcn(4, 2)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit([X, A], y, batch_size=n, epochs=60, shuffle=False, verbose=0)
    pred = model.predict([X, A], batch_size=n, verbose=0).argmax(1)
    assert np.mean(pred == y) > 0.9


def test_save_and_load_round_trip(tmp_path):
    model = gcn(2, 3, hidden_units=4)
    path = tmp_path / "gcn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict([X4, PATH], batch_size=4, verbose=0),
        model.predict([X4, PATH], batch_size=4, verbose=0),
        rtol=1e-6,
    )
    conv = loaded.get_layer("gcn_conv_1")
    assert isinstance(conv, GCNConv)
    assert conv.get_config()["units"] == 4
    again = GCNConv.from_config(conv.get_config())
    assert again.add_self_loops and again.normalize


def test_bad_inputs():
    with pytest.raises(ValueError, match="Received: units=0"):
        GCNConv(0)
    layer = GCNConv(2)
    with pytest.raises(ValueError, match="square"):
        layer([X4, np.ones((4, 3), "float32")])
    with pytest.raises(ValueError, match="one row per node"):
        GCNConv(2)([X4, np.ones((5, 5), "float32")])
    with pytest.raises(ValueError, match=r"Received: features shape=\(4,\)"):
        GCNConv(2)([X4[:, 0], PATH])
    with pytest.raises(ValueError, match="Received: dropout=1.5"):
        gcn(2, 2, dropout=1.5)
    with pytest.raises(ValueError, match="Received: n_classes=0"):
        gcn(2, 0)
    with pytest.raises(ValueError, match="square"):
        normalize_adjacency(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        GraphPredictor(gcn(2, 2), np.full((4, 4), np.nan))


def test_graph_predictor_is_a_black_box_target():
    model = gcn(2, 3)
    target = Target(GraphPredictor(model, sp.csr_matrix(PATH)))
    assert target.access == "black-box"
    p = target.query(X4)
    np.testing.assert_allclose(p, model.predict([X4, PATH], batch_size=4, verbose=0), atol=1e-6)
    assert target.n_queries_ == 4
    with pytest.raises(ValueError, match=r"all 4 nodes.*Received: features shape=\(3, 2\)"):
        target.query(X4[:3])


def test_target_sends_a_whole_graph_with_batch_size_none():
    target = Target(GraphPredictor(gcn(2, 3), PATH), batch_size=None)
    target.query(X4)
    assert target.n_calls_ == 1 and target.n_queries_ == 4
    with pytest.raises(ValueError, match=r"all 4 nodes"):
        Target(GraphPredictor(gcn(2, 3), PATH), batch_size=2).query(X4)


def test_graph_predictor_checks_queries_with_kmi_validation():
    predictor = GraphPredictor(gcn(2, 3, seed=0), PATH)
    with pytest.raises(ValueError, match="features contains only NaN"):
        predictor(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match=r"Received: features shape=\(0, 2\)"):
        predictor(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="non-empty square"):
        GraphPredictor(gcn(2, 3), np.zeros((0, 0)))
