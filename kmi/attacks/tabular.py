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

import numpy as np

from kmi._progress import chunks, warn_interrupted
from kmi.attacks._tabular import TabularAttack, _fit_learner, _learner_proba

__all__ = [
    "CSMIA",
    "LOMIA",
    "AttributeInferenceModel",
    "DecisionTreeWhiteBox",
    "FredriksonMAP",
    "ImputationBaseline",
]

_SHARED_PARAMS = """\
    target : Target, keras.Model, scikit-learn estimator or callable
        The attacked model; wrapped with :func:`kmi.targets.as_target` in ``fit``.
    sensitive_feature : int or str
        Column index, or DataFrame column name, of the attribute to infer.
    sensitive_values : array-like, default=None
        Candidate values; ``None`` takes the distinct values of the sensitive
        column in the auxiliary data (at most 100)."""

_SHARED_ATTRIBUTES = """\
    target_ : Target
        The wrapped target.
    sensitive_values_ : ndarray of shape (n_values,)
        Candidate values, in the column order of :meth:`invert_proba`.
    prior_ : ndarray of shape (n_values,)
        Marginal frequency of each value in the auxiliary data (Laplace-smoothed).
    sensitive_column_ : int or str
        The sensitive column's label.
    n_features_in_ : int
        Number of columns of the auxiliary data.
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame with string column names."""


def _doc(cls):
    cls.__doc__ = cls.__doc__.replace("{shared_params}", _SHARED_PARAMS).replace(
        "{shared_attributes}", _SHARED_ATTRIBUTES
    )
    return cls


@_doc
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
    {shared_params}
        missing_features : list of int or str, default=None
            Non-sensitive columns the attacker does not know; their values are
            enumerated over those seen in the auxiliary data.
        smoothing : float, default=1.0
            Added to every confusion-matrix count.
        verbose : int, default=0
            Show a progress bar while querying.

        Attributes
        ----------
    {shared_attributes}
        confusion_ : ndarray of shape (n_classes, n_classes)
            ``confusion_[p, t]``: estimated P(true label t | predicted label p), for
            classifiers.
        residual_std_ : float
            Standard deviation of the target's errors, for regressors.

        References
        ----------
        M. Fredrikson, E. Lantz, S. Jha, S. Lin, D. Page and T. Ristenpart.
        "Privacy in Pharmacogenetics: An End-to-End Case Study of Personalized
        Warfarin Dosing." USENIX Security 2014.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.tree import DecisionTreeClassifier
        >>> from kmi.attacks import FredriksonMAP
        >>> rng = np.random.default_rng(0)
        >>> X = rng.integers(0, 2, size=(400, 3)).astype(float)
        >>> y = (X[:, 0] + X[:, 1] > 1).astype(int)
        >>> model = DecisionTreeClassifier(random_state=0).fit(X, y)
        >>> attack = FredriksonMAP(model, sensitive_feature=0).fit(X, y)
        >>> float(attack.score(X, y)) > 0.6
        True
    """

    required_access = "label-only"
    supports_missing_features = True

    def __init__(
        self,
        target=None,
        *,
        sensitive_feature=None,
        sensitive_values=None,
        missing_features=None,
        smoothing=1.0,
        verbose=0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.missing_features = missing_features
        self.smoothing = smoothing
        self.verbose = verbose

    def _fit_attack(self, frame, s_idx, y):
        if self.smoothing < 0:
            raise ValueError(
                f"smoothing must be non-negative. Received: smoothing={self.smoothing!r}"
            )
        y_enc = self._encode_labels(y)
        pred = self._query_labels(frame)  # auxiliary records are complete
        if self.target_.task == "regression":
            resid = y_enc - pred
            self.residual_std_ = float(np.std(resid)) or 1e-6
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


@_doc
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
    {shared_params}
        missing_features : list of int or str, default=None
            Non-sensitive columns the attacker does not know; their values are
            enumerated over those seen in the auxiliary data.
        verbose : int, default=0
            Show a progress bar while querying.

        Attributes
        ----------
    {shared_attributes}

        See Also
        --------
        LOMIA : The label-only attack of the same paper.

        References
        ----------
        S. Mehnaz, S. V. Dibbo, E. Kabir, N. Li and E. Bertino. "Are Your Sensitive
        Attributes Private? Novel Model Inversion Attribute Inference Attacks on
        Classification Models." USENIX Security 2022.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.tree import DecisionTreeClassifier
        >>> from kmi.attacks import CSMIA
        >>> rng = np.random.default_rng(0)
        >>> X = rng.integers(0, 2, size=(400, 3)).astype(float)
        >>> y = (X[:, 0] + X[:, 1] > 1).astype(int)
        >>> model = DecisionTreeClassifier(random_state=0).fit(X, y)
        >>> attack = CSMIA(model, sensitive_feature=0).fit(X, y)
        >>> attack.invert(X[:3], y[:3]).shape
        (3,)
    """

    supports_missing_features = True

    def __init__(
        self,
        target=None,
        *,
        sensitive_feature=None,
        sensitive_values=None,
        missing_features=None,
        verbose=0,
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
        if p.shape[-1] <= int(y_enc.max(initial=0)):
            raise ValueError(
                f"The target returned {p.shape[-1]} scores per record, fewer than the labels "
                f"in y need. Received: max label index {int(y_enc.max())}"
            )
        w = self._combo_weights
        conf_y = np.take_along_axis(p, y_enc[:, None, None, None], axis=-1)[..., 0]
        match = np.argmax(p, axis=-1) == y_enc[:, None, None]
        conf_pred = p.max(axis=-1)
        share = match.astype(float) @ w  # (n, k): weighted share of matching combinations
        mean_conf_y = conf_y @ w
        mean_conf_pred = conf_pred @ w
        # matching values (cases 1 and 2) rank above all others, by share then
        # confidence in y; the others (case 3) by how unconfident the target is.
        return np.where(share > 0, 2.0 + share + mean_conf_y / 2.0, 1.0 - mean_conf_pred / 2.0)

    def cases(self, X, y) -> np.ndarray:
        """The case of the paper (1, 2 or 3) that decides each record of ``X``.

        Returns
        -------
        ndarray of shape (n_samples,)
            1: exactly one candidate value makes the target predict ``y``; 2: several
            do; 3: none does.
        """
        frame, y, _ = self._validate_invert(X, y)
        n_match = np.sum(self._invert_scores(frame, y) >= 2.0, axis=1)
        return np.where(n_match == 1, 1, np.where(n_match > 1, 2, 3))


@_doc
class LOMIA(TabularAttack):
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
    {shared_params}
        estimator : scikit-learn classifier, default=None
            The attack model (cloned); ``None`` uses
            :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
        train_on : {"case1", "aux", "both"}, default="case1"
            What the attack model learns from: the attacked records in case 1 (the
            paper), the auxiliary records, or both.
        random_state : int, RandomState instance or None, default=None
            Seeds the attack model.
        verbose : int, default=0
            Show a progress bar while querying.

        Attributes
        ----------
    {shared_attributes}
        n_case1_ : int
            Number of case-1 records found in the last call of :meth:`invert`.

        References
        ----------
        S. Mehnaz, S. V. Dibbo, E. Kabir, N. Li and E. Bertino. "Are Your Sensitive
        Attributes Private? Novel Model Inversion Attribute Inference Attacks on
        Classification Models." USENIX Security 2022.
    """

    required_access = "label-only"

    def __init__(
        self,
        target=None,
        *,
        sensitive_feature=None,
        sensitive_values=None,
        estimator=None,
        train_on="case1",
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.estimator = estimator
        self.train_on = train_on
        self.random_state = random_state
        self.verbose = verbose

    def _features(self, frame, y):
        return np.hstack(
            [self._encoder.transform(frame[self.known_columns_]), self._label_features(y)]
        )

    def _fit_attack(self, frame, s_idx, y):
        if self.train_on not in ("case1", "aux", "both"):
            raise ValueError(
                f"train_on must be 'case1', 'aux' or 'both'. Received: train_on={self.train_on!r}"
            )
        self._check_classifier_target()
        self._encode_labels(y)
        self._encoder = self._feature_encoder(frame)
        self._label_features(y, fit=True)
        self._aux = (self._features(frame, y), s_idx) if self.train_on == "both" else None
        self._aux_model = None
        if self.train_on == "aux":
            self._aux_model = _fit_learner(self._make_estimator(), self._features(frame, y), s_idx)

    def _invert_scores(self, frame, y):
        y_enc = self._encode_labels(y)
        n, k = len(frame), len(self.sensitive_values_)
        n_match = np.full(n, -1)
        first = np.zeros(n, dtype=int)
        done = 0
        size = max(1, self.chunk_rows // k)
        try:
            for sl in chunks(
                n, size, verbose=self.verbose, desc=f"LOMIA: {n} records x {k} queries"
            ):
                pred = self._query_labels(self._expand(frame.iloc[sl])).reshape(-1, k)
                match = pred == y_enc[sl, None]
                n_match[sl] = match.sum(axis=1)
                first[sl] = np.argmax(match, axis=1)
                done = sl.stop
        except KeyboardInterrupt:
            warn_interrupted(done, n)
        case1 = n_match == 1
        self.n_case1_ = int(case1.sum())
        features = self._features(frame, y)
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
        if self.train_on == "aux":
            model = self._aux_model
        else:
            model = _fit_learner(self._make_estimator(), train, s_train)
        out = _learner_proba(model, features, k, self.prior_)
        out[case1] = np.eye(k)[first[case1]]
        out[n_match < 0] = np.nan
        return out


@_doc
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
    {shared_params}
        missing_features : list of int or str, default=None
            Non-sensitive columns the attacker does not know; their values are
            enumerated over those seen in the auxiliary data.
        verbose : int, default=0
            Show a progress bar.

        Attributes
        ----------
    {shared_attributes}
        trees_ : list of DecisionTreeClassifier
            The trees read.

        Raises
        ------
        AccessError
            In ``fit``, if the target is not white-box.
        TypeError
            In ``fit``, if the target is not a scikit-learn tree classifier, a forest of
            them, or a Pipeline ending in one.

        References
        ----------
        M. Fredrikson, S. Jha and T. Ristenpart. "Model Inversion Attacks that Exploit
        Confidence Information and Basic Countermeasures." ACM CCS 2015.
    """

    required_access = "white-box"
    supports_missing_features = True

    def __init__(
        self,
        target=None,
        *,
        sensitive_feature=None,
        sensitive_values=None,
        missing_features=None,
        verbose=0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.missing_features = missing_features
        self.verbose = verbose

    def _fit_attack(self, frame, s_idx, y):
        from sklearn.tree import DecisionTreeClassifier

        model = self.target_.model
        prep = None
        if hasattr(model, "steps"):
            prep, model = model[:-1], model.steps[-1][1]
        trees = (
            getattr(model, "estimators_", None)
            if not isinstance(model, DecisionTreeClassifier)
            else [model]
        )
        if (
            self.target_.kind != "sklearn"
            or not trees
            or not all(isinstance(t, DecisionTreeClassifier) for t in np.ravel(trees))
        ):
            raise TypeError(
                "DecisionTreeWhiteBox reads a scikit-learn DecisionTreeClassifier (or a "
                "random/extra-trees forest of them, or a Pipeline ending in one). "
                f"Received: target model of type {type(model).__name__}"
            )
        self._prep = prep
        self.trees_ = list(np.ravel(trees))
        self._encode_labels(y)  # the tree's classes are the target's output columns

    def _chunk_scores(self, frame, y):
        y_enc = self._encode_labels(y)
        n, k, m = len(frame), len(self.sensitive_values_), self.n_combinations_
        rows = self._to_target_format(self._expand(frame))
        self.target_.record_queries(len(rows))
        Z = self._prep.transform(rows) if self._prep is not None else rows
        total = np.zeros((n, k))
        for tree in self.trees_:
            leaves = tree.apply(Z).reshape(n, k, m)
            value = tree.tree_.value[:, 0, :]
            counts = value / value.sum(axis=1, keepdims=True)
            counts = counts * tree.tree_.weighted_n_node_samples[:, None]
            # class y of the target is column y of the tree (same classes_)
            c_y = counts[leaves, y_enc[:, None, None]]  # (n, k, m)
            # share a leaf's count among the candidate values reaching it
            same = leaves[:, :, None, :] == leaves[:, None, :, :]  # (n, k, k', m)
            prior_mass = np.einsum("nkjm,j->nkm", same, self.prior_)
            share = self.prior_[None, :, None] / prior_mass
            total += (c_y * share) @ self._combo_weights
        return total


@_doc
class AttributeInferenceModel(TabularAttack):
    """Learned attribute inference from known features and the target's outputs.

        For every auxiliary record, the target is queried on each candidate completion
        (the known features with each candidate sensitive value); an attack model learns
        the sensitive value from the known features, the label and those outputs. The
        same features are built for the attacked records, whose true sensitive value is
        never sent to the target.

        Parameters
        ----------
    {shared_params}
        estimator : scikit-learn classifier, default=None
            The attack model (cloned); ``None`` uses
            :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
        random_state : int, RandomState instance or None, default=None
            Seeds the attack model.
        verbose : int, default=0
            Show a progress bar while querying.

        Attributes
        ----------
    {shared_attributes}
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
    """

    def __init__(
        self,
        target=None,
        *,
        sensitive_feature=None,
        sensitive_values=None,
        estimator=None,
        random_state=None,
        verbose=0,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.estimator = estimator
        self.random_state = random_state
        self.verbose = verbose

    def _features(self, frame, y):
        n, k = len(frame), len(self.sensitive_values_)
        outputs = np.full((n, k, self._width), np.nan)
        done = 0
        try:
            for sl in chunks(
                n,
                max(1, self.chunk_rows // k),
                verbose=self.verbose,
                desc=f"{type(self).__name__}: {n} records x {k} queries",
            ):
                out = self._query_scores(self._expand(frame.iloc[sl]))
                outputs[sl] = out.reshape(sl.stop - sl.start, k, -1)
                done = sl.stop
        except KeyboardInterrupt:
            warn_interrupted(done, n)
        known = self._encoder.transform(frame[self.known_columns_])
        return np.hstack([known, self._label_features(y), outputs.reshape(n, -1)]), done

    def _fit_attack(self, frame, s_idx, y):
        self._check_classifier_target()
        self._encode_labels(y)
        self._width = self.target_.n_classes_
        self._encoder = self._feature_encoder(frame)
        self._label_features(y, fit=True)
        features, done = self._features(frame, y)
        s_idx = s_idx.copy()
        s_idx[done:] = -1
        self.estimator_ = _fit_learner(self._make_estimator(), features, s_idx)

    def _invert_scores(self, frame, y):
        self._encode_labels(y)
        features, done = self._features(frame, y)
        out = np.full((len(frame), len(self.sensitive_values_)), np.nan)
        out[:done] = _learner_proba(
            self.estimator_, features[:done], len(self.sensitive_values_), self.prior_
        )
        return out


@_doc
class ImputationBaseline(TabularAttack):
    """Infer the sensitive feature without ever querying the target.

    The attack model of :class:`AttributeInferenceModel`, trained on the known
    features and the label only. Whatever an attack achieves beyond this baseline is
    what the target leaks (Jayaraman and Evans 2022); every kmi report shows it.

    Parameters
    ----------
    target : object, default=None
        Ignored (accepted so that the baseline is built like every other attack).
    sensitive_feature : int or str
        Column index, or DataFrame column name, of the attribute to infer.
    sensitive_values : array-like, default=None
        Candidate values; ``None`` takes those seen in the auxiliary data.
    estimator : scikit-learn classifier, default=None
        The imputation model (cloned); ``None`` uses
        :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
    random_state : int, RandomState instance or None, default=None
        Seeds the imputation model.

    Attributes
    ----------
    estimator_ : classifier
        The fitted imputation model.
    sensitive_values_ : ndarray of shape (n_values,)
        Candidate values.
    prior_ : ndarray of shape (n_values,)
        Marginal frequency of each value in the auxiliary data (Laplace-smoothed).

    References
    ----------
    B. Jayaraman and D. Evans. "Are Attribute Inference Attacks Just Imputation?"
    ACM CCS 2022.
    """

    required_access = "label-only"
    uses_target = False

    def __init__(
        self,
        target=None,
        *,
        sensitive_feature=None,
        sensitive_values=None,
        estimator=None,
        random_state=None,
    ):
        self.target = target
        self.sensitive_feature = sensitive_feature
        self.sensitive_values = sensitive_values
        self.estimator = estimator
        self.random_state = random_state

    def _features(self, frame, y):
        return np.hstack(
            [self._encoder.transform(frame[self.known_columns_]), self._label_features(y)]
        )

    def _fit_attack(self, frame, s_idx, y):
        self._encoder = self._feature_encoder(frame)
        self._label_features(y, fit=True)
        self.estimator_ = _fit_learner(self._make_estimator(), self._features(frame, y), s_idx)

    def _invert_scores(self, frame, y):
        return _learner_proba(
            self.estimator_, self._features(frame, y), len(self.sensitive_values_), self.prior_
        )
