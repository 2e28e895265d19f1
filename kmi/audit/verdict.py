"""The verdict of an audit: a risk level per model, with one sentence on why.

The rule, for each audited model:

1. Take its attacks' rows, leaving out the no-query baseline and any row flagged
   ``adversarial`` (images that fool the evaluation classifier but resemble no
   private image, :func:`kmi.audit.image.flag_adversarial`).
2. The best of them is the one with the highest success rate (top-1 for images;
   ties go to the smaller KNN distance), the one the summary names too.
3. Its advantage is that rate minus the baseline's, with a 95 % confidence interval
   from the Wilson score interval of the rate over the attacked classes (the
   baseline's rate is taken as known).
4. **high** when the interval's lower end is at least 0.25 (a quarter of the classes
   or more recovered beyond guessing, beyond doubt); **medium** when it is above 0
   (leakage, but less or less certain); **low** otherwise (no advantage that the
   audit can tell from chance).

Tabular and text audits follow the same thresholds on their own measures:
:func:`tabular_verdicts` (balanced accuracy on training members, against imputation
without the model, with the audit's paired bootstrap interval) and
:func:`text_verdicts` (secrets recovered exactly, against 0, with a Wilson
interval). Graph audits have no verdict yet.

For several models audited together (a defense at several strengths,
:class:`kmi.audit.AuditedModel`), :func:`add_sweep` lays the verdicts side by
side: where the risk drops along each defense is where its protection begins.
"""

from __future__ import annotations

import math

#: Lower end of the advantage's 95 % interval from which the risk is high.
HIGH = 0.25


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate ``successes / n``.

    Examples
    --------
    >>> lo, hi = wilson_interval(10, 10)
    >>> round(lo, 3), hi
    (0.722, 1.0)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def risk_level(rate: float, baseline: float, n: int) -> tuple[str, float, tuple[float, float]]:
    """(level, advantage, its 95 % interval) of an attack's ``rate`` over ``n`` trials.

    Examples
    --------
    >>> risk_level(1.0, 0.1, 10)[0], risk_level(0.4, 0.1, 10)[0], risk_level(0.2, 0.1, 10)[0]
    ('high', 'medium', 'low')
    """
    lo, hi = wilson_interval(rate * n, n)
    interval = (lo - baseline, hi - baseline)
    return level_of(interval[0]), rate - baseline, interval


def level_of(low: float) -> str:
    """The risk level of an advantage whose 95 % interval starts at ``low``."""
    return "high" if low >= HIGH else "medium" if low > 0 else "low"


def best_attack(group, baseline_name: str = "PublicMeanBaseline"):
    """(best counted attack row or None, the adversarial rows) of one model's rows.

    Counted: not the baseline, not flagged ``adversarial``, with a top-1. The best
    has the highest top-1, then the smallest KNN distance. The summary and the
    verdict both name this one.
    """
    attacks = [r for r in group if r["attack"] != baseline_name and "top_1" in r]
    fooling = [r for r in attacks if r.get("adversarial")]
    counted = [r for r in attacks if not r.get("adversarial")]
    best = max(counted, key=lambda r: (r["top_1"], -r.get("knn_distance", 0.0)), default=None)
    return best, fooling


def _verdict(target, level, why, attack, metric, success, baseline, lo, hi) -> dict:
    return {
        "target": target,
        "risk": level,
        "why": why,
        "attack": attack,
        "metric": metric,
        "success": success,
        "baseline": baseline,
        "advantage": round(success - baseline, 4),
        "interval": [round(lo, 4), round(hi, 4)],
    }


def image_verdicts(rows, baseline_name: str = "PublicMeanBaseline") -> list[dict]:
    """One verdict per target of image rows (see the module's rule)."""
    verdicts = []
    for target in dict.fromkeys(r["target"] for r in rows):
        group = [r for r in rows if r["target"] == target and "top_1" in r]
        base = next((r for r in group if r["attack"] == baseline_name), None)
        best, fooling = best_attack(group, baseline_name)
        if best is None and not fooling:
            continue
        b = base["top_1"] if base is not None else 0.0
        if best is None:
            why = (
                "every attack's images are adversarial patterns that resemble no private "
                "image; none counts as a reconstruction"
            )
            verdicts.append(_verdict(target, "low", why, None, "top_1", b, b, 0.0, 0.0))
            continue
        n = int(best["classes"])
        level, advantage, (lo, hi) = risk_level(best["top_1"], b, n)
        why = (
            f"{best['attack']} rebuilds {round(best['top_1'] * n)} of {n} classes "
            f"recognisably, against {round(b * n)} of {n} for the baseline that never "
            f"queries the model: an advantage of {advantage:+.0%} "
            f"(95% interval {lo:+.0%} to {hi:+.0%})"
        )
        success = best["top_1"]
        verdicts.append(_verdict(target, level, why, best["attack"], "top_1", success, b, lo, hi))
    return verdicts


def tabular_verdicts(rows, baseline_name: str = "ImputationBaseline") -> list[dict]:
    """One verdict per target of attribute-inference rows.

    The same rule on training members: the best attack by balanced accuracy, its
    gain over imputation without the model, and the 95 % interval of that gain (the
    audit's paired bootstrap, ``adv_ci95``). With several sensitive attributes, the
    one at the highest risk gives the verdict.
    """
    verdicts = []
    for target in dict.fromkeys(r["target"] for r in rows):
        found = []
        for sensitive in dict.fromkeys(r["sensitive"] for r in rows if r["target"] == target):
            members = [
                r
                for r in rows
                if r["target"] == target and r["sensitive"] == sensitive
                and r["split"] == "members"
            ]  # fmt: skip
            base = next((r for r in members if r["attack"] == baseline_name), None)
            attacks = [r for r in members if r["attack"] != baseline_name]
            if base is None or not attacks:
                continue
            best = max(attacks, key=lambda r: r["balanced_accuracy"])
            try:
                lo, hi = (float(v) for v in str(best["adv_ci95"]).strip("[]").split(","))
            except ValueError:
                continue
            b = base["balanced_accuracy"]
            why = (
                f"{best['attack']} infers '{sensitive}' of training members with balanced "
                f"accuracy {best['balanced_accuracy']:.3f}, against {b:.3f} for imputation "
                f"without the model: a gain of {best['balanced_accuracy'] - b:+.3f} "
                f"(95% interval {lo:+.3f} to {hi:+.3f})"
            )
            found.append(
                _verdict(
                    target,
                    level_of(lo),
                    why,
                    best["attack"],
                    "balanced_accuracy",
                    best["balanced_accuracy"],
                    b,
                    lo,
                    hi,
                )  # fmt: skip
            )
        if found:
            verdicts.append(max(found, key=lambda v: (_RANK[v["risk"]], v["interval"][0])))
    return verdicts


def text_verdicts(rows) -> list[dict]:
    """One verdict per target of secret-extraction rows.

    The best attack's exact first-guess recovery rate over the secrets, against a
    baseline of 0 (a random guess of a secret practically never matches), with its
    Wilson interval.
    """
    verdicts = []
    for target in dict.fromkeys(r["target"] for r in rows):
        group = [r for r in rows if r["target"] == target and "exact_top_1" in r]
        if not group:
            continue
        best = max(group, key=lambda r: r["exact_top_1"])
        n = int(best["secrets"])
        level, _, (lo, hi) = risk_level(best["exact_top_1"], 0.0, n)
        why = (
            f"{best['attack']} recovers {round(best['exact_top_1'] * n)} of {n} secrets "
            f"exactly as its first guess (95% interval {lo:.0%} to {hi:.0%}); a random "
            "guess practically never does"
        )
        verdicts.append(
            _verdict(
                target, level, why, best["attack"], "exact_top_1", best["exact_top_1"], 0.0, lo, hi
            )  # fmt: skip
        )
    return verdicts


def encoder_verdicts(rows, baseline_name: str = "FrequentWordsBaseline") -> list[dict]:
    """One verdict per sentence encoder of embedding-inversion rows.

    The best attack's word F1 on the private texts against the baseline's (the most
    frequent public words, no query), with a Wilson interval that treats the mean F1
    over the n texts as a rate.
    """
    verdicts = []
    for target in dict.fromkeys(r["target"] for r in rows):
        group = [r for r in rows if r["target"] == target and "word_f1" in r]
        base = next((r for r in group if r["attack"] == baseline_name), None)
        attacks = [r for r in group if r is not base]
        if not attacks:
            continue
        best = max(attacks, key=lambda r: (r["word_f1"], r.get("exact_match", 0.0)))
        n, b = int(best["texts"]), (base["word_f1"] if base else 0.0)
        level, _, (lo, hi) = risk_level(best["word_f1"], b, n)
        why = (
            f"{best['attack']} recovers the words of {n} private texts from their "
            f"embeddings with F1 {best['word_f1']:.2f} ({best.get('exact_match', 0.0):.0%} "
            f"exactly), against {b:.2f} for the most frequent public words (advantage "
            f"interval {lo:+.2f} to {hi:+.2f})"
        )
        verdicts.append(
            _verdict(target, level, why, best["attack"], "word_f1", best["word_f1"], b, lo, hi)
        )
    return verdicts


#: How each verdict's ``metric`` is named on the plot's axis.
METRIC_LABELS = {
    "top_1": "best attack's top-1 (evaluation classifier)",
    "balanced_accuracy": "best attack's balanced accuracy on members",
    "exact_top_1": "secrets recovered exactly (best attack)",
    "word_f1": "word F1 of the texts recovered from embeddings (best attack)",
}

_RANK = {"high": 2, "medium": 1, "low": 0}


def add_sweep(report) -> None:
    """Add a defense sweep's plot and summary to ``report``, from its verdicts.

    Each verdict holding a ``utility`` (set by :func:`kmi.audit.audit` from
    :class:`kmi.audit.AuditedModel`) is a point: the model's utility against its
    best counted attack's success, one curve per ``defense``, labelled by
    ``strength``. A summary line per defense gives each strength's risk, the
    strength at which the risk is lowest (the most useful one, if several), and
    what that costs in utility against the undefended model.
    """
    swept = [v for v in report.verdicts if v.get("utility") is not None]
    if not swept:
        return
    metrics = {v["metric"] for v in swept}
    metric = metrics.pop() if len(metrics) == 1 else None
    points = [
        {
            "x": v["utility"],
            "y": v["success"],
            "label": v["defense"] if v.get("strength") is None else str(v["strength"]),
            "series": v["defense"],
        }
        for v in swept
    ]
    report.add_plot(
        "Utility against attack success, one curve per defense",
        points,
        x_label="utility of the model (higher is more useful)",
        y_label=METRIC_LABELS.get(metric, "best attack's success"),
        note="Each point is one model, labelled by the defense's strength; its height is "
        "the success of the strongest attack that is not an adversarial pattern. Lower "
        "is more private, further right is more useful.",
    )
    plain = [v for v in swept if v.get("strength") is None]
    reference = plain[0] if len(plain) == 1 else None
    lines = []
    for defense in dict.fromkeys(v["defense"] for v in swept):
        curve = [v for v in swept if v["defense"] == defense]
        if all(v.get("strength") is None for v in curve):
            continue
        steps = ", ".join(
            f"{v['strength']}: {v['risk']} risk (utility {v['utility']:.3f})" for v in curve
        )
        lowest = min(_RANK[v["risk"]] for v in curve)
        if reference is not None and lowest < _RANK[reference["risk"]]:
            safer = [v for v in curve if _RANK[v["risk"]] == lowest]
            best = max(safer, key=lambda v: v["utility"])
            cost = reference["utility"] - best["utility"]
            verdict = (
                f"the risk falls to {best['risk']} at {best['strength']}, costing "
                f"{cost:.3f} of utility against {reference['target']}"
            )
        elif reference is not None:
            verdict = f"no strength tried lowers the risk below {reference['target']}'s"
        else:
            lowest_risk = min(curve, key=lambda v: _RANK[v["risk"]])["risk"]
            verdict = f"the lowest risk reached is {lowest_risk}"
        lines.append(f"{defense}: {steps}; {verdict}.")
    report.summary[:0] = lines


def sweep_rows(verdicts) -> list[dict]:
    """The verdicts of a sweep as table rows (empty unless some model has a defense).

    The report's HTML and Markdown and the command line all show this table.
    """
    if not any("defense" in v for v in verdicts):
        return []
    rows = []
    for v in verdicts:
        utility = v.get("utility")
        lo, hi = v["interval"]
        rows.append(
            {
                "Model": v["target"],
                "Defense": v.get("defense", ""),
                "Strength": "" if v.get("strength") is None else v["strength"],
                "Utility": "" if utility is None else f"{utility:.3f}",
                "Best attack": v["attack"] or "none counted",
                "Success": f"{v['success']:.2f}",
                "Baseline": f"{v['baseline']:.2f}",
                "Advantage (95% interval)": f"{v['advantage']:+.2f} ({lo:+.2f} to {hi:+.2f})",
                "Risk": v["risk"],
            }
        )
    return rows
