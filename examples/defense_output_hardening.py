"""Harden what a served model releases: append an output-defense layer, save, reload.

Run:  python examples/defense_output_hardening.py   (a few seconds on a CPU)
"""

import tempfile
from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits

from kmi.defenses import ConfidenceNoise, LabelOnly, ReverseSigmoid, RoundConfidence, TopK

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
model = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x, y, epochs=5, verbose=0)

print("original      ", np.round(model.predict(x[:1], verbose=0)[0], 3))
for defense in [
    RoundConfidence(1),
    TopK(2),
    ReverseSigmoid(beta=0.5, gamma=0.2),
    ConfidenceNoise(0.5, seed=0),
    LabelOnly(),
]:
    served = keras.Sequential([model, defense])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "served.keras"
        served.save(path)
        served = keras.saving.load_model(path, safe_mode=True)
    out = served.predict(x[:1], verbose=0)[0]
    print(f"{type(defense).__name__:14s}", np.round(out, 3))
