"""Audits of several models fanned out through joblib: local processes, and Ray."""

import importlib.util
import json

import keras
import numpy as np
import pytest

from kmi.audit import IMAGE_ATTACKS, AuditedModel, audit
from kmi.audit._checkpoint import only_attacks
from kmi.audit._parallel import (
    KerasBytes,
    PackedTarget,
    pack,
    parallel_map,
    unit_attacks,
    unpack,
)
from kmi.audit.cli import main
from kmi.datasets import load_digits
from kmi.models import softmax_regression
from kmi.targets import Target

TINY = {
    "MIFace": {"max_iter": 30, "learning_rate": 0.5, "optimizer": "sgd", "tv_weight": 0.0},
    "GMI": {"gan_steps": 10, "latent_dim": 8, "gan_width": 8, "max_iter": 5, "n_restarts": 1},
}
ATTACKS = [s for s in IMAGE_ATTACKS if s[0] in ("PublicMeanBaseline", "MIFace", "GMI")]
#: Row fields measured in seconds: the only ones that differ between two runs.
TIMINGS = ("fit_s", "invert_s")


@pytest.fixture(scope="module")
def sweep():
    """Three digit classifiers (a model and two noisier copies), a Target among them."""
    X, y = load_digits(return_X_y=True)
    keras.utils.set_random_seed(0)
    model = softmax_regression((8, 8, 1), 10)
    model.compile(keras.optimizers.Adam(3e-2), "sparse_categorical_crossentropy")
    model.fit(X[:600], y[:600], epochs=10, batch_size=60, verbose=0)
    models = [AuditedModel(model, utility=1.0)]
    for scale in (0.05, 0.5):
        noisy = keras.models.clone_model(model)
        rng = np.random.default_rng(0)
        noisy.set_weights([w + scale * rng.normal(size=w.shape) for w in model.get_weights()])
        wrapped = Target(noisy, query_budget=10**6) if scale == 0.5 else noisy
        models.append(AuditedModel(wrapped, defense="noise", strength=scale))
    data = dict(private_data=(X[:600], y[:600]), public_data=X[600:1000])
    return models, data


def _audit(sweep, **kwargs):
    models, data = sweep
    kwargs.setdefault("verbose", 0)
    return audit(models, modality="image", **data, attacks=ATTACKS, attack_params=TINY, **kwargs)


def _without_timings(rows):
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def _same_report(a, b):
    assert _without_timings(a.rows) == _without_timings(b.rows)
    assert a.verdicts == b.verdicts and a.summary == b.summary and a.plots == b.plots
    assert [f["title"] for f in a.figures] == [f["title"] for f in b.figures]
    for fa, fb in zip(a.figures, b.figures):
        np.testing.assert_array_equal(np.asarray(fa["images"]), np.asarray(fb["images"]))
    timed = [k for k in a.settings if "time" in k]
    assert {k: v for k, v in a.settings.items() if k not in timed} == {
        k: v for k, v in b.settings.items() if k not in timed
    }


def test_local_processes_give_the_sequential_report_and_one_journal(sweep, tmp_path):
    sequential = _audit(sweep)
    journal = tmp_path / "audit.jsonl"
    parallel = _audit(sweep, n_jobs=2, checkpoint=journal)
    _same_report(sequential, parallel)
    assert len(parallel.rows) == 9 and len(parallel.verdicts) == 3
    # the driver wrote each finished attack once, the workers' ones included
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    keys = [(r["target"], r["attack"]) for r in lines]
    assert len(keys) == len(set(keys)) == 9
    # a resumed run reads every attack back from the journal, none runs again
    resumed = _audit(sweep, n_jobs=2, checkpoint=journal)
    assert resumed.rows == parallel.rows  # timings included: they were read back
    assert len(journal.read_text().splitlines()) == 9


def test_each_attack_of_each_model_is_one_run_and_a_resume_sends_only_the_missing(
    sweep, tmp_path, capsys
):
    journal = tmp_path / "audit.jsonl"
    first = _audit(sweep, n_jobs=2, checkpoint=journal, verbose=1)
    # MIFace and GMI of two models, and the Target with a query budget as one run (its
    # attacks share the budget); a model's baselines run in its first unit, journaled once
    assert "3 models in parallel: 5 attack runs" in capsys.readouterr().out
    assert unit_attacks("image", ATTACKS) == ["MIFace", "GMI"]
    lines = journal.read_text().splitlines()
    assert len(lines) == 9
    lost = [line for line in lines if '"attack": "GMI"' in line and '"no defense"' in line]
    assert len(lost) == 1
    journal.write_text("".join(line + "\n" for line in lines if line not in lost))
    again = _audit(sweep, n_jobs=2, checkpoint=journal, verbose=1)
    assert "3 models in parallel: 1 attack runs" in capsys.readouterr().out
    _same_report(first, again)
    assert len(journal.read_text().splitlines()) == 9


def test_one_models_attacks_fan_out_to_the_sequential_report(sweep, capsys):
    models, data = sweep
    kwargs = dict(modality="image", **data, attacks=ATTACKS, attack_params=TINY)
    alone = audit(models[0].model, verbose=0, **kwargs)
    fanned = audit(models[0].model, n_jobs=2, verbose=1, **kwargs)
    assert "1 model in parallel: 2 attack runs" in capsys.readouterr().out
    _same_report(alone, fanned)


def test_only_attacks_runs_one_attack_and_the_baselines_where_asked(sweep):
    models, data = sweep

    def attacks_run(names, **kwargs):
        with only_attacks(names, **kwargs):
            report = audit(
                models[0].model,
                modality="image",
                **data,
                attacks=ATTACKS,
                attack_params=TINY,
                verbose=0,
            )
        return [row["attack"] for row in report.rows]

    assert attacks_run(["MIFace"]) == ["PublicMeanBaseline", "MIFace"]
    assert attacks_run(["GMI"], baselines=False) == ["GMI"]  # a model's later units


def test_parallel_map_trains_a_sweeps_models_in_workers_as_here():
    """The demo sweep's training fan-out: models come back as .keras files, equal to
    those trained here from the same seeds."""
    from kmi.audit.demo import _train_mnist_target

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(64, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 10, size=64)
    calls = [
        (("no defense", X, y), dict(epochs=1, dp_epsilon=None, mid_beta=0.01, seed=0)),
        (("MID", X, y), dict(epochs=1, dp_epsilon=None, mid_beta=0.1, seed=1)),
    ]
    here = parallel_map(_train_mnist_target, calls)
    there = parallel_map(_train_mnist_target, calls, n_jobs=2)
    for (a, info_a), (b, info_b) in zip(here, there):
        assert info_a == info_b and a.name == b.name
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def _grid_search(model, X, n_jobs):
    from sklearn.model_selection import GridSearchCV

    from kmi.attacks import InversionModel

    attack = InversionModel(model, hidden_units=(8,), random_state=0)
    return GridSearchCV(attack, {"epochs": [1, 2]}, cv=2, n_jobs=n_jobs).fit(X)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_the_ray_backend_gives_the_sequential_report_and_grid_search(sweep):
    import joblib
    import ray
    from ray.util.joblib import register_ray

    models, data = sweep
    X = data["public_data"][:40]
    register_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with joblib.parallel_backend("ray"):
            on_ray = _audit(sweep, n_jobs=2)
            search = _grid_search(models[0].model, X, n_jobs=2)
    finally:
        ray.shutdown()
    _same_report(_audit(sweep), on_ray)
    # an attack's grid search on the Ray cluster scores its candidates as one process
    # does, and the refitted best attack holds the caller's model, not a copy
    here = _grid_search(models[0].model, X, n_jobs=1)
    np.testing.assert_array_equal(
        search.cv_results_["mean_test_score"], here.cv_results_["mean_test_score"]
    )
    assert search.best_estimator_.target is models[0].model


def test_models_travel_as_keras_files_and_targets_keep_their_settings(sweep):
    models, _ = sweep
    model = models[0].model
    packed = pack({"a": model, "b": [1, 2], "t": Target(model, access="black-box", top_k=2)})
    assert isinstance(packed["a"], KerasBytes) and packed["a"].data[:2] == b"PK"  # a zip
    assert isinstance(packed["t"], PackedTarget) and packed["b"] == [1, 2]
    back = unpack(packed)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(back["a"].predict(x, verbose=0), model.predict(x, verbose=0))
    assert back["t"].access == "black-box" and back["t"].top_k == 2
    np.testing.assert_array_equal(back["t"].classes_, np.arange(10))


def test_a_worker_loads_each_model_once_and_keeps_a_bounded_number(sweep, monkeypatch):
    from collections import OrderedDict

    import kmi.audit._parallel as parallel

    models, _ = sweep
    first, second = (pack(m.model) for m in models[:2])
    cache = OrderedDict()
    target = pack(Target(models[0].model))
    target.model = first  # the bytes sent with every unit of this model
    a = unpack({"model": first, "t": target}, cache)
    again = unpack(first, cache)
    assert again is a["model"] and a["t"].model is again  # one load for the same bytes
    assert unpack(second, cache) is not again and len(cache) == 2
    assert unpack(first) is not again  # no cache: a new copy, as in the driver
    monkeypatch.setattr(parallel, "_CACHE_SIZE", 1)
    unpack(pack(models[2].model), cache)  # a new one: the older ones dropped
    assert len(cache) == 1 and unpack(first, cache) is not again  # loaded anew
    assert list(cache.values()) == [unpack(first, cache)]  # the newest kept


def test_cli_n_jobs_fans_out_a_model_files_audit_not_the_adult_demo(tmp_path, capsys):
    code = main(["audit", "--demo", "adult", "--n-jobs", "2", "--output", str(tmp_path / "r")])
    assert code == 2
    assert "--n-jobs applies to the mnist demo and to --model" in capsys.readouterr().err
    # a tabular model file: the same rows one after another and with 2 processes
    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(60, 4)).astype("float32")
    y = (X[:, 0] + X[:, 1] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "model.keras")
    np.savez(
        tmp_path / "data.npz", x_private=X[:30], y_private=y[:30], x_public=X[30:], y_public=y[30:]
    )
    args = [
        "audit",
        "--model",
        str(tmp_path / "model.keras"),
        "--data",
        str(tmp_path / "data.npz"),
        "--modality",
        "tabular",
        "--sensitive-feature",
        "0",
        "-q",
    ]
    rows = []
    for extra in ([], ["--n-jobs", "2"]):
        out = tmp_path / f"rep{len(extra)}"
        assert main([*args, *extra, "--output", str(out)]) == 0
        report = json.loads(out.with_name(out.name + ".json").read_text())
        rows.append(_without_timings(report["rows"]))
    assert rows[0] == rows[1] and len(rows[0]) > 3
