"""DP-SGD on Fashion-MNIST with the TF Privacy tutorial CNN (tanh): speed and utility.

1. speed: epoch time (and peak memory) of the same model and data with and without
   ``kmi.defenses.DPSGD``, on each backend, each configuration in its own process,
   for both clipping routes: ghost clipping (what ``DPSGD`` picks for this CNN) and
   vectorised per-example gradients (``clipping="vectorized"``). Peak memory is the
   process's resident set, so it includes the compilers' own memory (XLA's, for
   the ghost route on TensorFlow).
2. utility: test accuracy of DP-SGD on full Fashion-MNIST (60k/10k) at several
   target epsilons (delta = 1e-5), with Poisson-sampled batches
   (``kmi.defenses.PoissonSampler``), so the epsilon reported is that of what ran.

Run (the data comes from the Debian package dataset-fashion-mnist, or data_home):

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/dp_sgd.py speed --n 10000
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/dp_sgd.py utility --backend tensorflow \\
        --epsilons 3 1 8

The utility defaults are the tanh-CNN setting of the literature for Fashion-MNIST
(Papernot et al. 2021; Tramer & Boneh 2021): expected batch 2048, SGD with learning
rate 4 and momentum 0.9, clip 0.1, 40 epochs; only the noise changes with epsilon.

3. transformers / minilm: the same on keras-hub transformers (benchmarks/dp_sgd_transformers.py).

Results go to benchmarks/results/dp_sgd_speed.json and dp_sgd_utility_<backend>.json
(the utility file is rewritten after every finished run, so partial results survive;
``--append`` adds to it instead of starting it afresh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BACKENDS = ("tensorflow", "jax")


def _write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _run_worker(cmd, backend, failure):
    """Run a worker process on ``backend`` (a Keras backend, or "torch"); return the
    JSON object on its last line of output."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend != "torch":
        env["KERAS_BACKEND"] = backend
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(failure)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _versions():
    import dp_accounting  # noqa: F401
    import keras

    versions = {"keras": keras.__version__, "python": platform.python_version()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    else:
        import jax

        versions["jax"] = jax.__version__
    return versions


def _data(n_train=None, data_home=None):
    import numpy as np

    from kmi.datasets.fashion_mnist import load_fashion_mnist

    (x, y), (xt, yt) = load_fashion_mnist(data_home)
    x = (x[..., None] / 255.0).astype("float32")
    xt = (xt[..., None] / 255.0).astype("float32")
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    return x, y.astype(np.int32), xt, yt.astype(np.int32)


def _model(learning_rate, momentum):
    import keras

    from kmi.models.dp_cnn import dp_cnn

    model = dp_cnn()
    model.compile(
        keras.optimizers.SGD(learning_rate, momentum=momentum),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class _EpochTimer:
    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        return Timer()


def _progress(label, epochs, timer):
    """Prints one line per epoch (after ``timer`` and DPSGD in the callback list)."""
    import keras

    def report(epoch, logs):
        print(
            f"  {label}: epoch {epoch + 1}/{epochs} loss {logs['loss']:.4f} "
            f"train acc {logs['accuracy']:.4f} epsilon {logs['epsilon']:.3f} "
            f"({timer.times[-1]:.0f} s)",
            flush=True,
        )

    return keras.callbacks.LambdaCallback(on_epoch_end=report)


# ------------------------------------------------------------------------------ speed


def _rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trim_heap():
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``).

    Compilation frees most of what it allocates, but glibc keeps those pages in
    the resident set; trimmed after warm-up, the timed steps' peak reflects the
    steps' own buffers. A no-op where glibc is not the C library.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakRSS:
    """Samples the resident set size every 5 ms in a thread; ``peak`` in MB."""

    def __enter__(self):
        import threading

        self.peak = self.start = _rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, _rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def speed_worker(args):
    """One configuration in this process: prints one JSON line."""
    import keras

    from kmi.defenses import DPSGD

    x, y, _, _ = _data(args.n, args.data_home)
    keras.utils.set_random_seed(0)
    model = _model(0.1, 0.0)
    timer = _EpochTimer()
    callbacks = [timer]
    if args.mode != "plain":
        dp = DPSGD(
            l2_norm_clip=1.0,
            noise_multiplier=1.1,
            num_examples=len(x),
            seed=0,
            clipping=args.mode,
        )
        callbacks.insert(0, dp)
    import warnings

    with warnings.catch_warnings(), _PeakRSS() as rss:
        warnings.simplefilter("ignore", UserWarning)
        model.fit(x, y, batch_size=256, epochs=1 + args.epochs, callbacks=callbacks, verbose=0)
    timed = timer.times[1:]
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "mode": args.mode,
                "first_epoch_s": timer.times[0],
                "epoch_s": timed,
                "median_epoch_s": statistics.median(timed),
                "rss_before_fit_mb": rss.start,
                "peak_rss_during_fit_mb": rss.peak,
                "fit_memory_mb": rss.peak - rss.start,
                "versions": _versions(),
            }
        )
    )


def speed(args):
    runs = []
    for backend in args.backends:
        # plain and DP workers alternate, so that a change of machine load affects
        # both; the statistic is the fastest epoch (least disturbed by other load)
        for repeat in range(args.repeats):
            for mode in ("plain", *args.clipping):
                cmd = [
                    sys.executable,
                    __file__,
                    "speed-worker",
                    "--mode",
                    mode,
                    "--n",
                    str(args.n),
                    "--epochs",
                    str(args.epochs),
                ]
                if args.data_home:
                    cmd += ["--data-home", args.data_home]
                run = _run_worker(cmd, backend, f"speed worker failed: {backend} {mode}")
                run["repeat"] = repeat
                runs.append(run)
                print(
                    f"{backend:10s} {mode:5s} epochs {[round(t, 2) for t in run['epoch_s']]} s, "
                    f"fit memory {run['fit_memory_mb']:.0f} MB",
                    flush=True,
                )
    table = []
    for backend in args.backends:
        by_mode = {
            mode: [r for r in runs if r["backend"] == backend and r["mode"] == mode]
            for mode in ("plain", *args.clipping)
        }
        fastest = {m: min(t for r in rs for t in r["epoch_s"]) for m, rs in by_mode.items()}
        median = {
            m: statistics.median(t for r in rs for t in r["epoch_s"]) for m, rs in by_mode.items()
        }
        memory = {m: max(r["fit_memory_mb"] for r in rs) for m, rs in by_mode.items()}
        for mode in args.clipping:
            table.append(
                {
                    "backend": backend,
                    "clipping": mode,
                    "plain_epoch_s": fastest["plain"],
                    "dp_epoch_s": fastest[mode],
                    "ratio": fastest[mode] / fastest["plain"],
                    "ratio_of_medians": median[mode] / median["plain"],
                    "plain_fit_memory_mb": memory["plain"],
                    "dp_fit_memory_mb": memory[mode],
                }
            )
    settings = {
        "data": f"Fashion-MNIST, first {args.n} training images",
        "model": "TF Privacy tutorial CNN, tanh (kmi.models.dp_cnn.dp_cnn)",
        "batch_size": 256,
        "optimizer": "SGD(0.1)",
        "dp": {"l2_norm_clip": 1.0, "noise_multiplier": 1.1},
        "clipping": (
            "DPSGD(clipping=...): 'ghost' = per-example norms from layer inputs and output "
            "gradients (the default for this model), 'vectorized' = vmap/vectorized_map "
            "per-example gradients"
        ),
        "timed_epochs": args.epochs,
        "repeats": args.repeats,
        "statistic": (
            "fastest epoch wall time after one warm-up (compilation) epoch, over repeats "
            "alternating plain/DP processes; ratio_of_medians also given"
        ),
        "memory": "peak resident set size during fit minus before fit (sampled every 5 ms)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
    }
    _write(RESULTS / "dp_sgd_speed.json", {"settings": settings, "table": table, "runs": runs})
    print(
        "\n| backend | clipping | epoch (no DP) | epoch (DPSGD) | ratio | ratio of medians "
        "| fit memory no DP | fit memory DP |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in table:
        print(
            f"| {row['backend']} | {row['clipping']} | {row['plain_epoch_s']:.2f} s "
            f"| {row['dp_epoch_s']:.2f} s | "
            f"{row['ratio']:.2f}x | {row['ratio_of_medians']:.2f}x | "
            f"{row['plain_fit_memory_mb']:.0f} MB | "
            f"{row['dp_fit_memory_mb']:.0f} MB |"
        )


# ---------------------------------------------------------------------------- utility


def utility(args):
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras

    from kmi.defenses import DPSGD, PoissonSampler

    x, y, xt, yt = _data(None, args.data_home)
    path = RESULTS / (args.out or f"dp_sgd_utility_{args.backend}.json")
    settings = {
        "data": "Fashion-MNIST, 60000 train / 10000 test, pixels / 255",
        "model": "TF Privacy tutorial CNN, tanh (kmi.models.dp_cnn.dp_cnn)",
        "batch_size": args.batch_size,
        "sampling": "Poisson (kmi.defenses.PoissonSampler), expected batch size above",
        "epochs": args.epochs,
        "optimizer": f"SGD(learning_rate={args.lr}, momentum={args.momentum})",
        "l2_norm_clip": args.clip,
        "delta": 1e-5,
        "accountant": "rdp (dp-accounting)",
        "noise": "calibrated by DPSGD(target_epsilon=...) for the planned epochs",
        "backend": args.backend,
        "versions": _versions(),
        "command": " ".join(sys.argv),
    }
    rows = []
    if args.append and path.exists():
        # runs of earlier commands are kept; every row carries its own schedule
        rows = json.loads(path.read_text())["results"]
        settings["note"] = (
            "results come from more than one command: each row gives its own epochs, "
            "optimizer, clip and command; the settings above are those of the last command"
        )
    for eps in args.epsilons:
        keras.utils.set_random_seed(0)
        model = _model(args.lr, args.momentum)
        sampler = PoissonSampler(x, y, batch_size=args.batch_size, seed=0)
        dp = DPSGD(
            l2_norm_clip=args.clip, target_epsilon=eps, delta=1e-5, sampling=sampler, seed=0
        )
        timer = _EpochTimer()
        progress = _progress(f"target eps {eps}", args.epochs, timer)
        start = time.perf_counter()
        history = model.fit(
            sampler, epochs=args.epochs, callbacks=[dp, timer, progress], verbose=0
        )
        seconds = time.perf_counter() - start
        _, acc = model.evaluate(xt, yt, batch_size=1000, verbose=0)
        row = {
            "target_epsilon": eps,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "momentum": args.momentum,
            "l2_norm_clip": args.clip,
            "epsilon": history.history["epsilon"][-1],
            "noise_multiplier": dp.noise_multiplier_,
            "clipping": dp.clipping_,
            "test_accuracy": float(acc),
            "train_accuracy_last_epoch": history.history["accuracy"][-1],
            "epsilon_per_epoch": history.history["epsilon"],
            "train_seconds": seconds,
            "epoch_seconds": timer.times,
            "command": settings["command"],
        }
        rows.append(row)
        print(
            f"target eps {eps}: eps {row['epsilon']:.3f}, sigma {row['noise_multiplier']:.3f}, "
            f"test acc {acc:.4f}, {seconds:.0f} s",
            flush=True,
        )
        _write(path, {"settings": settings, "results": rows})
    print(
        "\n| target epsilon | epsilon (delta=1e-5) | test accuracy | epochs "
        "| noise multiplier | clip | lr | batch | train time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target_epsilon']} | {r['epsilon']:.2f} | {100 * r['test_accuracy']:.1f}% "
            f"| {r.get('epochs', settings['epochs'])} | {r['noise_multiplier']:.3f} "
            f"| {r.get('l2_norm_clip', settings['l2_norm_clip'])} "
            f"| {r.get('learning_rate', args.lr)} | {r.get('batch_size', args.batch_size)} "
            f"| {r['train_seconds'] / 60:.0f} min |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("speed", help="epoch time with / without DPSGD, both backends")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--clipping",
        nargs="+",
        choices=["ghost", "vectorized"],
        default=["ghost", "vectorized"],
        help="DPSGD clipping methods to time against the plain fit",
    )
    p.add_argument("--data-home", default=None)
    w = sub.add_parser("speed-worker")
    w.add_argument("--mode", choices=["plain", "ghost", "vectorized"], required=True)
    w.add_argument("--n", type=int, default=10000)
    w.add_argument("--epochs", type=int, default=3)
    w.add_argument("--data-home", default=None)
    u = sub.add_parser("utility", help="test accuracy at target epsilons, full data")
    u.add_argument("--backend", choices=BACKENDS, default="tensorflow")
    u.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    # defaults: the tanh-CNN setting of Papernot et al. (2021) and Tramer & Boneh
    # (2021) for Fashion-MNIST (batch 2048, SGD lr 4 momentum 0.9, clip 0.1, 40 epochs)
    u.add_argument("--epochs", type=int, default=40)
    u.add_argument("--batch-size", type=int, default=2048)
    u.add_argument("--lr", type=float, default=4.0)
    u.add_argument("--momentum", type=float, default=0.9)
    u.add_argument("--clip", type=float, default=0.1)
    u.add_argument("--data-home", default=None)
    u.add_argument("--out", default=None, help="file name under benchmarks/results")
    u.add_argument(
        "--append", action="store_true", help="keep the results already in the output file"
    )
    import dp_sgd_transformers

    commands = {"speed": speed, "speed-worker": speed_worker, "utility": utility}
    commands.update(dp_sgd_transformers.add_arguments(sub))
    args = parser.parse_args(argv)
    commands[args.command](args)


if __name__ == "__main__":
    main()
