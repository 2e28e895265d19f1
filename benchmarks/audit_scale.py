"""An audit sweep run sequentially, in local processes and on a local Ray cluster.

The sweep: a digit classifier (scikit-learn's 8x8 digits, 1,000 private images, 797
public) trained with label smoothing at 3 strengths (0, 0.1, 0.3), each with 3 seeds:
9 models, each attacked by 3 image attacks (MIFace, the learned inversion model, GMI
over one shared GAN prior) next to the no-query baseline. ``kmi.audit.audit`` runs it
three ways: one model after another (``n_jobs=None``), two local processes
(``n_jobs=2``, joblib's loky backend) and, when ``ray`` is installed, a local Ray
cluster of 2 CPUs (``joblib.parallel_backend("ray")``, ``n_jobs=2``). Each way gets the
wall time, the speed-up over sequential, and a check that the rows are the same
(timings aside). The evaluation classifier and the GAN prior are trained once, first,
in every way; in parallel the GAN prior is trained in a worker while the driver
trains the evaluation classifier. A unit is one attack of one model (27 here; a
model's baseline runs in its first unit); each worker runs on its share of the
cores (``kmi.backend.limit_threads``: one thread each with 2 workers on 2 cores)
and loads each model, and the shared prior, once.

From the measured times it also states, on paper, the expected wall time of a
1,000-unit sweep on a 64-core Ray cluster.

Run:  KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/audit_scale.py
Writes benchmarks/results/audit_scale.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

from kmi.audit import IMAGE_ATTACKS, AuditedModel, audit
from kmi.audit._parallel import KerasBytes
from kmi.datasets import load_digits
from kmi.models import cnn_classifier

RESULTS = Path(__file__).resolve().parent / "results"
ATTACKS = ("PublicMeanBaseline", "MIFace", "InversionModel", "GMI")
PARAMS = {
    "MIFace": {"max_iter": 300, "learning_rate": 0.1, "optimizer": "adam"},
    "InversionModel": {"epochs": 30},
    "GMI": {
        "gan_steps": 300,
        "gan_width": 16,
        "latent_dim": 16,
        "gan_learning_rate": 1e-3,
        "max_iter": 300,
        "n_restarts": 3,
    },
}


def train_sweep(X, y, strengths, seeds, epochs):
    """One CNN per (label-smoothing strength, seed), with its test accuracy."""
    models = []
    n_test = 200
    for strength in strengths:
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            model = cnn_classifier(
                (8, 8, 1), 10, filters=(16, 32), dense_units=64, batch_norm=False, seed=seed
            )
            model.compile(
                keras.optimizers.Adam(3e-3),
                keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=strength),
            )
            onehot = np.eye(10, dtype="float32")[y[n_test:]]
            model.fit(X[n_test:], onehot, epochs=epochs, batch_size=64, verbose=0)
            accuracy = float(np.mean(model.predict(X[:n_test], verbose=0).argmax(1) == y[:n_test]))
            models.append(
                AuditedModel(
                    model,
                    defense="label smoothing",
                    strength=f"{strength} (seed {seed})",
                    utility=accuracy,
                )
            )
    return models


def _rows(report):
    return [{k: v for k, v in r.items() if k not in ("fit_s", "invert_s")} for r in report.rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--budget", type=float, default=1.0, help="scales the attacks' steps and epochs"
    )
    args = parser.parse_args(argv)
    params = {
        name: {
            k: max(1, round(v * args.budget)) if k in ("max_iter", "epochs") else v
            for k, v in p.items()
        }
        for name, p in PARAMS.items()
    }

    X, y = load_digits(return_X_y=True)
    private, public = np.arange(0, 1000), np.arange(1000, len(X))
    t = time.perf_counter()
    models = train_sweep(X[private], y[private], (0.0, 0.1, 0.3), range(args.seeds), args.epochs)
    train_s = time.perf_counter() - t
    specs = [s for s in IMAGE_ATTACKS if s[0] in ATTACKS]
    common = dict(
        modality="image",
        private_data=(X[private][200:], y[private][200:]),
        public_data=X[public],
        attacks=specs,
        attack_params=params,
        verbose=0,
    )

    def timed(**kwargs):
        start = time.perf_counter()
        report = audit(models, **common, **kwargs)
        return report, time.perf_counter() - start

    ways = {}
    sequential, seconds = timed()
    ways["sequential"] = {"wall_s": seconds}
    local, seconds = timed(n_jobs=args.n_jobs)
    ways[f"local processes (n_jobs={args.n_jobs})"] = {
        "wall_s": seconds,
        "same_rows": _rows(local) == _rows(sequential),
    }
    if importlib.util.find_spec("ray") is not None:
        import joblib
        import ray
        from ray.util.joblib import register_ray

        register_ray()
        ray.init(num_cpus=args.n_jobs, include_dashboard=False, log_to_driver=False)
        try:
            with joblib.parallel_backend("ray"):
                on_ray, seconds = timed(n_jobs=args.n_jobs)
        finally:
            ray.shutdown()
        ways[f"Ray, {args.n_jobs} CPUs"] = {
            "wall_s": seconds,
            "same_rows": _rows(on_ray) == _rows(sequential),
        }
    base = ways["sequential"]["wall_s"]
    for way in ways.values():
        way["speedup"] = base / way["wall_s"]

    # the units' own times, from the sequential rows: one unit is one attack of one
    # model (fit + invert); the median over models, as the first model's GMI row also
    # holds the shared GAN prior's training
    by_attack = {}
    for row in sequential.rows:
        if row["attack"] != "PublicMeanBaseline":
            by_attack.setdefault(row["attack"], []).append(row["fit_s"] + row["invert_s"])
    unit_times = {a: float(np.median(t)) for a, t in by_attack.items()}
    unit_s = float(np.mean(list(unit_times.values())))
    n_runs = sum(len(t) for t in by_attack.values())
    model_mb = len(KerasBytes.of(models[0].model).data) / 2**20
    prior_s = base - n_runs * unit_s  # evaluation classifier, GAN prior, checks, reports
    n_units, cores = 1000, 64
    paper = {
        "units": n_units,
        "cores": cores,
        "unit_s_measured_by_attack": unit_times,
        "mean_unit_s_measured": unit_s,
        "shared_setup_s_measured": prior_s,
        "expected_wall_s": prior_s + math.ceil(n_units / cores) * unit_s,
        "sequential_s": prior_s + n_units * unit_s,
        "model_file_mb": model_mb,
    }
    result = {
        "backend": keras.backend.backend(),
        "device": f"cpu: {os.cpu_count()} cores",
        "models": len(models),
        "attacks": list(ATTACKS),
        "attack_params": params,
        "train_models_s": train_s,
        "ways": ways,
        "utility": {m.label: m.utility for m in models},
        "top_1": {f"{r['target']} / {r['attack']}": r.get("top_1") for r in sequential.rows},
        "on_paper_1000_units_64_cores": paper,
        "command": "python benchmarks/audit_scale.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"audit_scale{args.tag}.json"
    out.write_text(json.dumps(result, indent=2))
    print("| way | wall (s) | speed-up | same rows |\n|---|---|---|---|")
    for name, way in ways.items():
        same = way.get("same_rows", "-")
        print(f"| {name} | {way['wall_s']:.1f} | {way['speedup']:.2f}x | {same} |")
    print(
        f"On paper: {n_units} attack runs on {cores} cores, {paper['expected_wall_s']:.0f} s "
        f"(one run {unit_s:.1f} s, shared setup {prior_s:.1f} s, one model file "
        f"{model_mb:.2f} MB); sequential {paper['sequential_s']:.0f} s"
    )
    print(f"Saved {out}")


if __name__ == "__main__":
    main()
