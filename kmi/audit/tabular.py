"""Audit of a tabular model: every applicable attribute-inference attack, measured."""

from __future__ import annotations

import time

from kmi.attacks import tabular as tab
from kmi.metrics.tabular import advantage, attack_metrics
from kmi.targets import AccessError, as_target

#: The attacks run by ``attacks="auto"``, the baseline first: (name, class, parameters).
TABULAR_ATTACKS = (
    ("ImputationBaseline", tab.ImputationBaseline, {}),
    ("FredriksonMAP", tab.FredriksonMAP, {}),
    ("CSMIA", tab.CSMIA, {}),
    ("LOMIA", tab.LOMIA, {}),
    ("LOMIA(train_on='aux')", tab.LOMIA, {"train_on": "aux"}),
    ("DecisionTreeWhiteBox", tab.DecisionTreeWhiteBox, {}),
    ("AttributeInferenceModel", tab.AttributeInferenceModel, {}),
)


def _build(cls, params, target, sensitive, random_state):
    kwargs = {"sensitive_feature": sensitive, **params}
    if "random_state" in cls().get_params():
        kwargs["random_state"] = random_state
    return cls(target, **kwargs)


def run_tabular_attacks(
    target,
    *,
    X_aux,
    y_aux,
    X_private,
    y_private,
    sensitive_feature,
    attacks="auto",
    extra_splits=None,
    random_state=0,
    verbose=1,
    target_name="target",
):
    """Fit every attack on auxiliary data and measure it on the private records.

    Parameters
    ----------
    target : Target or model
        The audited model.
    X_aux, y_aux : auxiliary records (with the sensitive column) and labels.
    X_private, y_private : the attacked records (e.g. training members) and labels;
        their sensitive column is the ground truth and is never shown to an attack.
    sensitive_feature : int or str
    attacks : "auto" or list of (name, class, parameters), default="auto"
        "auto" runs :data:`TABULAR_ATTACKS` where the target's access level and
        model allow them (e.g. :class:`~kmi.attacks.DecisionTreeWhiteBox` only on
        trees); a list runs those, and a refusal is an error.
    extra_splits : dict of name -> (X, y), default=None
        Other records to measure the same fitted attacks on (e.g. non-members).
    random_state : int, default=0
    verbose : int, default=1
        1 prints a line per attack.

    Returns
    -------
    list of dict
        One row per attack and split: the metrics of
        :func:`kmi.metrics.tabular.attack_metrics`, ``adv_bal_acc`` (balanced
        accuracy minus the baseline's), ``fit_s`` and ``invert_s`` (seconds) and
        ``queries`` (rows sent to the target by fit and invert).
    """
    target = as_target(target)
    specs = TABULAR_ATTACKS if attacks == "auto" else attacks
    splits = {"members": (X_private, y_private), **(extra_splits or {})}
    rows, baselines = [], {}
    for name, cls, params in specs:
        attack = _build(cls, params, target, sensitive_feature, random_state)
        start_queries = target.n_queries_
        t0 = time.perf_counter()
        try:
            attack.fit(X_aux, y_aux)
        except (AccessError, TypeError) as exc:
            if attacks != "auto":
                raise
            if verbose:
                print(f"  skip {name}: {str(exc).split('. ')[0]}")
            continue
        fit_s = time.perf_counter() - t0
        fit_queries = target.n_queries_ - start_queries
        for split, (X, y) in splits.items():
            q0 = target.n_queries_
            t0 = time.perf_counter()
            proba = attack.invert_proba(X, y)
            invert_s = time.perf_counter() - t0
            pred = attack._decode(proba)
            truth = attack.truth(X)
            metrics = attack_metrics(truth, pred, proba, attack.sensitive_values_)
            row = {
                "target": target_name,
                "sensitive": str(sensitive_feature),
                "split": split,
                "attack": name,
                "n": len(truth),
                **metrics,
            }
            if cls is tab.ImputationBaseline:
                baselines[split] = metrics
            base = baselines.get(split)
            row["adv_bal_acc"] = (
                advantage(metrics, base)["balanced_accuracy"] if base else float("nan")
            )
            row["fit_s"] = round(fit_s, 3)
            row["invert_s"] = round(invert_s, 3)
            row["queries"] = int(fit_queries + target.n_queries_ - q0)
            rows.append(row)
            if verbose:
                print(
                    f"  {name:<24} {split:<11} acc {metrics['accuracy']:.3f}  "
                    f"bal_acc {metrics['balanced_accuracy']:.3f}  mcc {metrics['mcc']:.3f}  "
                    f"{fit_s + invert_s:6.2f} s  {row['queries']} queries",
                    flush=True,
                )
    return rows
