"""Three training-time defenses against model inversion, each inside a plain model.fit.

- MID: an InformationBottleneck layer before the classifier head;
- negative label smoothing, ramped by a callback;
- BiDO: HSIC terms on named hidden layers of an existing functional model.

Run:  python examples/defense_training_penalties.py   (a few seconds on a CPU)
"""

import os

import keras
import numpy as np
from sklearn.datasets import load_digits

from kmi.defenses import (
    BiDO,
    InformationBottleneck,
    LabelSmoothingSchedule,
    NegativeLabelSmoothing,
)

EPOCHS = 2 if os.environ.get("KMI_QUICK") else 10  # KMI_QUICK=1: CI's tiny run

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def report(name, model):
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), 1) == y_test)
    print(f"{name:28s} test accuracy {accuracy:.3f}")


# MID (Wang et al. 2021)
mid = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        InformationBottleneck(units=16, beta=1e-2, seed=0),
        keras.layers.Dense(10),
    ]
)
mid.compile("adam", ce)
mid.fit(x_train, y_train, epochs=EPOCHS, verbose=0)
report("MID", mid)

# Negative label smoothing (Struppek et al. 2024), alpha ramped from 0 to -0.05
nls = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]
)
nls.compile("adam", NegativeLabelSmoothing(alpha=0.0))
nls.fit(
    x_train,
    y_train,
    epochs=EPOCHS,
    verbose=0,
    callbacks=[LabelSmoothingSchedule(final_alpha=-0.05, ramp_epochs=5)],
)
report("negative label smoothing", nls)

# BiDO-HSIC (Peng et al. 2022) on an existing functional model
inputs = keras.Input((64,))
h1 = keras.layers.Dense(64, activation="relu", name="h1")(inputs)
h2 = keras.layers.Dense(32, activation="relu", name="h2")(h1)
net = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h2))
bido = BiDO(net, hidden_layers=["h1", "h2"], measure="hsic", lambda_x=0.05, lambda_y=0.5)
bido.compile("adam", ce)
history = bido.fit(x_train, y_train, batch_size=64, epochs=EPOCHS, verbose=0)
print(
    f"BiDO dependence terms (last epoch): X-Z {history.history['bido_x'][-1]:.2f}, "
    f"Z-Y {history.history['bido_y'][-1]:.2f}"
)
report("BiDO (served model: net)", net)
