"""kmi.utils.validation: every check's main path, its refusals and its options."""

import numpy as np
import pytest
import scipy.sparse as sp

from kmi.utils.validation import (
    check_adjacency,
    check_features,
    check_images,
    check_labels,
    check_nodes,
    check_texts,
)


def _assert_ends_with_received(exc_info):
    message = str(exc_info.value)
    tail = message.rsplit("Received: ", 1)
    assert len(tail) == 2 and tail[0], message
    assert ". " not in tail[1], f"'Received: ...' is not the end of: {message}"


# ------------------------------------------------------------------ images
def test_check_images_returns_float32_unchanged():
    X = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    out = check_images(X, shape=(3, 3, 1))
    assert out.dtype == np.float32 and out.shape == (2, 3, 3, 1)
    np.testing.assert_array_equal(out, X)


@pytest.mark.parametrize(
    "X, kwargs, match",
    [
        (np.zeros((0, 4, 4, 1)), {}, r"X is empty.*Received: X.shape=\(0, 4, 4, 1\)"),
        (np.zeros((4, 4, 1)), {}, r"shape \(n, height, width, channels\).*X.shape=\(4, 4, 1\)"),
        (np.zeros((2, 16)), {}, r"Received: X.shape=\(2, 16\)"),
        (np.zeros((2, 4, 4, 1)), {"shape": (8, 8, 1)}, r"shape \(8, 8, 1\).*X.shape="),
        (np.zeros((1, 4, 4, 1)), {"min_samples": 2}, r"at least 2 images.*X.shape=\(1,"),
        ([["a", "b"]], {}, r"numeric array of images. Received: X of type list"),
        (np.full((2, 4, 4, 1), np.nan), {}, r"X contains only NaN.*Received: X with 32 "),
        (np.full((2, 4, 4, 1), np.inf), {}, r"NaN or infinite values.*32 non-finite"),
    ],
)
def test_check_images_refusals(X, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        check_images(X, **kwargs)
    _assert_ends_with_received(info)


def test_check_images_name_appears_in_messages():
    with pytest.raises(ValueError, match=r"private_images is empty") as info:
        check_images(np.zeros((0, 2, 2, 1)), name="private_images")
    _assert_ends_with_received(info)


def test_check_images_refuses_one_nan_image_by_default():
    X = np.zeros((3, 2, 2, 1))
    X[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values.*1 non-finite"):
        check_images(X)


def test_check_images_allow_nan_keeps_nan_images():
    X = np.ones((3, 2, 2, 1))
    X[1] = np.nan
    X[2, 0, 0, 0] = np.nan  # an image partly NaN counts as missing too
    out = check_images(X, allow_nan=True)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out).any(axis=(1, 2, 3)), [False, True, True])
    np.testing.assert_array_equal(out[0], 1.0)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_check_images_allow_nan_still_refuses_inf(bad):
    X = np.ones((2, 2, 2, 1))
    X[1] = np.nan
    X[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="infinite values.*Received: X with 1 infinite") as info:
        check_images(X, allow_nan=True)
    _assert_ends_with_received(info)


@pytest.mark.parametrize("partial", [False, True])
def test_check_images_allow_nan_refuses_a_batch_without_a_nan_free_image(partial):
    X = np.ones((2, 2, 2, 1))
    if partial:
        X[:, 0, 0, 0] = np.nan  # every image holds some NaN
    else:
        X[:] = np.nan
    with pytest.raises(
        ValueError, match=r"only NaN images.*X.shape=\(2, 2, 2, 1\) with 2"
    ) as info:
        check_images(X, allow_nan=True)
    _assert_ends_with_received(info)


def test_check_images_allow_nan_keeps_the_other_checks():
    with pytest.raises(ValueError, match="X is empty"):
        check_images(np.zeros((0, 2, 2, 1)), allow_nan=True)
    with pytest.raises(ValueError, match=r"shape \(3, 3, 1\)"):
        check_images(np.zeros((1, 2, 2, 1)), shape=(3, 3, 1), allow_nan=True)
    X = np.ones((2, 2, 2, 1))
    X[1] = np.nan
    # min_samples counts every image, NaN ones included
    assert len(check_images(X, min_samples=2, allow_nan=True)) == 2


# ------------------------------------------------------------------ labels
def test_check_labels_integral_floats_become_integers():
    y = check_labels(np.array([0.0, 2.0, 1.0]), n_samples=3, min_classes=3)
    assert np.issubdtype(y.dtype, np.integer)
    np.testing.assert_array_equal(y, [0, 2, 1])


@pytest.mark.parametrize(
    "y, kwargs, match",
    [
        ([], {}, r"non-empty 1-d array.*Received: y.shape=\(0,\)"),
        ([[0, 1], [1, 0]], {}, r"non-empty 1-d array.*Received: y.shape=\(2, 2\)"),
        ([0.5, 1.0], {}, r"integer class labels. Received: y with dtype=float64"),
        ([np.nan, np.nan], {}, r"integer class labels. Received: y with dtype=float64"),
        (["a", "b"], {}, r"integer class labels. Received: y with dtype=<U1"),
        ([0, 1, 1], {"n_samples": 2}, r"one label per sample \(2\). Received: len\(y\)=3"),
        ([1, 1, 1], {"min_classes": 2}, r"at least 2 distinct classes.*Received: 1 class"),
    ],
)
def test_check_labels_refusals(y, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        check_labels(y, **kwargs)
    _assert_ends_with_received(info)


def test_check_labels_single_class_is_accepted_by_default():
    np.testing.assert_array_equal(check_labels([3, 3]), [3, 3])


# ------------------------------------------------------------------ texts
def test_check_texts_accepts_sequences():
    assert check_texts(("a b", "c")) == ["a b", "c"]
    assert check_texts(np.array(["a", "b"])) == ["a", "b"]
    assert all(type(t) is str for t in check_texts(np.array(["a", "b"])))


@pytest.mark.parametrize(
    "texts, error, match",
    [
        ("one text", TypeError, r"not one string; wrap it in a list. Received: texts='one text'"),
        (None, TypeError, r"sequence of strings. Received: texts=None"),
        ([], ValueError, r"texts is empty.*Received: len\(texts\)=0"),
        (["a", 3], TypeError, r"must hold strings. Received: texts\[1\] of type int"),
        (["a", None], TypeError, r"must hold strings. Received: texts\[1\] of type NoneType"),
        (["a", "  "], ValueError, r"empty or blank string.*Received: texts\[1\]='  '"),
    ],
)
def test_check_texts_refusals(texts, error, match):
    with pytest.raises(error, match=match) as info:
        check_texts(texts)
    _assert_ends_with_received(info)


def test_check_texts_allow_none_keeps_none():
    assert check_texts(["a", None, "b"], allow_none=True) == ["a", None, "b"]
    assert check_texts(("a", None), "y_pred", allow_none=True) == ["a", None]


@pytest.mark.parametrize(
    "texts, error, match",
    [
        ([None, None], ValueError, r"y_pred holds only None.*Received: 2 None"),
        ([], ValueError, r"y_pred is empty"),
        (["a", ""], ValueError, r"empty or blank string.*Received: y_pred\[1\]=''"),
        ([None, 1.5], TypeError, r"Received: y_pred\[1\] of type float"),
        (None, TypeError, r"Received: y_pred=None"),
    ],
)
def test_check_texts_allow_none_keeps_the_other_checks(texts, error, match):
    with pytest.raises(error, match=match) as info:
        check_texts(texts, "y_pred", allow_none=True)
    _assert_ends_with_received(info)


# ------------------------------------------------------------------ nodes
def test_check_nodes_main_path():
    np.testing.assert_array_equal(check_nodes(None, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(check_nodes([3, 0], 4, min_nodes=2), [3, 0])


@pytest.mark.parametrize(
    "nodes, kwargs, match",
    [
        ([0, 4], {}, r"indices in \[0, 4\).*Received: nodes out of range \[4\]"),
        ([-1, 2], {}, r"Received: nodes out of range \[-1\]"),
        ([1, 1], {}, r"must not repeat. Received: duplicated node indices"),
        ([0.0, 1.0], {}, r"1-d array of node indices. Received: nodes with dtype=float64"),
        ([[0, 1]], {}, r"Received: nodes with dtype=int64 and shape=\(1, 2\)"),
        ([], {}, r"at least 1 node\(s\). Received: 0 nodes"),
        ([2], {"min_nodes": 2}, r"at least 2 node\(s\). Received: 1 nodes"),
    ],
)
def test_check_nodes_refusals(nodes, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        check_nodes(nodes, 4, **kwargs)
    _assert_ends_with_received(info)


# ------------------------------------------------------------------ adjacency
def test_check_adjacency_dense_and_sparse():
    dense = check_adjacency([[0, 1], [1, 0]], n_nodes=2)
    assert dense.dtype == np.float32
    sparse = sp.csr_matrix(np.eye(3))
    assert check_adjacency(sparse, n_nodes=3) is sparse


@pytest.mark.parametrize(
    "adjacency, kwargs, match",
    [
        (np.ones((2, 3)), {}, r"square.*Received: adjacency shape=\(2, 3\)"),
        (np.ones(3), {}, r"square.*Received: adjacency shape=\(3,\)"),
        (np.ones((0, 0)), {}, r"non-empty square.*Received: adjacency shape=\(0, 0\)"),
        (sp.csr_matrix((0, 0)), {}, r"Received: adjacency shape=\(0, 0\)"),
        (np.ones((2, 2)), {"n_nodes": 3}, r"3 rows. Received: adjacency shape=\(2, 2\)"),
        ([[0, np.nan], [1, 0]], {}, r"NaN or inf. Received: non-finite adjacency"),
        (sp.csr_matrix([[0, np.inf], [1, 0]]), {}, r"Received: non-finite adjacency"),
        (np.full((2, 2), np.nan), {}, r"NaN or inf. Received: non-finite adjacency"),
        ([["a", "b"], ["c", "d"]], {}, r"numeric .*Received: adjacency of type list"),
    ],
)
def test_check_adjacency_refusals(adjacency, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        check_adjacency(adjacency, **kwargs)
    _assert_ends_with_received(info)


# ------------------------------------------------------------------ features
def test_check_features_default_is_float32_and_dense():
    out = check_features(np.array([[0.1, 0.2], [0.3, 0.4]]))
    assert out.dtype == np.float32
    dense = check_features(sp.csr_matrix(np.eye(3)))
    assert isinstance(dense, np.ndarray) and dense.dtype == np.float32
    np.testing.assert_array_equal(dense, np.eye(3))


@pytest.mark.parametrize("dtype", ["float64", np.float64, np.dtype("float64")])
def test_check_features_keeps_float64(dtype):
    X = np.array([[0.1, 1 / 3], [1e-12, 2.0]])
    out = check_features(X, dtype=dtype)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, X)  # bit for bit: nothing went through float32
    assert check_features(sp.csr_matrix(X), dtype="float64").dtype == np.float64


@pytest.mark.parametrize("dtype", ["int32", "float16", "bogus", None, [1]])
def test_check_features_refuses_other_dtypes(dtype):
    with pytest.raises(ValueError, match=r"'float32' or 'float64'. Received: dtype=") as info:
        check_features(np.ones((2, 2)), dtype=dtype)
    _assert_ends_with_received(info)


@pytest.mark.parametrize(
    "X, kwargs, match",
    [
        (None, {}, r"Received: X=None"),
        (np.ones(3), {}, r"Received: X shape=\(3,\)"),
        (np.ones((0, 2)), {}, r"at least 1 row\(s\).*Received: X shape=\(0, 2\)"),
        (np.ones((2, 0)), {}, r"one feature. Received: X shape=\(2, 0\)"),
        (np.ones((1, 2)), {"min_samples": 2}, r"at least 2 row\(s\).*X shape=\(1, 2\)"),
        ([["a", "b"]], {}, r"numeric matrix. Received: X of type list"),
        (np.full((2, 2), np.nan), {}, r"X contains only NaN.*Received: X with 4 non-finite"),
        ([[1.0, np.inf]], {}, r"NaN or infinite values.*Received: X with 1 non-finite"),
        ([[1.0, np.nan]], {"dtype": "float64"}, r"NaN or infinite.*Received: X with 1 "),
    ],
)
def test_check_features_refusals(X, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        check_features(X, **kwargs)
    _assert_ends_with_received(info)
