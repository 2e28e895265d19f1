"""Records of the tabular attacks as pandas frames: conversion, layout and checks.

A NumPy array of records becomes a DataFrame with integer column labels; the
sensitive and unknown ("missing") columns are resolved from labels or indices; the
values a sensitive or unknown feature may take are read from the auxiliary data;
known features and labels are checked before any query is sent.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_array

#: Most distinct values a sensitive or enumerated feature may take.
MAX_VALUES = 100


def is_numeric(series: pd.Series) -> bool:
    """Whether a column holds numbers (not booleans)."""
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def as_frame(X) -> tuple[pd.DataFrame, bool]:
    """X as a DataFrame (integer column labels for arrays) and whether it was one."""
    # shape, emptiness, sparse and complex input get scikit-learn's own messages
    check_array(X, dtype=None, ensure_all_finite=False, accept_sparse=False)
    if isinstance(X, pd.DataFrame):
        _check_hashable(X)
        return X.reset_index(drop=True), True
    if isinstance(X, pd.Series):
        raise ValueError(
            "Expected a 2-D table of records, got a pandas Series; pass a DataFrame. "
            f"Received: X of type {type(X).__name__}"
        )
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(
            "Expected a 2-D array of records (n_samples, n_features). "
            f"Received: X with shape {arr.shape}"
        )
    frame = pd.DataFrame(arr, columns=range(arr.shape[1]))
    # object arrays of numbers become numeric columns
    frame = frame.infer_objects()
    _check_hashable(frame)
    return frame, False


def _check_hashable(frame: pd.DataFrame) -> None:
    for col in frame.columns:
        if frame[col].dtype == object:
            try:
                pd.unique(frame[col])
            except TypeError as exc:
                raise TypeError(
                    f"Column {col!r} holds values that are neither strings nor numbers "
                    f"(argument must be a string or a number). Received: {exc}"
                ) from exc


def resolve_sensitive(feat, columns: list, was_frame: bool):
    """The label of the sensitive column named (or indexed) by ``feat``."""
    if feat is None:
        raise ValueError(
            "sensitive_feature is required: the column index or DataFrame column name "
            "of the attribute to infer. Received: sensitive_feature=None"
        )
    if feat in columns and not (isinstance(feat, numbers.Integral) and not was_frame):
        return feat
    if isinstance(feat, numbers.Integral) and not isinstance(feat, bool):
        if 0 <= feat < len(columns):
            return columns[feat]
        raise ValueError(
            f"sensitive_feature={feat} is out of range: the auxiliary data has "
            f"{len(columns)} columns, and it must include the sensitive column. "
            f"Received: sensitive_feature={feat!r}"
        )
    raise ValueError(
        "The sensitive column is absent from the auxiliary data: fit needs auxiliary "
        f"records that include it. Columns are {columns[:20]!r}. "
        f"Received: sensitive_feature={feat!r}"
    )


def resolve_columns(names, columns: list, what: str) -> list:
    """The labels of the columns named (or indexed) by ``names``."""
    out = []
    for name in names or ():
        if name in columns:
            out.append(name)
        elif isinstance(name, numbers.Integral) and 0 <= name < len(columns):
            out.append(columns[name])
        else:
            raise ValueError(
                f"{what} names a column the data does not have. Columns are "
                f"{columns[:20]!r}. Received: {what}={names!r}"
            )
    return out


def value_domain(series: pd.Series, what: str) -> np.ndarray:
    """The distinct non-missing values of a column (sorted where they compare)."""
    values = pd.unique(series.dropna())
    if len(values) == 0:
        raise ValueError(f"The auxiliary data has no non-missing value of {what}.")
    if len(values) > MAX_VALUES:
        raise ValueError(
            f"{what} takes {len(values)} distinct values in the auxiliary data, more "
            f"than the {MAX_VALUES} an attribute-inference attack enumerates; it looks "
            "continuous. Bin it first, or pass the candidate values explicitly. "
            f"Received: {len(values)} distinct values"
        )
    try:
        return np.sort(values)
    except TypeError:
        return np.asarray(values, dtype=object)


def check_known_finite(frame: pd.DataFrame, columns, where: str, enumerates: bool) -> None:
    """Refuse NaN, inf or missing values in the known ``columns`` of ``frame``."""
    bad = []
    for col in columns:
        series = frame[col]
        if is_numeric(series):
            ok = np.isfinite(series.to_numpy(dtype="float64", na_value=np.nan))
        else:
            ok = series.notna().to_numpy()
        if not ok.all():
            bad.append(col)
    if bad:
        hint = (
            " or declare them missing_features=[...] to enumerate their values"
            if enumerates
            else ""
        )
        raise ValueError(
            f"{where} contains NaN, inf or missing values in known feature(s) {bad[:10]!r}. "
            f"Impute or drop those records{hint}. Received: non-finite values in {bad[:10]!r}"
        )


def check_record_labels(y, n: int, attack: str) -> np.ndarray:
    """One finite label per record (classes of any type, or regression values)."""
    if y is None:
        raise ValueError(
            f"{attack} requires y to be passed, but the target y is None: "
            "pass the records' labels. Received: y=None"
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"y must hold one label per record: expected shape ({n},). "
            f"Received: y with shape {y.shape}"
        )
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or inf. Received: non-finite labels")
    return y
