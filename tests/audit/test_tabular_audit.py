import json

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
        target, X_aux=X_a, y_aux=y_a, X_private=X_m, y_private=y_m,
        sensitive_feature="sex", extra_splits={"again": (X_m, y_m)}, verbose=0,
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
            Target(tree_pipeline, access="label-only"), X_aux=X_a, y_aux=y_a, X_private=X_m,
            y_private=y_m, sensitive_feature="sex", attacks=[("CSMIA", CSMIA, {})], verbose=0,
        )


def test_report_json_and_markdown_are_written_atomically(tmp_path):
    report = Report(title="t", rows=[{"attack": "A", "accuracy": 0.5, "auc": float("nan")}],
                    settings={"n": 3})
    report.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rows"][0]["attack"] == "A" and "keras" in data["versions"]
    text = report.to_markdown(tmp_path / "r.md")
    assert "| A | 0.500 | n/a |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]  # no temp files


def test_adult_tasks_drop_relationship_for_married():
    X, _ = load_adult(return_X_y=True)
    tasks = adult_tasks(X.iloc[:50])
    data, sensitive = tasks["married"]
    assert sensitive == "married"
    assert "relationship" not in data and "marital_status" not in data
    assert set(data["married"].unique()) <= {"yes", "no"}
    assert tasks["sex"][0].shape[1] == 14


def test_demo_audit_small():
    report = adult_audit(max_records=150, n_records=1200, targets=("decision_tree",),
                         tasks=("married",), verbose=0)
    splits = {r["split"] for r in report.rows}
    assert splits == {"members", "non-members"}
    attacks = {r["attack"] for r in report.rows}
    assert "DecisionTreeWhiteBox" in attacks and "ImputationBaseline" in attacks
    for row in report.rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n"] == 150


def test_cli_demo(tmp_path, capsys, monkeypatch):
    import kmi.audit.demo as demo

    real = demo.adult_audit
    monkeypatch.setattr(
        demo, "adult_audit",
        lambda **kw: real(**{**kw, "targets": ("decision_tree",), "tasks": ("sex",)}),
    )
    assert main(["audit", "--demo", "--max-records", "100", "--n-records", "1000",
                 "--output", str(tmp_path / "rep"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "decision_tree: inferring 'sex' of training members" in out
    assert "| ImputationBaseline |" in out
    assert (tmp_path / "rep.json").exists() and (tmp_path / "rep.md").exists()


def test_cli_without_demo_explains(capsys):
    assert main(["audit"]) == 2
    assert "kmi audit --demo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["audit", "--demo", "nope"])
