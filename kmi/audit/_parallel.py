"""Audit units fanned out through joblib: local processes, Ray or Dask, one code path.

An audit of several models (a model zoo, or a defense at several strengths) is a set
of independent runs: each attack of each model. :func:`run_units` runs them in this
process, model after model, or, where joblib's effective ``n_jobs`` is above 1,
through ``joblib.Parallel``: with the default backend in local processes, and inside
``with joblib.parallel_backend("ray"):`` (or ``"dask"``) on that cluster, with no
change to the call.

- One unit is one attack of one model (:func:`unit_attacks`): the audit's own code
  runs in the worker with only that attack (:func:`kmi.audit._checkpoint.only_attacks`;
  baselines run in every unit, as other rows are measured against them) and returns
  the rows it journaled. A Target with a query budget is one unit for all its
  attacks, since its attacks share the budget one after another.
- The driver appends each unit's rows to the journal (``checkpoint``, or a temporary
  one) as the unit ends, then audits every model here from that journal: every
  attack is read back, none runs again, and the rows, verdicts, figures and summary
  are built by the same code, in the same order, as a sequential audit's.
- Keras models travel as ``.keras`` bytes (:func:`pack`), never as pickled Keras
  objects: the weights a worker attacks are the saved ones, on any backend. A
  :class:`~kmi.targets.Target` travels as its model and its settings.
- An image audit's evaluation classifier and GAN prior are trained here first, as
  the first model's audit would train them (:func:`_train_shared_prior`), and every
  unit receives them (as ``.keras`` bytes) rather than training its own.
- Each worker runs its operations on its share of this machine's cores
  (:func:`kmi.backend.limit_threads`), so that the workers do not fight over them.
- A resumed audit sends out only the units with no row in the journal.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from kmi.audit._checkpoint import (
    append_checkpoint,
    is_baseline,
    only_attacks,
    read_checkpoint,
    row_key,
)
from kmi.audit.report import Report
from kmi.targets import Target, _is_keras_model

__all__ = ["merge_report", "pack", "parallel_map", "run_units", "unit_attacks", "unpack"]

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


def _packed_call(fn, args, kwargs, threads):
    """``fn(*args, **kwargs)`` in a worker, on ``threads`` threads, its result packed."""
    from kmi.backend import limit_threads

    if threads:
        limit_threads(threads)
    return pack(fn(*unpack(args), **unpack(kwargs)))


def parallel_map(fn, calls, n_jobs=None):
    """``[fn(*args, **kwargs) for args, kwargs in calls]``, fanned out through joblib.

    For independent work that makes Keras models, such as training a sweep's
    defended models: each call runs in a worker on its share of the cores, and
    models travel both ways as ``.keras`` bytes. With joblib's effective ``n_jobs``
    at 1 the calls run here, in order. ``fn`` must be importable by the workers (a
    module-level function).
    """
    import joblib

    calls = list(calls)
    workers = max(1, joblib.effective_n_jobs(n_jobs))
    if workers == 1 or len(calls) < 2:
        return [fn(*args, **kwargs) for args, kwargs in calls]
    threads = max(1, (os.cpu_count() or 1) // min(workers, len(calls)))
    jobs = (
        joblib.delayed(_packed_call)(fn, pack(args), pack(kwargs), threads)
        for args, kwargs in calls
    )
    return [unpack(result) for result in joblib.Parallel(n_jobs=n_jobs)(jobs)]


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


#: The attacks an "auto" audit of each modality may run: (module, its attack lists).
_AUTO = {
    "image": ("kmi.audit.image", ("IMAGE_ATTACKS",)),
    "tabular": ("kmi.audit.tabular", ("TABULAR_ATTACKS",)),
    "graph": ("kmi.audit.graph", ("GRAPH_ATTACKS",)),
    "text": ("kmi.audit.text", ("TEXT_ATTACKS", "ENCODER_ATTACKS")),
}


def unit_attacks(modality, attacks) -> list[str]:
    """The attacks that are each one unit of a model's audit, by name.

    Those of ``attacks`` (or of the modality's "auto" lists), baselines left out:
    they run in every unit.
    """
    if attacks == "auto":
        import importlib

        module, lists = _AUTO[modality]
        module = importlib.import_module(module)
        attacks = [spec for name in lists for spec in getattr(module, name)]
    names = [name for name, cls, _ in attacks if not is_baseline(cls)]
    return list(dict.fromkeys(names))


def _journal_rows(done, name, attack=None):
    """The journaled rows of model ``name`` (of its ``attack`` only, if given)."""
    return [
        row
        for key, row in done.items()
        if key[0] == str(name) and (attack is None or key[2] == attack)
    ]


def _audit_unit(model, name, attack, title, options, common, journal, threads):
    """One unit in a worker: the audit of ``model`` restricted to ``attack`` (all of
    its attacks when None).

    Returns the rows the unit journaled, which the driver appends to the real
    journal, and its wall time. The worker's own journal is a temporary file holding
    ``journal`` (the rows already done for this model), and its report is thrown
    away: the driver builds the report from the journal.
    """
    from kmi.audit.api import audit
    from kmi.backend import limit_threads

    if threads:
        limit_threads(threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "journal.jsonl")
        append_checkpoint(path, journal)
        scope = only_attacks([attack]) if attack is not None else contextlib.nullcontext()
        with scope:
            audit(
                unpack(model),
                name=name,
                report=Report(title=title),
                checkpoint=path,
                **common,
                **unpack(options),
            )
        done = {row_key(row) for row in journal}
        new = [row for key, row in read_checkpoint(path).items() if key not in done]
    return new, time.perf_counter() - started


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
    arguments every model's audit shares (``modality``, ``access``, ``attacks``,
    ...). With joblib's effective ``n_jobs`` at 1 every model is audited here, one
    after another; above 1 each attack of each model is one unit run through
    ``joblib.Parallel`` under the active backend, and the reports are then built
    here from the journal the units filled.
    """
    import joblib

    units = list(units)
    parallel = joblib.effective_n_jobs(n_jobs) != 1
    verbose = common.get("verbose", 0)

    def here(name, model, journal, verbose):
        from kmi.audit.api import audit

        part = Report(title=title)
        if verbose:
            print(f"\nAuditing {name}...", flush=True)
        audit(
            model,
            name=name,
            report=part,
            checkpoint=journal,
            **{**common, "verbose": verbose},
            **options,
        )
        return part

    if not parallel:
        for name, model in units:
            yield name, here(name, model, checkpoint, verbose)
        return
    prior = options.get("shared_prior")
    if modality == "image" and prior is not None:
        _train_shared_prior(units[0][1], prior, options, common)
    with contextlib.ExitStack() as stack:
        if checkpoint is None:  # the units' rows still go through a journal
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            checkpoint = os.path.join(folder, "journal.jsonl")
        seconds = _fan_out(units, options, common, checkpoint, title, n_jobs, verbose)
        for name, model in units:  # every attack read back from the journal
            part = here(name, model, checkpoint, 0)
            if seconds.get(name):
                part.settings[f"{name}: audit wall time (s)"] = round(seconds[name], 1)
            yield name, part


def _fan_out(units, options, common, checkpoint, title, n_jobs, verbose):
    """Run every unit not journaled yet through ``joblib.Parallel``; append each
    one's rows to ``checkpoint`` as it ends. Returns each model's unit seconds."""
    import joblib
    import keras

    done = read_checkpoint(checkpoint)
    names = unit_attacks(common["modality"], common.get("attacks", "auto"))
    jobs = []
    for name, model in units:
        pending = [a for a in names if not _journal_rows(done, name, a)]
        if not names and not _journal_rows(done, name):  # baselines only
            pending = [None]
        if pending and isinstance(model, Target) and model.query_budget is not None:
            pending = [None]  # its attacks share the budget: one unit, in order
        jobs += [(name, model, attack) for attack in pending]
    workers = max(1, joblib.effective_n_jobs(n_jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    packed, models = pack(options), {}
    quiet = {**common, "verbose": 0}
    bar = keras.utils.Progbar(len(jobs), unit_name="run") if verbose and jobs else None
    if verbose:
        print(
            f"\nAuditing {len(units)} model{'s' * (len(units) != 1)} in parallel: "
            f"{len(jobs)} attack runs, "
            f"n_jobs={n_jobs}...",
            flush=True,
        )
    started = time.perf_counter()
    calls = []
    for name, model, attack in jobs:
        if name not in models:
            models[name] = pack(model)
        journal = _journal_rows(done, name)
        calls.append(
            joblib.delayed(_audit_unit)(
                models[name], name, attack, title, packed, quiet, journal, threads
            )
        )
    # as each unit ends, where the backend can (Ray's cannot: then all at the end)
    backend, _ = joblib.parallel.get_active_backend()
    streams = getattr(backend, "supports_return_generator", False)
    results = joblib.Parallel(n_jobs=n_jobs, return_as="generator" if streams else "list")(calls)
    seconds = {}
    for i, ((name, _, _), (rows, s)) in enumerate(zip(jobs, results)):
        new = [row for row in rows if row_key(row) not in done]  # baselines: once
        append_checkpoint(checkpoint, new)  # the driver alone writes the journal
        done.update((row_key(row), row) for row in new)
        seconds[name] = seconds.get(name, 0.0) + s
        if bar is not None:
            bar.update(i + 1)
    if verbose:
        print(f"  {len(jobs)} attack runs in {time.perf_counter() - started:.1f} s", flush=True)
    return seconds
