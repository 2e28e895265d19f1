"""The estimator contract, checked once for every attack.

``BaseAttack`` validates parameters (``_parameter_constraints``) and the target at the
start of every ``fit``, shares the target through ``clone``, declares capabilities,
and counts white-box reads; scikit-learn's common checks run on every attack with its
target configured, each expected failure listed with its reason.
"""

import inspect

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import kmi.attacks as A
from kmi.base import LEVELS, BaseAttack
from kmi.models import softmax_regression
from kmi.targets import ACCESS_LEVELS, QueryBudgetExceededError, Target

ATTACKS = [getattr(A, name) for name in A.__all__]


def test_every_attack_is_listed_and_declares_its_contract():
    assert len(ATTACKS) == 19
    for cls in ATTACKS:
        assert issubclass(cls, BaseAttack)
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert set(cls._parameter_constraints) == params, cls.__name__
        assert cls.required_access in ACCESS_LEVELS
        assert cls.level in LEVELS, cls.__name__
        for flag in ("uses_target", "needs_public_data", "needs_batchnorm", "uses_gan_prior"):
            assert isinstance(getattr(cls, flag), bool), (cls.__name__, flag)
        assert getattr(cls.fit, "_kmi_fit_context", False), cls.__name__


def test_capabilities_drive_the_audit():
    assert A.DeepInversion.needs_batchnorm and not A.MIFace.needs_batchnorm
    assert all(c.uses_gan_prior for c in (A.GMI, A.KEDMI, A.BREPMI))
    assert A.InversionModel.needs_public_data and A.InversionModel.level == "instance"
    assert A.MIFace.level == "class"
    assert not A.ImputationBaseline.uses_target
    assert A.LMExtraction.generative and not A.TokenOptimization.generative


@pytest.fixture(scope="module")
def model():
    return softmax_regression((4, 4, 1), 3, seed=0)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_clone_shares_the_target_by_reference(cls, model):
    for target in (model, Target(model), LogisticRegression()):
        attack = cls(target)
        copy = clone(attack)
        assert copy.target is attack.target
        assert copy.get_params().keys() == attack.get_params().keys()


def test_clone_shares_the_evaluation_model(model):
    attack = A.MIFace(model, eval_model=model, max_iter=3)
    assert clone(attack).eval_model is model
    assert clone(attack, safe=False).target is model


def test_parameters_are_validated_before_fit_runs(model):
    with pytest.raises(InvalidParameterError, match=r"max_iter.*Received: max_iter=-1$"):
        A.MIFace(model, max_iter=-1).fit()
    with pytest.raises(InvalidParameterError, match="Received: optimizer='rmsprop'"):
        A.GMI(model, optimizer="rmsprop").fit(np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="Received"):  # InvalidParameterError is a ValueError
        A.EmbeddingInversion(lambda t: np.zeros((len(t), 2)), threshold=2.0).fit(["a b"])


def test_white_box_reads_are_counted_and_budgeted(model):
    target = Target(model)
    attack = A.MIFace(target, max_iter=5).fit()
    attack.invert([0, 1, 2])
    assert target.n_queries_ == 3 * 5 + 3  # each step reads 3 images, then the final check
    small = Target(model, query_budget=7)
    with pytest.raises(QueryBudgetExceededError) as info:
        A.MIFace(small, max_iter=5).fit().invert([0, 1, 2])
    partial = info.value.partial_result  # what the steps that ran found is kept
    assert partial.x.shape == (3, 4, 4, 1) and partial.n_iter == 2
    with pytest.raises(QueryBudgetExceededError):
        A.MIFace(Target(model, query_budget=2), max_iter=5).fit().invert([0, 1, 2])


def test_degenerate_inputs_are_refused(model):
    empty = np.zeros((0, 4, 4, 1))
    with pytest.raises(ValueError, match="X is empty"):
        A.MIFace(model, init="mean").fit(empty)
    with pytest.raises(ValueError, match="X is empty"):
        A.GMI(model, gan_steps=1).fit(empty)
    attack = A.MIFace(model, max_iter=1).fit()
    with pytest.raises(ValueError, match="only NaN"):
        attack.score(np.full((2, 4, 4, 1), np.nan), [0, 1])
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        attack.score(np.zeros((2, 4, 4, 1)), [1, 1])


# ----------------------------------------------------------------------------- determinism
def _same_twice(make, fit_arg, invert_arg):
    out = [make().fit(fit_arg).invert(invert_arg) for _ in range(2)]
    np.testing.assert_array_equal(out[0], out[1])
    return out[0]


def test_gan_attacks_are_reproducible_under_random_state(model):
    public = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    target = softmax_regression((8, 8, 1), 3, seed=1)
    gan = {"gan_steps": 2, "gan_width": 4, "latent_dim": 4, "gan_batch_size": 8}
    a = _same_twice(
        lambda: A.GMI(target, **gan, max_iter=3, n_restarts=2, random_state=0), public, [0, 2]
    )
    _same_twice(
        lambda: A.KEDMI(target, **gan, max_iter=2, n_samples=2, n_draws=2, random_state=0),
        public,
        [0, 2],
    )
    _same_twice(
        lambda: A.BREPMI(target, **gan, max_iter=2, init_batches=2, random_state=0),
        public,
        [0, 2],
    )
    other = A.GMI(target, **gan, max_iter=3, n_restarts=2, random_state=1).fit(public)
    assert not np.array_equal(a, other.invert([0, 2]))


def test_inversion_model_is_reproducible_and_leaves_global_state_alone(model):
    public = np.random.default_rng(0).uniform(size=(12, 4, 4, 1)).astype("float32")
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - the global state itself
    _same_twice(
        lambda: A.InversionModel(model, hidden_units=(8,), epochs=2, random_state=0),
        public,
        [0, 1],
    )
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


# ----------------------------------------------------------------------------- sklearn checks
_IMAGE = "image attacks take 4-D image arrays and invert classes of a Keras target"
_TEXT = "text attacks take lists of strings, not numeric arrays"
_GRAPH = "graph attacks take node features of a graph and invert edges"
_TABULAR_SCORE = "score needs the attacked records' labels and returns attack accuracy"


def _configured():
    """One instance of every attack with a tiny target of its modality configured."""
    img_target = softmax_regression((4, 4, 1), 3, seed=0)
    return [
        A.MIFace(img_target, max_iter=2),
        A.InversionModel(img_target, hidden_units=(4,), epochs=1, random_state=0),
        A.ImputationBaseline(sensitive_feature=0),
    ]


#: Checks that feed 2-D numeric arrays (or sparse, complex, object ones) to fit: an
#: image attack refuses them with its own message, since it takes 4-D image batches.
_IMAGE_CHECKS = (
    "check_complex_data",
    "check_dtype_object",
    "check_estimator_sparse_tag",
    "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
    "check_estimators_dtypes",
    "check_fit_score_takes_y",
    "check_estimators_fit_returns_self",
    "check_pipeline_consistency",
    "check_estimators_overwrite_params",
    "check_fit_check_is_fitted",
    "check_n_features_in",
    "check_fit2d_1sample",
    "check_fit2d_1feature",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_positive_only_tag_during_fit",
    "check_estimators_empty_data_messages",
    "check_estimators_nan_inf",
    "check_estimators_pickle",
    "check_readonly_memmap_input",
    "check_f_contiguous_array_estimator",
    "check_n_features_in_after_fitting",
    "check_fit2d_predict1d",
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
    "check_fit_idempotent",
)


def _expected_failures(estimator):
    if isinstance(estimator, (A.MIFace, A.InversionModel)):
        return dict.fromkeys(_IMAGE_CHECKS, _IMAGE)
    return {}


@parametrize_with_checks(_configured(), expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
