"""``kmi.audit.audit``: one call from a trained model to a measured report."""

from __future__ import annotations

import time

import numpy as np

from kmi.audit.report import Report
from kmi.targets import Target

MODALITIES = ("image", "tabular", "graph", "text")


def _pair(data, name, modality, what):
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
    name: str = "model",
    report: Report | None = None,
    random_state: int = 0,
    verbose: int = 1,
    checkpoint=None,
    shared_prior: dict | None = None,
) -> Report:
    """Run the attacks that apply to a model and measure what each recovers.

    Parameters
    ----------
    model : keras.Model, scikit-learn estimator, callable or Target
        The audited model. A :class:`~kmi.targets.Target` is used as given (its
        access level and output); anything else is wrapped with ``access``.
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
    name : str, default="model"
        Names the model in the report's rows.
    report : Report, default=None
        Append to this report (to audit several models into one); None starts one.
    random_state : int, default=0
    verbose : int, default=1
        1 prints a line per attack and each attack's progress bar.
    checkpoint : path, default=None
        JSON-lines journal: each attack's result is written as it finishes and not
        run again by a later call given the same file.
    shared_prior : dict, default=None
        Image: a dict in which the first GAN prior trained is kept and reused by
        later GAN attacks and audits given the same dict.

    Returns
    -------
    Report
        With rows, settings (sizes, seeds, attack parameters, timings), library
        versions, a plain-language summary and, for images, reconstruction grids.

    Raises
    ------
    ValueError
        For an unknown modality, or data of the wrong form or shape for the model.
    """
    if modality not in MODALITIES:
        raise ValueError(
            f"modality must be one of {', '.join(MODALITIES)}. Received: modality={modality!r}"
        )
    if report is None:
        report = Report(title=f"kmi privacy audit: {modality} model")
    report.settings.setdefault("modality", modality)
    report.settings.setdefault("random_state", random_state)
    target = _target(model, access)
    started = time.perf_counter()
    if modality == "image":
        _audit_image(
            report,
            target,
            private_data,
            public_data,
            attacks,
            attack_params,
            eval_model,
            name,
            random_state,
            verbose,
            checkpoint,
            shared_prior,
        )
    elif modality == "tabular":
        _audit_tabular(
            report,
            target,
            private_data,
            public_data,
            attacks,
            sensitive_feature,
            name,
            random_state,
            verbose,
            checkpoint,
        )
    elif modality == "graph":
        from kmi.audit.graph import audit_graph

        audit_graph(
            report,
            target,
            private_data,
            attacks=attacks,
            attack_params=attack_params,
            nodes=nodes,
            name=name,
            random_state=random_state,
            verbose=verbose,
            checkpoint=checkpoint,
        )
    else:
        from kmi.audit.text import audit_text

        audit_text(
            report,
            target,
            private_data,
            tokenizer=tokenizer,
            prompts=prompts,
            attacks=attacks,
            attack_params=attack_params,
            name=name,
            random_state=random_state,
            verbose=verbose,
            checkpoint=checkpoint,
        )
    report.settings[f"{name}: audit wall time (s)"] = round(time.perf_counter() - started, 1)
    return report


def check_image_data(target, X, y=None, name="private_data"):
    """Images of the model's input shape, finite; labels among its classes."""
    from kmi.utils.validation import check_images

    expected = getattr(target.model, "input_shape", None)
    if isinstance(expected, list):
        expected = expected[0]
    X = check_images(X, None if expected is None else tuple(expected[1:]), name=name)
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(
                f"{name} needs one label per image. Received: {len(X)} images and labels of "
                f"shape {y.shape}"
            )
        target.label_index(y)  # raises for labels outside the model's classes
    return X, y


def _audit_image(
    report,
    target,
    private_data,
    public_data,
    attacks,
    attack_params,
    eval_model,
    name,
    random_state,
    verbose,
    checkpoint,
    shared_prior,
):
    from kmi.audit.image import (
        IMAGE_ATTACKS,
        add_real_examples,
        add_reconstructions,
        run_image_attacks,
        summarize_image,
        train_evaluation_model,
    )
    from kmi.models import feature_extractor

    X, y = _pair(private_data, "private_data", "image", "(images, labels)")
    X, y = check_image_data(target, X, y)
    X_public = public_data[0] if isinstance(public_data, (tuple, list)) else public_data
    if X_public is not None:
        X_public, _ = check_image_data(target, X_public, name="public_data")
    columns = target.label_index(y)
    n_classes = int(np.max(columns)) + 1
    if eval_model is None:
        if verbose:
            print("Training the evaluation classifier on the private images...", flush=True)
        shape = getattr(target.model, "output_shape", None)  # no query spent on this
        if isinstance(shape, tuple) and shape and isinstance(shape[-1], int):
            n_classes = max(n_classes, shape[-1])
        eval_model, eval_acc = train_evaluation_model(
            X, columns, n_classes, random_state=random_state
        )
        report.settings["evaluation classifier held-out accuracy"] = round(eval_acc, 3)
    try:
        features = feature_extractor(eval_model)
    except ValueError:
        features = None
    rows, skipped = run_image_attacks(
        target,
        X_private=X,
        y_private=y,
        X_public=X_public,
        eval_model=eval_model,
        feature_model=features,
        attacks=attacks,
        attack_params=attack_params,
        shared_prior=shared_prior,
        random_state=random_state,
        verbose=verbose,
        target_name=name,
        checkpoint=checkpoint,
    )
    report.settings.setdefault("private images", f"{len(X)} of shape {X.shape[1:]}")
    report.settings.setdefault(
        "public images (attacker's)", 0 if X_public is None else len(X_public)
    )
    report.settings[f"{name}: access"] = target.access
    if skipped:
        report.settings[f"{name}: skipped attacks"] = "; ".join(
            f"{k}: {v}" for k, v in skipped.items()
        )
    specs = IMAGE_ATTACKS if attacks == "auto" else attacks
    report.settings.setdefault(
        "attack parameters",
        "; ".join(
            f"{n} { ({**p, **(attack_params or {}).get(n, {})}) }"
            for n, _, p in specs
            if n not in skipped and p
        ),
    )
    if not any(f["title"].startswith("Real private") for f in report.figures):
        add_real_examples(report, X, y)
    add_reconstructions(report, rows)
    report.rows += [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    report.summary += summarize_image(rows)


def _audit_tabular(
    report,
    target,
    private_data,
    public_data,
    attacks,
    sensitive_feature,
    name,
    random_state,
    verbose,
    checkpoint,
):
    from kmi.audit.tabular import run_tabular_attacks, summarize_tabular

    if sensitive_feature is None:
        raise ValueError(
            "A tabular audit needs the attacked column: pass sensitive_feature=<name or "
            "index>. Received: sensitive_feature=None"
        )
    X, y = _pair(private_data, "private_data", "tabular", "(X, y)")
    if public_data is None:
        raise ValueError(
            "A tabular audit needs the attacker's auxiliary records: pass "
            "public_data=(X_aux, y_aux). Received: public_data=None"
        )
    X_aux, y_aux = _pair(public_data, "public_data", "tabular", "(X_aux, y_aux)")
    rows = run_tabular_attacks(
        target,
        X_aux=X_aux,
        y_aux=y_aux,
        X_private=X,
        y_private=y,
        sensitive_feature=sensitive_feature,
        attacks=attacks,
        random_state=random_state,
        verbose=verbose,
        target_name=name,
        checkpoint=checkpoint,
    )
    report.settings.setdefault("private records", len(y))
    report.settings.setdefault("auxiliary records (attacker's)", len(y_aux))
    report.rows += rows
    report.summary += summarize_tabular(rows)
