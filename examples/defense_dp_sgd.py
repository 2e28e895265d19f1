"""Train a digit classifier with DP-SGD by adding one callback to model.fit.

Run:  python examples/defense_dp_sgd.py   (a few seconds on a CPU)
"""

import os

import keras
import numpy as np
from sklearn.datasets import load_digits

from kmi.defenses import DPSGD, PoissonSampler, PrivacyBudget, compute_epsilon

EPOCHS = 2 if os.environ.get("KMI_QUICK") else 10  # KMI_QUICK=1: CI's tiny run

x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
order = np.random.default_rng(0).permutation(len(x))
train, test = order[:1400], order[1400:]

model = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(32, activation="tanh"),
        keras.layers.Dropout(0.1),  # fine: each example gets its own mask
        keras.layers.Dense(10),
    ]
)
model.compile(
    keras.optimizers.SGD(0.5, momentum=0.5),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)

# Poisson-sampled batches: the epsilon reported is the epsilon of what ran.
batches = PoissonSampler(x[train], y[train], batch_size=64, seed=0)
dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling=batches, delta=1e-5, seed=0)
budget = PrivacyBudget(target_epsilon=8.0)  # stops before epsilon would exceed 8
history = model.fit(batches, epochs=EPOCHS, callbacks=[dp, budget], verbose=0)

_, accuracy = model.evaluate(x[test], y[test], verbose=0)
print(f"epsilon per epoch: {np.round(history.history['epsilon'], 2).tolist()}")
print(f"final epsilon {dp.epsilon_:.2f} at delta=1e-5 after {dp.steps_} steps")
print(f"test accuracy {accuracy:.3f}")

# The same accounting, by hand, for planning a run:
print(
    f"planned epsilon for {EPOCHS} epochs:",
    round(compute_epsilon(1.0, num_examples=1400, batch_size=64, epochs=EPOCHS, delta=1e-5), 2),
)
