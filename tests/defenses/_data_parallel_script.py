"""Run by test_data_parallel.py in a subprocess (XLA_FLAGS must be set before JAX starts).

Arguments: cases "<clipping>:<model>", each a DPSGD clipping method and "conv",
"mlp", "transformer" (a keras-hub TransformerEncoder on token embeddings),
"transformer-model" (the same under ModelParallel: its dense and attention kernels
split across 4 devices, the batch across 2) or "noise"
(one step of a wide dense layer on all-zero inputs, whose kernel gradient is 0: its
change is the DP noise alone). Prints one JSON line per case, in one process (each
process pays for importing TensorFlow, JAX and Keras).
"""

import json
import sys
import warnings

import jax
import keras
import numpy as np

from kmi.defenses import DPSGD

NOISE = {"l2_norm_clip": 1.0, "noise_multiplier": 2.0, "learning_rate": 1.0, "batch": 16}


def noise_step(distributed, clipping):
    """The standard deviation of a wide kernel's change in one DP step on zero inputs."""
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()) if distributed else None
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(8)])
    model.compile(
        keras.optimizers.SGD(NOISE["learning_rate"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = model.get_weights()[0]
    x = np.zeros((NOISE["batch"], 256), "float32")
    y = np.arange(NOISE["batch"]) % 8
    dp = DPSGD(
        l2_norm_clip=NOISE["l2_norm_clip"],
        noise_multiplier=NOISE["noise_multiplier"],
        num_examples=NOISE["batch"],
        seed=5,
        clipping=clipping,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=NOISE["batch"], epochs=1, callbacks=[dp], verbose=0)
    return float(np.std(model.get_weights()[0] - before))


def transformer():
    import keras_hub

    tokens = keras.Input((8,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(16, 8, 8)(tokens)
    x = keras_hub.layers.TransformerEncoder(intermediate_dim=16, num_heads=2)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3)(x))


def model_parallel():
    """A (2, 4) mesh: the batch over 2 devices, the transformer's dense and attention
    kernels over 4 (one axis of each split across devices)."""
    mesh = keras.distribution.DeviceMesh(
        (2, 4), axis_names=("batch", "model"), devices=jax.devices()
    )
    layout = keras.distribution.LayoutMap(mesh)
    layout[".*feedforward_intermediate_dense.*kernel"] = (None, "model")
    layout[".*feedforward_output_dense.*kernel"] = ("model", None)
    layout[".*(query|key|value).*kernel"] = (None, None, "model")
    return keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")


def per_example_norms(model, x, y):
    """Each example's gradient norm (all variables), from per_example_gradients."""
    from kmi.defenses.dp import per_example_gradients

    grads = per_example_gradients(model, x, y)
    return np.sqrt(sum((g.reshape(len(x), -1) ** 2).sum(1) for g in grads)).tolist()


def run(distributed, clipping, kind):
    if kind == "transformer-model":
        keras.distribution.set_distribution(model_parallel() if distributed else None)
    else:
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()) if distributed else None
        )
    keras.utils.set_random_seed(0)
    conv = [
        keras.layers.Reshape((6, 1)),
        keras.layers.Conv1D(2, 3, activation="tanh"),
        keras.layers.Flatten(),
    ]
    if kind.startswith("transformer"):
        model = transformer()
    else:
        model = keras.Sequential(
            [
                keras.Input((6,)),
                *(conv if kind == "conv" else []),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(3),
            ]
        )
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    if kind.startswith("transformer"):
        x = rng.integers(0, 16, size=(64, 8)).astype("int32")
        y = (x[:, 0] > 7).astype("int32")
    else:
        x = rng.normal(size=(64, 6)).astype("float32")
        y = (x[:, 0] > 0).astype("int32")
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=0.7, num_examples=64, seed=3, clipping=clipping)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(
            x, y, batch_size=16, epochs=2, callbacks=[dp], verbose=0, shuffle=False
        )
    if kind == "transformer-model":  # how each kernel is laid out, by variable
        sharding = {
            v.path: str(getattr(v.value.sharding, "spec", "one device"))
            for v in model.trainable_variables
            if v.path.endswith("kernel")
        }
        history.history["norms"] = per_example_norms(model, x[:16], y[:16])
    else:
        sharding = str(model.trainable_variables[0].value.sharding)
    assert dp.clipping_ == clipping
    return [w.tolist() for w in model.get_weights()], history.history, sharding


def case(clipping, kind):
    if kind == "noise":
        expected = (
            NOISE["learning_rate"] * NOISE["noise_multiplier"] * NOISE["l2_norm_clip"]
        ) / NOISE["batch"]
        return {
            "devices": len(jax.devices()),
            "std_single": noise_step(False, clipping),
            "std_multi": noise_step(True, clipping),
            "std_expected": expected,
        }
    single = run(False, clipping, kind)
    try:
        multi = run(True, clipping, kind)
    except ValueError as error:
        return {"error": str(error)}
    return {
        "devices": len(jax.devices()),
        "single": single[0],
        "multi": multi[0],
        "history_single": single[1],
        "history_multi": multi[1],
        "sharding": multi[2],
    }


def main():
    for arg in sys.argv[1:]:
        clipping, kind = arg.split(":")
        print(json.dumps({"case": arg, **case(clipping, kind)}), flush=True)


if __name__ == "__main__":
    main()
