"""Run by test_data_parallel.py in a subprocess (XLA_FLAGS must be set before JAX starts).

Arguments: cases "<clipping>:<model>", each a DPSGD clipping method and "conv" or
"mlp" (the model). Prints one JSON line per case, in one process (each process pays
for importing TensorFlow, JAX and Keras).
"""

import json
import sys
import warnings

import jax
import keras
import numpy as np

from kmi.defenses import DPSGD


def run(distributed, clipping, kind):
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()) if distributed else None
    )
    keras.utils.set_random_seed(0)
    conv = [
        keras.layers.Reshape((6, 1)),
        keras.layers.Conv1D(2, 3, activation="tanh"),
        keras.layers.Flatten(),
    ]
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
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=0.7, num_examples=64, seed=3, clipping=clipping)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(
            x, y, batch_size=16, epochs=2, callbacks=[dp], verbose=0, shuffle=False
        )
    sharding = str(model.trainable_variables[0].value.sharding)
    assert dp.clipping_ == clipping
    return [w.tolist() for w in model.get_weights()], history.history, sharding


def case(clipping, kind):
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
