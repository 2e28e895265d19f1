"""Small tabular data sets and targets for the attribute-inference tests."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier


def make_records(n, seed):
    """Records whose label is (mostly) sex XOR (colour == "red")."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 70, n),
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "sex": pd.Categorical(rng.choice(["F", "M"], n, p=[0.4, 0.6])),
            "hours": rng.normal(40, 5, n).round(1),
        }
    )
    flip = rng.random(n) < 0.05
    label = (frame["sex"] == "M") ^ (frame["colour"] == "red") ^ flip
    return frame, np.where(label, "yes", "no")


@pytest.fixture(scope="session")
def records():
    """(X_members, y_members, X_aux, y_aux) as DataFrames with categorical columns."""
    X_m, y_m = make_records(400, seed=1)
    X_a, y_a = make_records(400, seed=2)
    return X_m, y_m, X_a, y_a


@pytest.fixture(scope="session")
def tree_pipeline(records):
    """A scikit-learn Pipeline (ColumnTransformer + decision tree) trained on members."""
    X_m, y_m, _, _ = records
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["colour", "sex"])],
        remainder="passthrough",
    )
    return make_pipeline(prep, DecisionTreeClassifier(max_depth=6, random_state=0)).fit(X_m, y_m)
