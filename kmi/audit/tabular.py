"""Audit of a tabular model: every applicable attribute-inference attack, measured."""

from __future__ import annotations

import time

import numpy as np

from kmi.attacks import tabular as tab
from kmi.audit._checkpoint import append_checkpoint, read_checkpoint, selected
from kmi.audit.api import pair
from kmi.audit.verdict import tabular_verdicts
from kmi.metrics.tabular import advantage, attack_metrics, paired_interval
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
    attack_params=None,
    extra_splits=None,
    random_state=0,
    verbose=1,
    target_name="target",
    checkpoint=None,
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
    target_name : str, default="target"
        Names the target in the rows.
    checkpoint : path, default=None
        A JSON-lines file. Each attack's rows are appended to it as soon as the
        attack finishes, and attacks whose rows are already there are not run again:
        an interrupted audit resumes where it stopped.

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
    done = read_checkpoint(checkpoint)
    overrides = dict(attack_params or {})
    for name, cls, params in selected(specs):
        params = {**params, **overrides.get(name, {})}
        keys = [(target_name, str(sensitive_feature), name, split) for split in splits]
        if keys and all(k in done for k in keys):
            for key in keys:
                rows.append(done[key])
                if not cls.uses_target:  # the baseline
                    baselines[key[-1]] = done[key]
            if verbose:
                print(f"  {name:<24} (resumed from {checkpoint})")
            continue
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
        new_rows = []
        for split, (X, y) in splits.items():
            q0 = target.n_queries_
            t0 = time.perf_counter()
            proba = attack.invert_proba(X, y)
            invert_s = time.perf_counter() - t0
            if np.isnan(proba).any():  # the attack was interrupted: record nothing
                raise KeyboardInterrupt(f"{name} was interrupted")
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
            correct = np.asarray(pred == truth, dtype=bool)
            if not cls.uses_target:  # the baseline that never queries the model
                row["_correct"] = "".join("1" if c else "0" for c in correct)
                baselines[split] = row
            base = baselines.get(split)
            row["adv_bal_acc"] = (
                advantage(metrics, base)["balanced_accuracy"] if base else float("nan")
            )
            row["adv_ci95"] = "n/a"
            if base is not None and cls.uses_target:
                base_correct = np.frombuffer(base["_correct"].encode(), dtype=np.uint8) == 49
                low, high = paired_interval(
                    truth.astype(str), correct, base_correct, random_state=random_state
                )
                row["adv_ci95"] = f"[{low:+.3f}, {high:+.3f}]"
            row["fit_s"] = round(fit_s, 3)
            row["invert_s"] = round(invert_s, 3)
            row["queries"] = int(fit_queries + target.n_queries_ - q0)
            new_rows.append(row)
            if verbose:
                print(
                    f"  {name:<24} {split:<11} acc {metrics['accuracy']:.3f}  "
                    f"bal_acc {metrics['balanced_accuracy']:.3f}  mcc {metrics['mcc']:.3f}  "
                    f"{fit_s + invert_s:6.2f} s  {row['queries']} queries",
                    flush=True,
                )
        rows += new_rows
        append_checkpoint(checkpoint, new_rows)
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def summarize_tabular(rows) -> list[str]:
    """Plain-language findings: per target and attribute, the strongest attack on
    members against the imputation baseline, and the same attack on non-members."""
    lines = []
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["target"], row["sensitive"]), []).append(row)
    for (target, sensitive), group in groups.items():
        members = [r for r in group if r["split"] == "members"]
        base = next((r for r in members if r["attack"] == "ImputationBaseline"), None)
        attacks = [r for r in members if r["attack"] != "ImputationBaseline"]
        if not attacks:
            continue
        best = max(attacks, key=lambda r: r["balanced_accuracy"])
        line = (
            f"{target}: the strongest attack, {best['attack']}, infers '{sensitive}' of "
            f"training members with balanced accuracy {best['balanced_accuracy']:.3f} "
            f"(accuracy {best['accuracy']:.1%})"
        )
        if base is not None:
            gain = best["balanced_accuracy"] - base["balanced_accuracy"]
            low = _interval_low(best.get("adv_ci95"))
            verdict = (
                "the model leaks this attribute beyond what imputation finds (the 95% "
                f"interval of the gain, {best['adv_ci95']}, is above zero)"
                if low is not None and low > 0
                else "no leak beyond imputation that chance does not explain"
            )
            line += (
                f"; guessing from the other columns without the model (imputation) reaches "
                f"{base['balanced_accuracy']:.3f}, so {gain:+.3f}: {verdict}"
            )
        other = next(
            (r for r in group if r["split"] == "non-members" and r["attack"] == best["attack"]),
            None,
        )
        if other is not None:
            line += (
                f". On records outside the training set the same attack reaches "
                f"{other['balanced_accuracy']:.3f}"
            )
        lines.append(line + ".")
    return lines


def _interval_low(text):
    try:
        return float(str(text).strip("[]").split(",")[0])
    except (TypeError, ValueError):
        return None


def audit_tabular(
    report,
    target,
    private_data,
    *,
    public_data=None,
    sensitive_feature=None,
    attacks="auto",
    attack_params=None,
    name="model",
    random_state=0,
    verbose=1,
    checkpoint=None,
):
    """Run the attribute-inference attacks on ``target`` and add them to ``report``.

    The tabular part of :func:`kmi.audit.audit`, whose parameters these are.
    """
    if sensitive_feature is None:
        raise ValueError(
            "A tabular audit needs the attacked column: pass sensitive_feature=<name or "
            "index>. Received: sensitive_feature=None"
        )
    X, y = pair(private_data, "private_data", "tabular", "(X, y)")
    if public_data is None:
        raise ValueError(
            "A tabular audit needs the attacker's auxiliary records: pass "
            "public_data=(X_aux, y_aux). Received: public_data=None"
        )
    X_aux, y_aux = pair(public_data, "public_data", "tabular", "(X_aux, y_aux)")
    rows = run_tabular_attacks(
        target,
        X_aux=X_aux,
        y_aux=y_aux,
        X_private=X,
        y_private=y,
        sensitive_feature=sensitive_feature,
        attacks=attacks,
        attack_params=attack_params,
        random_state=random_state,
        verbose=verbose,
        target_name=name,
        checkpoint=checkpoint,
    )
    report.settings.setdefault("private records", len(y))
    report.settings.setdefault("auxiliary records (attacker's)", len(y_aux))
    report.rows += rows
    report.summary += summarize_tabular(rows)
    report.verdicts += tabular_verdicts(rows)
