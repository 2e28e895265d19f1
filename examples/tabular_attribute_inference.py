"""Infer a sensitive attribute of a model's training members, and compare with imputation.

A scikit-learn Pipeline (one-hot encoding + decision tree) is trained on Adult records;
CSMIA and LOMIA attack its members for `married`, and a grid search picks LOMIA's
training source. Run: python examples/tabular_attribute_inference.py
"""

import os

import numpy as np
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from kmi.attacks import CSMIA, LOMIA, ImputationBaseline
from kmi.audit.demo import adult_tasks
from kmi.datasets import load_adult
from kmi.metrics.tabular import advantage, attack_metrics, attack_scorer
from kmi.targets import Target

n = 3000 if os.environ.get("KMI_QUICK") else 30000
X, y = load_adult(return_X_y=True)
X, sensitive = adult_tasks(X)["married"]  # marital status as yes/no, relationship dropped
X, y = X.iloc[:n], y.astype(str).to_numpy()[:n]
half = len(X) // 2
X_members, y_members = X.iloc[:half].reset_index(drop=True), y[:half]
X_aux, y_aux = X.iloc[half:].reset_index(drop=True), y[half:]

model = make_pipeline(
    ColumnTransformer(
        [
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_include="category"),
            )
        ],
        remainder="passthrough",
    ),
    DecisionTreeClassifier(random_state=0),
).fit(X_members, y_members)
target = Target(model, access="black-box", query_budget=10 * n)

truth = X_members[sensitive]
baseline = ImputationBaseline(sensitive_feature=sensitive, random_state=0).fit(X_aux, y_aux)
base = attack_metrics(truth, baseline.invert(X_members, y_members))
print(f"ImputationBaseline: balanced accuracy {base['balanced_accuracy']:.3f}")

csmia = CSMIA(target, sensitive_feature=sensitive).fit(X_aux, y_aux)
cases = csmia.cases(X_members, y_members)
print(
    f"CSMIA: {np.mean(cases == 1):.1%} of members in case 1, where it is right "
    f"{np.mean(csmia.invert(X_members, y_members)[cases == 1] == truth[cases == 1]):.1%}"
    " of the time"
)

search = GridSearchCV(
    LOMIA(target, sensitive_feature=sensitive, random_state=0),
    {"train_on": ["case1", "aux"]},
    cv=2,
    scoring=attack_scorer("balanced_accuracy"),
).fit(X_aux, y_aux)
print("LOMIA grid search on auxiliary data:", search.best_params_)
lomia = search.best_estimator_
found = attack_metrics(truth, lomia.invert(X_members, y_members))
print(
    f"LOMIA{search.best_params_}: balanced accuracy {found['balanced_accuracy']:.3f}, "
    f"advantage over imputation {advantage(found, base)['balanced_accuracy']:+.3f}; "
    f"{target.n_queries_} queries"
)
