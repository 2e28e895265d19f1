"""Success of attribute-inference attacks on tabular models.

Accuracy alone misleads when the sensitive attribute is unbalanced (Mehnaz et al.
2022): predicting the majority value scores high. Reports therefore also give
balanced accuracy, macro F1, G-mean, MCC and AUC, and the advantage of each attack
over :class:`kmi.attacks.ImputationBaseline`, which never queries the target.

Sensitive values may be of any type. Every metric refuses empty inputs, true values
that are missing (None or NaN) and predictions that are all missing; a missing
prediction among others (a record an interrupted attack did not reach) counts as wrong.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

__all__ = [
    "METRICS",
    "accuracy",
    "advantage",
    "advantage_interval",
    "paired_interval",
    "attack_metrics",
    "attack_scorer",
    "auc",
    "balanced_accuracy",
    "f1",
    "g_mean",
    "get_scorer",
    "mcc",
]


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and bool(np.isnan(v)))


def _values(y, name):
    y = np.asarray(y, dtype=object).ravel()
    if not len(y):
        raise ValueError(f"{name} is empty: pass at least one record. Received: len({name})=0")
    return y


def _truth(y_true):
    y_true = _values(y_true, "y_true")
    n_missing = sum(_is_missing(v) for v in y_true.tolist())
    if n_missing:
        raise ValueError(
            "y_true holds missing values (None or NaN): a record's true sensitive value "
            f"must be known to score it. Received: {n_missing} missing of {len(y_true)}"
        )
    return y_true


def _check_pair(y_true, y_pred):
    """Both arrays as 1-d object arrays, refused when empty, unequal or unknowable."""
    y_true, y_pred = _truth(y_true), _values(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(
            "y_true and y_pred must hold one value per record. "
            f"Received: len(y_true)={len(y_true)}, len(y_pred)={len(y_pred)}"
        )
    if all(_is_missing(v) for v in y_pred.tolist()):
        raise ValueError(
            "y_pred holds only missing values (None or NaN): the attack inferred no record, "
            f"so there is nothing to measure. Received: {len(y_pred)} missing"
        )
    return y_true, y_pred


def _encode(y_true, y_pred, labels=None):
    """Integer codes of both arrays over one vocabulary.

    A missing prediction (None or NaN, left by an interrupted attack) gets a code of
    its own, so it counts as wrong.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    if labels is None:
        seen = [v for v in np.concatenate([y_true, y_pred]).tolist() if not _is_missing(v)]
        labels = list(dict.fromkeys(seen))
    codes = {v: i for i, v in enumerate(list(labels))}
    missing = len(codes)
    true = np.asarray([codes.get(v, missing) for v in y_true.tolist()], dtype=int)
    pred = np.asarray([codes.get(v, missing) for v in y_pred.tolist()], dtype=int)
    return true, pred, np.arange(len(codes))


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of records whose sensitive value was recovered.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True sensitive values, of any type; none missing.
    y_pred : array-like of shape (n_samples,)
        Inferred values; a missing one (None or NaN, left by an interrupted attack)
        counts as wrong.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        If the arrays are empty or of different lengths, ``y_true`` has a missing
        value, or ``y_pred`` has nothing but missing values (as every metric here).

    Examples
    --------
    >>> from kmi.metrics.tabular import accuracy
    >>> accuracy(["F", "M", "M", "M"], ["F", "M", "M", None])
    0.75
    """
    true, pred, _ = _encode(y_true, y_pred)
    return float(np.mean(true == pred))


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean per-value recall (0.5 for a constant guess on a binary attribute).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        As :func:`accuracy`.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        As :func:`accuracy`.

    Examples
    --------
    >>> from kmi.metrics.tabular import balanced_accuracy
    >>> balanced_accuracy(["F", "M", "M", "M"], ["M", "M", "M", "M"])
    0.5
    """
    true, pred, labels = _encode(y_true, y_pred)
    present = [v for v in labels if np.any(true == v)]
    return float(np.mean([np.mean(pred[true == v] == v) for v in present]))


def f1(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike | None = None) -> float:
    """Macro-averaged F1 over the sensitive values.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        As :func:`accuracy`.
    labels : array-like, default=None
        The values averaged over; ``None`` for those in ``y_true`` and ``y_pred``.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        As :func:`accuracy`.

    Examples
    --------
    >>> from kmi.metrics.tabular import f1
    >>> round(f1(["F", "M", "M", "M"], ["F", "M", "M", "F"]), 4)
    0.7333
    """
    true, pred, codes = _encode(y_true, y_pred, labels)
    return float(skm.f1_score(true, pred, labels=codes, average="macro", zero_division=0))


def g_mean(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike | None = None) -> float:
    """Geometric mean of the per-value recalls (Mehnaz et al. 2022).

    Zero as soon as one value is never recovered, so a majority-value guess scores 0.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        As :func:`accuracy`.
    labels : array-like, default=None
        The values whose recalls are multiplied; ``None`` for those in ``y_true``.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        As :func:`accuracy`.

    References
    ----------
    S. Mehnaz, S. V. Dibbo, E. Kabir, N. Li and E. Bertino. Are your sensitive
    attributes private? Novel model inversion attribute inference attacks on
    classification models. USENIX Security 2022.

    Examples
    --------
    >>> from kmi.metrics.tabular import g_mean
    >>> g_mean(["F", "M", "M", "M"], ["M", "M", "M", "M"])
    0.0
    >>> round(g_mean(["F", "F", "M", "M"], ["F", "M", "M", "M"]), 4)
    0.7071
    """
    true, pred, codes = _encode(y_true, y_pred, labels)
    present = [v for v in codes if np.any(true == v)]
    recalls = [np.mean(pred[true == v] == v) for v in present]
    return float(np.prod(recalls) ** (1.0 / len(recalls))) if recalls else 0.0


def mcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Matthews correlation coefficient (0 for a constant guess, 1 for perfect).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        As :func:`accuracy`.

    Returns
    -------
    float in [-1, 1]

    Raises
    ------
    ValueError
        As :func:`accuracy`.

    References
    ----------
    B. W. Matthews. Comparison of the predicted and observed secondary structure of
    T4 phage lysozyme. Biochimica et Biophysica Acta 405(2), 1975.

    Examples
    --------
    >>> from kmi.metrics.tabular import mcc
    >>> mcc(["F", "F", "M", "M"], ["F", "F", "M", "M"]), mcc(["F", "M"], ["M", "M"])
    (1.0, 0.0)
    """
    true, pred, _ = _encode(y_true, y_pred)
    return float(skm.matthews_corrcoef(true, pred))


def auc(y_true: ArrayLike, scores: ArrayLike, values: ArrayLike) -> float:
    """Area under the ROC curve of the attack's scores.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True sensitive values; none missing.
    scores : array-like of shape (n_samples, n_values)
        Score of each candidate value (``attack.invert_proba(X, y)``); rows holding
        NaN (records an interrupted attack did not reach) are left out.
    values : array-like of shape (n_values,)
        The candidate value of each column (``attack.sensitive_values_``).

    Returns
    -------
    float
        Binary AUC of the second value's score for two values; one-vs-rest macro AUC
        otherwise. NaN if only one value occurs in ``y_true``.

    Raises
    ------
    ValueError
        If ``y_true`` is empty or has a missing value, ``scores`` is not one row per
        record and one column per value, or holds nothing but NaN.

    Examples
    --------
    >>> from kmi.metrics.tabular import auc
    >>> auc(["a", "b", "b"], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["a", "b"])
    1.0
    """
    y_true = _truth(y_true)
    scores = np.asarray(scores, dtype="float64")
    values = np.asarray(values, dtype=object).ravel()
    if scores.shape != (len(y_true), len(values)):
        raise ValueError(
            "scores must have one row per record and one column per candidate value "
            f"({len(y_true)}, {len(values)}). Received: scores.shape={scores.shape}"
        )
    keep = ~np.isnan(scores).any(axis=1)
    if not keep.any():
        raise ValueError(
            "scores hold NaN in every row: the attack scored no record. "
            f"Received: {len(scores)} rows with NaN"
        )
    y_true, scores = y_true[keep], scores[keep]
    present = [i for i, v in enumerate(values) if np.any(y_true == v)]
    if len(present) < 2:
        return float("nan")
    if len(values) == 2:
        return float(skm.roc_auc_score(y_true == values[1], scores[:, 1]))
    aucs = [skm.roc_auc_score(y_true == values[i], scores[:, i]) for i in present]
    return float(np.mean(aucs))


#: Metrics of predicted values, by name.
METRICS: dict[str, Callable] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "f1": f1,
    "g_mean": g_mean,
    "mcc": mcc,
}


def attack_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    scores: ArrayLike | None = None,
    values: ArrayLike | None = None,
) -> dict[str, float]:
    """Every tabular metric of one attack's result, as a dict.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and inferred sensitive values. Records the attack did not reach
        (None or NaN in ``y_pred``) count as wrong.
    scores : array-like of shape (n_samples, n_values), default=None
        Candidate scores, for the AUC (omitted when None).
    values : array-like of shape (n_values,), default=None
        Candidate value of each score column.

    Returns
    -------
    dict
        One entry per name of :data:`METRICS`, and ``auc`` when ``scores`` is given.

    Raises
    ------
    ValueError
        As :func:`accuracy` and :func:`auc`.

    Examples
    --------
    >>> from kmi.metrics.tabular import attack_metrics
    >>> out = attack_metrics(["F", "M", "M", "M"], ["F", "M", "M", "F"])
    >>> {name: round(value, 3) for name, value in out.items()}
    {'accuracy': 0.75, 'balanced_accuracy': 0.833, 'f1': 0.733, 'g_mean': 0.816, 'mcc': 0.577}
    """
    out = {name: fn(y_true, y_pred) for name, fn in METRICS.items()}
    if scores is not None:
        out["auc"] = auc(y_true, scores, values)
    return out


def advantage(
    attack_result: float | dict[str, float], baseline_result: float | dict[str, float]
) -> float | dict[str, float]:
    """Advantage of an attack over the baseline: ``attack - baseline``.

    Works on two numbers or on two dicts from :func:`attack_metrics` (key by key).
    Positive values are what querying the target added.

    Parameters
    ----------
    attack_result : float or dict
        The attack's metric, or its :func:`attack_metrics`.
    baseline_result : float or dict
        The same for :class:`kmi.attacks.ImputationBaseline`.

    Returns
    -------
    float or dict
        A dict holds the keys present in both.

    Examples
    --------
    >>> from kmi.metrics.tabular import advantage
    >>> advantage({"accuracy": 0.75, "mcc": 0.5}, {"accuracy": 0.5})
    {'accuracy': 0.25}
    """
    if isinstance(attack_result, dict):
        return {
            k: attack_result[k] - baseline_result[k] for k in attack_result if k in baseline_result
        }
    return attack_result - baseline_result


def advantage_interval(
    y_true: ArrayLike,
    y_attack: ArrayLike,
    y_baseline: ArrayLike,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Paired bootstrap interval of the balanced-accuracy advantage over the baseline.

    Records are resampled with replacement, and the attack's and the baseline's
    balanced accuracies are recomputed on the same resample; the interval holds the
    central ``level`` share of their differences. An advantage whose interval lies
    above zero is a leak that chance does not explain.

    Parameters
    ----------
    y_true, y_attack, y_baseline : array-like of shape (n_samples,)
        True values and the two inferences (as :func:`accuracy`).
    n_boot : int, default=200
        Bootstrap resamples.
    level : float, default=0.95
        Coverage of the interval, in (0, 1).
    random_state : int, numpy Generator or None, default=0
        Seed of the resampling.

    Returns
    -------
    (low, high) : tuple of float

    Raises
    ------
    ValueError
        As :func:`accuracy`, or on a bad ``n_boot`` or ``level``.

    Examples
    --------
    >>> from kmi.metrics.tabular import advantage_interval
    >>> truth = [0, 1] * 50
    >>> low, high = advantage_interval(truth, truth, [0] * 100)
    >>> low > 0, high <= 0.5
    (True, True)
    """
    true, pred_a, _ = _encode(y_true, y_attack)
    true_b, pred_b, _ = _encode(y_true, y_baseline)
    return paired_interval(
        true,
        pred_a == true,
        pred_b == true_b,
        n_boot=n_boot,
        level=level,
        random_state=random_state,
    )


def paired_interval(
    classes: ArrayLike,
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """:func:`advantage_interval` from each record's class and whether each attack got it right.

    For callers that kept only those (boolean arrays), not the inferred values.

    Parameters
    ----------
    classes : array-like of shape (n_samples,)
        True value of each record.
    correct_a, correct_b : array-like of bool, shape (n_samples,)
        Whether the attack (``a``) and the baseline (``b``) recovered it.
    n_boot, level, random_state
        As :func:`advantage_interval`.

    Returns
    -------
    (low, high) : tuple of float
        Interval of the balanced-accuracy advantage of ``a`` over ``b``.

    Raises
    ------
    ValueError
        If the arrays are empty or of different lengths, ``n_boot`` is not a
        positive integer or ``level`` is not in (0, 1).

    Examples
    --------
    >>> from kmi.metrics.tabular import paired_interval
    >>> paired_interval([0, 1, 0, 1], [True] * 4, [True] * 4)
    (0.0, 0.0)
    """
    classes = _values(classes, "classes")
    correct_a = np.asarray(correct_a, dtype=bool).ravel()
    correct_b = np.asarray(correct_b, dtype=bool).ravel()
    if not len(correct_a) == len(correct_b) == len(classes):
        raise ValueError(
            "classes, correct_a and correct_b must hold one value per record. Received: "
            f"lengths {len(classes)}, {len(correct_a)} and {len(correct_b)}"
        )
    if not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer. Received: n_boot={n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1). Received: level={level!r}")
    classes = np.unique(classes.astype(str), return_inverse=True)[1]
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, len(classes), size=(int(n_boot), len(classes)))
    sampled = classes[idx]
    diffs = np.zeros(int(n_boot))
    values = np.unique(classes)
    for c in values:
        mask = sampled == c
        count = np.maximum(mask.sum(axis=1), 1)
        gained = (correct_a[idx] & mask).sum(axis=1) - (correct_b[idx] & mask).sum(axis=1)
        diffs += gained / count
    diffs /= max(len(values), 1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1.0 - alpha))


class _AttackScorer:
    """A scorer ``(attack, X, y) -> float`` for GridSearchCV and cross_validate."""

    def __init__(self, name: str):
        if name not in METRICS and name != "auc":
            raise ValueError(
                f"Unknown metric; choose one of {sorted([*METRICS, 'auc'])}. "
                f"Received: name={name!r}"
            )
        self.name = name

    def __call__(self, estimator, X, y, sample_weight=None) -> float:
        truth = estimator.truth(X)
        if self.name == "auc":
            return auc(truth, estimator.invert_proba(X, y), estimator.sensitive_values_)
        return METRICS[self.name](truth, estimator.invert(X, y))

    def __repr__(self) -> str:
        return f"attack_scorer({self.name!r})"


def attack_scorer(name: str) -> Callable[..., float]:
    """A scikit-learn scorer of an attribute-inference attack.

    The scorer calls ``attack.invert(X, y)`` (``invert_proba`` for ``"auc"``) and
    compares it with the sensitive column of ``X``.

    Parameters
    ----------
    name : {"accuracy", "balanced_accuracy", "f1", "g_mean", "mcc", "auc"}
        The metric.

    Returns
    -------
    callable
        ``scorer(attack, X, y) -> float``, for ``scoring=`` of
        :class:`~sklearn.model_selection.GridSearchCV` and ``cross_validate``.

    Raises
    ------
    ValueError
        On an unknown ``name``.

    Examples
    --------
    >>> from kmi.metrics.tabular import attack_scorer
    >>> attack_scorer("mcc")
    attack_scorer('mcc')
    """
    return _AttackScorer(name)


def get_scorer(name: str) -> Callable[..., float]:
    """Alias of :func:`attack_scorer`, named like scikit-learn's.

    Parameters
    ----------
    name : str
        As :func:`attack_scorer`.

    Returns
    -------
    callable

    Raises
    ------
    ValueError
        On an unknown ``name``.

    Examples
    --------
    >>> from kmi.metrics.tabular import get_scorer
    >>> get_scorer("g_mean")
    attack_scorer('g_mean')
    """
    return attack_scorer(name)
