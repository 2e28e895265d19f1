"""Shared machinery of the tabular attribute-inference attacks.

Records are handled internally as pandas DataFrames (a NumPy array becomes a frame
with integer column labels, :mod:`kmi.attacks._tabular_records`) and handed to the
target in the format it was fitted with. Candidate completions of a record (each
sensitive value, times each combination of the values of unknown non-sensitive
features) are built for many records at once and sent to the target as one batched
query.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Self

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from kmi._progress import chunks, warn_interrupted
from kmi.attacks._tabular_records import (
    as_frame,
    check_known_finite,
    check_record_labels,
    is_numeric,
    resolve_columns,
    resolve_sensitive,
    value_domain,
)
from kmi.base import BaseAttack

#: Text shared by the tabular attacks' docstrings (see :mod:`kmi._docstring`).
TABULAR_DOC = {
    "tabular_params": """\
target : Target, keras.Model, scikit-learn estimator or callable
    The attacked model; wrapped with :func:`kmi.targets.as_target` in ``fit``.
sensitive_feature : int or str
    Column index, or DataFrame column name, of the attribute to infer (required).
sensitive_values : array-like, default=None
    Candidate values; ``None`` takes the distinct values of the sensitive
    column in the auxiliary data (at most 100).""",
    "missing_features": """\
missing_features : list of int or str, default=None
    Non-sensitive columns the attacker does not know; their values are
    enumerated over those seen in the auxiliary data.""",
    "estimator": """\
estimator : scikit-learn classifier, default=None
    The attack model (cloned); ``None`` uses
    :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Draws, in ``fit``, the seed of every ``random_state`` of the attack model.""",
    "verbose": """\
verbose : int, default=0
    Show a progress bar while querying.""",
    "example_records": """\
>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> from sklearn.tree import DecisionTreeClassifier
>>> rng = np.random.default_rng(0)
>>> X = rng.integers(0, 2, size=(400, 3)).astype(float)
>>> y = (X[:, 0] + X[:, 1] > 1).astype(int)  # sensitive column 0 and label: X0 AND X1
>>> model = DecisionTreeClassifier(random_state=0).fit(X, y)  # the target""",
    "mehnaz2022": """\
S. Mehnaz, S. V. Dibbo, E. Kabir, N. Li and E. Bertino. "Are Your Sensitive
Attributes Private? Novel Model Inversion Attribute Inference Attacks on
Classification Models." USENIX Security 2022.""",
    "tabular_attributes": """\
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
    Column names, when fitted on a DataFrame with string column names.""",
}

#: Constraints of the parameters every tabular attack has. ``sensitive_feature`` is
#: any column label; ``None`` (the default) is refused by ``fit`` as missing.
TABULAR_CONSTRAINTS = {
    "target": "no_validation",
    "sensitive_feature": [Hashable],
    "sensitive_values": ["array-like", None],
}
#: ... and of the attacks that enumerate unknown features (missing_features).
ENUMERATION_CONSTRAINTS = {
    **TABULAR_CONSTRAINTS,
    "missing_features": ["array-like", None],
    "verbose": ["verbose"],
}
#: ... and of the attacks that train an attack model.
LEARNER_CONSTRAINTS = {
    **TABULAR_CONSTRAINTS,
    "estimator": [HasMethods(["fit", "predict_proba"]), None],
    "random_state": ["random_state"],
}


class TabularAttack(BaseAttack):
    """Base of attribute-inference attacks on tabular models.

    Subclasses implement ``_fit_attack(X, s, y)`` (``X`` the auxiliary frame, ``s``
    the index of each record's sensitive value in ``sensitive_values_``, ``y`` the
    encoded labels) and either ``_chunk_scores(X, y)`` or ``_invert_scores(X, y)``,
    returning one non-negative score per record and candidate value.
    """

    #: Each record's sensitive value is inferred.
    level = "instance"
    #: ``fit`` learns from auxiliary records that include the sensitive column.
    needs_public_data = True
    #: Whether the attack enumerates unknown non-sensitive features.
    supports_missing_features = False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # the records' labels
        return tags

    # ------------------------------------------------------------------ layout
    def _validate_fit(self, X, y):
        frame, was_frame = as_frame(X)
        if len(frame) == 0:
            raise ValueError("Found an empty auxiliary data set. Received: X with 0 rows")
        self.is_frame_ = was_frame
        self.columns_ = list(frame.columns)
        self.n_features_in_ = len(self.columns_)
        if was_frame and all(isinstance(c, str) for c in self.columns_):
            self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        self._array_dtype = None if was_frame else np.asarray(X).dtype
        self.sensitive_column_ = resolve_sensitive(
            self.sensitive_feature, self.columns_, was_frame
        )
        missing = resolve_columns(
            getattr(self, "missing_features", None), self.columns_, "missing_features"
        )
        if self.sensitive_column_ in missing:
            raise ValueError(
                "missing_features must not include the sensitive feature. "
                f"Received: missing_features={getattr(self, 'missing_features', None)!r}"
            )
        self.missing_columns_ = missing
        self.known_columns_ = [
            c for c in self.columns_ if c != self.sensitive_column_ and c not in missing
        ]
        self._dtypes = frame.dtypes
        y = check_record_labels(y, len(frame), type(self).__name__)
        self._check_known_finite(frame, "The auxiliary data")

        sens = frame[self.sensitive_column_]
        if is_numeric(sens) and not np.isfinite(sens.to_numpy(dtype="float64")).all():
            raise ValueError(
                "The auxiliary data has NaN, inf or missing values in the sensitive column "
                f"{self.sensitive_column_!r}: fit learns from auxiliary records whose sensitive "
                "value is known; drop the others. "
                f"Received: {int(sens.isna().sum())} NaN or missing values"
            )
        if sens.isna().any():
            raise ValueError(
                "The auxiliary data has NaN or missing values in the sensitive column "
                f"{self.sensitive_column_!r}; drop those records. "
                f"Received: {int(sens.isna().sum())} missing values"
            )
        if self.sensitive_values is None:
            values = value_domain(sens, f"the sensitive feature {self.sensitive_column_!r}")
        else:
            values = np.asarray(list(self.sensitive_values))
            if values.ndim != 1 or len(values) == 0 or len(pd.unique(values)) != len(values):
                raise ValueError(
                    "sensitive_values must be a non-empty list of distinct candidate values. "
                    f"Received: sensitive_values={self.sensitive_values!r}"
                )
        self.sensitive_values_ = values
        s_idx = self._value_index(sens)
        counts = np.bincount(s_idx[s_idx >= 0], minlength=len(values)).astype(float)
        self.prior_ = (counts + 1.0) / (counts.sum() + len(values))

        self.missing_domains_ = [value_domain(frame[c], f"missing feature {c!r}") for c in missing]
        self._combo_weights = self._combination_weights(frame)
        return frame, s_idx, y

    def _check_known_finite(self, frame: pd.DataFrame, where: str) -> None:
        check_known_finite(frame, self.known_columns_, where, self.supports_missing_features)

    def _value_index(self, series: pd.Series) -> np.ndarray:
        """Index of each value in sensitive_values_, -1 when not a candidate or missing."""
        lookup = {v: i for i, v in enumerate(self.sensitive_values_.tolist())}
        return np.asarray(
            [lookup.get(v, -1) if not pd.isna(v) else -1 for v in series.tolist()], dtype=int
        )

    def _combination_weights(self, frame) -> np.ndarray:
        """Prior weight of each combination of missing-feature values (product of marginals)."""
        if not self.missing_columns_:
            return np.ones(1)
        marginals = []
        for col, dom in zip(self.missing_columns_, self.missing_domains_):
            vc = frame[col].value_counts()
            counts = np.asarray([vc.get(v, 0) for v in dom], dtype=float) + 1.0
            marginals.append(counts / counts.sum())
        weights = np.ones(1)
        for m in marginals:
            weights = np.outer(weights, m).ravel()
        return weights

    def _validate_invert(self, X, y, *, need_truth=False):
        check_is_fitted(self, "sensitive_values_")
        frame, was_frame = as_frame(X)
        n = len(frame)
        if was_frame != self.is_frame_:
            kind = "a DataFrame" if self.is_frame_ else "an array"
            raise ValueError(
                f"The attack was fitted on {kind}; pass the attacked records the same way. "
                f"Received: X of type {type(X).__name__}"
            )
        sens = self.sensitive_column_
        if was_frame:
            absent = [c for c in self.known_columns_ if c not in frame.columns]
            if absent:
                raise ValueError(
                    f"X lacks known feature(s) {absent[:10]!r} that the auxiliary data had. "
                    f"Received: columns {list(frame.columns)[:20]!r}"
                )
        else:
            width = frame.shape[1]
            if width == self.n_features_in_ - 1:
                pos = self.columns_.index(sens)
                cols = [c for c in self.columns_ if c != sens]
                frame.columns = cols
                frame.insert(pos, sens, np.nan)
            elif width != self.n_features_in_:
                raise ValueError(
                    f"X has {width} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input (all the columns it was fitted "
                    f"on, or all but the sensitive one). Received: X with shape {frame.shape}"
                )
        truth = None
        if need_truth:
            if sens not in frame.columns or frame[sens].isna().all():
                raise ValueError(
                    "score needs the true sensitive values in X's sensitive column "
                    f"{sens!r}. Received: no sensitive column"
                )
            truth = frame[sens].to_numpy()
        if sens not in frame.columns:
            frame[sens] = np.nan
        for col in self.missing_columns_:
            if col not in frame.columns:
                frame[col] = np.nan
        frame = frame[self.columns_]
        self._check_known_finite(frame, "X")
        y = check_record_labels(y, n, type(self).__name__)
        return frame, y, truth

    # ------------------------------------------------------------------ targets
    def _to_target_format(self, frame: pd.DataFrame):
        frame = frame.astype(
            {
                c: self._dtypes[c]
                for c in self.columns_
                if isinstance(self._dtypes[c], pd.CategoricalDtype)
            }
        )
        if self.is_frame_:
            return frame
        if self._array_dtype is not None and self._array_dtype.kind in "biuf":
            return frame.to_numpy(dtype=self._array_dtype)
        return frame.to_numpy(dtype=object)

    def _expand(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Every candidate completion of every record: rows ordered (record, value, combo)."""
        n = len(frame)
        k = len(self.sensitive_values_)
        combos = list(itertools.product(*self.missing_domains_)) or [()]
        m = len(combos)
        rep = frame.iloc[np.repeat(np.arange(n), k * m)].reset_index(drop=True)
        rep[self.sensitive_column_] = np.tile(np.repeat(self.sensitive_values_, m), n)
        if self.missing_columns_:
            combos = np.asarray(combos, dtype=object)
            for j, col in enumerate(self.missing_columns_):
                column = np.tile(combos[:, j], n * k)
                if is_numeric(pd.Series(self.missing_domains_[j])):
                    column = column.astype(float)
                rep[col] = column
        return rep

    @property
    def n_combinations_(self) -> int:
        """Combinations of the unknown features' values enumerated per candidate."""
        return len(self._combo_weights)

    def _encode_labels(self, y) -> np.ndarray:
        """Label indices of the target's output columns (regression: the values)."""
        if self.target_.task == "regression":
            return np.asarray(y, dtype="float64")
        return self.target_.label_index(y)

    def _query_labels(self, frame) -> np.ndarray:
        """Target's predicted label index (or regression value) for each row."""
        X = self._to_target_format(frame)
        out = self.target_.query(X)
        if self.target_.task == "regression":
            return np.asarray(out, dtype="float64")
        if self.target_.output == "label":
            return self.target_.label_index(out)
        return np.argmax(out, axis=1)

    def _query_scores(self, frame) -> np.ndarray:
        """Target's scores (probability-like, shape (rows, n_classes)) for each row."""
        X = self._to_target_format(frame)
        out = np.asarray(self.target_.query(X), dtype="float64")
        if self.target_.output == "logits":
            out = np.exp(out)
        return out

    def _check_classifier_target(self):
        if self.target_.task != "classification":
            raise ValueError(
                f"{type(self).__name__} attacks classifiers; the target is a regressor. "
                "Use FredriksonMAP for regression targets. Received: task='regression'"
            )

    # ------------------------------------------------------------------ public API
    def invert_proba(self, X: ArrayLike | pd.DataFrame, y: ArrayLike) -> np.ndarray:
        """Scores of each candidate sensitive value for each record.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            The attacked records; their sensitive column is ignored (it may be
            absent, or NaN).
        y : array-like of shape (n_samples,)
            The records' true labels.

        Returns
        -------
        ndarray of shape (n_samples, n_values)
            Row-normalised scores, columns ordered as ``sensitive_values_``. Rows of
            records not processed (after an interruption) are NaN.
        """
        frame, y, _ = self._validate_invert(X, y)
        return self._normalise(self._invert_scores(frame, y))

    @staticmethod
    def _normalise(scores):
        scores = np.asarray(scores, dtype="float64")
        total = scores.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(total > 0, scores / total, 1.0 / scores.shape[1])
        out[np.isnan(scores).any(axis=1)] = np.nan
        return out

    def invert(self, X: ArrayLike | pd.DataFrame, y: ArrayLike) -> np.ndarray:
        """Infer the sensitive value of each record.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            The attacked records; their sensitive column is ignored (it may be
            absent, or NaN).
        y : array-like of shape (n_samples,)
            The records' true labels.

        Returns
        -------
        ndarray of shape (n_samples,)
            The inferred value (an entry of ``sensitive_values_``) of each record;
            None (or NaN) for records not processed after an interruption.
        """
        return self._decode(self.invert_proba(X, y))

    def _decode(self, proba) -> np.ndarray:
        done = ~np.isnan(proba).any(axis=1)
        # exact ties (e.g. two values both predicted with confidence 1) go to the
        # value with the larger prior
        idx = np.argmax(np.where(np.isnan(proba), -np.inf, proba + 1e-9 * self.prior_), axis=1)
        values = self.sensitive_values_[idx]
        if not done.all():
            values = values.astype(float if values.dtype.kind in "biuf" else object)
            values[~done] = np.nan if values.dtype.kind == "f" else None
        return values

    def score(self, X: ArrayLike | pd.DataFrame, y: ArrayLike) -> float:
        """Accuracy of :meth:`invert` against the sensitive column of ``X``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            The attacked records, with their true sensitive values.
        y : array-like of shape (n_samples,)
            The records' true labels.

        Returns
        -------
        float
            Fraction of records whose sensitive value is recovered.
        """
        frame, y_checked, truth = self._validate_invert(X, y, need_truth=True)
        pred = self._decode(self._normalise(self._invert_scores(frame, y_checked)))
        return float(np.mean(pred == truth))

    def truth(self, X: ArrayLike | pd.DataFrame) -> np.ndarray:
        """The true sensitive values held in ``X`` (for scorers and reports).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Records with their sensitive column, laid out as in ``fit``.

        Returns
        -------
        ndarray of shape (n_samples,)
            The sensitive column of ``X``.
        """
        check_is_fitted(self, "sensitive_values_")
        frame, _ = as_frame(X)
        return frame[self.sensitive_column_].to_numpy()

    def fit(self, X: ArrayLike | pd.DataFrame, y: ArrayLike) -> Self:
        """Learn from auxiliary records and validate the target.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Auxiliary records, including the sensitive column.
        y : array-like of shape (n_samples,)
            Their labels.

        Returns
        -------
        self

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            If a parameter is invalid (a ``ValueError``).
        kmi.targets.AccessError
            If the target gives less access than the attack needs.
        ValueError
            If the records lack the sensitive column, hold NaN in known features,
            or their labels do not match the target's output.
        """
        frame, s_idx, y = self._validate_fit(X, y)
        self._fit_attack(frame, s_idx, y)
        return self

    # ------------------------------------------------------------------ hooks
    def _fit_attack(self, frame, s_idx, y):  # pragma: no cover - default: nothing to learn
        pass

    #: Records handled per chunk when the attack processes records in chunks.
    chunk_rows = 65536

    def _invert_scores(self, frame, y) -> np.ndarray:
        n = len(frame)
        k = len(self.sensitive_values_)
        out = np.full((n, k), np.nan)
        per_record = k * self.n_combinations_
        size = max(1, self.chunk_rows // per_record)
        done = 0
        try:
            for sl in chunks(
                n,
                size,
                verbose=getattr(self, "verbose", 0),
                desc=f"{type(self).__name__}: {n} records x {per_record} queries",
            ):
                out[sl] = self._chunk_scores(frame.iloc[sl], y[sl])
                done = sl.stop
        except KeyboardInterrupt:
            warn_interrupted(done, n)
        return out

    def _chunk_scores(self, frame, y) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _candidate_outputs(self, frame, query, width: int) -> tuple[np.ndarray, int]:
        """``query`` (:meth:`_query_labels` or :meth:`_query_scores`) on every
        candidate completion of every record, in chunks of records.

        Returns the outputs, of shape (n_samples, n_values, width), NaN for records
        not reached before an interruption, and the number of records done.
        """
        n, k = len(frame), len(self.sensitive_values_)
        out = np.full((n, k, width), np.nan)
        done = 0
        size = max(1, self.chunk_rows // (k * self.n_combinations_))
        desc = f"{type(self).__name__}: {n} records x {k} queries"
        try:
            for sl in chunks(n, size, verbose=getattr(self, "verbose", 0), desc=desc):
                got = np.asarray(query(self._expand(frame.iloc[sl])), dtype="float64")
                out[sl] = got.reshape(sl.stop - sl.start, k, width)
                done = sl.stop
        except KeyboardInterrupt:
            warn_interrupted(done, n)
        return out, done


# ---------------------------------------------------------------------- the paper's cases
#: :func:`confidence_scores` at or above this belong to values that make the target
#: predict the record's label (cases 1 and 2 of Mehnaz et al. 2022).
MATCH_SCORE = 2.0


def confidence_scores(p: np.ndarray, y_enc: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """CSMIA's score of each candidate value of each record (Mehnaz et al. 2022).

    ``p`` holds the target's scores of shape (n, k, m, n_classes) for the ``k``
    candidate values and ``m`` combinations of unknown features of ``n`` records,
    ``weights`` the prior weight of each combination. Values for which the target
    predicts ``y`` (on a weighted share of combinations) score from
    :data:`MATCH_SCORE`, by share then confidence in ``y``; the others score below
    1, the less confident the target's wrong prediction, the higher.
    """
    if p.shape[-1] <= int(y_enc.max(initial=0)):
        raise ValueError(
            f"The target returned {p.shape[-1]} scores per record, fewer than the labels "
            f"in y need. Received: max label index {int(y_enc.max())}"
        )
    conf_y = np.take_along_axis(p, y_enc[:, None, None, None], axis=-1)[..., 0]
    match = np.argmax(p, axis=-1) == y_enc[:, None, None]
    share = match.astype(float) @ weights  # (n, k): weighted share of matching combinations
    mean_conf_y = conf_y @ weights
    mean_conf_pred = p.max(axis=-1) @ weights
    return np.where(share > 0, MATCH_SCORE + share + mean_conf_y / 2.0, 1.0 - mean_conf_pred / 2.0)


def paper_cases(n_match: np.ndarray) -> np.ndarray:
    """Case 1 (one value makes the target predict ``y``), 2 (several) or 3 (none)."""
    return np.where(n_match == 1, 1, np.where(n_match > 1, 2, 3))
