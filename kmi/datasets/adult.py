"""UCI Adult (census income)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from kmi.datasets._base import fetch_file, get_data_home

__all__ = ["ADULT_COLUMNS", "load_adult"]

ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.data"

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
_NUMERIC = {"age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"}


def _mglearn_copy() -> Path | None:
    spec = importlib.util.find_spec("mglearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "adult.data"
    return path if path.exists() else None


def load_adult(
    data_home: str | os.PathLike | None = None,
    *,
    dropna: bool = True,
    return_X_y: bool = False,
    download: bool = True,
) -> Bunch | tuple[pd.DataFrame, pd.Series]:
    """Load the UCI Adult census data set (32,561 records, income above 50K or not).

    The file is read from the copy shipped inside the ``mglearn`` package when it is
    installed (``pip install kmi[datasets]``), else from ``<data_home>/adult/adult.data``,
    which is downloaded from the UCI repository if missing and ``download`` is true.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Data folder; see :func:`kmi.datasets.get_data_home`.
    dropna : bool, default=True
        Drop the 2,399 records with a missing value (``?`` in the file), leaving
        30,162.
    return_X_y : bool, default=False
        Return ``(X, y)`` instead of a Bunch.
    download : bool, default=True
        Download the file when neither copy exists.

    Returns
    -------
    Bunch with ``frame`` (all columns), ``data`` (the 14 features), ``target``
    (``income``: ``"<=50K"`` or ``">50K"``), ``feature_names`` and ``DESCR``;
    or ``(data, target)`` with ``return_X_y``. Categorical columns have the pandas
    ``category`` dtype; missing values are NaN.

    Raises
    ------
    FileNotFoundError
        If the file is in neither place and cannot be downloaded.

    References
    ----------
    R. Kohavi and B. Becker. UCI Adult data set (1996), from the 1994 US Census.

    Examples
    --------
    >>> from kmi.datasets import load_adult
    >>> # reads mglearn's copy, or adult/adult.data under data_home
    >>> adult = load_adult(data_home="../shared/data")  # doctest: +SKIP
    >>> adult.data.shape, adult.target.value_counts().to_dict()  # doctest: +SKIP
    ((30162, 14), {'<=50K': 22654, '>50K': 7508})
    """
    path = _mglearn_copy()
    if path is None:
        path = fetch_file(
            ADULT_URL,
            get_data_home(data_home) / "adult" / "adult.data",
            name="The UCI Adult data set (also shipped with `pip install mglearn`)",
            download=download,
        )
    frame = pd.read_csv(
        path,
        header=None,
        names=ADULT_COLUMNS,
        skipinitialspace=True,
        na_values=["?"],
        index_col=False,
    )
    frame = frame.dropna(how="all")
    if dropna:
        frame = frame.dropna().reset_index(drop=True)
    for col in ADULT_COLUMNS:
        if col in _NUMERIC:
            frame[col] = frame[col].astype(np.int64)
        else:
            frame[col] = frame[col].astype("category")
    data = frame.drop(columns="income")
    target = frame["income"]
    if return_X_y:
        return data, target
    return Bunch(
        frame=frame,
        data=data,
        target=target,
        feature_names=list(data.columns),
        DESCR=load_adult.__doc__,
    )
