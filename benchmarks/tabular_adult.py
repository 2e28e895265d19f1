"""Attribute inference on UCI Adult at full size: every tabular attack vs imputation.

The main job (``kmi audit --demo``) at full size: income models (an unpruned decision
tree and a Keras MLP) trained on half of Adult; every member and every held-out
non-member attacked for ``sex`` and for ``married``. Also measures how accurate
CSMIA is on the records it decides by case 1 (exactly one value reproduces the label).

Run:  KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/tabular_adult.py
Writes benchmarks/results/tabular_adult.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kmi.attacks import CSMIA, ImputationBaseline
from kmi.audit.demo import SUMMARY_COLUMNS, adult_audit, adult_tasks, make_target
from kmi.audit.report import Report, atomic_write, library_versions
from kmi.datasets import load_adult

RESULTS = Path(__file__).parent / "results"


def case1_analysis(random_state=0):
    """CSMIA's case-1 records on the overfit tree: share, accuracy, baseline's accuracy."""
    X, y = load_adult(return_X_y=True)
    y = y.astype(str).to_numpy()
    order = np.random.default_rng(random_state).permutation(len(X))
    half, three_q = len(X) // 2, 3 * len(X) // 4
    members, aux, others = order[:half], order[half:three_q], order[three_q:]
    rows = []
    for data, sensitive in adult_tasks(X).values():

        def pick(idx, data=data):
            return data.iloc[idx].reset_index(drop=True)

        model = make_target("decision_tree", random_state).fit(pick(members), y[members])
        csmia = CSMIA(model, sensitive_feature=sensitive).fit(pick(aux), y[aux])
        base = ImputationBaseline(sensitive_feature=sensitive, random_state=random_state)
        base.fit(pick(aux), y[aux])
        for split, idx in (("members", members), ("non-members", others)):
            Xs, ys = pick(idx), y[idx]
            truth = Xs[sensitive].to_numpy()
            case1 = csmia.cases(Xs, ys) == 1
            rows.append(
                {
                    "sensitive": sensitive,
                    "split": split,
                    "case1_share": float(case1.mean()),
                    "csmia_acc_on_case1": float(
                        np.mean(csmia.invert(Xs, ys)[case1] == truth[case1])
                    ),
                    "baseline_acc_on_case1": float(
                        np.mean(base.invert(Xs, ys)[case1] == truth[case1])
                    ),
                }
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-records", type=int, default=0, help="0: attack all records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "tabular_adult.json"))
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report = adult_audit(max_records=args.max_records or None, random_state=args.seed)
    cases = case1_analysis(args.seed)
    for target in ("decision_tree", "keras_mlp"):
        for task in ("sex", "married"):
            for split in ("members", "non-members"):
                rows = [
                    r
                    for r in report.rows
                    if r["target"] == target and r["sensitive"] == task and r["split"] == split
                ]
                print(f"\n### {target}, '{task}', {split} (n={rows[0]['n']})")
                print(Report(title="", rows=rows, versions={}).table(SUMMARY_COLUMNS))
    print("\n### CSMIA on its case-1 records (decision tree target)")
    print(Report(title="", rows=cases, versions={}).table())
    out = {
        "benchmark": "tabular_adult",
        "command": "python benchmarks/tabular_adult.py",
        "settings": report.settings,
        "results": report.rows,
        "csmia_case1": cases,
        "versions": library_versions(),
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write(args.output, json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nsaved {args.output}")


if __name__ == "__main__":
    main()
