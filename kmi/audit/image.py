"""Audit of an image classifier: every applicable reconstruction attack, measured.

Each attack reconstructs one image per class of the private data (its
representative, what the class "looks like"). An independent evaluation
classifier, trained on the private images by the auditor, reads every
reconstruction: its top-1 / top-5 accuracy is the attack's success (Zhang et al.
2020), next to the distance to the nearest private image of the class in the
evaluation model's feature space. A baseline that never queries the model (the
mean public image, or grey without public data) shows what guessing gets.
The learned inversion model is also measured on instances: images rebuilt from
the model's answers on private images.
"""

from __future__ import annotations

import time

import numpy as np

from kmi.attacks import image as img
from kmi.attacks.image._pixels import (
    UNIT,
    check_pixel_range,
    in_unit_range,
    pixel_range_of,
    to_unit,
    unit_input,
)
from kmi.audit._checkpoint import append_checkpoint, read_checkpoint, selected
from kmi.audit.api import pair
from kmi.audit.verdict import best_attack, image_verdicts
from kmi.metrics.image import attack_accuracy, image_attack_metrics, knn_distance, psnr, ssim
from kmi.targets import AccessError, as_target
from kmi.utils.validation import check_images, check_labels

BASELINE = "PublicMeanBaseline"

#: The attacks run by ``attacks="auto"``, the baseline first: (name, class, parameters).
#: The parameters are a short budget that suits small images on a CPU; override them
#: with ``attack_params={"GMI": {...}}``.
IMAGE_ATTACKS = (
    (BASELINE, None, {}),
    (
        "MIFace",
        img.MIFace,
        {"max_iter": 500, "learning_rate": 0.1, "optimizer": "adam", "tv_weight": 0.05},
    ),
    ("DeepInversion", img.DeepInversion, {"max_iter": 500}),
    ("InversionModel", img.InversionModel, {"epochs": 50}),
    (
        "GMI",
        img.GMI,
        {
            "gan_steps": 1000,
            "gan_width": 16,
            "gan_learning_rate": 2e-4,
            "latent_dim": 32,
            "max_iter": 300,
            "n_restarts": 3,
        },
    ),
    (
        "BREPMI",
        img.BREPMI,
        {
            "gan_steps": 1000,
            "gan_width": 16,
            "gan_learning_rate": 2e-4,
            "latent_dim": 32,
            "max_iter": 100,
        },
    ),
)


def train_evaluation_model(images, labels, n_classes, *, epochs=10, random_state=0, verbose=0):
    """Train :func:`kmi.models.evaluation_classifier` on the private images.

    10 % of the images are held out to report its accuracy, which bounds how far
    its verdicts can be trusted.

    Returns
    -------
    (keras.Model, float)
        The evaluation model (logits) and its held-out accuracy.
    """
    import keras

    from kmi.models import evaluation_classifier

    keras.utils.set_random_seed(int(random_state))
    order = np.random.default_rng(random_state).permutation(len(images))
    n_val = max(1, len(images) // 10)
    val, train = order[:n_val], order[n_val:]
    width = 16 if images.shape[1] * images.shape[2] <= 64 * 64 else 32
    model = evaluation_classifier(
        images.shape[1:], n_classes, width=width, augment=False, seed=int(random_state)
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        images[train],
        labels[train],
        epochs=int(epochs),
        batch_size=64,
        verbose=2 if verbose else 0,
    )
    accuracy = attack_accuracy(model, images[val], labels[val], top_k=1)
    return model, float(accuracy)


def _has_batchnorm(model) -> bool:
    import keras

    return any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in getattr(model, "_flatten_layers", lambda: [])()
    )


def _skip_reason(cls, params, target, X_public, shape) -> str | None:
    """Why an attack cannot run here, read from its capability attributes, or None."""
    if cls.needs_public_data and X_public is None and not params.get("generator"):
        return "needs public images (public_data)"
    if cls.needs_batchnorm and not _has_batchnorm(target.model):
        return "the model has no BatchNormalization statistics to match"
    if cls.uses_gan_prior and not params.get("generator"):
        side_ok = shape[0] == shape[1] and shape[0] in (8, 16, 32, 64, 128)
        if not side_ok:
            return (
                f"the GAN prior needs square images of side 8, 16, 32, 64 or 128 "
                f"(these are {shape[0]}x{shape[1]}; pad or resize them)"
            )
    return None


def _round_images(images) -> list:
    return np.round(np.asarray(images, dtype="float32"), 3).tolist()


def run_image_attacks(
    target,
    *,
    X_private,
    y_private,
    X_public=None,
    eval_model,
    feature_model=None,
    attacks="auto",
    attack_params=None,
    n_instances: int = 200,
    shared_prior: dict | None = None,
    random_state=0,
    verbose=1,
    target_name="target",
    checkpoint=None,
):
    """Run the image attacks on one target and measure each against the private images.

    Parameters
    ----------
    target : Target or keras.Model
    X_private, y_private : the private (training) images and their labels.
    X_public : array, default=None
        Images the attacker has (unlabelled): GAN priors, the inversion model's
        training set, and the baseline's mean image.
    eval_model : keras.Model
        The evaluation classifier, over the target's class columns.
    feature_model : keras.Model, default=None
        Feature space of the KNN distance (e.g.
        :func:`kmi.models.feature_extractor` of ``eval_model``).
    attacks : "auto" or list of (name, class, parameters), default="auto"
        "auto" runs :data:`IMAGE_ATTACKS` where the access level, the model and the
        data allow, and says why the others are skipped; a list runs those, and a
        refusal is an error.
    attack_params : dict of name -> dict, default=None
        Parameters that override those of the named attack.
    n_instances : int, default=200
        Private images whose answers the inversion model rebuilds.
    shared_prior : dict, default=None
        Holds ``"generator"`` and ``"critic"`` once a GAN prior is trained, so that
        the other GAN attacks (and later audits given the same dict) reuse it.
    random_state, verbose, target_name, checkpoint
        As in :func:`kmi.audit.run_tabular_attacks`.

    Returns
    -------
    (rows, skipped)
        One row per attack, with ``_images`` (the reconstructions, by class) for
        the report's figures; and a dict of skipped attack -> reason.
    """
    target = as_target(target)
    X_private = np.asarray(X_private, dtype="float32")
    X_public = None if X_public is None else np.asarray(X_public, dtype="float32")
    columns = target.label_index(np.asarray(y_private))
    classes = np.unique(np.asarray(y_private))
    labels_idx = target.label_index(classes)
    specs = IMAGE_ATTACKS if attacks == "auto" else attacks
    overrides = dict(attack_params or {})
    prior = shared_prior if shared_prior is not None else {}
    done = read_checkpoint(checkpoint)
    rows, skipped = [], {}
    shape = X_private.shape[1:]
    for name, cls, params in selected(specs):
        params = {**params, **overrides.get(name, {})}
        key = (str(target_name), "reconstruct classes", name, "members")
        if key in done:
            rows.append(done[key])
            if verbose:
                print(f"  {name:<20} (resumed from {checkpoint})", flush=True)
            continue
        if cls is not None:
            reason = _skip_reason(cls, params, target, X_public, shape)
            if reason is None and not target.allows(cls.required_access):
                reason = f"needs {cls.required_access} access; the target gives {target.access}"
            if reason is not None:
                if attacks != "auto":
                    raise ValueError(f"{name} cannot run: {reason}.")
                skipped[name] = reason
                if verbose:
                    print(f"  skip {name}: {reason}", flush=True)
                continue
        q0 = target.n_queries_
        t0 = time.perf_counter()
        instance = {}
        if cls is None:  # the baseline: no model, no query
            mean = X_public.mean(axis=0) if X_public is not None else np.full(shape, 0.5)
            fit_s = 0.0
            images = np.broadcast_to(mean, (len(classes), *shape)).astype("float32")
            access = "none"
        else:
            kwargs = dict(params)
            if cls.uses_gan_prior and "generator" not in kwargs and "generator" in prior:
                kwargs.update(generator=prior["generator"], critic=prior.get("critic"))
            names = cls().get_params()
            if "pixel_range" in names:  # the audit has mapped the data to [0, 1]
                kwargs.setdefault("pixel_range", (0.0, 1.0))
            if "random_state" in names:
                kwargs.setdefault("random_state", random_state)
            if "verbose" in names:
                kwargs.setdefault("verbose", verbose)
            attack = cls(target, **kwargs)
            try:
                attack.fit(X_public)
            except AccessError:
                if attacks != "auto":
                    raise
                skipped[name] = f"needs {cls.required_access} access"
                continue
            if cls.uses_gan_prior and "generator" not in prior and hasattr(attack, "generator_"):
                prior.update(generator=attack.generator_, critic=getattr(attack, "critic_", None))
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            images = np.asarray(attack.invert(classes), dtype="float32")
            access = cls.required_access
            if cls.level == "instance" and n_instances:  # rebuilds images from answers
                k = min(int(n_instances), len(X_private))
                rebuilt = attack.invert(target.query(X_private[:k]))
                instance = {
                    "instance_top_1": attack_accuracy(eval_model, rebuilt, columns[:k], top_k=1),
                    "instance_psnr": psnr(rebuilt, X_private[:k]),
                    "instance_ssim": ssim(rebuilt, X_private[:k]),
                }
        invert_s = time.perf_counter() - t0
        if not np.isfinite(images).all():  # an interrupted attack: record nothing
            raise KeyboardInterrupt(f"{name} was interrupted")
        metrics = image_attack_metrics(
            images,
            labels_idx,
            eval_model=eval_model,
            private_images=X_private,
            private_labels=columns,
            feature_model=feature_model,
            top_k=(1, min(5, eval_model.output_shape[-1])),
        )
        row = {
            "target": str(target_name),
            "task": "reconstruct classes",
            "split": "members",
            "attack": name,
            "access": access,
            "classes": len(classes),
            **{k: float(v) for k, v in metrics.items()},
            "nearest_mse": nearest_mse(images, X_private),
            **{k: float(v) for k, v in instance.items()},
            "fit_s": round(fit_s, 3),
            "invert_s": round(invert_s, 3),
            "queries": int(target.n_queries_ - q0),
            "_images": _round_images(images),
            "_labels": [str(c) for c in classes],
        }
        rows.append(row)
        append_checkpoint(checkpoint, [row])
        if verbose:
            extra = (
                f"  instances top-1 {row['instance_top_1']:.3f}, "
                f"PSNR {row['instance_psnr']:.1f} dB"
                if instance
                else ""
            )
            print(
                f"  {name:<20} top-1 {row.get('top_1', float('nan')):.3f}  "
                f"top-5 {row.get('top_5', float('nan')):.3f}  "
                f"KNN dist {row.get('knn_distance', float('nan')):.2f}{extra}  "
                f"{fit_s + invert_s:6.1f} s  {row['queries']} queries",
                flush=True,
            )
    flag_adversarial(rows)
    return rows, skipped


def nearest_mse(images, private_images) -> float:
    """Mean, over the images, of the pixel MSE to the nearest private image of any class.

    How far the images are from every real one, in the [0, 1] pixel space the
    attacks work in (the evaluation classifier, which they may fool, plays no part).
    """
    images = np.asarray(images, dtype="float32")
    zeros = np.zeros(len(images), dtype=int)
    squared = knn_distance(images, zeros, private_images, np.zeros(len(private_images), int))
    return float(squared / np.prod(images.shape[1:]))


def flag_adversarial(rows) -> None:
    """Mark the rows whose images fool the evaluator but resemble no private image.

    A row is ``adversarial`` when its top-1 beats the baseline's while its images
    are farther from every private image (``nearest_mse``) than the baseline's mean
    public image is: patterns that the evaluation classifier reads as the class,
    not reconstructions of it. Such rows do not count towards the verdict.
    """
    base = next((r for r in rows if r["attack"] == BASELINE), None)
    for row in rows:
        if row["attack"] == BASELINE or base is None or "nearest_mse" not in row:
            continue
        row["adversarial"] = bool(
            row.get("top_1", 0.0) > base.get("top_1", 0.0)
            and row["nearest_mse"] > base.get("nearest_mse", np.inf)
        )


def add_real_examples(report, X_private, y_private) -> None:
    """Add to ``report`` a grid of one real private image per class."""
    y_private = np.asarray(y_private)
    classes = np.unique(y_private)
    real = [X_private[np.flatnonzero(y_private == c)[0]] for c in classes]
    report.add_figure(
        "Real private examples (one per class)",
        real,
        [str(c) for c in classes],
        note="What the attacks try to recover: a training image of each class.",
    )


def add_reconstructions(report, rows) -> None:
    """Add to ``report`` one grid of reconstructions per (target, attack) row."""
    for row in rows:
        if "_images" not in row:
            continue
        images = np.asarray(row["_images"], dtype="float32")
        note = (
            f"Evaluation model top-1 {row.get('top_1', float('nan')):.2f} "
            f"(chance {1 / max(len(images), 1):.2f})."
        )
        report.add_figure(
            f"{row['target']}: {row['attack']}",
            list(images),
            [f"class {c}" for c in row.get("_labels", [])],
            note=note,
        )


def summarize_image(rows) -> list[str]:
    """Plain-language findings: per target, the best attack against the baseline."""
    lines = []
    for target in dict.fromkeys(r["target"] for r in rows):
        group = [r for r in rows if r["target"] == target]
        base = next((r for r in group if r["attack"] == BASELINE), None)
        best, fooling = best_attack(group, BASELINE)
        caveats = [
            (
                f"{target}: {r['attack']}'s images are adversarial patterns, not "
                f"reconstructions: the evaluation classifier reads them as the right class "
                f"(top-1 {r['top_1']:.0%}), but they are farther from every private image "
                f"(pixel MSE {r['nearest_mse']:.3f}) than the mean public image is"
                + (f" ({base['nearest_mse']:.3f})" if base and "nearest_mse" in base else "")
                + ". They are not counted as leakage."
            )
            for r in fooling
        ]
        if best is None:
            lines += caveats
            continue
        n = best["classes"]
        line = (
            f"{target}: the strongest attack, {best['attack']} ({best['access']} access), "
            f"rebuilds images that an independent evaluation classifier recognises as the "
            f"right class for {round(best['top_1'] * n)} of {n} classes (top-1 "
            f"{best['top_1']:.0%}, chance {1 / n:.0%})"
        )
        if base is not None:
            line += f"; the baseline that never queries the model gets {base['top_1']:.0%}"
        inst = next((r for r in group if "instance_top_1" in r), None)
        if inst is not None:
            line += (
                f". From the model's answers on private images, {inst['attack']} "
                f"rebuilds images recognised as the right class {inst['instance_top_1']:.0%}"
                f" of the time (PSNR {inst['instance_psnr']:.1f} dB)"
            )
        lines.append(line + ".")
        lines += caveats
    return lines


def check_model_fits_data(target, X, y, pixel_range, *, n=500, random_state=0) -> float:
    """The model's accuracy on private images; a clear error where it is near chance.

    A model whose accuracy on its own training data is near chance was given data
    in another convention than it was trained on (a pixel range of 0..255 against
    a model of [0, 1], say), or learned nothing. Either way every attack would come
    out at chance and the audit would read "no leakage": a false negative. This is
    the auditor's own check: it goes to the model directly and spends no query of
    the attacker's budget.

    Returns
    -------
    float
        Accuracy on up to ``n`` private images.

    Raises
    ------
    ValueError
        When the accuracy is within max(0.1, 3 standard errors) of chance.
    """
    from kmi.targets import Target

    rng = np.random.default_rng(random_state)
    rows = rng.permutation(len(X))[: int(n)]
    own = Target(target.model, access="black-box", classes=target.classes_)
    predicted = own.predict(X[rows])
    accuracy = float(np.mean(np.asarray(predicted) == np.asarray(y)[rows]))
    n_classes = len(np.unique(y))
    chance = 1.0 / n_classes
    margin = max(0.1, 3.0 * np.sqrt(chance * (1 - chance) / len(rows)))
    if accuracy <= chance + margin:
        lo, hi = pixel_range
        raise ValueError(
            f"The model classifies its own private images at chance: accuracy "
            f"{accuracy:.2f} on {len(rows)} of them, chance {chance:.2f}. Every attack "
            "would then fail and the audit would wrongly report no leakage, so it stops "
            f"here. The pixel range taken is [{lo:g}, {hi:g}]: check that this is "
            "the pixel range the model was trained on (rescale the data, e.g. divide "
            "0..255 images by 255, or pass the images the model was trained with), and "
            "that the labels are the model's. Received: private_data values in "
            f"[{float(np.min(X)):g}, {float(np.max(X)):g}]"
        )
    return accuracy


def check_image_data(target, X, y=None, name="private_data"):
    """Images of the model's input shape, finite; labels among its classes.

    Private images need two classes at least: with one, every reconstruction is of
    "the right class" and chance is 100 %.
    """
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
        # raises for labels outside the model's classes
        check_labels(target.label_index(y), len(X), name=f"{name} labels", min_classes=2)
    return X, y


def audit_image(
    report,
    target,
    private_data,
    *,
    public_data=None,
    eval_model=None,
    shared_prior=None,
    pixel_range=None,
    attacks="auto",
    attack_params=None,
    name="model",
    random_state=0,
    verbose=1,
    checkpoint=None,
):
    """Run the image attacks on ``target`` and add their measured results to ``report``.

    The image part of :func:`kmi.audit.audit`, whose parameters these are.
    """
    from kmi.models import feature_extractor

    X, y = pair(private_data, "private_data", "image", "(images, labels)")
    X, y = check_image_data(target, X, y)
    X_public = public_data[0] if isinstance(public_data, (tuple, list)) else public_data
    if X_public is not None:
        X_public, _ = check_image_data(target, X_public, name="public_data")
    pixel_range = check_pixel_range(
        pixel_range_of(X, X_public) if pixel_range is None else pixel_range
    )
    report.settings.setdefault(
        "pixel range of the data", f"[{pixel_range[0]:g}, {pixel_range[1]:g}]"
    )
    accuracy = check_model_fits_data(target, X, y, pixel_range, random_state=random_state)
    report.settings[f"{name}: accuracy on the private images"] = round(accuracy, 3)
    if pixel_range != UNIT:  # the attacks work in [0, 1]: map the data there, the model back
        target = in_unit_range(target, pixel_range)
        X = to_unit(X, pixel_range)
        if X_public is not None:
            X_public = to_unit(X_public, pixel_range)
        if eval_model is not None:
            eval_model = unit_input(eval_model, pixel_range)
    columns = target.label_index(y)
    n_classes = int(np.max(columns)) + 1
    if eval_model is None and shared_prior is not None:
        eval_model = shared_prior.get("evaluation classifier")  # one per audit of several
        if "evaluation classifier accuracy" in shared_prior:
            report.settings.setdefault(
                "evaluation classifier held-out accuracy",
                shared_prior["evaluation classifier accuracy"],
            )
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
        if shared_prior is not None:
            shared_prior["evaluation classifier"] = eval_model
            shared_prior["evaluation classifier accuracy"] = round(eval_acc, 3)
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
    report.verdicts += image_verdicts(rows)
