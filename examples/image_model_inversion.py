"""Recover what each digit looks like from a classifier, and measure it.

A softmax-regression target is trained on half of scikit-learn's 8x8 digits; MIFace
(white-box) reconstructs one image per class, GMI does the same through a small GAN
prior trained on the other half (unlabelled), and an evaluation classifier of another
architecture says how many reconstructions show the right digit.

Run:  python examples/image_model_inversion.py   (about a minute on a CPU)
"""

import os

import keras
import numpy as np

from kmi.attacks import GMI, MIFace
from kmi.datasets import load_digits
from kmi.metrics.image import attack_accuracy, knn_distance
from kmi.models import evaluation_classifier, feature_extractor, softmax_regression

QUICK = bool(os.environ.get("KMI_QUICK"))  # CI's tiny run
X, y = load_digits(return_X_y=True)
private_X, private_y, public_X = X[::2], y[::2], X[1::2]
keras.utils.set_random_seed(0)


def train(model, epochs, from_logits):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(private_X, private_y, epochs=epochs, batch_size=64, verbose=0)
    return model


target = train(softmax_regression((8, 8, 1), 10), 10 if QUICK else 30, from_logits=False)
evaluator = train(
    evaluation_classifier((8, 8, 1), 10, width=8, augment=False), 10 if QUICK else 25, True
)
labels = np.arange(10)

for attack in (
    MIFace(target, max_iter=100 if QUICK else 300, learning_rate=1.0, contrast="stretch"),
    GMI(
        target,
        latent_dim=16,
        gan_steps=50 if QUICK else 150,
        gan_width=16,
        gan_learning_rate=1e-3,
        max_iter=50 if QUICK else 200,
        random_state=0,
    ),
):
    images = attack.fit(public_X).invert(labels)
    top = attack_accuracy(evaluator, images, labels, top_k=(1, 5))
    knn = knn_distance(
        images, labels, private_X, private_y, feature_model=feature_extractor(evaluator)
    )
    print(
        f"{type(attack).__name__:6s} top-1 {top['top_1']:.2f}  top-5 {top['top_5']:.2f}  "
        f"KNN distance {knn:.2f}  (chance: 0.10 / 0.50)"
    )
