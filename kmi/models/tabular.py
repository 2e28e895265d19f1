"""A Keras multilayer perceptron with the scikit-learn classifier interface."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from kmi.models._seeds import SeedStream

__all__ = ["KerasMLPClassifier"]


class _ShuffledBatches(keras.utils.PyDataset):
    """Mini-batches in an order drawn from ``seed`` and the epoch, not a global state."""

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, int(batch_size), int(seed)
        self._epoch = 0
        self._order = None

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        if self._order is None:
            self._order = np.random.default_rng([self.seed, self._epoch]).permutation(len(self.x))
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self._epoch += 1
        self._order = None


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
        Passes over the training data.
    batch_size : int, default=128
        Rows per gradient step.
    learning_rate : float, default=1e-3
        Adam's learning rate.
    callbacks : list of keras.callbacks.Callback, default=None
        Passed to ``model.fit`` (e.g. :class:`kmi.defenses.DPSGD`).
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation (each layer with a seed of its own) and the
        order of the mini-batches, without touching any global random state: the
        same integer trains the same model on a given backend. ``None`` leaves both
        to Keras' global random state.
    verbose : int, default=0
        Passed to ``model.fit``.

    Attributes
    ----------
    model_ : keras.Model
        The trained network; it outputs logits.
    classes_ : ndarray of shape (n_classes,)
        The class labels seen in ``fit``.
    n_features_in_ : int
        Number of columns of ``X`` in ``fit``.
    history_ : dict
        ``History.history`` of the fit.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.models import KerasMLPClassifier
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> y = np.where(X[:, 0] > 0, "yes", "no")
    >>> clf = KerasMLPClassifier((8,), epochs=2, batch_size=20, random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.predict_proba(X[:4]).shape
    (['no', 'yes'], (4, 2))
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (64, 64),
        *,
        epochs: int = 20,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        callbacks: list | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X: ArrayLike, y: ArrayLike) -> KerasMLPClassifier:
        """Build the network and train it on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Numeric features (encode categorical columns first).
        y : array-like of shape (n_samples,)
            Class labels of any type.

        Returns
        -------
        self : KerasMLPClassifier

        Raises
        ------
        ValueError
            If ``X`` is not a finite numeric matrix or ``y`` does not match it.
        """
        X, y = validate_data(self, X, y, dtype="float32", accept_sparse=False)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        seed = None
        if self.random_state is not None:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        seeds = SeedStream(seed)
        layers = [keras.Input((X.shape[1],))]
        layers += [
            keras.layers.Dense(int(u), activation="relu", kernel_initializer=seeds.initializer())
            for u in self.hidden_units
        ]
        layers.append(
            keras.layers.Dense(max(len(self.classes_), 2), kernel_initializer=seeds.initializer())
        )
        self.model_ = keras.Sequential(layers)
        self.model_.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        y_codes = self._encoder.transform(y)
        if seed is None:
            data = {"x": X, "y": y_codes, "batch_size": self.batch_size}
        else:  # the batches come in their own order (fit's shuffle is global)
            batches = _ShuffledBatches(X, y_codes, self.batch_size, seeds.next())
            data = {"x": batches, "shuffle": False}
        history = self.model_.fit(
            **data,
            epochs=self.epochs,
            callbacks=list(self.callbacks or []),
            verbose=self.verbose,
        )
        self.history_ = history.history
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities (the softmax of the network's logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
            Columns in the order of ``classes_``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        """
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype="float32", reset=False, accept_sparse=False)
        logits = self.model_.predict(X, batch_size=8192, verbose=0)
        proba = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
        return proba.astype("float64")[:, : len(self.classes_)]

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
