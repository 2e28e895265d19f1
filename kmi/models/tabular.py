"""A Keras multilayer perceptron with the scikit-learn classifier interface."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted, validate_data


class KerasMLPClassifier(ClassifierMixin, BaseEstimator):
    """A Keras MLP trained with ``model.fit``, usable as a scikit-learn classifier.

    Put it at the end of a :class:`~sklearn.pipeline.Pipeline` (after a
    ``ColumnTransformer`` that one-hot encodes categorical columns) to get a Keras
    target for tabular data that kmi attacks query like any scikit-learn model. The
    Keras model is ``model_``; train it with a kmi defense by passing ``callbacks``.

    Parameters
    ----------
    hidden_units : tuple of int, default=(64, 64)
        Width of each hidden ReLU layer.
    epochs : int, default=20
    batch_size : int, default=128
    learning_rate : float, default=1e-3
        Adam's learning rate.
    callbacks : list of keras.callbacks.Callback, default=None
        Passed to ``model.fit`` (e.g. :class:`kmi.defenses.DPSGD`).
    random_state : int, default=None
        Seeds weight initialisation and shuffling (``keras.utils.set_random_seed``).
    verbose : int, default=0
        Passed to ``model.fit``.

    Attributes
    ----------
    model_ : keras.Model
        The trained network; it outputs logits.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    history_ : dict
        ``History.history`` of the fit.
    """

    def __init__(
        self,
        hidden_units=(64, 64),
        *,
        epochs=20,
        batch_size=128,
        learning_rate=1e-3,
        callbacks=None,
        random_state=None,
        verbose=0,
    ):
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        import keras

        X, y = validate_data(self, X, y, dtype="float32", accept_sparse=False)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        if self.random_state is not None:
            keras.utils.set_random_seed(int(self.random_state))
        layers = [keras.Input((X.shape[1],))]
        layers += [keras.layers.Dense(int(u), activation="relu") for u in self.hidden_units]
        layers.append(keras.layers.Dense(max(len(self.classes_), 2)))
        self.model_ = keras.Sequential(layers)
        self.model_.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        history = self.model_.fit(
            X,
            self._encoder.transform(y),
            epochs=self.epochs,
            batch_size=self.batch_size,
            callbacks=list(self.callbacks or []),
            verbose=self.verbose,
        )
        self.history_ = history.history
        return self

    def predict_proba(self, X):
        import keras

        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype="float32", reset=False, accept_sparse=False)
        logits = self.model_.predict(X, batch_size=8192, verbose=0)
        proba = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
        return proba.astype("float64")[:, : len(self.classes_)]

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
