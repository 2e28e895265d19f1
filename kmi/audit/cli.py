"""The ``kmi`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmi", description="Model inversion attacks and defenses for Keras 3."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser(
        "audit",
        help="audit a model's privacy with model inversion attacks",
        description=(
            "Run the model inversion attacks that apply to a model and report how much "
            "they recover, next to a baseline that never queries the model."
        ),
    )
    audit.add_argument(
        "--demo",
        nargs="?",
        const="adult",
        choices=["adult"],
        help="run the demonstration audit (adult: income models on UCI Adult, "
        "attributes sex and married)",
    )
    audit.add_argument(
        "--max-records",
        type=int,
        default=4000,
        help="attack at most this many members and non-members (0: all; default 4000)",
    )
    audit.add_argument(
        "--output",
        default="kmi-report",
        help="report path without extension; .html, .json and .md are written "
        "(default kmi-report)",
    )
    audit.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted audit: attacks already recorded in "
        "<output>.partial.jsonl are not run again",
    )
    audit.add_argument(
        "--n-records",
        type=int,
        default=0,
        help="use only this many records of the data set, for a quick run (0: all)",
    )
    audit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    audit.add_argument("--data-home", default=None, help="data folder (default $KMI_DATA)")
    audit.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "audit":
        if not args.demo:
            print(
                "kmi audit: auditing your own model from the command line is not available "
                "yet; use the Python API (kmi.audit.run_tabular_attacks) or run "
                "`kmi audit --demo`.",
                file=sys.stderr,
            )
            return 2
        from kmi.audit.demo import SUMMARY_COLUMNS, adult_audit

        out = Path(args.output)
        checkpoint = out.with_name(out.name + ".partial.jsonl")
        if checkpoint.exists() and not args.resume:
            checkpoint.unlink()
        try:
            report = adult_audit(
                max_records=args.max_records or None,
                n_records=args.n_records or None,
                random_state=args.seed,
                data_home=args.data_home,
                verbose=0 if args.quiet else 1,
                checkpoint=checkpoint,
            )
        except KeyboardInterrupt:
            print(
                f"\nInterrupted. Finished attacks are kept in {checkpoint}; run the same "
                "command with --resume to continue.",
                file=sys.stderr,
            )
            return 130
        paths = [out.with_name(out.name + ext) for ext in (".html", ".json", ".md")]
        report.to_html(paths[0])
        report.to_json(paths[1])
        report.to_markdown(paths[2])
        checkpoint.unlink(missing_ok=True)
        print()
        for key, value in report.settings.items():
            print(f"{key}: {value}")
        for target in dict.fromkeys(r["target"] for r in report.rows):
            for task in dict.fromkeys(r["sensitive"] for r in report.rows):
                rows = [r for r in report.rows
                        if r["target"] == target and r["sensitive"] == task
                        and r["split"] == "members"]
                if not rows:
                    continue
                from kmi.audit.report import Report

                print(f"\n## {target}: inferring '{task}' of training members")
                print(Report(title="", rows=rows, versions={}).table(SUMMARY_COLUMNS))
        print(
            "\nadv_bal_acc: balanced accuracy minus ImputationBaseline's (which never "
            "queries the model). Positive means the model leaks beyond imputation."
        )
        print("\nSummary:")
        for line in report.summary:
            print(f"- {line}")
        print(f"\nReport (members and non-members): {', '.join(str(p) for p in paths)}")
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
