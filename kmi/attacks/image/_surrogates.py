"""Surrogate classifiers learned from a target's answers, written once.

LOMMA's model augmentation (:class:`~kmi.attacks.GMI`'s ``augmentation_models``)
distils surrogates from the target's soft labels; LOKT (:class:`~kmi.attacks.LOKT`)
trains them on its predicted labels alone. Both build the same default networks
(:func:`default_surrogates`) and train them with the same loop
(:func:`train_surrogates`), shuffled from the attack's ``random_state``.
"""

from __future__ import annotations

import keras
import numpy as np

from kmi.attacks.image._common import seeds

__all__ = ["default_surrogates", "surrogate_ensemble", "train_surrogates"]

#: Filters of the default surrogates' two conv blocks, in turn: several
#: architectures, as LOMMA and LOKT use, rather than one network several times.
SURROGATE_FILTERS = ((16, 32), (32, 64), (24, 48), (8, 16))


def default_surrogates(input_shape, n_classes: int, n: int, rng) -> list[keras.Model]:
    """``n`` untrained CNN classifiers (logits) of varied widths, seeded from ``rng``."""
    from kmi.models.image import cnn_classifier

    return [
        cnn_classifier(
            input_shape,
            n_classes,
            filters=SURROGATE_FILTERS[i % len(SURROGATE_FILTERS)],
            batch_norm=False,
            seed=seed,
        )
        for i, seed in enumerate(seeds(rng, n))
    ]


def train_surrogates(models, X, labels, *, epochs: int, rng, batch_size: int = 64):
    """Train each of ``models`` (logits) in place on ``X`` and the target's answers.

    Parameters
    ----------
    models : list of keras.Model
    X : ndarray of shape (n, height, width, channels)
    labels : ndarray of shape (n, n_classes) or (n,)
        The target's probabilities (distillation) or its predicted class indices
        (label-only).
    epochs : int
    rng : numpy.random.Generator
        Shuffles every epoch.

    Returns
    -------
    list of keras.Model
        ``models``, trained.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        labels = labels.astype("float32")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        labels = labels.astype("int32")
    for model in models:
        model.compile(keras.optimizers.Adam(1e-3), loss)
        for _ in range(int(epochs)):
            order = rng.permutation(len(X))
            model.fit(X[order], labels[order], batch_size=batch_size, shuffle=False, verbose=0)
    return list(models)


def surrogate_ensemble(models, input_shape) -> keras.Model:
    """One Keras model whose output is the mean of ``models``' softmax probabilities."""
    inputs = keras.Input(tuple(input_shape))
    probs = [  # each in a uniquely named wrapper: the default surrogates share a name
        keras.layers.Softmax()(keras.Sequential([model], name=f"surrogate_{i}")(inputs))
        for i, model in enumerate(models)
    ]
    out = probs[0] if len(probs) == 1 else keras.layers.Average()(probs)
    return keras.Model(inputs, out, name="surrogate_ensemble")
