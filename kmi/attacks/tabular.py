"""Attribute-inference attacks on tabular models.

Every attack here infers one sensitive feature of records the attacker partly knows
(the other features and the label), with the same interface:

- ``Attack(target, *, sensitive_feature=..., sensitive_values=None, ...)``;
- ``fit(X_aux, y_aux)`` on auxiliary records that include the sensitive column;
- ``invert(X, y)`` returns the inferred sensitive value of each record of ``X`` (its
  sensitive column is ignored and may be absent or NaN); ``invert_proba(X, y)`` the
  score of each candidate value;
- ``score(X, y)``: accuracy of ``invert`` against ``X``'s sensitive column.

:class:`ImputationBaseline` never queries the target: an attack leaks something only
where it beats it.
"""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.utils._param_validation import Interval, StrOptions

from kmi._docstring import fill_doc
from kmi.attacks._tabular import (
    ENUMERATION_CONSTRAINTS,
    LEARNER_CONSTRAINTS,
    MATCH_SCORE,
    TABULAR_DOC,
    TabularAttack,
    confidence_scores,
    paper_cases,
)
from kmi.attacks._tabular_models import AttackModelMixin, leaf_count_scores, tree_parts

__all__ = [
    "CSMIA",
    "LOMIA",
    "AttributeInferenceModel",
    "DecisionTreeWhiteBox",
    "FredriksonMAP",
    "ImputationBaseline",
]


@fill_doc(**TABULAR_DOC)
class FredriksonMAP(TabularAttack):
    """Maximum a posteriori inference of a sensitive feature (Fredrikson et al. 2014).

    For a record with known features ``x_K`` and label ``y``, each candidate value
    ``v`` is scored ``P(v) * P(y | f(x_K, v))``: the marginal prior of ``v`` times
    the chance that the true label is ``y`` when the target predicts ``f(x_K, v)``.
    That chance comes from the target's confusion matrix on the auxiliary data, or,
    for a regression target, from a Gaussian error model fitted to its residuals.
    Unknown non-sensitive features listed in ``missing_features`` are enumerated and
    weighted by the product of their marginals, as in the paper.

    Only the predicted label is used, so label-only targets are enough.

    Parameters
    ----------
    {tabular_params}
    {missing_features}
    smoothing : float, default=1.0
        Added to every confusion-matrix count.
    {verbose}

    Attributes
    ----------
    {tabular_attributes}
    confusion_ : ndarray of shape (n_classes, n_classes)
        ``confusion_[p, t]``: estimated P(true label t | predicted label p), for
        classifiers.
    residual_std_ : float
        Standard deviation of the target's errors, for regressors.

    See Also
    --------
    CSMIA : Uses the target's confidence scores as well.

    References
    ----------
    M. Fredrikson, E. Lantz, S. Jha, S. Lin, D. Page and T. Ristenpart.
    "Privacy in Pharmacogenetics: An End-to-End Case Study of Personalized
    Warfarin Dosing." USENIX Security 2014.

    Examples
    --------
    {example_records}
    >>> from kmi.attacks import FredriksonMAP
    >>> attack = FredriksonMAP(model, sensitive_feature=0).fit(X, y)
    >>> attack.invert(X[:4], y[:4]), X[:4, 0]
    (array([1., 1., 1., 1.]), array([1., 0., 0., 1.]))
    >>> round(attack.score(X, y), 3)
    0.76
    """

    required_access = "label-only"
    supports_missing_features = True
    _parameter_constraints = {
        **ENUMERATION_CONSTRAINTS,
        "smoothing": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        target: Any = None,
        *,
        sensitive_feature: Any = None,
        sensitive_values: Any = None,
        missing_features: Any = None,
        smoothing: float = 1.0,
        verbose: int = 0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.missing_features = missing_features
        self.smoothing = smoothing
        self.verbose = verbose

    def _fit_attack(self, frame, s_idx, y):
        y_enc = self._encode_labels(y)
        pred = self._query_labels(frame)  # auxiliary records are complete
        if self.target_.task == "regression":
            self.residual_std_ = float(np.std(y_enc - pred)) or 1e-6
            return
        c = self.target_.n_classes_
        counts = np.full((c, c), float(self.smoothing))
        np.add.at(counts, (pred, y_enc), 1.0)
        self.confusion_ = counts / counts.sum(axis=1, keepdims=True)

    def _chunk_scores(self, frame, y):
        y_enc = self._encode_labels(y)
        n, k, m = len(frame), len(self.sensitive_values_), self.n_combinations_
        pred = self._query_labels(self._expand(frame)).reshape(n, k, m)
        if self.target_.task == "regression":
            z = (pred - y_enc[:, None, None]) / self.residual_std_
            like = np.exp(-0.5 * z**2)
        else:
            like = self.confusion_[pred, y_enc[:, None, None]]
        return self.prior_[None, :] * (like @ self._combo_weights)


@fill_doc(**TABULAR_DOC)
class CSMIA(TabularAttack):
    """Confidence-score model inversion attack (Mehnaz et al. 2022).

    Each record is queried once per candidate sensitive value. Then:

    1. if the target predicts the true label ``y`` for exactly one value, that value;
    2. if it does for several, the one whose confidence in ``y`` is highest;
    3. if it does for none, the one whose (wrong) prediction is least confident.

    With ``missing_features``, every combination of the unknown features' values is
    queried too; a value then counts the (prior-weighted) share of combinations on
    which the target predicts ``y``, and the cases above apply to that share, ties
    broken by the mean confidence.

    Parameters
    ----------
    {tabular_params}
    {missing_features}
    {verbose}

    Attributes
    ----------
    {tabular_attributes}

    See Also
    --------
    LOMIA : The label-only attack of the same paper.

    References
    ----------
    {mehnaz2022}

    Examples
    --------
    {example_records}
    >>> from kmi.attacks import CSMIA
    >>> attack = CSMIA(model, sensitive_feature=0).fit(X, y)
    >>> attack.invert(X[:4], y[:4]), attack.cases(X[:4], y[:4])
    (array([1., 1., 1., 1.]), array([1, 2, 2, 1]))
    >>> round(attack.score(X, y), 3)
    0.76
    """

    supports_missing_features = True
    _parameter_constraints = ENUMERATION_CONSTRAINTS

    def __init__(
        self,
        target: Any = None,
        *,
        sensitive_feature: Any = None,
        sensitive_values: Any = None,
        missing_features: Any = None,
        verbose: int = 0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.missing_features = missing_features
        self.verbose = verbose

    def _fit_attack(self, frame, s_idx, y):
        self._check_classifier_target()
        self._encode_labels(y)  # the labels must match the target's outputs

    def _chunk_scores(self, frame, y):
        y_enc = self._encode_labels(y)
        n, k, m = len(frame), len(self.sensitive_values_), self.n_combinations_
        p = self._query_scores(self._expand(frame)).reshape(n, k, m, -1)
        return confidence_scores(p, y_enc, self._combo_weights)

    def cases(self, X: ArrayLike | pd.DataFrame, y: ArrayLike) -> np.ndarray:
        """The case of the paper (1, 2 or 3) that decides each record of ``X``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            The attacked records, as for :meth:`invert`.
        y : array-like of shape (n_samples,)
            The records' true labels.

        Returns
        -------
        ndarray of shape (n_samples,)
            1: exactly one candidate value makes the target predict ``y``; 2: several
            do; 3: none does.
        """
        frame, y, _ = self._validate_invert(X, y)
        return paper_cases(np.sum(self._invert_scores(frame, y) >= MATCH_SCORE, axis=1))


@fill_doc(**TABULAR_DOC)
class LOMIA(AttackModelMixin, TabularAttack):
    """Label-only model inversion attack (Mehnaz et al. 2022).

    The attacked records are queried once per candidate value, using labels only.
    Records for which exactly one value makes the target predict the true label
    (case 1 of :class:`CSMIA`) are taken as labelled examples of that value; an attack
    model trained on them (known features and label in, sensitive value out) then
    infers the value of every other record. Case-1 records keep their value.

    With ``train_on="aux"`` the attack model is trained on the auxiliary records
    instead (an imputation model, as :class:`ImputationBaseline`), and with
    ``"both"`` on the two together: the target then only decides the records it
    confirms (case 1), and imputation the rest. On members of an overfit model,
    case-1 answers are far more accurate than imputation, so this variant measures
    the leakage beyond imputation that the paper's variant can hide.

    Parameters
    ----------
    {tabular_params}
    {estimator}
    train_on : {"case1", "aux", "both"}, default="case1"
        What the attack model learns from: the attacked records in case 1 (the
        paper), the auxiliary records, or both.
    {random_state}
    {verbose}

    Attributes
    ----------
    {tabular_attributes}
    n_case1_ : int
        Number of case-1 records found in the last call of :meth:`invert`.

    See Also
    --------
    CSMIA : The confidence-score attack of the same paper.

    References
    ----------
    {mehnaz2022}

    Examples
    --------
    {example_records}
    >>> from kmi.attacks import LOMIA
    >>> attack = LOMIA(model, sensitive_feature=0, estimator=LogisticRegression()).fit(X, y)
    >>> round(attack.score(X, y), 3), attack.n_case1_
    (0.78, 216)
    """

    required_access = "label-only"
    _parameter_constraints = {
        **LEARNER_CONSTRAINTS,
        "train_on": [StrOptions({"case1", "aux", "both"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        target: Any = None,
        *,
        sensitive_feature: Any = None,
        sensitive_values: Any = None,
        estimator: Any = None,
        train_on: str = "case1",
        random_state: Any = None,
        verbose: int = 0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.estimator = estimator
        self.train_on = train_on
        self.random_state = random_state
        self.verbose = verbose

    def _fit_attack(self, frame, s_idx, y):
        self._check_classifier_target()
        self._encode_labels(y)
        self._fit_encoders(frame, y)
        features = self._known_features(frame, y)
        self._aux = (features, s_idx) if self.train_on == "both" else None
        self._aux_model = self._fit_learner(features, s_idx) if self.train_on == "aux" else None

    def _invert_scores(self, frame, y):
        y_enc = self._encode_labels(y)
        n, k = len(frame), len(self.sensitive_values_)
        pred, done = self._candidate_outputs(frame, self._query_labels, 1)
        match = pred[..., 0] == y_enc[:, None]
        n_match = np.where(np.arange(n) < done, match.sum(axis=1), -1)
        first = np.argmax(match, axis=1)
        case1 = n_match == 1
        self.n_case1_ = int(case1.sum())
        features = self._known_features(frame, y)
        s_train = np.where(case1, first, -1)
        train = features
        if self.train_on == "both":
            train = np.vstack([features, self._aux[0]])
            s_train = np.concatenate([s_train, self._aux[1]])
        elif self.train_on == "case1" and self.n_case1_ == 0:
            warnings.warn(
                "LOMIA found no case-1 record (no record for which exactly one value makes "
                "the target predict its label); falling back to the prior.",
                RuntimeWarning,
                stacklevel=3,
            )
        model = self._aux_model if self.train_on == "aux" else self._fit_learner(train, s_train)
        out = self._learner_proba(model, features)
        out[case1] = np.eye(k)[first[case1]]
        out[n_match < 0] = np.nan
        return out


@fill_doc(**TABULAR_DOC)
class DecisionTreeWhiteBox(TabularAttack):
    """White-box inference from a decision tree's leaf counts (Fredrikson et al. 2015).

    For each candidate value, the record (known features, candidate value, and each
    combination of unknown features) falls into one leaf. The leaf's count of
    training records of class ``y`` estimates how many training records look like
    it; when several candidate values reach the same leaf, its count is shared among
    them in proportion to their prior. The value with the largest estimated count
    wins. Random and extra-trees forests are supported by summing over their trees.

    Parameters
    ----------
    {tabular_params}
    {missing_features}
    {verbose}

    Attributes
    ----------
    {tabular_attributes}
    trees_ : list of DecisionTreeClassifier
        The trees read.

    Raises
    ------
    AccessError
        In ``fit``, if the target is not white-box.
    TypeError
        In ``fit``, if the target is not a scikit-learn tree classifier, a forest of
        them, or a Pipeline ending in one.

    Notes
    -----
    Reading the trees' structure is not a query, but running each candidate
    completion down the trees is: :meth:`invert` counts one query per completion on
    the target, within its ``query_budget``.

    References
    ----------
    M. Fredrikson, S. Jha and T. Ristenpart. "Model Inversion Attacks that Exploit
    Confidence Information and Basic Countermeasures." ACM CCS 2015.

    Examples
    --------
    {example_records}
    >>> from kmi.attacks import DecisionTreeWhiteBox
    >>> from kmi.targets import Target
    >>> target = Target(model)
    >>> attack = DecisionTreeWhiteBox(target, sensitive_feature=0).fit(X, y)
    >>> round(attack.score(X, y), 3), len(attack.trees_), target.n_queries_
    (0.78, 1, 800)
    """

    required_access = "white-box"
    supports_missing_features = True
    _parameter_constraints = ENUMERATION_CONSTRAINTS

    def __init__(
        self,
        target: Any = None,
        *,
        sensitive_feature: Any = None,
        sensitive_values: Any = None,
        missing_features: Any = None,
        verbose: int = 0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.missing_features = missing_features
        self.verbose = verbose

    def _fit_attack(self, frame, s_idx, y):
        self._prep, self.trees_ = tree_parts(self.target_)
        self._encode_labels(y)  # the tree's classes are the target's output columns

    def _chunk_scores(self, frame, y):
        y_enc = self._encode_labels(y)
        shape = (len(frame), len(self.sensitive_values_), self.n_combinations_)
        rows = self._to_target_format(self._expand(frame))
        self.target_.record_queries(len(rows))  # every completion runs down the trees
        Z = self._prep.transform(rows) if self._prep is not None else rows
        return leaf_count_scores(self.trees_, Z, y_enc, self.prior_, self._combo_weights, shape)


@fill_doc(**TABULAR_DOC)
class AttributeInferenceModel(AttackModelMixin, TabularAttack):
    """Learned attribute inference from known features and the target's outputs.

    For every auxiliary record, the target is queried on each candidate completion
    (the known features with each candidate sensitive value); an attack model learns
    the sensitive value from the known features, the label and those outputs. The
    same features are built for the attacked records, whose true sensitive value is
    never sent to the target.

    Parameters
    ----------
    {tabular_params}
    {estimator}
    {random_state}
    {verbose}

    Attributes
    ----------
    {tabular_attributes}
    estimator_ : classifier
        The fitted attack model.

    See Also
    --------
    ImputationBaseline : The same learner without the target's outputs.

    Notes
    -----
    IBM ART's ``AttributeInferenceBlackBox`` feeds the attack model the target's
    output on the true record; here the attacked record's sensitive value is
    unknown, so the outputs of all candidate completions are used instead.

    Examples
    --------
    {example_records}
    >>> from kmi.attacks import AttributeInferenceModel
    >>> attack = AttributeInferenceModel(
    ...     model, sensitive_feature=0, estimator=LogisticRegression(), random_state=0
    ... ).fit(X[:200], y[:200])
    >>> round(attack.score(X[200:], y[200:]), 3)
    0.755
    """

    _parameter_constraints = {**LEARNER_CONSTRAINTS, "verbose": ["verbose"]}

    def __init__(
        self,
        target: Any = None,
        *,
        sensitive_feature: Any = None,
        sensitive_values: Any = None,
        estimator: Any = None,
        random_state: Any = None,
        verbose: int = 0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.estimator = estimator
        self.random_state = random_state
        self.verbose = verbose

    def _features(self, frame, y):
        outputs, done = self._candidate_outputs(frame, self._query_scores, self._width)
        return np.hstack([self._known_features(frame, y), outputs.reshape(len(frame), -1)]), done

    def _fit_attack(self, frame, s_idx, y):
        self._check_classifier_target()
        self._encode_labels(y)
        self._width = self.target_.n_classes_
        self._fit_encoders(frame, y)
        features, done = self._features(frame, y)
        queried = np.arange(len(s_idx)) < done  # all of them unless interrupted
        self.estimator_ = self._fit_learner(features, np.where(queried, s_idx, -1))

    def _invert_scores(self, frame, y):
        self._encode_labels(y)
        features, done = self._features(frame, y)
        out = np.full((len(frame), len(self.sensitive_values_)), np.nan)
        out[:done] = self._learner_proba(self.estimator_, features[:done])
        return out


@fill_doc(**TABULAR_DOC)
class ImputationBaseline(AttackModelMixin, TabularAttack):
    """Infer the sensitive feature without ever querying the target.

    The attack model of :class:`AttributeInferenceModel`, trained on the known
    features and the label only. Whatever an attack achieves beyond this baseline is
    what the target leaks (Jayaraman and Evans 2022); every kmi report shows it.

    ``target`` is never queried: it is accepted (and, if given, checked in ``fit``)
    so that the baseline is built like every other attack.

    Parameters
    ----------
    {tabular_params}
    {estimator}
    {random_state}

    Attributes
    ----------
    estimator_ : classifier
        The fitted imputation model (``None`` if the auxiliary records hold a
        single value).
    sensitive_values_ : ndarray of shape (n_values,)
        Candidate values.
    prior_ : ndarray of shape (n_values,)
        Marginal frequency of each value in the auxiliary data (Laplace-smoothed).

    References
    ----------
    B. Jayaraman and D. Evans. "Are Attribute Inference Attacks Just Imputation?"
    ACM CCS 2022.

    Examples
    --------
    {example_records}
    >>> from kmi.attacks import ImputationBaseline
    >>> attack = ImputationBaseline(sensitive_feature=0, estimator=LogisticRegression())
    >>> attack = attack.fit(X, y)
    >>> round(attack.score(X, y), 3), attack.prior_.round(3)
    (0.78, array([0.468, 0.532]))
    """

    required_access = "label-only"
    uses_target = False
    _parameter_constraints = LEARNER_CONSTRAINTS

    def __init__(
        self,
        target: Any = None,
        *,
        sensitive_feature: Any = None,
        sensitive_values: Any = None,
        estimator: Any = None,
        random_state: Any = None,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.estimator = estimator
        self.random_state = random_state

    def _fit_attack(self, frame, s_idx, y):
        self._fit_encoders(frame, y)
        self.estimator_ = self._fit_learner(self._known_features(frame, y), s_idx)

    def _invert_scores(self, frame, y):
        return self._learner_proba(self.estimator_, self._known_features(frame, y))
