import json
import os

import numpy as np
import pytest

from kmi.attacks import CSMIA
from kmi.audit import TABULAR_ATTACKS, Report, run_tabular_attacks
from kmi.audit.cli import main
from kmi.audit.demo import adult_audit, adult_tasks
from kmi.datasets import load_adult
from kmi.targets import AccessError, Target


def test_run_tabular_attacks_measures_every_applicable_attack(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    target = Target(tree_pipeline, access="black-box")
    rows = run_tabular_attacks(
        target,
        X_aux=X_a,
        y_aux=y_a,
        X_private=X_m,
        y_private=y_m,
        sensitive_feature="sex",
        extra_splits={"again": (X_m, y_m)},
        verbose=0,
    )
    names = [r["attack"] for r in rows if r["split"] == "members"]
    # the white-box attack is skipped for a black-box target
    assert names == [n for n, *_ in TABULAR_ATTACKS if n != "DecisionTreeWhiteBox"]
    base = rows[0]
    assert base["attack"] == "ImputationBaseline" and base["queries"] == 0
    assert base["adv_bal_acc"] == 0.0
    csmia = next(r for r in rows if r["attack"] == "CSMIA" and r["split"] == "members")
    assert csmia["queries"] == 2 * len(X_m)
    assert csmia["adv_bal_acc"] == pytest.approx(
        csmia["balanced_accuracy"] - base["balanced_accuracy"]
    )
    assert {"accuracy", "balanced_accuracy", "f1", "g_mean", "mcc", "auc"} <= set(csmia)


def test_explicit_attack_list_raises_refusals(records, tree_pipeline):
    X_m, y_m, X_a, y_a = records
    with pytest.raises(AccessError):
        run_tabular_attacks(
            Target(tree_pipeline, access="label-only"),
            X_aux=X_a,
            y_aux=y_a,
            X_private=X_m,
            y_private=y_m,
            sensitive_feature="sex",
            attacks=[("CSMIA", CSMIA, {})],
            verbose=0,
        )


def test_report_json_and_markdown_are_written_atomically(tmp_path):
    report = Report(
        title="t", rows=[{"attack": "A", "accuracy": 0.5, "auc": float("nan")}], settings={"n": 3}
    )
    report.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rows"][0]["attack"] == "A" and "keras" in data["versions"]
    text = report.to_markdown(tmp_path / "r.md")
    assert "| A | 0.500 | n/a |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not 0600


def test_adult_tasks_drop_relationship_for_married():
    X, _ = load_adult(return_X_y=True)
    tasks = adult_tasks(X.iloc[:50])
    data, sensitive = tasks["married"]
    assert sensitive == "married"
    assert "relationship" not in data and "marital_status" not in data
    assert set(data["married"].unique()) <= {"yes", "no"}
    assert tasks["sex"][0].shape[1] == 14


def test_demo_audit_small():
    report = adult_audit(
        max_records=150, n_records=1200, targets=("decision_tree",), tasks=("married",), verbose=0
    )
    splits = {r["split"] for r in report.rows}
    assert splits == {"members", "non-members"}
    attacks = {r["attack"] for r in report.rows}
    assert "DecisionTreeWhiteBox" in attacks and "ImputationBaseline" in attacks
    for row in report.rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n"] == 150
    (verdict,) = report.verdicts  # one per target, by the image audit's thresholds
    assert verdict["target"] == "decision_tree" and verdict["metric"] == "balanced_accuracy"
    assert verdict["risk"] in ("high", "medium", "low") and "'married'" in verdict["why"]


def test_cli_demo(tmp_path, capsys, monkeypatch):
    _small_demo(monkeypatch)
    assert (
        main(
            [
                "audit",
                "--demo",
                "adult",
                "--max-records",
                "100",
                "--n-records",
                "1000",
                "--output",
                str(tmp_path / "rep"),
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "decision_tree: inferring 'sex' of training members" in out
    assert "| ImputationBaseline |" in out
    assert "Summary:" in out and "imputation" in out
    for ext in ("html", "json", "md"):
        assert (tmp_path / f"rep.{ext}").exists()


def test_cli_without_demo_explains(capsys):
    assert main(["audit"]) == 2
    err = capsys.readouterr().err
    assert "needs --demo, --model with --data and --modality, or --encoder" in err
    with pytest.raises(SystemExit):
        main(["audit", "--demo", "nope"])


def _small_demo(monkeypatch):
    import kmi.audit.demo as demo

    real = demo.adult_audit
    monkeypatch.setattr(
        demo,
        "adult_audit",
        lambda **kw: real(**{**kw, "targets": ("decision_tree",), "tasks": ("sex",)}),
    )


def test_cli_resume_after_interruption(tmp_path, capsys, monkeypatch):
    from kmi.attacks import CSMIA, ImputationBaseline

    _small_demo(monkeypatch)
    args = [
        "audit",
        "--demo",
        "adult",
        "--max-records",
        "100",
        "--n-records",
        "800",
        "--output",
        str(tmp_path / "rep"),
        "-q",
    ]

    def interrupt(self, X, y):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(CSMIA, "invert_proba", interrupt)
        assert main(args) == 130
    assert "--resume" in capsys.readouterr().err
    checkpoint = tmp_path / "rep.partial.jsonl"
    done = [json.loads(line)["attack"] for line in checkpoint.read_text().splitlines()]
    assert done == ["ImputationBaseline"] * 2 + ["FredriksonMAP"] * 2
    assert not (tmp_path / "rep.json").exists()

    def refit(self, X, y):
        raise AssertionError("a finished attack was run again")

    monkeypatch.setattr(ImputationBaseline, "fit", refit)
    assert main([*args, "--resume"]) == 0
    report = json.loads((tmp_path / "rep.json").read_text())
    attacks = [r["attack"] for r in report["rows"] if r["split"] == "members"]
    assert attacks[:3] == ["ImputationBaseline", "FredriksonMAP", "CSMIA"]
    assert not checkpoint.exists()
    assert (tmp_path / "rep.html").read_text().startswith("<!DOCTYPE html>")


def test_html_report_is_self_contained(tmp_path):
    report = Report(
        title="Audit <demo>",
        settings={"seed": 0},
        summary=["model leaks +0.044 beyond imputation"],
    )
    report.rows = [
        {
            "target": "t",
            "sensitive": "s",
            "split": "members",
            "attack": "ImputationBaseline",
            "accuracy": 0.8,
            "adv_bal_acc": 0.0,
        },
        {
            "target": "t",
            "sensitive": "s",
            "split": "members",
            "attack": "CSMIA",
            "accuracy": 0.85,
            "adv_bal_acc": 0.05,
        },
    ]
    report.add_figure("class 0", [np.zeros((4, 4)), np.ones((4, 4, 3))], ["mean", "attack"])
    with pytest.raises(ValueError, match="one caption per image"):
        report.add_figure("x", [np.zeros((2, 2))], ["a", "b"])
    text = report.to_html(tmp_path / "r.html")
    assert "<title>Audit &lt;demo&gt;</title>" in text
    assert text.index('id="summary"') < text.index('id="results"') < text.index('id="figures"')
    assert text.count("data:image/png;base64,") == 2
    assert '<td class="pos">+0.050</td>' in text
    assert "http" not in text  # nothing to fetch
    assert "images" not in json.loads(report.to_json())["figures"][0]


def test_png_encoder_round_trip():
    import struct
    import zlib

    from kmi.audit._png import encode_png

    img = np.linspace(0, 1, 12).reshape(3, 4)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (4, 3)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    raw = zlib.decompress(data[idat + 4 : idat + 4 + length])
    pixels = np.frombuffer(raw, dtype=np.uint8).reshape(3, 5)[:, 1:]
    np.testing.assert_array_equal(pixels, np.round(img * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="finite"):
        encode_png(np.full((2, 2), np.nan))
