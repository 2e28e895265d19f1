"""Public input checks, as :mod:`sklearn.utils.validation` has for scikit-learn.

Attacks, metrics, models and the audit check what they are given with these functions
and nothing else, so one kind of input is refused the same way everywhere. Each check
returns the input in the form its callers compute with (float32 arrays, a list of
strings), or raises an error that says what was expected and ends with
``Received: ...``. Where a caller skips what an interrupted attack did not recover,
``check_images(..., allow_nan=True)`` and ``check_texts(..., allow_none=True)`` let
NaN images and ``None`` texts through (but never a batch of nothing else).

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
from typing import Literal, overload

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

__all__ = [
    "check_adjacency",
    "check_features",
    "check_images",
    "check_labels",
    "check_nodes",
    "check_texts",
]


def _float_dtype(dtype: object) -> np.dtype:
    """``dtype`` as a NumPy dtype, if it is float32 or float64."""
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):
        resolved = None
    if resolved is None or resolved.name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'. Received: dtype={dtype!r}")
    return resolved


def _check_finite(X: np.ndarray, name: str) -> None:
    if X.size and not np.isfinite(X).all():
        what = "only NaN" if np.isnan(X).all() else "NaN or infinite values"
        raise ValueError(
            f"{name} contains {what}; remove or impute them first. "
            f"Received: {name} with {int((~np.isfinite(X)).sum())} non-finite values"
        )


def check_images(
    X: ArrayLike,
    shape: Sequence[int] | None = None,
    *,
    name: str = "X",
    min_samples: int = 1,
    allow_nan: bool = False,
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
        The fewest images accepted (images holding NaN included).
    allow_nan : bool, default=False
        Whether images may hold NaN: an attack that is interrupted returns NaN
        images for the records it did not reach, and a metric skips them. Infinite
        values are refused all the same, and so is a batch in which every image
        holds NaN (nothing was recovered).

    Returns
    -------
    ndarray of float32
        ``X`` as a float32 array.

    Raises
    ------
    ValueError
        If ``X`` is not 4-D, has fewer than ``min_samples`` images, images of the wrong
        shape, infinite values, or NaN (any NaN, or with ``allow_nan=True`` NaN in
        every image).

    See Also
    --------
    check_features : The same checks for a (n_samples, n_features) matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.utils.validation import check_images
    >>> X = np.zeros((3, 4, 4, 1))
    >>> check_images(X, shape=(4, 4, 1)).shape
    (3, 4, 4, 1)
    >>> check_images(X, shape=(8, 8, 1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: X must hold images of shape (8, 8, 1)... Received: X.shape=(3, 4, 4, 1)

    An image not recovered is NaN; ``allow_nan=True`` lets it through:

    >>> X[1] = np.nan
    >>> np.isnan(check_images(X, allow_nan=True)).any(axis=(1, 2, 3)).tolist()
    [False, True, False]
    >>> check_images(X)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: X contains NaN or infinite values;... Received: X with 16 non-finite values
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
    if not allow_nan:
        _check_finite(X, name)
        return X
    n_inf = int(np.isinf(X).sum())
    if n_inf:
        raise ValueError(
            f"{name} contains infinite values; only NaN may mark an image that was not "
            f"recovered. Received: {name} with {n_inf} infinite values"
        )
    missing = np.isnan(X.reshape(len(X), -1)).any(axis=1)
    if missing.all():
        raise ValueError(
            f"{name} holds only NaN images: no image was recovered, so there is nothing to "
            f"use. Received: {name}.shape={X.shape} with {int(missing.sum())} NaN images"
        )
    return X


def check_labels(
    y: ArrayLike, n_samples: int | None = None, *, name: str = "y", min_classes: int = 1
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

    Examples
    --------
    >>> from kmi.utils.validation import check_labels
    >>> check_labels([0.0, 2.0, 1.0])  # integral floats become integers
    array([0, 2, 1])
    >>> check_labels([1, 1, 1], min_classes=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: y must hold at least 2 distinct classes,... Received: 1 class(es)
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


@overload
def check_texts(
    texts: Sequence[str], name: str = ..., *, allow_none: Literal[False] = ...
) -> list[str]: ...


@overload
def check_texts(
    texts: Sequence[str | None], name: str = ..., *, allow_none: bool
) -> list[str | None]: ...


def check_texts(
    texts: Sequence[str | None], name: str = "texts", *, allow_none: bool = False
) -> list[str] | list[str | None]:
    """Return ``texts`` as a list of non-empty strings, or raise a clear error.

    Parameters
    ----------
    texts : sequence of str
        The texts (a list, tuple or array of strings; not one string).
    name : str, default="texts"
        The argument's name, used in error messages.
    allow_none : bool, default=False
        Whether entries may be ``None``: an attack that is interrupted returns
        ``None`` for the texts it did not recover. They are returned as ``None``;
        a sequence of ``None`` only is refused all the same (nothing was
        recovered).

    Returns
    -------
    list of str
        The texts, with ``None`` kept where ``allow_none=True``.

    Raises
    ------
    TypeError
        If ``texts`` is a single string or holds something other than strings (and
        ``None``, with ``allow_none=True``).
    ValueError
        If it is empty, holds an empty (or blank) string, or, with
        ``allow_none=True``, only ``None``.

    Examples
    --------
    >>> from kmi.utils.validation import check_texts
    >>> check_texts(("a secret", "another"))
    ['a secret', 'another']
    >>> check_texts(["a secret", None], allow_none=True)
    ['a secret', None]
    >>> check_texts(["a secret", None])
    Traceback (most recent call last):
    ...
    TypeError: texts must hold strings. Received: texts[1] of type NoneType
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
    if allow_none and all(t is None for t in texts):
        raise ValueError(
            f"{name} holds only None: no text was recovered, so there is nothing to use. "
            f"Received: {len(texts)} None"
        )
    for i, t in enumerate(texts):
        if t is None and allow_none:
            continue
        if not isinstance(t, str):
            raise TypeError(
                f"{name} must hold strings. Received: {name}[{i}] of type {type(t).__name__}"
            )
        if not t.strip():
            raise ValueError(
                f"{name} holds an empty or blank string, which has no tokens to embed. "
                f"Received: {name}[{i}]={t!r}"
            )
    return [None if t is None else str(t) for t in texts]


def check_nodes(
    nodes: ArrayLike | None, n_nodes: int, *, name: str = "nodes", min_nodes: int = 1
) -> np.ndarray:
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
        The node indices (all ``n_nodes`` of them when ``nodes`` is None).

    Raises
    ------
    ValueError
        If ``nodes`` is not a 1-d array of integers, holds an index outside
        ``[0, n_nodes)`` or the same index twice, or has fewer than ``min_nodes``
        nodes.

    Examples
    --------
    >>> from kmi.utils.validation import check_nodes
    >>> check_nodes(None, 3)
    array([0, 1, 2])
    >>> check_nodes([0, 4], 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: nodes must be indices in [0, 3)... Received: nodes out of range [4]
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


def check_adjacency(
    adjacency: ArrayLike | sp.spmatrix | sp.sparray,
    n_nodes: int | None = None,
    *,
    name: str = "adjacency",
) -> np.ndarray | sp.spmatrix | sp.sparray:
    """Check a square dense or scipy.sparse adjacency matrix without NaN.

    Parameters
    ----------
    adjacency : array-like or sparse matrix of shape (n_nodes, n_nodes)
        The adjacency matrix of a graph (weights allowed).
    n_nodes : int, optional
        The number of nodes it must have (the rows of the node features).
    name : str, default="adjacency"
        The argument's name, used in error messages.

    Returns
    -------
    ndarray of float32 or sparse matrix
        ``adjacency`` unchanged when sparse, else as a float32 array.

    Raises
    ------
    ValueError
        If it is not numeric, not square, empty, of the wrong size, or holds NaN
        or infinite values.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from kmi.utils.validation import check_adjacency
    >>> check_adjacency([[0, 1], [1, 0]]).dtype
    dtype('float32')
    >>> sp.issparse(check_adjacency(sp.eye(3, format="csr"), n_nodes=3))
    True
    >>> check_adjacency(np.ones((2, 3)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: adjacency must be a non-empty square... Received: adjacency shape=(2, 3)
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


def check_features(
    X: ArrayLike | sp.spmatrix | sp.sparray,
    *,
    name: str = "X",
    min_samples: int = 1,
    dtype: str | type | np.dtype = "float32",
) -> np.ndarray:
    """Check a numeric feature matrix (dense or scipy.sparse); return it dense and finite.

    Parameters
    ----------
    X : array-like or sparse matrix of shape (n_samples, n_features)
        The features (a sparse matrix is made dense).
    name : str, default="X"
        The argument's name, used in error messages.
    min_samples : int, default=1
        The fewest rows accepted (2 for a graph's node features).
    dtype : {"float32", "float64"}, default="float32"
        The dtype returned: float32 for a Keras model, float64 where precision
        matters (distances between embeddings, statistics). ``np.float64`` and
        other spellings NumPy reads as one of the two are accepted.

    Returns
    -------
    ndarray of shape (n_samples, n_features) and dtype ``dtype``

    Raises
    ------
    ValueError
        If ``X`` is None or not numeric, not 2-d, has fewer than ``min_samples`` rows
        or no feature, holds NaN or infinite values, or ``dtype`` is neither float32
        nor float64.

    See Also
    --------
    check_images : The same checks for a batch of images.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.utils.validation import check_features
    >>> X = np.array([[0.1, 0.2], [0.3, 0.4]])
    >>> check_features(X).dtype, check_features(X, dtype="float64").dtype
    (dtype('float32'), dtype('float64'))
    >>> check_features(np.full((2, 2), np.nan))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: X contains only NaN;... Received: X with 4 non-finite values
    """
    dtype = _float_dtype(dtype)
    if X is None:
        raise ValueError(f"{name} must be a (n_samples, n_features) matrix. Received: {name}=None")
    if sp.issparse(X):
        X = X.toarray()
    if np.iscomplexobj(X):
        raise ValueError(
            f"Complex data not supported: {name} must hold real numbers. "
            f"Received: {name} with dtype={np.asarray(X).dtype}"
        )
    try:
        X = np.asarray(X, dtype=dtype)
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
