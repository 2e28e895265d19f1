"""Audit units fanned out through joblib: local processes, Ray or Dask, one code path.

An audit of several models (a model zoo, or a defense at several strengths) is a set
of independent runs: each attack of each model. :func:`run_units` runs them in this
process, model after model, or, where joblib's effective ``n_jobs`` is above 1,
through ``joblib.Parallel``: with the default backend in local processes, and inside
``with joblib.parallel_backend("ray"):`` (or ``"dask"``) on that cluster, with no
change to the call.

- One unit is one attack of one model (:func:`unit_attacks`): the audit's own code
  runs in the worker with only that attack (:func:`kmi.audit._checkpoint.only_attacks`)
  and returns the rows it journaled. A model's baselines run in its first unit, and
  in every unit where other rows are measured against them as they run (tabular).
  A Target with a query budget is one unit for all its attacks, since its attacks
  share the budget one after another.
- The driver appends each unit's rows to the journal (``checkpoint``, or a temporary
  one) as the unit ends, then audits every model here from that journal: every
  attack is read back, none runs again, and the rows, verdicts, figures and summary
  are built by the same code, in the same order, as a sequential audit's.
- Keras models travel as ``.keras`` bytes (:func:`pack`), never as pickled Keras
  objects: the weights a worker attacks are the saved ones, on any backend. A
  :class:`~kmi.targets.Target` travels as its model and its settings.
- An image audit's evaluation classifier and GAN prior are trained first, as the
  first model's audit would train them, at once: the evaluator here, the prior in
  a worker (:func:`_train_shared_prior`). Every unit receives them (as ``.keras``
  bytes) rather than training its own.
- A worker keeps the models it has loaded (:data:`_LOADED`): a model and the
  shared prior are loaded once per worker, not once per unit, and the programs
  compiled for them are reused by its later units.
- Each worker runs its operations on its share of this machine's cores
  (:func:`kmi.backend.limit_threads`), so that the workers do not fight over them.
- A resumed audit sends out only the units with no row in the journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections import OrderedDict
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

    def load(self, cache: OrderedDict | None = None):
        """The model; from ``cache`` (by the bytes' digest) if it was loaded before."""
        import keras

        if cache is not None:
            key = hashlib.sha256(self.data).hexdigest()
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            model = cache[key] = self.load()
            while len(cache) > _CACHE_SIZE:
                cache.popitem(last=False)
            return model
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

    def load(self, cache: OrderedDict | None = None) -> Target:
        # a new Target (its query count starts at 0) around the model
        return Target(unpack(self.model, cache), **self.settings, classes=self.classes)


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


def unpack(obj, cache: OrderedDict | None = None):
    """The inverse of :func:`pack`.

    With a ``cache`` (a worker's :data:`_LOADED`), a model whose bytes were loaded
    before is that same model object, not a new copy: for models nothing changes,
    as an audit only queries them.
    """
    if isinstance(obj, (KerasBytes, PackedTarget)):
        return obj.load(cache)
    if isinstance(obj, dict):
        return {k: unpack(v, cache) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and any(isinstance(v, KerasBytes) for v in obj):
        return type(obj)(unpack(v, cache) for v in obj)
    return obj


#: Models a worker has loaded, by the digest of their bytes; kept across the units it
#: runs, so that a model (or the shared evaluation classifier and GAN prior) sent with
#: each unit is loaded once per worker, and the programs compiled for it are reused.
_LOADED: OrderedDict = OrderedDict()
_CACHE_SIZE = 16


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

#: The modalities whose attack rows are measured against the baselines' as they run
#: (tabular: each row's advantage): there the baselines run in every unit; elsewhere
#: in one unit of each model only.
_BASELINES_IN_EVERY_UNIT = frozenset({"tabular"})


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


def _audit_unit(model, name, attack, title, options, common, journal, threads, baselines=True):
    """One unit in a worker: the audit of ``model`` restricted to ``attack`` (all of
    its attacks when None), and to its baselines too unless ``baselines`` is False.

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
        scope = (
            only_attacks([attack], baselines) if attack is not None else contextlib.nullcontext()
        )
        with scope:
            audit(
                unpack(model, _LOADED),
                name=name,
                report=Report(title=title),
                checkpoint=path,
                **common,
                **unpack(options, _LOADED),
            )
        done = {row_key(row) for row in journal}
        new = [row for key, row in read_checkpoint(path).items() if key not in done]
    return new, time.perf_counter() - started


def _train_shared_prior(model, prior, options, common, n_jobs=None) -> None:
    """Train an image audit's shared evaluation classifier and GAN prior first.

    They are trained as the first model's audit trains them, by the same code, and
    fill ``prior``; every unit then receives them, so the units run at once and
    their rows are those of a sequential audit, in which the first model's audit
    trains them and the others reuse them. The two are independent (each seeds
    itself from the audit's ``random_state``), so they are trained at once: the GAN
    prior in a worker (:func:`_gan_prior_in_worker`), which also starts the workers that the
    units then reuse, and the evaluation classifier here, on every core as in a
    sequential audit (trained on fewer threads, its weights differ in the last
    bits, and so would every row's KNN distance). On a joblib backend that cannot
    return results as they come (Ray's), both are trained here, one after the other.
    """
    import joblib

    quiet = {**common, "verbose": 0}
    rest = {k: v for k, v in options.items() if k != "shared_prior"}
    backend, _ = joblib.parallel.get_active_backend()
    pending = []
    if "generator" not in prior and _gan_specs(model, common):
        if getattr(backend, "supports_return_generator", False):
            # a generator dispatches its job now, to run while the evaluator trains
            workers = max(1, joblib.effective_n_jobs(n_jobs))
            threads = max(1, (os.cpu_count() or 1) // workers)
            job = (pack(model), pack(rest), quiet, threads)
            run = joblib.Parallel(n_jobs=n_jobs, return_as="generator")
            pending = (unpack(part) for part in run([joblib.delayed(_gan_prior_in_worker)(*job)]))
        else:  # it would run only after the evaluator: here, on every core
            pending = [_gan_prior(model, rest, quiet)]
    if "evaluation classifier" not in prior and options.get("eval_model") is None:
        with only_attacks([]):  # the baselines only: the audit trains the evaluator
            _audit_scratch(model, **quiet, **rest, shared_prior=prior)
    for part in pending:
        prior.update(part)


def _audit_scratch(model, **kwargs):
    """:func:`kmi.audit.audit` of ``model`` on a report that is thrown away."""
    from kmi.audit.api import audit

    return audit(model, report=Report(title="shared prior"), name="shared prior", **kwargs)


def _gan_specs(model, common) -> list:
    """The GAN-prior attacks of the audit that ``model``'s access allows, with no
    search steps (``max_iter=0``: the prior does not depend on the search)."""
    from kmi.audit.api import _target
    from kmi.audit.image import IMAGE_ATTACKS

    attacks = common.get("attacks", "auto")
    specs = IMAGE_ATTACKS if attacks == "auto" else attacks
    target = _target(model, common.get("access", "white-box"))
    gan = [
        (name, cls, {**params, **(common.get("attack_params") or {}).get(name, {})})
        for name, cls, params in specs
        if cls is not None and cls.uses_gan_prior and target.allows(cls.required_access)
    ]
    return [
        (n, c, {**p, "max_iter": 0} if "max_iter" in c().get_params() else p) for n, c, p in gan
    ]


def _gan_prior(model, options, common) -> dict:
    """The shared GAN prior, trained by the audit's own code: the audit of ``model``
    with only its GAN-prior attacks and no search steps. Returns the generator and
    critic. The scratch rows are scored by an untrained stand-in
    (:func:`kmi.models.evaluation_classifier`) rather than by an evaluation
    classifier trained a second time.
    """
    from kmi.audit.api import _target
    from kmi.models import evaluation_classifier

    options, prior = dict(options), {}
    keras_model = _target(model, common.get("access", "white-box")).model
    if options.get("eval_model") is None and _is_keras_model(keras_model):
        shape = tuple(keras_model.input_shape[1:])
        options["eval_model"] = evaluation_classifier(shape, keras_model.output_shape[-1])
    gan = {**common, "attacks": _gan_specs(model, common), "attack_params": None}
    try:
        _audit_scratch(model, **gan, **options, shared_prior=prior)
    except ValueError:  # a GAN attack this model cannot take: the units train their own
        pass
    return {k: prior[k] for k in ("generator", "critic") if prior.get(k) is not None}


def _gan_prior_in_worker(model, options, common, threads):
    """:func:`_gan_prior` in a worker, on ``threads`` threads; models packed both ways."""
    from kmi.backend import limit_threads

    limit_threads(threads)
    return pack(_gan_prior(unpack(model), unpack(options), common))


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
        _train_shared_prior(units[0][1], prior, options, common, n_jobs)
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
    every = common["modality"] in _BASELINES_IN_EVERY_UNIT
    for name, model, attack in jobs:
        first = name not in models  # this model's first unit runs its baselines
        if first:
            models[name] = pack(model)
        journal = _journal_rows(done, name)
        calls.append(
            joblib.delayed(_audit_unit)(
                models[name], name, attack, title, packed, quiet, journal, threads, first or every
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
