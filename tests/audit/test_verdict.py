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
