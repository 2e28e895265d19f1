"""Success of attribute-inference attacks on tabular models.

Accuracy alone misleads when the sensitive attribute is unbalanced (Mehnaz et al.
2022): predicting the majority value scores high. Reports therefore also give
balanced accuracy, macro F1, G-mean, MCC and AUC, and the advantage of each attack
over :class:`kmi.attacks.ImputationBaseline`, which never queries the target.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
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
    return v is None or (isinstance(v, float) and np.isnan(v))


def _encode(y_true, y_pred, labels=None):
    """Integer codes of both arrays over one vocabulary.

    A missing prediction (None or NaN, left by an interrupted attack) gets a code of
    its own, so it counts as wrong.
    """
    y_true = np.asarray(y_true, dtype=object).ravel()
    y_pred = np.asarray(y_pred, dtype=object).ravel()
    if labels is None:
        seen = [v for v in np.concatenate([y_true, y_pred]).tolist() if not _is_missing(v)]
        labels = list(dict.fromkeys(seen))
    codes = {v: i for i, v in enumerate(list(labels))}
    missing = len(codes)
    true = np.asarray([codes.get(v, missing) for v in y_true.tolist()], dtype=int)
    pred = np.asarray([codes.get(v, missing) for v in y_pred.tolist()], dtype=int)
    return true, pred, np.arange(len(codes))


def accuracy(y_true, y_pred) -> float:
    """Fraction of records whose sensitive value was recovered."""
    true, pred, _ = _encode(y_true, y_pred)
    return float(np.mean(true == pred)) if len(true) else float("nan")


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean per-value recall (0.5 for a constant guess on a binary attribute)."""
    true, pred, labels = _encode(y_true, y_pred)
    present = [v for v in labels if np.any(true == v)]
    return float(np.mean([np.mean(pred[true == v] == v) for v in present]))


def f1(y_true, y_pred, labels=None) -> float:
    """Macro-averaged F1 over the sensitive values."""
    true, pred, codes = _encode(y_true, y_pred, labels)
    return float(
        skm.f1_score(true, pred, labels=codes, average="macro", zero_division=0)
    )


def g_mean(y_true, y_pred, labels=None) -> float:
    """Geometric mean of the per-value recalls (Mehnaz et al. 2022).

    Zero as soon as one value is never recovered, so a majority-value guess scores 0.
    """
    true, pred, codes = _encode(y_true, y_pred, labels)
    present = [v for v in codes if np.any(true == v)]
    recalls = [np.mean(pred[true == v] == v) for v in present]
    return float(np.prod(recalls) ** (1.0 / len(recalls))) if recalls else 0.0


def mcc(y_true, y_pred) -> float:
    """Matthews correlation coefficient (0 for a constant guess, 1 for perfect)."""
    true, pred, _ = _encode(y_true, y_pred)
    return float(skm.matthews_corrcoef(true, pred))


def auc(y_true, scores, values) -> float:
    """Area under the ROC curve of the attack's scores.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True sensitive values.
    scores : array-like of shape (n_samples, n_values)
        Score of each candidate value (``attack.invert_proba(X, y)``).
    values : array-like of shape (n_values,)
        The candidate value of each column (``attack.sensitive_values_``).

    Returns
    -------
    float
        Binary AUC of the second value's score for two values; one-vs-rest macro AUC
        otherwise. NaN if only one value occurs in ``y_true``.
    """
    y_true = np.asarray(y_true, dtype=object)
    scores = np.asarray(scores, dtype="float64")
    values = np.asarray(values, dtype=object)
    keep = ~np.isnan(scores).any(axis=1)
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


def attack_metrics(y_true, y_pred, scores=None, values=None) -> dict[str, float]:
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
    """
    out = {name: fn(y_true, y_pred) for name, fn in METRICS.items()}
    if scores is not None:
        out["auc"] = auc(y_true, scores, values)
    return out


def advantage(attack_result, baseline_result):
    """Advantage of an attack over the baseline: ``attack - baseline``.

    Works on two numbers or on two dicts from :func:`attack_metrics` (key by key).
    Positive values are what querying the target added.
    """
    if isinstance(attack_result, dict):
        return {k: attack_result[k] - baseline_result[k] for k in attack_result
                if k in baseline_result}
    return attack_result - baseline_result


def advantage_interval(y_true, y_attack, y_baseline, *, n_boot: int = 200,
                       level: float = 0.95, random_state=0) -> tuple[float, float]:
    """Paired bootstrap interval of the balanced-accuracy advantage over the baseline.

    Records are resampled with replacement, and the attack's and the baseline's
    balanced accuracies are recomputed on the same resample; the interval holds the
    central ``level`` share of their differences. An advantage whose interval lies
    above zero is a leak that chance does not explain.

    Parameters
    ----------
    y_true, y_attack, y_baseline : array-like of shape (n_samples,)
        True values and the two inferences.
    n_boot : int, default=200
    level : float, default=0.95
    random_state : int, default=0

    Returns
    -------
    (low, high) : tuple of float
    """
    true, pred_a, _ = _encode(y_true, y_attack)
    true_b, pred_b, _ = _encode(y_true, y_baseline)
    return paired_interval(true, pred_a == true, pred_b == true_b, n_boot=n_boot,
                           level=level, random_state=random_state)


def paired_interval(classes, correct_a, correct_b, *, n_boot: int = 200,
                    level: float = 0.95, random_state=0) -> tuple[float, float]:
    """:func:`advantage_interval` from each record's class and whether each attack
    got it right (boolean arrays), for callers that kept only those."""
    classes = np.asarray(classes)
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
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

    def __call__(self, estimator, X, y, sample_weight=None):
        truth = estimator.truth(X)
        if self.name == "auc":
            return auc(truth, estimator.invert_proba(X, y), estimator.sensitive_values_)
        return METRICS[self.name](truth, estimator.invert(X, y))

    def __repr__(self):
        return f"attack_scorer({self.name!r})"


def attack_scorer(name: str) -> Callable:
    """A scikit-learn scorer of an attribute-inference attack.

    The scorer calls ``attack.invert(X, y)`` (``invert_proba`` for ``"auc"``) and
    compares it with the sensitive column of ``X``.

    Parameters
    ----------
    name : {"accuracy", "balanced_accuracy", "f1", "g_mean", "mcc", "auc"}

    Examples
    --------
    >>> from kmi.metrics.tabular import attack_scorer
    >>> attack_scorer("mcc")
    attack_scorer('mcc')
    """
    return _AttackScorer(name)


def get_scorer(name: str) -> Callable:
    """Alias of :func:`attack_scorer`, named like scikit-learn's."""
    return attack_scorer(name)
