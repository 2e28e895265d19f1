"""Audit your own image classifier: one call, a report you can open in a browser.

"Your model" here is a small softmax classifier trained on half of scikit-learn's 8x8
digits; the other half plays the attacker's public (unlabelled) images.
``kmi.audit.audit`` runs every image attack that white-box access allows, trains an
evaluation classifier on the private images to judge the reconstructions, and
returns a Report.

The same from the command line, with the model and data saved to files:

    model.save("model.keras")
    np.savez("data.npz", x_private=X_private, y_private=y_private, x_public=X_public)
    kmi audit --model model.keras --data data.npz --modality image

Run:  python examples/audit_your_model.py   (about two minutes on a CPU)
"""

import os
import tempfile
from pathlib import Path

import keras

from kmi.audit import audit
from kmi.datasets import load_digits
from kmi.models import softmax_regression

QUICK = bool(os.environ.get("KMI_QUICK"))  # CI's tiny run

X, y = load_digits(return_X_y=True)
X_private, y_private, X_public = X[::2], y[::2], X[1::2]

keras.utils.set_random_seed(0)
model = softmax_regression((8, 8, 1), 10)
model.compile(keras.optimizers.Adam(3e-2), "sparse_categorical_crossentropy")
model.fit(X_private, y_private, epochs=20, batch_size=64, verbose=0)

# Shorter attacks than the defaults, for a quick look; drop attack_params for the full run.
params = {
    "MIFace": {"max_iter": 100 if QUICK else 300, "learning_rate": 0.5, "optimizer": "sgd"},
    "InversionModel": {"epochs": 10 if QUICK else 50},
    "GMI": {
        "gan_steps": 20 if QUICK else 300,
        "latent_dim": 16,
        "gan_width": 16,
        "max_iter": 20 if QUICK else 200,
    },
    "BREPMI": {"gan_steps": 20, "max_iter": 3 if QUICK else 50},
}
report = audit(
    model,
    modality="image",
    private_data=(X_private, y_private),
    public_data=X_public,
    access="white-box",
    attack_params=params,
    verbose=0 if QUICK else 1,
)
out = Path(tempfile.gettempdir()) / "kmi-audit-example.html"
report.to_html(out)
print(report.table(["attack", "access", "top_1", "top_5", "knn_distance", "queries"]))
print("\n".join(report.summary))
print(f"Report: {out}")
