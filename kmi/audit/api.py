"""``kmi.audit.audit``: one call from a trained model to a measured report."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

from kmi.audit.report import Report
from kmi.targets import Target

#: Each modality's audit: (module, function, the options of :func:`audit` it takes
#: besides those every modality takes).
MODALITIES = {
    "image": (
        "kmi.audit.image",
        "audit_image",
        (
            "public_data",
            "eval_model",
            "shared_prior",
            "pixel_range",
        ),
    ),
    "tabular": ("kmi.audit.tabular", "audit_tabular", ("public_data", "sensitive_feature")),
    "graph": ("kmi.audit.graph", "audit_graph", ("nodes",)),
    "text": (
        "kmi.audit.text",
        "audit_text",
        ("tokenizer", "prompts", "public_data", "references"),
    ),
}


@dataclass(frozen=True)
class AuditedModel:
    """One of several models audited into one report: a defense at one strength.

    Give :func:`audit` a list of these to audit a defense sweep. The report then has
    a verdict per model, a table of them, and a plot of ``utility`` against the best
    attack's success with one curve per ``defense``, its points labelled by
    ``strength``.

    Parameters
    ----------
    model : keras.Model, scikit-learn estimator, callable or Target
        As :func:`audit`'s ``model``.
    defense : str, default="no defense"
        The defense it was trained with; models sharing it form one curve.
    strength : str or float, default=None
        The defense's setting, e.g. ``"epsilon 3"`` or ``0.1``; labels the point.
    utility : float, default=None
        How useful the model is, higher being better (e.g. its test accuracy),
        measured by the caller. Models without it are audited but not plotted.
    name : str, default=None
        Names the model in the report; None is ``"defense (strength)"``, or the
        defense alone without a strength.

    Examples
    --------
    >>> from kmi.audit import AuditedModel
    >>> AuditedModel(None, defense="DP-SGD", strength="epsilon 3", utility=0.91).label
    'DP-SGD (epsilon 3)'
    """

    model: Any
    defense: str = "no defense"
    strength: Any = None
    utility: float | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name is not None:
            return str(self.name)
        return self.defense if self.strength is None else f"{self.defense} ({self.strength})"


def _audited_models(models) -> list[AuditedModel] | None:
    """The models of a sweep (a list of AuditedModel, or a dict name -> model), or None."""
    if isinstance(models, dict):
        return [AuditedModel(m, defense=str(k), name=str(k)) for k, m in models.items()]
    if isinstance(models, (list, tuple)) and any(isinstance(m, AuditedModel) for m in models):
        wrong = [type(m).__name__ for m in models if not isinstance(m, AuditedModel)]
        if wrong:
            raise ValueError(
                "To audit several models, give a list of kmi.audit.AuditedModel (or a dict "
                f"name -> model). Received: a list that also holds {', '.join(wrong)}"
            )
        return list(models)
    return None


def pair(data, name, modality, what):
    """``data`` as a pair, or a clear error naming what it must hold."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            f"For modality={modality!r}, {name} must be a pair {what}. "
            f"Received: {name} of type {type(data).__name__}"
        )
    return data


def _target(model, access):
    if isinstance(model, Target):
        return model
    return Target(model, access=access)


def audit(
    model,
    *,
    modality: str,
    private_data,
    public_data=None,
    access: str = "white-box",
    attacks="auto",
    attack_params: dict | None = None,
    eval_model=None,
    sensitive_feature=None,
    nodes=None,
    tokenizer=None,
    prompts=None,
    references=None,
    name: str = "model",
    report: Report | None = None,
    random_state: int = 0,
    verbose: int = 1,
    checkpoint=None,
    shared_prior: dict | None = None,
    pixel_range: tuple[float, float] | None = None,
    n_jobs: int | None = None,
) -> Report:
    """Run the attacks that apply to a model and measure what each recovers.

    Parameters
    ----------
    model : keras.Model, scikit-learn estimator, callable, Target, or several
        The audited model. A :class:`~kmi.targets.Target` is used as given (its
        access level and output); anything else is wrapped with ``access``.
        Several models, such as a defense at several strengths, are a list of
        :class:`AuditedModel` (or a dict name -> model): each is audited in turn
        into one report, image audits share one evaluation classifier and one GAN
        prior, and the report adds a table of the verdicts and, for models with a
        ``utility``, a plot of utility against the best attack's success, one curve
        per defense (:func:`kmi.audit.verdict.add_sweep`).
    modality : {"image", "tabular", "graph", "text"}
    private_data
        The data the model was trained on, which the attacks try to recover and
        against which they are measured (they never see it):

        - image: ``(images, labels)``, images NHWC in [0, 1];
        - tabular: ``(X, y)`` with the ``sensitive_feature`` column;
        - graph: ``(features, adjacency, labels)`` of the training graph (dense or
          scipy sparse adjacency); the model takes ``[features, adjacency]``;
        - text: a list of secret strings the model was trained on, each starting
          with one of ``prompts``.
    public_data : default=None
        What the attacker has: images (unlabelled) for image; ``(X_aux, y_aux)``
        for tabular (required); unused for graph and text.
    access : {"white-box", "black-box", "label-only"}, default="white-box"
        What the attacker may do with the model; attacks needing more are skipped.
    attacks : "auto" or list of (name, class, parameters), default="auto"
        "auto" runs every attack of the modality that the access level, the model
        and the data allow, and records why the others were skipped.
    attack_params : dict of attack name -> dict, default=None
        Override the parameters of named attacks (e.g. ``{"GMI": {"gan_steps": 300}}``).
    eval_model : keras.Model, default=None
        Image: the evaluation classifier (logits over the model's classes). None
        trains :func:`kmi.models.evaluation_classifier` on the private images.
    sensitive_feature : int or str
        Tabular: the attacked column.
    nodes : array of int, default=None
        Graph: the attacked nodes; None attacks every node of a graph of up to 100
        nodes, else draws 10 % of them (at least 100, at most 300).
    tokenizer, prompts
        Text: the model's tokenizer and the known prefixes of the secrets.
    references : list of str, default=None
        Text (language model): other fills of the secrets' templates, drawn from the
        same randomness space (``make_canaries(...).references``); each secret's
        exposure (Carlini et al. 2019) is measured against those sharing its prompt
        and reported as a row, in bits (scaled to ``2 ** (log2 of the number of
        references + 1)``: the references are taken as the whole space).
    name : str, default="model"
        Names the model in the report's rows (for one model).
    report : Report, default=None
        Append to this report (to audit several models into one); None starts one.
    random_state : int, default=0
    verbose : int, default=1
        1 prints a line per attack and each attack's progress bar.
    checkpoint : path, default=None
        JSON-lines journal: each attack's result is written as it finishes and not
        run again by a later call given the same file.
    shared_prior : dict, default=None
        Image: a dict in which the first GAN prior and the evaluation classifier
        trained are kept and reused by later attacks and audits given the same dict.
    pixel_range : (low, high), default=None
        Image: the range of pixel values the model takes. None reads it from the
        private and public images (:func:`kmi.attacks.image.pixel_range_of`). The
        attacks search images in [0, 1]: the audit maps the data there and gives
        them the model behind a ``Rescaling`` back to this range
        (:func:`kmi.attacks.image.in_unit_range`), so a model trained on 0..255 or
        0..16 images is attacked as well as one trained on [0, 1]; the report's
        images and PSNR are in [0, 1]. Before any attack, the model's accuracy on
        the private images is checked: near chance, the data and the model disagree
        (a pixel range of 0..255 against a model of [0, 1], say) and the audit stops
        with an error rather than report "no leakage".
    n_jobs : int, default=None
        How many attack runs go at once, through ``joblib.Parallel``
        (:mod:`kmi.audit._parallel`); each attack of each model is one run (a Target
        with a ``query_budget`` is one run for all its attacks, which share the
        budget). ``None`` audits in this process (several models: unless a joblib
        backend context says otherwise; one model fans out only for an ``n_jobs``
        above 1 or ``-1``); ``-1`` uses every core in local processes, each worker on
        its share of the cores; inside ``with joblib.parallel_backend("ray"):`` (or
        ``"dask"``) the runs go to that cluster. The report is the same whichever way
        they ran (rows, verdicts, figures; the timings differ): Keras models travel to
        the workers as ``.keras`` files, the journal is written here (a temporary one
        without ``checkpoint``) and the report is built here from it, and an image
        audit trains its evaluation classifier (here) and GAN prior (in a worker,
        meanwhile, where the joblib backend allows; else here) once, before the runs
        start (as the first model's audit would).

    Returns
    -------
    Report
        With rows, settings (sizes, seeds, attack parameters, timings), library
        versions, a plain-language summary and, for images, reconstruction grids.

    Raises
    ------
    ValueError
        For an unknown modality, or data of the wrong form or shape for the model.
    Examples
    --------
    A tabular audit of a decision tree whose training records hold the attacked
    column 0 (the sensitive attribute):

    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from kmi.audit import audit
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 2, size=(200, 4))
    >>> y = (X[:, 0] ^ X[:, 1]) | X[:, 2]
    >>> model = DecisionTreeClassifier(random_state=0).fit(X[:100], y[:100])
    >>> report = audit(model, modality="tabular", private_data=(X[:100], y[:100]),
    ...                public_data=(X[100:], y[100:]), sensitive_feature=0, verbose=0)
    >>> rows = {row["attack"]: row for row in report.rows}
    >>> len(rows)
    7
    >>> bool(rows["FredriksonMAP"]["accuracy"] > rows["ImputationBaseline"]["accuracy"])
    True
    >>> report.summary[0].startswith("model: the strongest attack, FredriksonMAP")
    True

    ``report.to_html("kmi-report.html")`` writes the report (also ``to_json``,
    ``to_markdown``).
    """
    if modality not in MODALITIES:
        raise ValueError(
            f"modality must be one of {', '.join(MODALITIES)}. Received: modality={modality!r}"
        )
    given = {
        "public_data": public_data,
        "eval_model": eval_model,
        "shared_prior": shared_prior,
        "pixel_range": pixel_range,
        "sensitive_feature": sensitive_feature,
        "nodes": nodes,
        "tokenizer": tokenizer,
        "prompts": prompts,
        "references": references,
    }
    module, function, options = MODALITIES[modality]
    for option, value in given.items():
        if value is not None and option not in options:
            users = [m for m, (_, _, opts) in MODALITIES.items() if option in opts]
            raise ValueError(
                f"{option} applies to a {' or '.join(users)} audit, not to modality="
                f"{modality!r}. Received: {option} of type {type(value).__name__}"
            )
    if report is None:
        report = Report(title=f"kmi privacy audit: {modality} model")
    report.settings.setdefault("modality", modality)
    report.settings.setdefault("random_state", random_state)
    several = _audited_models(model)
    if several is not None:
        return _audit_several(
            several,
            report,
            given,
            modality=modality,
            private_data=private_data,
            access=access,
            attacks=attacks,
            attack_params=attack_params,
            random_state=random_state,
            verbose=verbose,
            checkpoint=checkpoint,
            n_jobs=n_jobs,
        )
    if n_jobs is not None:
        import joblib

        if joblib.effective_n_jobs(n_jobs) != 1:  # its attacks at once
            return _audit_one_in_parallel(
                model,
                report,
                given,
                name=name,
                modality=modality,
                private_data=private_data,
                access=access,
                attacks=attacks,
                attack_params=attack_params,
                random_state=random_state,
                verbose=verbose,
                checkpoint=checkpoint,
                n_jobs=n_jobs,
            )
    target = _target(model, access)
    started = time.perf_counter()
    run = getattr(importlib.import_module(module), function)
    run(
        report,
        target,
        private_data,
        **{option: given[option] for option in options},
        attacks=attacks,
        attack_params=attack_params,
        name=name,
        random_state=random_state,
        verbose=verbose,
        checkpoint=checkpoint,
    )
    report.settings[f"{name}: audit wall time (s)"] = round(time.perf_counter() - started, 1)
    return report


def _units(units, report, given, *, modality, checkpoint, n_jobs, **common):
    """``(name, report part)`` of each ``(name, model)`` of ``units``
    (:func:`kmi.audit._parallel.run_units`); image audits share one evaluation
    classifier and one GAN prior."""
    from kmi.audit._parallel import run_units

    if modality == "image" and given["shared_prior"] is None:
        given = {**given, "shared_prior": {}}
    return run_units(
        units,
        modality=modality,
        options={k: v for k, v in given.items() if v is not None},
        common={"modality": modality, **common},
        checkpoint=checkpoint,
        title=report.title,
        n_jobs=n_jobs,
    )


def _audit_one_in_parallel(model, report, given, *, name, **kwargs) -> Report:
    """One model's attacks at once."""
    from kmi.audit._parallel import merge_report

    for _, part in _units([(name, model)], report, given, **kwargs):
        merge_report(report, part)
    return report


def _audit_several(models, report, given, *, modality, checkpoint, n_jobs, **common) -> Report:
    """Audit each of ``models`` into ``report``, then add the sweep's table and plot."""
    from kmi.audit._parallel import merge_report
    from kmi.audit.verdict import add_sweep

    if not models:
        raise ValueError("audit needs at least one model. Received: an empty list of models")
    labels = [m.label for m in models]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            "Each audited model needs its own name (give AuditedModel a name or a "
            f"strength). Received: {', '.join(map(repr, repeated))} more than once"
        )
    by_label = {m.label: m for m in models}
    parts = _units(
        [(m.label, m.model) for m in models],
        report,
        given,
        modality=modality,
        checkpoint=checkpoint,
        n_jobs=n_jobs,
        **common,
    )
    for label, part in parts:
        m = by_label[label]
        for verdict in part.verdicts:
            verdict.update(defense=m.defense, strength=m.strength, utility=m.utility)
        merge_report(report, part)
    add_sweep(report)
    return report
