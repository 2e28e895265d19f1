"""Audit units fanned out through joblib: local processes, Ray or Dask, one code path.

An audit of several models (a model zoo, or a defense at several strengths) is a set
of independent units, one per model. :func:`run_units` runs them in order in this
process, or, where joblib's effective ``n_jobs`` is above 1, through
``joblib.Parallel``: with the default backend in local processes, and inside
``with joblib.parallel_backend("ray"):`` (or ``"dask"``) on that cluster, with no
change to the call. Each unit audits one model into a report of its own, and the
driver merges the reports in the models' order (:func:`merge_report`), so the rows,
verdicts and figures are the same whichever way the units ran.

- Keras models travel as ``.keras`` bytes (:func:`pack`), never as pickled Keras
  objects: the weights a worker attacks are the saved ones, on any backend. A
  :class:`~kmi.targets.Target` travels as its model and its settings.
- An image audit's evaluation classifier and GAN prior are trained here first, as
  the first model's audit would train them (:func:`_train_shared_prior`), and every
  unit receives them (as ``.keras`` bytes) rather than training its own.
- The journal (``checkpoint``) is written by the driver alone, each unit's rows once
  the unit has finished; a worker reads the rows journaled for its model before it
  starts, so a resumed audit skips them there too.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from kmi.audit._checkpoint import append_checkpoint, read_checkpoint, row_key
from kmi.audit.report import Report
from kmi.targets import Target, _is_keras_model

__all__ = ["merge_report", "pack", "run_units", "unpack"]

#: Settings of a Target that a copy in another process is built with.
_TARGET_SETTINGS = (
    "access",
    "output",
    "top_k",
    "decimals",
    "from_logits",
    "task",
    "query_budget",
    "batch_size",
)


@dataclass
class KerasBytes:
    """A Keras model as the bytes of its ``.keras`` file."""

    data: bytes

    @classmethod
    def of(cls, model) -> KerasBytes:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.keras")
            model.save(path)
            with open(path, "rb") as fh:
                return cls(fh.read())

    def load(self):
        import keras

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.keras")
            with open(path, "wb") as fh:
                fh.write(self.data)
            return keras.saving.load_model(path, compile=False)


@dataclass
class PackedTarget:
    """A :class:`~kmi.targets.Target`: its packed model, settings and classes."""

    model: Any
    settings: dict
    classes: Any

    def load(self) -> Target:
        return Target(unpack(self.model), **self.settings, classes=self.classes)


def pack(obj):
    """``obj`` ready to travel to another process: Keras models (also inside a Target,
    a dict, a list or a tuple) as ``.keras`` bytes; anything else as it is (pickled by
    joblib)."""
    if _is_keras_model(obj):
        return KerasBytes.of(obj)
    if isinstance(obj, Target):
        settings = {name: getattr(obj, name) for name in _TARGET_SETTINGS}
        return PackedTarget(pack(obj.model), settings, obj._classes)
    if isinstance(obj, dict):
        return {k: pack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and any(_is_keras_model(v) for v in obj):
        return type(obj)(pack(v) for v in obj)
    return obj


def unpack(obj):
    """The inverse of :func:`pack`."""
    if isinstance(obj, (KerasBytes, PackedTarget)):
        return obj.load()
    if isinstance(obj, dict):
        return {k: unpack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and any(isinstance(v, KerasBytes) for v in obj):
        return type(obj)(unpack(v) for v in obj)
    return obj


def merge_report(report: Report, part: Report) -> Report:
    """Add one unit's report to ``report``, as if the unit had written into it.

    Rows, verdicts, summary lines, texts and plots are appended; a figure is added
    unless one of the same title is there (the real examples are shown once); a
    setting is kept where ``report`` has it already.
    """
    report.rows += part.rows
    report.verdicts += part.verdicts
    report.summary += part.summary
    report.texts += part.texts
    report.plots += part.plots
    titles = {figure["title"] for figure in report.figures}
    report.figures += [f for f in part.figures if f["title"] not in titles]
    for key, value in part.settings.items():
        report.settings.setdefault(key, value)
    return report


def _journal_rows(done, name):
    return [row for key, row in done.items() if key[0] == str(name)]


def _audit_unit(model, name, title, options, common, journal):
    """One unit in a worker: audit ``model`` into a new report.

    Returns the report and the rows the unit journaled, which the driver appends to
    the real journal; the worker's own journal is a temporary file holding
    ``journal`` (the rows already done for this model).
    """
    from kmi.audit.api import audit

    part = Report(title=title)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "journal.jsonl")
        append_checkpoint(path, journal)
        audit(
            unpack(model),
            name=name,
            report=part,
            checkpoint=path,
            **common,
            **unpack(options),
        )
        done = {row_key(row) for row in journal}
        new = [row for key, row in read_checkpoint(path).items() if key not in done]
    return part, new


def _train_shared_prior(model, prior, options, common) -> None:
    """Train an image audit's shared evaluation classifier and GAN prior here, first.

    They are trained as the first model's audit trains them, by the same code: that
    audit runs on a scratch report, with only the GAN-prior attacks its access
    allows and no search steps (``max_iter=0``: the prior does not depend on the
    search), and fills ``prior``. Every unit then receives them, so the units run
    at once and their rows are those of a sequential audit, in which the first
    model's audit trains them and the others reuse them.
    """
    from kmi.audit.api import _target, audit
    from kmi.audit.image import IMAGE_ATTACKS

    attacks = common.get("attacks", "auto")
    specs = IMAGE_ATTACKS if attacks == "auto" else attacks
    target = _target(model, common.get("access", "white-box"))
    gan = [
        (name, cls, {**params, **(common.get("attack_params") or {}).get(name, {})})
        for name, cls, params in specs
        if cls is not None and cls.uses_gan_prior and target.allows(cls.required_access)
    ]
    gan = [
        (n, c, {**p, "max_iter": 0} if "max_iter" in c().get_params() else p) for n, c, p in gan
    ]
    scratch = {**common, "attacks": gan, "attack_params": None, "verbose": 0}
    try:
        audit(
            model, report=Report(title="shared prior"), name="shared prior", **scratch, **options
        )
    except ValueError:  # a GAN attack this model cannot take: the units train their own
        pass


def run_units(units, *, modality, options, common, checkpoint, title, n_jobs=None):
    """Audit each ``(name, model)`` of ``units``; yield ``(name, report)`` in order.

    ``options`` are :func:`~kmi.audit.audit`'s modality options, ``common`` the
    arguments every unit shares (``modality``, ``access``, ``attacks``, ...). With
    joblib's effective ``n_jobs`` at 1 every unit runs here, one after another;
    above 1 they run through ``joblib.Parallel`` under the active backend.
    """
    import joblib

    units = list(units)
    parallel = len(units) > 1 and joblib.effective_n_jobs(n_jobs) != 1
    verbose = common.get("verbose", 0)

    def here(name, model):
        part = Report(title=title)
        from kmi.audit.api import audit

        if verbose:
            print(f"\nAuditing {name}...", flush=True)
        audit(model, name=name, report=part, checkpoint=checkpoint, **common, **options)
        return part

    if not parallel:
        for name, model in units:
            yield name, here(name, model)
        return
    prior = options.get("shared_prior")
    if modality == "image" and prior is not None:
        _train_shared_prior(units[0][1], prior, options, common)
    import keras

    done = read_checkpoint(checkpoint)
    packed = pack(options)
    quiet = {**common, "verbose": 0}
    bar = keras.utils.Progbar(len(units), unit_name="model") if verbose else None
    if verbose:
        print(f"\nAuditing {len(units)} models in parallel (n_jobs={n_jobs})...", flush=True)
    started = time.perf_counter()
    jobs = (
        joblib.delayed(_audit_unit)(
            pack(model), name, title, packed, quiet, _journal_rows(done, name)
        )
        for name, model in units
    )
    # as each unit ends, where the backend can (Ray's cannot: then all at the end)
    backend, _ = joblib.parallel.get_active_backend()
    streams = getattr(backend, "supports_return_generator", False)
    results = joblib.Parallel(n_jobs=n_jobs, return_as="generator" if streams else "list")(jobs)
    for i, ((name, _), (part, new_rows)) in enumerate(zip(units, results)):
        append_checkpoint(checkpoint, new_rows)  # the driver alone writes the journal
        if bar is not None:
            bar.update(i + 1)
        yield name, part
    if verbose:
        print(f"  {len(units)} models in {time.perf_counter() - started:.1f} s", flush=True)
