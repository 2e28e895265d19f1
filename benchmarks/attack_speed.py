"""How fast kmi's attack loops run, against one compiled loop and against IBM ART.

Every optimisation attack runs through ``kmi.attacks._optim.minimize``, which runs
its steps in chunks of ``CHUNK_SIZE`` (50) inside one compiled loop. This measures:

- **MIFace on AT&T faces, setting (a)** of ``image_att_faces.py`` (40 subjects, 7
  training images each; the softmax-regression and the 31M-parameter MLP target):
  kmi's MIFace against a minimal compiled loop of the same algorithm written here
  (``jax.lax.fori_loop`` / ``tf.while_loop`` of SGD on 1 - p(y|x), clipped to
  [0, 1]), and against IBM ART 1.20's MIFace when it is importable (TensorFlow
  backend), with the max |difference| of the images;
- **K = 1 against K = 40** classes at once, for MIFace and GMI; for MIFace also the
  minimal loop's K = 40 / K = 1 (what the computation itself costs at 40 classes);
- **per-iteration time** of GMI's latent search, DeepInversion,
  TokenOptimization and GraphMI, chunked (``CHUNK_SIZE``) and step by step
  (``CHUNK_SIZE = 1``: one compiled call per step, as the loop was).

Each time is the best of ``--repeats`` calls after a first call that compiles
(reported apart as ``first_call_s``). Writes
``benchmarks/results/attack_speed_<backend><tag>.json``.

Run::

    KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/attack_speed.py
    KERAS_BACKEND=jax python benchmarks/attack_speed.py
    # with ART (never a kmi dependency):
    pip install --target /tmp/artpkgs --no-deps adversarial-robustness-toolbox tqdm six
    PYTHONPATH=/tmp/artpkgs KERAS_BACKEND=tensorflow python benchmarks/attack_speed.py
    # the code before the compiled loop, for the "before" column: run this file with
    # PYTHONPATH pointing at a checkout of that commit and --tag _before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from image_att_faces import art_miface  # noqa: E402  (this folder is on sys.path)

import kmi  # noqa: E402
from kmi.attacks import (  # noqa: E402
    GMI,
    DeepInversion,
    GraphMI,
    MIFace,
    TokenOptimization,
    _optim,  # noqa: E402
)
from kmi.datasets import load_att_faces  # noqa: E402
from kmi.models import (  # noqa: E402
    CausalLM,
    byte_tokenizer,
    cnn_classifier,
    dcgan_critic,
    dcgan_generator,
    gcn,
    mlp_classifier,
    softmax_regression,
)

RESULTS = Path(__file__).parent / "results"


def best_time(fn, repeats):
    """(first call's seconds, best of ``repeats`` further calls, last output)."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return first, min(times), out


def stepwise(fn):
    """Run ``fn`` with one compiled call per step (the loop before chunks)."""
    saved = getattr(_optim, "CHUNK_SIZE", None)
    _optim.CHUNK_SIZE = 1
    try:
        return fn()
    finally:
        if saved is None:
            del _optim.CHUNK_SIZE
        else:
            _optim.CHUNK_SIZE = saved


def train(model, X, y, epochs, lr=1e-3):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    model.fit(X, y, epochs=epochs, batch_size=40, verbose=0)
    return model


# ----------------------------------------------------------------------------- minimal loop
def minimal_miface(model, labels, iters, lr, shape):
    """SGD on sum(1 - p(y|x)), clipped to [0, 1], as one compiled loop."""
    onehot = np.eye(model.output_shape[-1], dtype="float32")[labels]
    x0 = np.zeros((len(labels), *shape), "float32")
    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        def loss(x):
            out = model.stateless_call(trainable, fixed, x, training=False)[0]
            probs = jnp.exp(jnp.log(jnp.clip(out, 1e-12, 1.0)))
            return jnp.sum(1.0 - jnp.sum(probs * onehot, axis=-1))

        @jax.jit
        def run(x):
            def body(i, x):
                return jnp.clip(x - lr * jax.grad(loss)(x), 0.0, 1.0)

            return jax.lax.fori_loop(0, iters, body, x)

        return lambda: np.asarray(run(x0))
    import tensorflow as tf

    def loss(x):
        probs = tf.exp(tf.math.log(tf.clip_by_value(model(x, training=False), 1e-12, 1.0)))
        return tf.reduce_sum(1.0 - tf.reduce_sum(probs * onehot, axis=-1))

    @tf.function(autograph=False)
    def run(x):
        def body(i, x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(x)
            return i + 1, tf.clip_by_value(x - lr * tape.gradient(value, x), 0.0, 1.0)

        return tf.while_loop(lambda i, x: i < iters, body, (tf.constant(0), x))[1]

    return lambda: run(tf.constant(x0)).numpy()


def bench_faces(args, out):
    faces = load_att_faces(data_home=args.data_home, download=False)
    X, y, idx = faces.images, faces.target, faces.image_index
    Xtr, ytr = X[idx < 7], y[idx < 7]
    shape, k, labels = X.shape[1:], 40, np.arange(40)
    targets = {
        "softmax": (lambda: train(softmax_regression(shape, k), Xtr, ytr, 20), args.iters),
        "mlp": (lambda: train(mlp_classifier(shape, k), Xtr, ytr, 5), args.mlp_iters),
    }
    for name, (build, iters) in targets.items():
        model = build()
        lr = 0.1
        attack = MIFace(model, max_iter=iters, learning_rate=lr).fit()
        first, best, kmi_images = best_time(lambda a=attack: a.invert(labels), args.repeats)
        row = {"iters": iters, "kmi_first_call_s": first, "kmi_s": best}
        row["kmi_ms_per_iter"] = 1e3 * best / iters
        _, best_min, min_images = best_time(
            minimal_miface(model, labels, iters, lr, shape), args.repeats
        )
        row["minimal_s"] = best_min
        row["minimal_ms_per_iter"] = 1e3 * best_min / iters
        row["kmi_over_minimal"] = best / best_min
        row["max_abs_diff_vs_minimal"] = float(np.abs(kmi_images - min_images).max())
        art = art_miface(model, k, shape, iters, lr)
        if art is not None:
            start = time.perf_counter()
            art_images = art()  # once: ART takes minutes
            row["art_s"] = time.perf_counter() - start
            row["art_ms_per_iter"] = 1e3 * row["art_s"] / iters
            row["kmi_speedup_vs_art"] = row["art_s"] / best
            row["max_abs_diff_vs_art"] = float(np.abs(kmi_images - art_images).max())
        # K = 1 against K = 40 classes at once
        single = MIFace(model, max_iter=iters, learning_rate=lr).fit()
        _, one, _ = best_time(lambda a=single: a.invert([0]), args.repeats)
        row["k1_s"], row["k40_over_k1"] = one, best / one
        # the same for the minimal loop: how much of K=40's cost is the computation itself
        _, min_one, _ = best_time(
            minimal_miface(model, labels[:1], iters, lr, shape), args.repeats
        )
        row["minimal_k1_s"], row["minimal_k40_over_k1"] = min_one, best_min / min_one
        row["k1_kmi_over_minimal"] = one / min_one
        out["miface_att_" + name] = row
        print(f"MIFace AT&T {name}: {json.dumps(row)}", flush=True)
        save(out, args)


# ----------------------------------------------------------------------------- per iteration
def per_iteration(name, make_attack, call, iters, args, out):
    attack = make_attack()
    first, best, result = best_time(lambda: call(attack), args.repeats)
    row = {"iters": iters, "first_call_s": first, "ms_per_iter": 1e3 * best / iters}
    if hasattr(_optim, "CHUNK_SIZE"):  # the compiled loop exists: step by step too
        f1, b1, r1 = stepwise(lambda: best_time(lambda: call(attack), args.repeats))
        row.update(stepwise_first_call_s=f1, stepwise_ms_per_iter=1e3 * b1 / iters)
        row["speedup_vs_stepwise"] = b1 / best
    out[name] = {**out.get(name, {}), **row}
    print(f"{name}: {json.dumps(out[name])}", flush=True)
    save(out, args)
    return attack


def bench_iterations(args, out):
    rng = np.random.default_rng(0)
    iters = args.iters
    # GMI's latent search: a DCGAN prior (random weights: the time does not depend on them)
    shape, k = (32, 32, 1), 40
    keras.utils.set_random_seed(0)
    target = cnn_classifier(shape, k, filters=(16, 32), dense_units=64, batch_norm=False)
    generator, critic = dcgan_generator(64, shape, width=32), dcgan_critic(shape, width=32)

    def gmi():
        return GMI(
            target,
            generator=generator,
            critic=critic,
            max_iter=iters,
            n_restarts=1,
            random_state=0,
        ).fit()

    attack = per_iteration(
        "gmi_latent_k40", gmi, lambda a: a.invert(np.arange(k)), iters, args, out
    )
    _, one, _ = best_time(lambda: attack.invert([0]), args.repeats)
    out["gmi_latent_k40"]["k1_ms_per_iter"] = 1e3 * one / iters
    out["gmi_latent_k40"]["k40_over_k1"] = out["gmi_latent_k40"]["ms_per_iter"] * iters / 1e3 / one
    save(out, args)
    # DeepInversion on a CNN with BatchNormalization, 16 images
    bn_target = cnn_classifier(shape, k, filters=(16, 32), dense_units=64)
    per_iteration(
        "deep_inversion_16",
        lambda: DeepInversion(bn_target, max_iter=iters, random_state=0).fit(),
        lambda a: a.invert(np.arange(16)),
        iters,
        args,
        out,
    )
    # TokenOptimization on a small byte-level causal LM: 4 secret tokens, 8 restarts
    tok = byte_tokenizer(24)
    lm = CausalLM(256, 23, embedding_dim=32, intermediate_dim=64)
    lm(np.zeros((1, 23), "int32"))
    per_iteration(
        "token_optimization",
        lambda: TokenOptimization(
            lm, tokenizer=tok, n_tokens=4, n_restarts=8, max_iter=iters, random_state=0
        ).fit(),
        lambda a: a.invert(["the code is "]),
        iters,
        args,
        out,
    )
    # GraphMI on a 200-node, two-community graph with a two-layer GCN
    n, f = 200, 32
    communities = np.repeat([0, 1], n // 2)
    p = np.where(communities[:, None] == communities[None, :], 0.05, 0.005)
    A = np.triu(rng.random((n, n)) < p, 1)
    A = (A | A.T).astype("float32")
    Xg = (rng.random((n, f)) < 0.1).astype("float32") + communities[:, None] * 0.1
    model = gcn(f, 2)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit([Xg, A], communities, epochs=5, verbose=0, batch_size=n, shuffle=False)
    per_iteration(
        "graphmi_200_nodes",
        lambda: GraphMI(model, max_iter=iters, edge_budget=300.0, decode=False).fit(),
        lambda a: a.invert(Xg, communities),
        iters,
        args,
        out,
    )


def save(out, args):
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"attack_speed_{keras.backend.backend()}{args.tag}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=str(Path(__file__).parents[2] / "shared" / "data"))
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--mlp-iters", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-faces", action="store_true")
    parser.add_argument("--skip-iterations", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the output file name")
    args = parser.parse_args(argv)
    try:
        commit = subprocess.run(
            ["git", "-C", str(Path(kmi.__file__).parents[1]), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    out = {
        "backend": keras.backend.backend(),
        "kmi": str(Path(kmi.__file__).parent),
        "commit": commit,
        "chunk_size": getattr(_optim, "CHUNK_SIZE", None),
        "cpu_count": os.cpu_count(),
    }
    if not args.skip_faces:
        bench_faces(args, out)
    if not args.skip_iterations:
        bench_iterations(args, out)
    return out


if __name__ == "__main__":
    main()
