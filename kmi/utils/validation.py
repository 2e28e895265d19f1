"""Public input checks, as :mod:`sklearn.utils.validation` has for scikit-learn.

Attacks, metrics, models and the audit check what they are given with these functions
and nothing else, so one kind of input is refused the same way everywhere. Each check
returns the input in the form its callers compute with (float32 arrays, a list of
strings), or raises an error that says what was expected and ends with
``Received: ...``.

Examples
--------
>>> import numpy as np
>>> from kmi.utils.validation import check_images, check_labels
>>> check_images(np.zeros((2, 8, 8, 1))).dtype
dtype('float32')
>>> check_labels([0, 1, 1], min_classes=2)
array([0, 1, 1])
>>> check_images(np.zeros((0, 8, 8, 1)))
Traceback (most recent call last):
...
ValueError: X is empty: pass at least one image. Received: X.shape=(0, 8, 8, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "check_adjacency",
    "check_features",
    "check_images",
    "check_labels",
    "check_nodes",
    "check_texts",
]


def _check_finite(X: np.ndarray, name: str) -> None:
    if X.size and not np.isfinite(X).all():
        what = "only NaN" if np.isnan(X).all() else "NaN or infinite values"
        raise ValueError(
            f"{name} contains {what}; remove or impute them first. "
            f"Received: {name} with {int((~np.isfinite(X)).sum())} non-finite values"
        )


def check_images(
    X, shape: Sequence[int] | None = None, *, name: str = "X", min_samples: int = 1
) -> np.ndarray:
    """Check a batch of images; return it as a float32 array.

    Parameters
    ----------
    X : array-like of shape (n_images, height, width, channels)
        The images, channels last.
    shape : tuple of int, optional
        The shape each image must have (the target's input shape).
    name : str, default="X"
        The argument's name, used in error messages.
    min_samples : int, default=1
        The fewest images accepted.

    Returns
    -------
    ndarray of float32
        ``X`` as a float32 array.

    Raises
    ------
    ValueError
        If ``X`` is not 4-D, has fewer than ``min_samples`` images, images of the wrong
        shape, or NaN / infinite values.
    """
    try:
        X = np.asarray(X, dtype="float32")
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be a numeric array of images. Received: {name} of type "
            f"{type(X).__name__}"
        ) from exc
    if X.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of images of shape (n, height, width, channels). "
            f"Received: {name}.shape={X.shape}"
        )
    if len(X) < max(min_samples, 1):
        what = (
            "is empty: pass at least one image"
            if not len(X)
            else (f"needs at least {min_samples} images")
        )
        raise ValueError(f"{name} {what}. Received: {name}.shape={X.shape}")
    if shape is not None and X.shape[1:] != tuple(shape):
        raise ValueError(
            f"{name} must hold images of shape {tuple(shape)}, the target's input. "
            f"Received: {name}.shape={X.shape}"
        )
    _check_finite(X, name)
    return X


def check_labels(
    y, n_samples: int | None = None, *, name: str = "y", min_classes: int = 1
) -> np.ndarray:
    """Check a 1-d vector of integer class labels; return it as an integer array.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Integer class labels.
    n_samples : int, optional
        The number of rows ``y`` must have (that of the matching ``X``).
    name : str, default="y"
        The argument's name, used in error messages.
    min_classes : int, default=1
        The fewest distinct classes accepted; 2 where a result is compared with
        chance over the classes.

    Returns
    -------
    ndarray of int

    Raises
    ------
    ValueError
        If ``y`` is empty, not 1-d, not integral, of the wrong length, or has fewer
        than ``min_classes`` classes.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not len(y):
        raise ValueError(
            f"{name} must be a non-empty 1-d array of class labels. "
            f"Received: {name}.shape={y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if (
            not np.issubdtype(y.dtype, np.number)
            or not np.all(np.isfinite(y))
            or np.any(y != np.round(y))
        ):
            raise ValueError(
                f"{name} must hold integer class labels. Received: {name} with dtype={y.dtype}"
            )
        y = y.astype(np.int64)
    if n_samples is not None and len(y) != n_samples:
        raise ValueError(
            f"{name} must have one label per sample ({n_samples}). Received: len({name})={len(y)}"
        )
    n_classes = len(np.unique(y))
    if n_classes < min_classes:
        raise ValueError(
            f"{name} must hold at least {min_classes} distinct classes, or a result cannot "
            f"be told from chance. Received: {n_classes} class(es)"
        )
    return y


def check_texts(texts, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of non-empty strings, or raise a clear error.

    Raises
    ------
    TypeError
        If ``texts`` is a single string or holds something other than strings.
    ValueError
        If it is empty or holds an empty (or blank) string.

    Examples
    --------
    >>> from kmi.utils.validation import check_texts
    >>> check_texts(("a secret", "another"))
    ['a secret', 'another']
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{name} must be a sequence of strings, not one string; wrap it in a list. "
            f"Received: {name}={texts[:40]!r}"
        )
    if texts is None:
        raise TypeError(f"{name} must be a sequence of strings. Received: {name}=None")
    texts = list(np.asarray(texts, dtype=object).ravel()) if not isinstance(texts, list) else texts
    if not texts:
        raise ValueError(f"{name} is empty: pass at least one text. Received: len({name})=0")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(
                f"{name} must hold strings. Received: {name}[{i}] of type {type(t).__name__}"
            )
        if not t.strip():
            raise ValueError(
                f"{name} holds an empty or blank string, which has no tokens to embed. "
                f"Received: {name}[{i}]={t!r}"
            )
    return [str(t) for t in texts]


def check_nodes(nodes, n_nodes: int, *, name: str = "nodes", min_nodes: int = 1) -> np.ndarray:
    """Check node indices of a graph with ``n_nodes`` nodes (``None`` means all).

    Parameters
    ----------
    nodes : array-like of int of shape (k,), or None
        Distinct node indices in ``[0, n_nodes)``.
    n_nodes : int
        The number of nodes of the graph.
    name : str, default="nodes"
        The argument's name, used in error messages.
    min_nodes : int, default=1
        The fewest nodes accepted (2 for attacks on the edges between them).

    Returns
    -------
    ndarray of int
    """
    if nodes is None:
        nodes = np.arange(n_nodes)
    nodes = np.asarray(nodes)
    if nodes.ndim != 1 or (nodes.size and not np.issubdtype(nodes.dtype, np.integer)):
        raise ValueError(
            f"{name} must be a 1-d array of node indices. Received: {name} with "
            f"dtype={nodes.dtype} and shape={nodes.shape}"
        )
    if nodes.size and (nodes.min() < 0 or nodes.max() >= n_nodes):
        bad = nodes[(nodes < 0) | (nodes >= n_nodes)][:5].tolist()
        raise ValueError(
            f"{name} must be indices in [0, {n_nodes}) of a graph with {n_nodes} nodes. "
            f"Received: {name} out of range {bad}"
        )
    if len(np.unique(nodes)) != len(nodes):
        raise ValueError(f"{name} must not repeat. Received: duplicated node indices")
    if len(nodes) < min_nodes:
        raise ValueError(
            f"{name} must hold at least {min_nodes} node(s). Received: {len(nodes)} {name}"
        )
    return nodes


def check_adjacency(adjacency, n_nodes: int | None = None, *, name: str = "adjacency"):
    """Check a square dense or scipy.sparse adjacency matrix without NaN.

    Returns it unchanged when sparse, else as a float32 array.
    """
    if sp.issparse(adjacency):
        shape = adjacency.shape
        data = adjacency.data
    else:
        try:
            adjacency = np.asarray(adjacency, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} must be a numeric (n_nodes, n_nodes) matrix. Received: {name} of "
                f"type {type(adjacency).__name__}"
            ) from exc
        shape = adjacency.shape
        data = adjacency
    if len(shape) != 2 or shape[0] != shape[1] or not shape[0]:
        raise ValueError(
            f"{name} must be a non-empty square (n_nodes, n_nodes) matrix. "
            f"Received: {name} shape={shape}"
        )
    if n_nodes is not None and shape[0] != n_nodes:
        raise ValueError(
            f"{name} must have one row and column per node: the features have {n_nodes} rows. "
            f"Received: {name} shape={shape}"
        )
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} must not contain NaN or inf. Received: non-finite {name}")
    return adjacency


def check_features(X, *, name: str = "X", min_samples: int = 1) -> np.ndarray:
    """Check a numeric feature matrix (dense or scipy.sparse); return finite float32.

    Parameters
    ----------
    X : array-like or sparse matrix of shape (n_samples, n_features)
    name : str, default="X"
    min_samples : int, default=1
        The fewest rows accepted (2 for a graph's node features).
    """
    if X is None:
        raise ValueError(f"{name} must be a (n_samples, n_features) matrix. Received: {name}=None")
    if sp.issparse(X):
        X = X.toarray()
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be a numeric matrix. Received: {name} of type {type(X).__name__}"
        ) from exc
    if X.ndim != 2 or X.shape[0] < max(min_samples, 1) or X.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape (n_samples, n_features) with at least {max(min_samples, 1)} "
            f"row(s) and one feature. Received: {name} shape={X.shape}"
        )
    _check_finite(X, name)
    return X
