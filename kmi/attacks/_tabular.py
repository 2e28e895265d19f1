"""Shared machinery of the tabular attribute-inference attacks.

Records are handled internally as pandas DataFrames (a NumPy array becomes a frame
with integer column labels) and handed to the target in the format it was fitted
with. Candidate completions of a record (each sensitive value, times each combination
of the values of unknown non-sensitive features) are built for many records at once
and sent to the target as one batched query.
"""

from __future__ import annotations

import itertools
import numbers

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted

from kmi._progress import chunks, warn_interrupted
from kmi.base import BaseAttack

#: Most distinct values a sensitive or enumerated feature may take.
MAX_VALUES = 100


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _as_frame(X) -> tuple[pd.DataFrame, bool]:
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


class TabularAttack(BaseAttack):
    """Base of attribute-inference attacks on tabular models.

    Subclasses implement ``_fit_attack(X, s, y)`` (``X`` the auxiliary frame, ``s``
    the index of each record's sensitive value in ``sensitive_values_``, ``y`` the
    encoded labels) and either ``_chunk_scores(X, y)`` or ``_invert_scores(X, y)``,
    returning one non-negative score per record and candidate value.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # the records' labels
        return tags

    #: Whether the attack queries the target; the imputation baseline does not.
    uses_target = True
    #: Whether the attack enumerates unknown non-sensitive features.
    supports_missing_features = False

    # ------------------------------------------------------------------ layout
    def _resolve_sensitive(self, frame: pd.DataFrame, was_frame: bool):
        feat = self.sensitive_feature
        columns = list(frame.columns)
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

    def _resolve_columns(self, names, columns, what):
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

    def _domain(self, series: pd.Series, what: str) -> np.ndarray:
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

    def _check_known_finite(self, frame: pd.DataFrame, columns, where: str):
        bad = []
        for col in columns:
            series = frame[col]
            if _is_numeric(series):
                ok = np.isfinite(series.to_numpy(dtype="float64", na_value=np.nan))
            else:
                ok = series.notna().to_numpy()
            if not ok.all():
                bad.append(col)
        if bad:
            hint = (
                " or declare them missing_features=[...] to enumerate their values"
                if self.supports_missing_features
                else ""
            )
            raise ValueError(
                f"{where} contains NaN, inf or missing values in known feature(s) {bad[:10]!r}. "
                f"Impute or drop those records{hint}. Received: non-finite values in {bad[:10]!r}"
            )

    def _check_y(self, y, n: int):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: "
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

    def _validate_fit(self, X, y):
        if self.uses_target or getattr(self, "target", None) is not None:
            self._validate_target()
        frame, was_frame = _as_frame(X)
        if len(frame) == 0:
            raise ValueError("Found an empty auxiliary data set. Received: X with 0 rows")
        self.is_frame_ = was_frame
        self.columns_ = list(frame.columns)
        self.n_features_in_ = len(self.columns_)
        if was_frame and all(isinstance(c, str) for c in self.columns_):
            self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        self._array_dtype = None if was_frame else np.asarray(X).dtype
        self.sensitive_column_ = self._resolve_sensitive(frame, was_frame)
        missing = self._resolve_columns(
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
        y = self._check_y(y, len(frame))
        self._check_known_finite(frame, self.known_columns_, "The auxiliary data")

        sens = frame[self.sensitive_column_]
        if _is_numeric(sens) and not np.isfinite(sens.to_numpy(dtype="float64")).all():
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
            values = self._domain(sens, f"the sensitive feature {self.sensitive_column_!r}")
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

        self.missing_domains_ = [self._domain(frame[c], f"missing feature {c!r}") for c in missing]
        self._combo_weights = self._combination_weights(frame)
        return frame, s_idx, y

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
        frame, was_frame = _as_frame(X)
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
        self._check_known_finite(frame, self.known_columns_, "X")
        y = self._check_y(y, n)
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
                if _is_numeric(pd.Series(self.missing_domains_[j])):
                    column = column.astype(float)
                rep[col] = column
        return rep

    @property
    def n_combinations_(self) -> int:
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
    def invert_proba(self, X, y) -> np.ndarray:
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

    def invert(self, X, y) -> np.ndarray:
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

    def score(self, X, y) -> float:
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

    def truth(self, X) -> np.ndarray:
        """The true sensitive values held in ``X`` (for scorers and reports)."""
        check_is_fitted(self, "sensitive_values_")
        frame, _ = _as_frame(X)
        return frame[self.sensitive_column_].to_numpy()

    def fit(self, X, y):
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

    # ------------------------------------------------------------------ learners
    def _feature_encoder(self, frame):
        known = frame[self.known_columns_]
        cats = [i for i, c in enumerate(self.known_columns_) if not _is_numeric(known[c])]
        nums = [i for i, c in enumerate(self.known_columns_) if _is_numeric(known[c])]
        encoder = ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats),
                ("num", StandardScaler(), nums),
            ],
            sparse_threshold=0.0,
        )
        return encoder.fit(known)

    def _label_features(self, y, fit=False):
        y = np.asarray(y)
        if y.dtype.kind == "f" and len(np.unique(y)) > MAX_VALUES:  # regression labels
            if fit:
                self._y_scale = (float(np.mean(y)), float(np.std(y)) or 1.0)
            mean, std = self._y_scale
            return ((y - mean) / std)[:, None]
        if fit:
            self._y_encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            self._y_encoder.fit(y.reshape(-1, 1).astype(object))
        return self._y_encoder.transform(y.reshape(-1, 1).astype(object))

    def _make_estimator(self):
        from sklearn.base import clone
        from sklearn.ensemble import HistGradientBoostingClassifier

        estimator = getattr(self, "estimator", None)
        if estimator is None:
            return HistGradientBoostingClassifier(random_state=self.random_state)
        estimator = clone(estimator)
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=self.random_state)
        return estimator


def _fit_learner(estimator, features, s_idx):
    keep = s_idx >= 0
    if len(np.unique(s_idx[keep])) < 2:
        return None
    return estimator.fit(features[keep], s_idx[keep])


def _learner_proba(estimator, features, n_values, fallback):
    """Class-probabilities over all candidate values (columns the learner never saw: 0)."""
    if estimator is None:
        return np.tile(fallback, (len(features), 1))
    proba = estimator.predict_proba(features)
    out = np.zeros((len(features), n_values))
    out[:, estimator.classes_.astype(int)] = proba
    return out
