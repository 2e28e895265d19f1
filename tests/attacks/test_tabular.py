import pickle

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from kmi.attacks import (
    CSMIA,
    LOMIA,
    AttributeInferenceModel,
    DecisionTreeWhiteBox,
    FredriksonMAP,
    ImputationBaseline,
)
from kmi.metrics.tabular import attack_scorer
from kmi.targets import AccessError, QueryBudgetExceededError, Target

ALL = [
    FredriksonMAP,
    CSMIA,
    LOMIA,
    DecisionTreeWhiteBox,
    AttributeInferenceModel,
    ImputationBaseline,
]


def _seeded(cls, target, **kwargs):
    if "random_state" in cls().get_params():
        kwargs.setdefault("random_state", 0)
    return cls(target, **kwargs)


# --------------------------------------------------------------------------- estimator checks
def _three_class_scores(X):
    """A target that accepts any number of features (estimator checks vary it)."""
    z = np.tanh(np.asarray(X, dtype=float).sum(axis=1))
    e = np.exp(np.stack([z, -z, 0 * z], axis=1))
    return e / e.sum(axis=1, keepdims=True)


def _row_sum(X):
    return np.asarray(X, dtype=float).sum(axis=1, keepdims=True)


def _tree_on_row_sums():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(200, 1)) * 3
    y = np.digitize(Z[:, 0], [-1, 1])
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(Z, y)
    return make_pipeline(FunctionTransformer(_row_sum), tree)


def _check_instances():
    callable_target = Target(_three_class_scores, classes=[0, 1, 2])
    tree_target = Target(_tree_on_row_sums())
    for cls in ALL:
        target = tree_target if cls is DecisionTreeWhiteBox else callable_target
        kwargs = {"sensitive_feature": 0, "sensitive_values": [0.0, 1.0]}
        if "estimator" in cls().get_params():
            # a light attack model: the checks test the estimator contract, not the learner
            kwargs["estimator"] = LogisticRegression()
        yield _seeded(cls, target, **kwargs)


def _expected_failures(estimator):
    failures = {}
    if estimator.uses_target:
        failures["check_dtype_object"] = (
            "the check turns y into strings, which are not labels of the target (its classes "
            "are 0, 1, 2); refusing labels the target cannot output is the intended behaviour"
        )
    if isinstance(estimator, FredriksonMAP | AttributeInferenceModel):
        failures["check_estimators_overwrite_params"] = (
            "fit queries the target, and the Target parameter counts its queries; it is shared "
            "by reference (never copied), so its counter changes by design"
        )
    if isinstance(estimator, DecisionTreeWhiteBox):
        failures["check_estimators_overwrite_params"] = (
            "the check compares joblib hashes of the target and of a deep copy of it; a fitted "
            "scikit-learn tree hashes differently once deep-copied although nothing changed"
        )
    return failures


@parametrize_with_checks(list(_check_instances()), expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- main paths
@pytest.mark.parametrize("cls", ALL)
def test_attacks_recover_the_sensitive_feature(cls, records, tree_pipeline):
    """The label is (almost) sex XOR colour==red, so knowing label and colour gives sex."""
    X_m, y_m, X_a, y_a = records
    attack = _seeded(cls, Target(tree_pipeline), sensitive_feature="sex").fit(X_a, y_a)
    np.testing.assert_array_equal(attack.sensitive_values_, ["F", "M"])
    inferred = attack.invert(X_m.drop(columns="sex"), y_m)  # the sensitive column may be absent
    accuracy = np.mean(inferred == X_m["sex"].to_numpy())
    assert accuracy >= 0.85, accuracy
    assert attack.score(X_m, y_m) == pytest.approx(accuracy)
    proba = attack.invert_proba(X_m.assign(sex=np.nan), y_m)  # ... or NaN
    assert proba.shape == (len(X_m), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_fit_invert_attacks_the_fitted_records(records, tree_pipeline):
    _, _, X_a, y_a = records
    attack = CSMIA(tree_pipeline, sensitive_feature="sex")
    np.testing.assert_array_equal(attack.fit_invert(X_a, y_a), attack.invert(X_a, y_a))


def test_queries_are_counted_and_batched(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline)
    attack = CSMIA(target, sensitive_feature="sex").fit(X_a, y_a)
    target.reset_queries()
    attack.invert(X_m, y_m)
    assert target.n_queries_ == 2 * len(X_m)  # one query per record and candidate value
    assert target.n_calls_ == 1  # in one batch


def test_missing_features_are_enumerated(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline)
    for cls in (CSMIA, FredriksonMAP, DecisionTreeWhiteBox):
        attack = cls(target, sensitive_feature="sex", missing_features=["colour"]).fit(X_a, y_a)
        target.reset_queries()
        score = attack.score(X_m.drop(columns="colour"), y_m)
        assert target.n_queries_ == len(X_m) * 2 * 3  # 2 sexes x 3 colours
        # without the colour, the label says little about sex
        assert 0.3 < score < 0.85


def test_csmia_cases(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    attack = CSMIA(tree_pipeline, sensitive_feature="sex").fit(X_a, y_a)
    cases = attack.cases(X_m, y_m)
    assert set(np.unique(cases)) <= {1, 2, 3}
    case1 = cases == 1
    assert case1.mean() > 0.5
    assert np.mean(attack.invert(X_m, y_m)[case1] == X_m["sex"].to_numpy()[case1]) > 0.9


def _memorised(n=300, seed=0):
    """Members with random labels, which a 1-NN target memorises; sex is column 1."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n) * 10.0])
    y = rng.integers(0, 2, n)
    return X, y


@pytest.mark.parametrize("cls", [CSMIA, LOMIA])
def test_memorisation_leaks_beyond_imputation(cls):
    X_m, y_m = _memorised(seed=0)
    X_a, y_a = _memorised(seed=1)
    target = Target(KNeighborsClassifier(n_neighbors=1).fit(X_m, y_m))
    kwargs = {"sensitive_feature": 1}
    baseline = ImputationBaseline(**kwargs, random_state=0).fit(X_a, y_a).score(X_m, y_m)
    attack = _seeded(cls, target, **kwargs).fit(X_a, y_a).score(X_m, y_m)
    # the true value reproduces the memorised label; the other one matches half the time
    assert baseline < 0.6
    assert attack > 0.68


def test_keras_target_on_arrays():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=600), rng.integers(0, 2, 600)]).astype("float32")
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0.5)).astype(int)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(X, y, epochs=30, batch_size=64, verbose=0)
    attack = CSMIA(Target(model), sensitive_feature=1).fit(X[:300], y[:300])
    assert attack.score(X[300:], y[300:]) > 0.8


def test_regression_target_with_fredrikson():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=500), rng.integers(0, 3, 500)]).astype(float)
    y = X[:, 0] + 2.0 * X[:, 1] + rng.normal(scale=0.3, size=500)
    target = Target(LinearRegression().fit(X, y))
    attack = FredriksonMAP(target, sensitive_feature=1).fit(X[:250], y[:250])
    assert attack.residual_std_ == pytest.approx(0.3, rel=0.2)
    assert attack.score(X[250:], y[250:]) > 0.9
    with pytest.raises(ValueError, match="attacks classifiers"):
        CSMIA(target, sensitive_feature=1).fit(X, y)


def test_adult_pipeline_end_to_end():
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.preprocessing import OneHotEncoder

    from kmi.datasets import load_adult

    X, y = load_adult(return_X_y=True)
    X, y = X.iloc[:3000], y.iloc[:3000].to_numpy()
    prep = ColumnTransformer(
        [
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_include="category"),
            )
        ],
        remainder="passthrough",
    )
    model = make_pipeline(prep, DecisionTreeClassifier(min_samples_leaf=5, random_state=0))
    model.fit(X.iloc[:1500], y[:1500])
    for cls in ALL:
        attack = _seeded(cls, Target(model), sensitive_feature="sex").fit(X.iloc[1500:], y[1500:])
        assert 0.5 < attack.score(X.iloc[:500], y[:500]) <= 1.0


# --------------------------------------------------------------------------- sklearn tooling
def test_grid_search_ranks_settings_in_parallel(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline, access="black-box")
    grid = GridSearchCV(
        AttributeInferenceModel(target, sensitive_feature="sex", random_state=0),
        {"estimator": [None, LogisticRegression(max_iter=500), LogisticRegression(C=1e-4)]},
        cv=3,
        n_jobs=2,
        scoring=attack_scorer("balanced_accuracy"),
    ).fit(X_a, y_a)
    ranks = grid.cv_results_["rank_test_score"]
    assert grid.best_score_ > 0.8
    # a heavily regularised logistic regression is the worst attack model
    assert ranks[2] == 3 and grid.cv_results_["mean_test_score"][2] < grid.best_score_

    grid = GridSearchCV(
        CSMIA(target, sensitive_feature="sex"),
        {"missing_features": [None, ["colour"]]},
        cv=2,
        n_jobs=2,
    ).fit(X_a, y_a)
    assert grid.best_params_ == {"missing_features": None}


@pytest.mark.parametrize("cls", ALL)
def test_clone_shares_target_and_pickle_roundtrip(cls, records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline)
    attack = _seeded(cls, target, sensitive_feature="sex")
    assert clone(attack).target is attack.target
    attack.fit(X_a, y_a)
    copy = pickle.loads(pickle.dumps(attack))
    np.testing.assert_array_equal(copy.invert(X_m, y_m), attack.invert(X_m, y_m))


@pytest.mark.parametrize("cls", [LOMIA, AttributeInferenceModel, ImputationBaseline])
def test_same_random_state_same_result(cls, records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    results = [
        cls(tree_pipeline, sensitive_feature="sex", random_state=3)
        .fit(X_a, y_a)
        .invert_proba(X_m, y_m)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*results)


def test_random_state_seeds_the_attack_model(records, tree_pipeline):
    """A random attack model (a forest) draws only from the attack's random_state."""
    from sklearn.ensemble import RandomForestClassifier

    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline)

    def run(cls, seed):
        forest = RandomForestClassifier(n_estimators=3, max_depth=3)
        attack = cls(target, sensitive_feature="sex", estimator=forest, random_state=seed)
        return attack.fit(X_a, y_a).invert_proba(X_m, y_m)

    for cls in (LOMIA, AttributeInferenceModel, ImputationBaseline):
        np.testing.assert_array_equal(run(cls, 3), run(cls, 3))
        same = [np.random.RandomState(7), np.random.RandomState(7)]
        np.testing.assert_array_equal(run(cls, same[0]), run(cls, same[1]))
        assert not np.array_equal(run(cls, 3), run(cls, 4)), cls.__name__
    # a fitted attack answers the same whenever it is asked (LOMIA trains in invert)
    attack = LOMIA(target, sensitive_feature="sex", random_state=np.random.RandomState(0))
    attack.set_params(estimator=RandomForestClassifier(n_estimators=3)).fit(X_a, y_a)
    np.testing.assert_array_equal(attack.invert_proba(X_m, y_m), attack.invert_proba(X_m, y_m))


def test_capabilities_and_constraints():
    for cls in ALL:
        assert cls.level == "instance"
        assert cls.needs_public_data is True  # fit learns from auxiliary records
        assert cls.needs_batchnorm is False and cls.uses_gan_prior is False
        assert set(cls._parameter_constraints) == set(cls().get_params()), cls.__name__
    assert ImputationBaseline.uses_target is False
    assert all(cls.uses_target for cls in ALL if cls is not ImputationBaseline)
    assert DecisionTreeWhiteBox.required_access == "white-box"
    assert LOMIA.required_access == FredriksonMAP.required_access == "label-only"


@pytest.mark.parametrize(
    "cls, params, message",
    [
        (
            FredriksonMAP,
            {"smoothing": -1.0},
            r"The 'smoothing' parameter of FredriksonMAP must be a float in the range "
            r"\[0.0, inf\)\. Received: smoothing=-1.0",
        ),
        (
            LOMIA,
            {"train_on": "members"},
            r"The 'train_on' parameter of LOMIA must be a str among .*"
            r"Received: train_on='members'",
        ),
        (
            AttributeInferenceModel,
            {"estimator": "hgb"},
            r"'estimator' parameter of AttributeInferenceModel .*Received: estimator='hgb'",
        ),
        (ImputationBaseline, {"random_state": "0"}, r"Received: random_state='0'"),
        (CSMIA, {"missing_features": "colour"}, r"Received: missing_features='colour'"),
        (DecisionTreeWhiteBox, {"verbose": -2}, r"Received: verbose=-2"),
        (CSMIA, {"sensitive_values": 1}, r"Received: sensitive_values=1"),
        (CSMIA, {"sensitive_feature": ["sex"]}, r"Received: sensitive_feature=\['sex'\]"),
    ],
)
def test_parameters_are_validated_in_fit(cls, params, message, records, tree_pipeline):
    _, _, X_a, y_a = records
    attack = cls(tree_pipeline, sensitive_feature="sex").set_params(**params)
    with pytest.raises(ValueError, match=message):
        attack.fit(X_a, y_a)


def test_sensitive_feature_is_required(records, tree_pipeline):
    _, _, X_a, y_a = records
    with pytest.raises(ValueError, match="sensitive_feature is required"):
        CSMIA(tree_pipeline).fit(X_a, y_a)


def test_imputation_baseline_needs_no_target(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    baseline = ImputationBaseline(sensitive_feature="sex", random_state=0).fit(X_a, y_a)
    assert not hasattr(baseline, "target_")
    with_target = ImputationBaseline(
        Target(tree_pipeline), sensitive_feature="sex", random_state=0
    ).fit(X_a, y_a)
    assert with_target.target_.n_queries_ == 0
    np.testing.assert_array_equal(with_target.invert(X_m, y_m), baseline.invert(X_m, y_m))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", ALL)
def test_invert_before_fit(cls, records, tree_pipeline):
    X_m, y_m, _, _ = records
    with pytest.raises(NotFittedError):
        cls(tree_pipeline, sensitive_feature="sex").invert(X_m, y_m)


@pytest.mark.parametrize("cls", ALL)
def test_sensitive_column_absent_from_aux(cls, records, tree_pipeline):
    _, _, X_a, y_a = records
    with pytest.raises(ValueError, match="sensitive column is absent from the auxiliary data"):
        cls(tree_pipeline, sensitive_feature="sex").fit(X_a.drop(columns="sex"), y_a)
    with pytest.raises(ValueError, match="out of range"):
        cls(tree_pipeline, sensitive_feature=7).fit(X_a.to_numpy(), y_a)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_known_features(bad, records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    attack = CSMIA(tree_pipeline, sensitive_feature="sex").fit(X_a, y_a)
    X_bad = X_m.copy()
    X_bad.loc[3, "hours"] = bad
    message = r"NaN, inf or missing values in known feature\(s\) \['hours'\]"
    with pytest.raises(ValueError, match=message):
        attack.invert(X_bad, y_m)
    with pytest.raises(ValueError, match="known feature"):
        ImputationBaseline(sensitive_feature="sex").fit(X_bad, y_m)


def test_label_only_target_refused_by_csmia(records, tree_pipeline):
    _, _, X_a, y_a = records
    target = Target(tree_pipeline, access="label-only")
    with pytest.raises(AccessError, match="CSMIA needs black-box access.*label-only"):
        CSMIA(target, sensitive_feature="sex").fit(X_a, y_a)
    LOMIA(target, sensitive_feature="sex").fit(X_a, y_a)  # label-only is enough for LOMIA
    with pytest.raises(AccessError, match="white-box"):
        DecisionTreeWhiteBox(
            Target(tree_pipeline, access="black-box"), sensitive_feature="sex"
        ).fit(X_a, y_a)


def test_exhausted_query_budget(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline, query_budget=500)
    attack = CSMIA(target, sensitive_feature="sex").fit(X_a, y_a)
    with pytest.raises(QueryBudgetExceededError, match="Query budget exhausted"):
        attack.invert(X_m, y_m)  # needs 800 queries


def test_decision_tree_white_box_counts_and_budgets_its_reads(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline, query_budget=500)
    attack = DecisionTreeWhiteBox(target, sensitive_feature="sex").fit(X_a, y_a)
    assert target.n_queries_ == 0  # reading the tree's structure is not a query
    attack.invert(X_m.iloc[:200], y_m[:200])
    assert target.n_queries_ == 400  # running 2 completions of 200 records down the tree is
    with pytest.raises(QueryBudgetExceededError, match="Query budget exhausted"):
        attack.invert(X_m, y_m)


def test_labels_that_do_not_match_the_target(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    for cls in (CSMIA, FredriksonMAP, LOMIA, AttributeInferenceModel):
        with pytest.raises(ValueError, match="do not match the target's output"):
            cls(tree_pipeline, sensitive_feature="sex").fit(X_a, np.where(y_a == "yes", 1, 0))


def test_decision_tree_white_box_needs_a_tree(records):
    X_m, y_m, X_a, y_a = records
    X_num = pd.get_dummies(X_a, dtype=float)
    model = LogisticRegression(max_iter=500).fit(X_num, y_a)
    with pytest.raises(TypeError, match="DecisionTreeClassifier"):
        DecisionTreeWhiteBox(model, sensitive_feature="sex_M").fit(X_num, y_a)


def test_wrong_width_and_type(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    X_arr = X_a.to_numpy()
    attack = ImputationBaseline(sensitive_feature=2, random_state=0).fit(X_arr, y_a)
    assert attack.invert(np.delete(X_m.to_numpy(), 2, axis=1), y_m).shape == (len(X_m),)
    message = "X has 2 features, but ImputationBaseline is expecting 4"
    with pytest.raises(ValueError, match=message):
        attack.invert(X_m.to_numpy()[:, :2], y_m)
    with pytest.raises(ValueError, match="fitted on an array"):
        attack.invert(X_m, y_m)
    with pytest.raises(ValueError, match="one label per record"):
        attack.invert(X_m.to_numpy(), y_m[:5])


def test_interrupted_attack_returns_what_it_has(records, tree_pipeline, monkeypatch):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline)
    attack = CSMIA(target, sensitive_feature="sex").fit(X_a, y_a)
    monkeypatch.setattr(attack, "chunk_rows", 200)  # 100 records (x 2 values) per chunk
    real_query, calls = target.query, []

    def interrupted(X):
        calls.append(len(X))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_query(X)

    monkeypatch.setattr(target, "query", interrupted)
    with pytest.warns(RuntimeWarning, match="Interrupted after 200 of 400 records"):
        inferred = attack.invert(X_m, y_m)
    assert all(v in ("F", "M") for v in inferred[:200])
    assert all(v is None for v in inferred[200:])
