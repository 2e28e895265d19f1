"""The demonstration audit: income models trained on half of UCI Adult."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from kmi.audit.report import Report
from kmi.audit.tabular import run_tabular_attacks, summarize_tabular

#: marital_status values counted as married.
MARRIED = ("Married-civ-spouse", "Married-AF-spouse", "Married-spouse-absent")


def adult_tasks(X: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    """The two attribute-inference tasks of the demo: name -> (features, sensitive column).

    - ``sex``: all 14 features, the sensitive one being ``sex``;
    - ``married``: ``marital_status`` replaced by ``married`` (yes/no), and
      ``relationship`` dropped, since its Husband/Wife values give the answer away.
    """
    married = X.drop(columns=["relationship", "marital_status"])
    married.insert(
        X.columns.get_loc("marital_status"),
        "married",
        pd.Categorical(np.where(X["marital_status"].isin(MARRIED), "yes", "no")),
    )
    return {"sex": (X, "sex"), "married": (married, "married")}


def _preprocessor(scale: bool):
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"),
             make_column_selector(dtype_include="category")),
            ("num", StandardScaler() if scale else "passthrough",
             make_column_selector(dtype_exclude="category")),
        ],
        sparse_threshold=0.0,
    )


def make_target(kind: str, random_state: int = 0):
    """An income model: ``"decision_tree"`` (unpruned, so it overfits its members)
    or ``"keras_mlp"`` (a two-layer Keras MLP), behind a one-hot ColumnTransformer."""
    from sklearn.pipeline import make_pipeline
    from sklearn.tree import DecisionTreeClassifier

    from kmi.models import KerasMLPClassifier

    if kind == "decision_tree":
        tree = DecisionTreeClassifier(random_state=random_state)
        return make_pipeline(_preprocessor(False), tree)
    if kind == "keras_mlp":
        return make_pipeline(
            _preprocessor(True),
            KerasMLPClassifier((64, 64), epochs=20, batch_size=128, random_state=random_state),
        )
    raise ValueError(
        f"Unknown target kind; choose 'decision_tree' or 'keras_mlp'. Received: kind={kind!r}"
    )


def adult_audit(
    *,
    max_records: int | None = 4000,
    n_records: int | None = None,
    targets=("decision_tree", "keras_mlp"),
    tasks=("sex", "married"),
    random_state: int = 0,
    data_home=None,
    verbose: int = 1,
    checkpoint=None,
) -> Report:
    """Train income models on half of Adult and attack their members.

    Half of the records train each target (the members); a quarter is the
    attacker's auxiliary data; the last quarter are non-members, attacked too so
    that leakage specific to members shows. Every tabular attack and the imputation
    baseline infer ``sex``, then ``married``.

    Parameters
    ----------
    max_records : int or None, default=4000
        Attack at most this many members (and non-members); None attacks all.
    n_records : int or None, default=None
        Use only this many Adult records in all (a quick run); None uses all 30,162.
    targets : tuple of {"decision_tree", "keras_mlp"}
    tasks : tuple of {"sex", "married"}
    random_state : int, default=0
    data_home : path, default=None
        Passed to :func:`kmi.datasets.load_adult`.
    verbose : int, default=1
    checkpoint : path, default=None
        JSON-lines file of finished attacks, to resume an interrupted audit
        (see :func:`kmi.audit.run_tabular_attacks`).

    Returns
    -------
    Report
    """
    from kmi.datasets import load_adult

    X, y = load_adult(data_home=data_home, return_X_y=True)
    y = y.astype(str).to_numpy()
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(X))[:n_records]
    half, three_q = len(order) // 2, (3 * len(order)) // 4
    members, aux, others = order[:half], order[half:three_q], order[three_q:]
    attacked = members[:max_records] if max_records else members
    nonmembers = others[:max_records] if max_records else others
    all_tasks = adult_tasks(X)
    report = Report(
        title="kmi privacy audit: attribute inference on UCI Adult income models",
        settings={
            "data": f"UCI Adult, {len(order)} of its {len(X)} records without missing values",
            "members (train the target)": len(members),
            "auxiliary records (attacker's data)": len(aux),
            "attacked members": len(attacked),
            "attacked non-members": len(nonmembers),
            "random_state": random_state,
        },
    )
    started = time.perf_counter()
    for task in tasks:
        data, sensitive = all_tasks[task]

        def pick(idx, data=data):
            return data.iloc[idx].reset_index(drop=True)

        for kind in targets:
            model = make_target(kind, random_state).fit(pick(members), y[members])
            train_acc = float(model.score(pick(members), y[members]))
            test_acc = float(model.score(pick(others), y[others]))
            report.settings[f"{kind} on {task} task: train / test accuracy"] = (
                f"{train_acc:.3f} / {test_acc:.3f}"
            )
            if verbose:
                print(f"\n[{task}] {kind}: income accuracy train {train_acc:.3f}, "
                      f"test {test_acc:.3f}", flush=True)
            report.rows += run_tabular_attacks(
                model,
                X_aux=pick(aux),
                y_aux=y[aux],
                X_private=pick(attacked),
                y_private=y[attacked],
                sensitive_feature=sensitive,
                extra_splits={"non-members": (pick(nonmembers), y[nonmembers])},
                random_state=random_state,
                verbose=verbose,
                target_name=kind,
                checkpoint=checkpoint,
            )
    report.settings["wall time (s)"] = round(time.perf_counter() - started, 1)
    report.summary = summarize_tabular(report.rows)
    return report


SUMMARY_COLUMNS = [
    "attack", "accuracy", "balanced_accuracy", "f1", "g_mean", "mcc", "auc",
    "adv_bal_acc", "adv_ci95", "fit_s", "invert_s", "queries",
]
