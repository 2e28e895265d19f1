"""One way to query any attacked model.

:class:`Target` wraps a Keras model, a scikit-learn estimator (a classifier with
``predict_proba``, a regressor, or a :class:`~sklearn.pipeline.Pipeline` ending in one)
or any callable returning scores. Every attack talks to its target through it:

- ``access`` states what the attacker may use: ``"white-box"`` (weights, gradients,
  internals), ``"black-box"`` (scores) or ``"label-only"`` (the predicted label);
- ``output`` states what a query returns (probabilities, logits, labels, top-k or
  rounded scores); output-side defenses plug in here;
- every query is counted, in rows, and an optional ``query_budget`` is enforced;
- queries go to the model in batches, never one row per call.

The module is a little over 600 lines because it holds one class, :class:`Target`,
whose methods all share its query counter; their runnable examples are most of the
length, and splitting the class across modules would not make it easier to read.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ACCESS_LEVELS",
    "OUTPUTS",
    "AccessError",
    "QueryBudgetExceededError",
    "Target",
    "as_target",
]

#: Access levels, from least to most.
ACCESS_LEVELS = ("label-only", "black-box", "white-box")
#: What a query can return.
OUTPUTS = ("probabilities", "logits", "label", "top-k", "rounded")


class AccessError(ValueError):
    """The target does not give an attack the access it needs.

    Raised by :meth:`Target.require`, and so by the ``fit`` of every attack whose
    ``required_access`` the target does not give. A ``ValueError``: the attack was
    given a target it cannot use.

    See Also
    --------
    Target.require : Raise this error unless the target gives an access level.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from kmi.targets import AccessError, Target
    >>> X, y = load_iris(return_X_y=True)
    >>> model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
    >>> target = Target(model, access="label-only")
    >>> try:
    ...     target.require("black-box", attack="MyAttack")
    ... except AccessError as exc:
    ...     print(str(exc).split(": it lacks")[0])
    MyAttack needs black-box access to the target, but the target is label-only
    """


class QueryBudgetExceededError(RuntimeError):
    """A query would exceed the target's ``query_budget``.

    Attributes
    ----------
    n_queries : int
        Rows already answered when the query was refused.
    query_budget : int
        The budget.
    requested : int
        Rows in the refused query.

    See Also
    --------
    Target.reset_queries : Set the query counters back to zero.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from kmi.targets import QueryBudgetExceededError, Target
    >>> X, y = load_iris(return_X_y=True)
    >>> model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
    >>> target = Target(model, query_budget=8)
    >>> target.query(X[:5]).shape
    (5, 3)
    >>> try:
    ...     target.query(X[:5])
    ... except QueryBudgetExceededError as exc:
    ...     print(exc.n_queries, exc.query_budget, exc.requested)
    5 8 5
    >>> target.n_queries_  # the refused query was not made
    5
    """

    def __init__(
        self, message: str, *, n_queries: int = 0, query_budget: int = 0, requested: int = 0
    ) -> None:
        super().__init__(message)
        self.n_queries = n_queries
        self.query_budget = query_budget
        self.requested = requested


def _is_keras_model(obj) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a dependency
        return False
    return isinstance(obj, keras.Model)


def _final_estimator(obj):
    """The last step of a scikit-learn Pipeline (recursively), or obj itself."""
    while hasattr(obj, "steps") and hasattr(obj, "named_steps"):
        obj = obj.steps[-1][1]
    return obj


def _is_sklearn_estimator(obj) -> bool:
    return hasattr(obj, "fit") and (hasattr(obj, "predict_proba") or hasattr(obj, "predict"))


def _keras_output_units(model):
    """Width of a Keras model's (first) output, or None if it is not built."""
    try:
        return int(model.outputs[0].shape[-1])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _n_rows(X) -> int:
    if hasattr(X, "shape"):
        return int(X.shape[0])
    return len(X)


def _slice_rows(X, start, stop):
    if hasattr(X, "iloc"):
        return X.iloc[start:stop]
    return X[start:stop]


def _softmax(z):
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


class Target:
    """A model under attack, queried in batches with counted queries.

    Parameters
    ----------
    model : keras.Model, scikit-learn estimator or callable
        The attacked model. A callable receives a batch of inputs and returns an
        array of shape (n_samples, n_classes) (or (n_samples,) for a regressor).
    access : {"white-box", "black-box", "label-only"}, default=None
        What an attacker may use. ``None`` gives the most the model allows:
        ``"white-box"`` for Keras models and scikit-learn estimators (their weights
        and internals can be read), ``"black-box"`` for a plain callable.
    output : {"probabilities", "logits", "label", "top-k", "rounded"}, default=None
        What :meth:`query` returns. ``None`` means ``"label"`` for a label-only target
        and ``"probabilities"`` otherwise. ``"top-k"`` keeps the ``top_k`` largest
        probabilities and zeroes the rest; ``"rounded"`` rounds probabilities to
        ``decimals`` decimals (output hardening, :mod:`kmi.defenses.output`).
    top_k : int, default=1
        Scores released per row when ``output="top-k"``.
    decimals : int, default=2
        Decimals kept when ``output="rounded"``.
    from_logits : bool, default=None
        Whether the model returns logits rather than probabilities. ``None`` infers
        it: scikit-learn classifiers give probabilities; a Keras model gives logits
        unless its last layer has a softmax or sigmoid activation; a callable must
        return probabilities (rows that are not a distribution raise an error
        asking for ``from_logits=True``).
    task : {"classification", "regression", "embedding"}, default=None
        ``None`` infers it: scikit-learn estimators without ``predict_proba`` and
        Keras models with one linear output unit are regressors. ``"embedding"``
        (never inferred) is a model returning vectors that are not scores, such as a
        sentence encoder on strings: queries return them as they are (rounded when
        ``output="rounded"``), and it has no classes.
    query_budget : int, default=None
        Largest number of rows that may be queried in total; ``None`` for no limit.
    batch_size : int or None, default=4096
        Rows sent to the model per call. ``None`` sends every query whole, in one
        call: a graph model must see all nodes at once.
    classes : array-like, default=None
        The label of each output column. ``None`` takes ``classes_`` from a
        scikit-learn classifier and ``0 .. n_classes - 1`` otherwise.

    Attributes
    ----------
    n_queries_ : int
        Rows answered so far (each row of each :meth:`query` counts once).
    n_calls_ : int
        Batches sent to the model so far.

    Raises
    ------
    ValueError
        On an unknown ``access`` or ``output``, or an object that is no model.

    See Also
    --------
    as_target : Wrap an object unless it is a Target already.

    Notes
    -----
    ``clone`` of an attack shares its target: :meth:`__sklearn_clone__` returns
    ``self``, as scikit-learn's ``FrozenEstimator`` does, so a Keras model is never
    deep-copied. Query counts are shared by everything holding the same Target;
    queries made in other processes (``n_jobs > 1``) are counted there, not here.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from kmi.targets import Target
    >>> X, y = load_iris(return_X_y=True)
    >>> model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
    >>> target = Target(model, access="black-box")
    >>> target.query(X[:5]).shape
    (5, 3)
    >>> target.n_queries_
    5
    """

    def __init__(
        self,
        model: Any,
        *,
        access: str | None = None,
        output: str | None = None,
        top_k: int = 1,
        decimals: int = 2,
        from_logits: bool | None = None,
        task: str | None = None,
        query_budget: int | None = None,
        batch_size: int | None = 4096,
        classes: ArrayLike | None = None,
    ) -> None:
        if isinstance(model, Target):
            raise TypeError("model is already a Target; use as_target() to pass it through.")
        if _is_keras_model(model):
            self.kind = "keras"
        elif _is_sklearn_estimator(model):
            self.kind = "sklearn"
        elif callable(model):
            self.kind = "callable"
        else:
            raise ValueError(
                "Target needs a keras.Model, a fitted scikit-learn estimator with "
                "predict_proba or predict, or a callable returning scores. "
                f"Received: model of type {type(model).__name__}"
            )
        self.model = model
        if access is None:
            access = "black-box" if self.kind == "callable" else "white-box"
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {ACCESS_LEVELS}. Received: access={access!r}")
        self.access = access
        if output is None:
            output = "label" if access == "label-only" else "probabilities"
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}. Received: output={output!r}")
        if access == "label-only" and output != "label":
            raise ValueError(
                "A label-only target can only answer with labels; pass output='label' or "
                f"a higher access level. Received: output={output!r}"
            )
        self.output = output
        if output == "top-k" and (not isinstance(top_k, numbers.Integral) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer. Received: top_k={top_k!r}")
        if output == "rounded" and (not isinstance(decimals, numbers.Integral) or decimals < 0):
            raise ValueError(
                f"decimals must be a non-negative integer. Received: decimals={decimals!r}"
            )
        self.top_k = top_k
        self.decimals = decimals
        if task not in (None, "classification", "regression", "embedding"):
            raise ValueError(
                "task must be 'classification', 'regression' or 'embedding'. "
                f"Received: task={task!r}"
            )
        self.task = task or self._infer_task()
        self.from_logits = self._infer_from_logits() if from_logits is None else bool(from_logits)
        if query_budget is not None and (
            not isinstance(query_budget, numbers.Integral) or query_budget < 0
        ):
            raise ValueError(
                "query_budget must be a non-negative integer or None. "
                f"Received: query_budget={query_budget!r}"
            )
        self.query_budget = query_budget
        if batch_size is not None and (
            not isinstance(batch_size, numbers.Integral) or batch_size < 1
        ):
            raise ValueError(
                "batch_size must be a positive integer or None. "
                f"Received: batch_size={batch_size!r}"
            )
        self.batch_size = None if batch_size is None else int(batch_size)
        self._classes = None if classes is None else np.asarray(classes)
        self._seen_width = None
        self.n_queries_ = 0
        self.n_calls_ = 0

    # ------------------------------------------------------------------ inference
    def _infer_task(self) -> str:
        if self.kind == "sklearn":
            return "classification" if hasattr(self.model, "predict_proba") else "regression"
        if self.kind == "keras":
            last = self.model.layers[-1] if self.model.layers else None
            activation = getattr(getattr(last, "activation", None), "__name__", "linear")
            if _keras_output_units(self.model) == 1 and activation == "linear":
                return "regression"
        return "classification"

    def _infer_from_logits(self) -> bool:
        if self.kind != "keras" or self.task in ("regression", "embedding"):
            return False
        import keras

        last = self.model.layers[-1] if self.model.layers else None
        while isinstance(last, keras.Model) and last.layers:  # a wrapped, nested model
            last = last.layers[-1]
        activation = getattr(getattr(last, "activation", None), "__name__", None)
        if isinstance(last, keras.layers.Softmax) or activation in ("softmax", "sigmoid"):
            return False
        return True

    @property
    def classes_(self) -> np.ndarray | None:
        """Label of each output column (``None`` for a regressor or before a query)."""
        if self._classes is not None:
            return self._classes
        if self.task in ("regression", "embedding"):
            return None
        if self.kind == "sklearn":
            return np.asarray(self.model.classes_)
        units = _keras_output_units(self.model) if self.kind == "keras" else None
        units = units or self._seen_width
        return None if units is None else np.arange(max(int(units), 2))

    @property
    def n_classes_(self) -> int | None:
        """Number of output columns, or ``None`` when not known before a query."""
        classes = self.classes_
        return None if classes is None else len(classes)

    # ------------------------------------------------------------------ access
    def allows(self, access: str) -> bool:
        """Whether this target gives at least ``access``."""
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {ACCESS_LEVELS}. Received: access={access!r}")
        return ACCESS_LEVELS.index(self.access) >= ACCESS_LEVELS.index(access)

    def require(self, access: str, attack: str = "This attack") -> Target:
        """Raise :class:`AccessError` unless the target gives at least ``access``."""
        if not self.allows(access):
            missing = ACCESS_LEVELS[ACCESS_LEVELS.index(self.access) + 1 :]
            missing = missing[: ACCESS_LEVELS.index(access) - ACCESS_LEVELS.index(self.access)]
            raise AccessError(
                f"{attack} needs {access} access to the target, but the target is "
                f"{self.access}: it lacks {' and '.join(_describe(m) for m in missing)}. "
                f"Wrap the model with Target(model, access={access!r}) if you have that "
                f"access, or choose an attack for {self.access} targets. "
                f"Received: access={self.access!r}"
            )
        return self

    # ------------------------------------------------------------------ queries
    def _check_budget(self, n: int) -> None:
        if self.query_budget is not None and self.n_queries_ + n > self.query_budget:
            left = self.query_budget - self.n_queries_
            raise QueryBudgetExceededError(
                f"Query budget exhausted: {self.n_queries_} of {self.query_budget} rows already "
                f"queried, and this query asks for {n} more ({left} left). Raise "
                "Target(query_budget=...) or set it to None, reset_queries(), or attack fewer "
                f"records. Received: query_budget={self.query_budget}",
                n_queries=self.n_queries_,
                query_budget=self.query_budget,
                requested=n,
            )

    def _raw(self, X) -> np.ndarray:
        """Model scores for one batch (probabilities, logits or regression values)."""
        if self.kind == "keras":
            import keras

            from kmi.backend import predict

            if isinstance(X, np.ndarray) or hasattr(X, "iloc") or isinstance(X, list):
                X = np.asarray(X, dtype="float32")
            if isinstance(X, np.ndarray) and len(getattr(self.model, "inputs", None) or [1]) == 1:
                out = predict(self.model, X, batch_size=max(len(X), 1))  # compiled
            else:
                out = keras.ops.convert_to_numpy(self.model(X, training=False))
            if isinstance(out, list):
                out = out[-1]
        elif self.kind == "sklearn":
            if self.task == "classification":
                out = self.model.predict_proba(X)
            else:
                out = self.model.predict(X)
        else:
            out = self.model(X)
            try:
                import keras

                out = keras.ops.convert_to_numpy(out)
            except Exception:  # noqa: BLE001 - plain arrays and lists
                pass
        return np.asarray(out, dtype="float64")

    def record_queries(self, n: int) -> None:
        """Count ``n`` rows answered outside :meth:`query` (white-box reads), within budget.

        Raises
        ------
        QueryBudgetExceededError
            If the rows would exceed ``query_budget``; nothing is counted then.
        """
        self._check_budget(int(n))
        self.n_queries_ += int(n)
        self.n_calls_ += 1

    def scores(self, X: Any) -> np.ndarray:
        """Full scores of the model for ``X``, counted as queries, before output rules.

        Probabilities for a classifier (logits are turned into probabilities), the
        prediction for a regressor. Attacks should call :meth:`query`, which applies
        ``output``; this method is for white-box attacks and defenses.

        Raises
        ------
        AccessError
            If the target is not white-box: the full scores bypass what ``output``
            and ``access`` let an attacker see (labels only, rounding, top-k), so a
            black-box or label-only target answers through :meth:`query` and
            :meth:`predict` alone.
        """
        self.require("white-box", "Reading the full scores (Target.scores)")
        return self._scores(X)

    def _scores(self, X: Any) -> np.ndarray:
        """:meth:`scores` without the access check: what :meth:`query` applies ``output`` to."""
        n = _n_rows(X)
        self._check_budget(n)
        parts = []
        size = self.batch_size or max(n, 1)
        for start in range(0, n, size):
            parts.append(self._raw(_slice_rows(X, start, start + size)))
            self.n_calls_ += 1
        self.n_queries_ += n
        if not parts:
            width = () if self.task == "regression" else (self.n_classes_ or 0,)
            return np.zeros((0, *width))
        out = np.concatenate(parts, axis=0)
        if self.task == "embedding":
            if not np.all(np.isfinite(out)):
                raise ValueError(
                    "The model returned NaN or inf vectors; check its inputs and weights. "
                    "Received: non-finite model output"
                )
            return out
        if self.task == "regression":
            return out.reshape(n, -1)[:, 0] if out.ndim > 1 else out
        if out.ndim == 1 or out.shape[-1] == 1:  # a single sigmoid unit
            p = out.reshape(n)
            if self.from_logits:
                p = 1.0 / (1.0 + np.exp(-p))
            out = np.stack([1.0 - p, p], axis=1)
        elif self.from_logits:
            out = _softmax(out)
        self._check_distribution(out)
        self._seen_width = out.shape[-1]
        return out

    def _check_distribution(self, p):
        if not np.all(np.isfinite(p)):
            raise ValueError(
                "The model returned NaN or inf scores; check its inputs and weights. "
                "Received: non-finite model output"
            )
        # the last axis is the distribution (a sequence model gives one per position)
        if p.size and (np.min(p) < -1e-6 or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-3)):
            raise ValueError(
                "The model's outputs are not probabilities (rows must be non-negative and sum "
                "to 1). If it returns logits, pass Target(model, from_logits=True). Received: "
                f"row sums between {p.sum(axis=-1).min():.3g} and {p.sum(axis=-1).max():.3g}"
            )

    def query(self, X: Any) -> np.ndarray:
        """Query the model on a batch of inputs, as the attacker sees it.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, ...)
            Inputs in the format the model takes.

        Returns
        -------
        ndarray
            Shape (n_samples, n_classes) of floats for ``output`` in probabilities,
            logits (log-probabilities), top-k and rounded; shape (n_samples,) of
            labels (entries of :attr:`classes_`) for ``output="label"`` and of
            predictions for a regressor.

        Raises
        ------
        QueryBudgetExceededError
            If the query would exceed ``query_budget``; nothing is queried then.
        """
        from kmi.defenses import output as out_fn

        scores = self._scores(X)
        if self.task in ("regression", "embedding"):
            if self.output == "rounded":
                return np.round(scores, self.decimals)
            return scores
        if self.output == "probabilities":
            return scores
        if self.output == "logits":
            return np.log(np.clip(scores, 1e-12, 1.0))
        if self.output == "label":
            idx = np.asarray(out_fn.label_only(scores))
            return self.classes_[idx] if self.classes_ is not None else idx
        if self.output == "top-k":
            return np.asarray(out_fn.top_k_confidence(scores, self.top_k), dtype="float64")
        return np.asarray(out_fn.round_confidence(scores, self.decimals), dtype="float64")

    def predict(self, X: Any) -> np.ndarray:
        """Predicted label (or regression value) of each row; counted as queries."""
        scores = self._scores(X)
        if self.task in ("regression", "embedding"):
            return scores
        idx = np.argmax(scores, axis=-1)
        return self.classes_[idx] if self.classes_ is not None else idx

    def label_index(self, y: ArrayLike) -> np.ndarray:
        """Column index of each label in ``y``.

        Raises
        ------
        ValueError
            If a label is not one of the target's :attr:`classes_` (the labels do
            not match the target's output width).
        """
        y = np.asarray(y)
        classes = self.classes_
        if classes is None:
            raise ValueError(
                "This target is a regressor (or its classes are unknown): it has no label "
                "columns. Pass Target(model, classes=[...]) for a classifier. "
                f"Received: task={self.task!r}"
            )
        sorter = np.argsort(classes, kind="stable")
        try:
            pos = np.searchsorted(classes, y, sorter=sorter)
        except TypeError as exc:
            raise ValueError(
                f"Labels y cannot be compared with the target's classes {classes.tolist()!r}. "
                f"Received: y of dtype {y.dtype}"
            ) from exc
        pos = np.clip(pos, 0, len(classes) - 1)
        idx = sorter[pos]
        bad = classes[idx] != y
        if np.any(bad):
            unknown = np.unique(y[bad])[:5].tolist()
            raise ValueError(
                f"The labels y do not match the target's output: it has {len(classes)} "
                f"output columns for classes {classes[:10].tolist()!r}, and y holds other "
                f"values. Pass labels of the target (or Target(model, classes=...)). "
                f"Received: y values {unknown!r}"
            )
        return idx

    def reset_queries(self) -> Target:
        """Set the query counters back to zero and return self."""
        self.n_queries_ = 0
        self.n_calls_ = 0
        return self

    # ------------------------------------------------------------------ sklearn
    def __sklearn_clone__(self) -> Target:
        return self

    def __repr__(self) -> str:
        extra = ""
        if self.output == "top-k":
            extra = f", top_k={self.top_k}"
        elif self.output == "rounded":
            extra = f", decimals={self.decimals}"
        budget = "" if self.query_budget is None else f", query_budget={self.query_budget}"
        return (
            f"Target({type(self.model).__name__}, access={self.access!r}, "
            f"output={self.output!r}{extra}{budget})"
        )


def _describe(access):
    return {
        "black-box": "the model's scores (black-box)",
        "white-box": "the model's weights, gradients and internals (white-box)",
    }.get(access, access)


def as_target(obj: Any, **kwargs: Any) -> Target:
    """Return ``obj`` if it is a :class:`Target`, else ``Target(obj, **kwargs)``.

    Attacks call it in ``fit`` on the ``target`` they were given, so that a bare
    model and a :class:`Target` are both accepted, and a Target (with its query
    counts and budget) is passed through, never copied.

    Parameters
    ----------
    obj : Target, keras.Model, scikit-learn estimator or callable
        The attacked model, wrapped or not.
    **kwargs
        Options of :class:`Target` (``access``, ``output``, ``query_budget``...),
        used only when ``obj`` is not a Target yet.

    Returns
    -------
    Target
        ``obj`` itself, or a new Target wrapping it.

    Raises
    ------
    ValueError
        If ``obj`` is None (an attack built without a target) or not a model, or if
        it is a Target and options are given as well.

    See Also
    --------
    Target : The wrapper and its options.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from kmi.targets import Target, as_target
    >>> X, y = load_iris(return_X_y=True)
    >>> model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
    >>> target = as_target(model, access="black-box")
    >>> target.access, target.output
    ('black-box', 'probabilities')
    >>> as_target(target) is target
    True
    """
    if obj is None:
        raise ValueError(
            "No target: pass the attacked model as the first argument of the attack, e.g. "
            "CSMIA(model, sensitive_feature='sex'). Received: target=None"
        )
    if isinstance(obj, Target):
        if kwargs:
            raise ValueError(
                "as_target got a Target and options; set the options on the Target itself. "
                f"Received: {sorted(kwargs)}"
            )
        return obj
    return Target(obj, **kwargs)
