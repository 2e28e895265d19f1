"""The verdict's rule, and the flag on adversarial patterns, on hand-made rows."""

import pytest

from kmi.audit import Report
from kmi.audit.image import flag_adversarial, summarize_image
from kmi.audit.verdict import image_verdicts, risk_level, wilson_interval


def _rows(mi_top_1, mi_mse, inv_top_1=0.2, inv_mse=0.02):
    common = {"target": "m", "classes": 10, "access": "white-box"}
    return [
        {**common, "attack": "PublicMeanBaseline", "top_1": 0.1, "nearest_mse": 0.05},
        {**common, "attack": "MIFace", "top_1": mi_top_1, "nearest_mse": mi_mse},
        {**common, "attack": "InversionModel", "top_1": inv_top_1, "nearest_mse": inv_mse},
    ]


def test_wilson_interval_and_levels():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert risk_level(1.0, 0.1, 10)[0] == "high"  # lower end +62 points
    assert risk_level(0.5, 0.1, 10)[0] == "medium"  # lower end +14 points
    assert risk_level(0.2, 0.1, 10)[0] == "low"  # the interval holds 0
    assert risk_level(0.2, 0.1, 1000)[0] == "medium"  # the same rate, measured on more


def test_adversarial_patterns_are_flagged_and_do_not_count():
    # MIFace fools the evaluator (10/10) with images farther from every private
    # image than the mean public image: not a reconstruction
    rows = _rows(mi_top_1=1.0, mi_mse=0.2)
    flag_adversarial(rows)
    assert [r.get("adversarial") for r in rows] == [None, True, False]
    (verdict,) = image_verdicts(rows)
    assert verdict["attack"] == "InversionModel" and verdict["risk"] == "low"
    assert "2 of 10 classes" in verdict["why"] and "+10%" in verdict["why"]
    summary = summarize_image(rows)
    assert summary[0].startswith("m: the strongest attack, InversionModel")
    assert "MIFace's images are adversarial patterns" in summary[1]
    # the same success with images close to the private ones is a reconstruction
    rows = _rows(mi_top_1=1.0, mi_mse=0.01)
    flag_adversarial(rows)
    (verdict,) = image_verdicts(rows)
    assert verdict["attack"] == "MIFace" and verdict["risk"] == "high"


def test_the_verdict_comes_first_in_every_format():
    rows = _rows(mi_top_1=1.0, mi_mse=0.01)
    flag_adversarial(rows)
    report = Report(title="t", rows=rows, summary=["s"], verdicts=image_verdicts(rows))
    html = report.to_html()
    assert html.index('id="verdict"') < html.index('id="summary"')
    assert "m: high risk." in html
    assert report.to_markdown().split("\n")[2] == "## Verdict"
    assert '"risk": "high"' in report.to_json()


def _verdict(target, defense, strength, utility, risk, success):
    return {
        "target": target,
        "risk": risk,
        "why": "w",
        "attack": "MIFace",
        "metric": "top_1",
        "success": success,
        "baseline": 0.1,
        "advantage": success - 0.1,
        "interval": [success - 0.2, success],
        "defense": defense,
        "strength": strength,
        "utility": utility,
    }


def test_a_sweep_is_one_curve_per_defense_and_says_where_protection_begins():
    from kmi.audit.verdict import add_sweep

    report = Report(
        title="t",
        summary=["existing"],
        verdicts=[
            _verdict("no defense", "no defense", None, 0.98, "high", 1.0),
            _verdict("DP (eps 8)", "DP", "eps 8", 0.95, "high", 0.9),
            _verdict("DP (eps 1)", "DP", "eps 1", 0.80, "low", 0.1),
            _verdict("DP (eps 3)", "DP", "eps 3", 0.90, "medium", 0.5),
            _verdict("MID (b 1)", "MID", "b 1", 0.97, "high", 1.0),
        ],
    )
    add_sweep(report)
    (plot,) = report.plots
    assert plot["lines"] and plot["y_label"].startswith("best attack's top-1")
    series = {}
    for p in plot["points"]:
        series.setdefault(p["series"], []).append(p["label"])
    assert series == {
        "no defense": ["no defense"],
        "DP": ["eps 8", "eps 1", "eps 3"],
        "MID": ["b 1"],
    }
    dp, mid, existing = report.summary
    # DP's risk first falls (to medium at 3, then low at 1): the low point is named
    assert dp.startswith("DP: eps 8: high risk (utility 0.950), eps 1: low risk")
    assert dp.endswith(
        "the risk falls to low at eps 1, costing 0.180 of utility against no defense."
    )
    assert mid.endswith("no strength tried lowers the risk below no defense's.")
    assert existing == "existing"
    html = report.to_html()
    assert html.index("<th>Strength</th>") < html.index('id="summary"')
    assert (
        '<tr class="risk-low"><td>DP (eps 1)</td><td>DP</td><td>eps 1</td><td>0.800</td>' in html
    )
    assert "| DP (eps 1) | DP | eps 1 | 0.800 | MIFace | 0.10 | 0.10 |" in report.to_markdown()


def test_a_sweep_without_utilities_adds_no_plot():
    from kmi.audit.verdict import add_sweep

    verdict = _verdict("m", "DP", "eps 1", None, "low", 0.1)
    report = Report(title="t", verdicts=[verdict])
    add_sweep(report)
    assert report.plots == [] and report.summary == []


def test_audited_models_are_named_once_each():
    from kmi.audit import AuditedModel, audit

    assert AuditedModel(None).label == "no defense"
    assert AuditedModel(None, defense="MID", strength=0.1).label == "MID (0.1)"
    assert AuditedModel(None, defense="MID", strength=0.1, name="x").label == "x"
    twice = [AuditedModel(None, defense="MID"), AuditedModel(None, defense="MID")]
    with pytest.raises(ValueError, match="its own name.*'MID' more than once"):
        audit(twice, modality="image", private_data=None, verbose=0)
    with pytest.raises(ValueError, match="list of kmi.audit.AuditedModel.*holds NoneType"):
        audit([AuditedModel(None), None], modality="image", private_data=None, verbose=0)
    with pytest.raises(ValueError, match="at least one model"):
        audit({}, modality="image", private_data=None, verbose=0)


def test_tabular_and_text_verdicts_follow_the_same_thresholds():
    from kmi.audit.verdict import tabular_verdicts, text_verdicts

    def row(attack, bal, ci="n/a", sensitive="sex", split="members"):
        return {
            "target": "m",
            "sensitive": sensitive,
            "split": split,
            "attack": attack,
            "balanced_accuracy": bal,
            "adv_ci95": ci,
        }

    rows = [
        row("ImputationBaseline", 0.50),
        row("CSMIA", 0.62, "[+0.050, +0.190]"),
        row("LOMIA", 0.55, "[-0.020, +0.120]"),
        row("CSMIA", 0.99, "[+0.400, +0.500]", split="non-members"),  # not members
        row("ImputationBaseline", 0.60, sensitive="race"),
        row("CSMIA", 0.61, "[-0.050, +0.070]", sensitive="race"),
    ]
    (verdict,) = tabular_verdicts(rows)
    # the attribute at the highest risk gives the verdict: sex, medium (+0.05 to +0.19)
    assert verdict["risk"] == "medium" and verdict["attack"] == "CSMIA"
    assert verdict["interval"] == [0.05, 0.19] and verdict["advantage"] == pytest.approx(0.12)
    assert "infers 'sex' of training members with balanced accuracy 0.620" in verdict["why"]
    rows[1]["adv_ci95"] = "[+0.300, +0.400]"
    assert tabular_verdicts(rows)[0]["risk"] == "high"
    assert tabular_verdicts(rows[4:])[0]["risk"] == "low"

    secrets = {"target": "lm", "secrets": 20, "access": "black-box"}
    text = [
        {**secrets, "attack": "LMExtraction", "exact_top_1": 0.9},
        {**secrets, "attack": "TokenOptimization", "exact_top_1": 0.1},
    ]
    (verdict,) = text_verdicts(text)
    assert verdict["risk"] == "high" and verdict["attack"] == "LMExtraction"
    assert verdict["why"].startswith("LMExtraction recovers 18 of 20 secrets exactly")
    assert text_verdicts(text[1:])[0]["risk"] == "medium"  # 2 of 20: above 0, not by 25 %
    assert text_verdicts([{**text[1], "exact_top_1": 0.0}])[0]["risk"] == "low"
