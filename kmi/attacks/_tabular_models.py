"""The models the tabular attacks train or read, apart from the target's outputs.

- :class:`AttackModelMixin`: the attack model of :class:`~kmi.attacks.LOMIA`,
  :class:`~kmi.attacks.AttributeInferenceModel` and
  :class:`~kmi.attacks.ImputationBaseline` (encoders of the known features and the
  label, a seeded clone of the estimator, its probabilities over every candidate);
- :func:`tree_parts` and :func:`leaf_count_scores`: the leaves of a scikit-learn tree
  or forest that :class:`~kmi.attacks.DecisionTreeWhiteBox` reads.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import check_random_state

from kmi.attacks._tabular_records import MAX_VALUES, is_numeric


class AttackModelMixin:
    """Features, estimator and probabilities of an attack model on known features.

    The host class has ``estimator`` and ``random_state`` parameters and the fitted
    layout of :class:`~kmi.attacks._tabular.TabularAttack` (``known_columns_``).
    :meth:`_fit_encoders` is called in ``fit``; it also draws the seed of every
    attack model the attack trains from ``random_state``, so that a fitted attack
    gives the same answers whenever it is asked.
    """

    def _fit_encoders(self, frame, y) -> None:
        known = frame[self.known_columns_]
        cats = [i for i, c in enumerate(self.known_columns_) if not is_numeric(known[c])]
        nums = [i for i, c in enumerate(self.known_columns_) if is_numeric(known[c])]
        self._encoder = ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats),
                ("num", StandardScaler(), nums),
            ],
            sparse_threshold=0.0,
        ).fit(known)
        self._label_features(y, fit=True)
        self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _label_features(self, y, fit: bool = False) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype.kind == "f" and len(np.unique(y)) > MAX_VALUES:  # regression labels
            if fit:
                self._y_scale = (float(np.mean(y)), float(np.std(y)) or 1.0)
            mean, std = self._y_scale
            return ((y - mean) / std)[:, None]
        if fit:
            self._y_encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            self._y_encoder.fit(y.reshape(-1, 1).astype(object))
        return self._y_encoder.transform(y.reshape(-1, 1).astype(object))

    def _known_features(self, frame, y) -> np.ndarray:
        """The encoded known features and label of each record."""
        known = self._encoder.transform(frame[self.known_columns_])
        return np.hstack([known, self._label_features(y)])

    def _make_estimator(self):
        """A clone of ``estimator`` (default: gradient boosting), every
        ``random_state`` in it set to the seed drawn in ``fit``."""
        if self.estimator is None:
            return HistGradientBoostingClassifier(random_state=self._seed)
        estimator = clone(self.estimator)
        seeded = [k for k in estimator.get_params() if k.split("__")[-1] == "random_state"]
        return estimator.set_params(**dict.fromkeys(seeded, self._seed))

    def _fit_learner(self, features, s_idx):
        """The attack model fitted on the records with a known value (``s_idx >= 0``);
        ``None`` when they hold fewer than two values."""
        keep = s_idx >= 0
        if len(np.unique(s_idx[keep])) < 2:
            return None
        return self._make_estimator().fit(features[keep], s_idx[keep])

    def _learner_proba(self, estimator, features) -> np.ndarray:
        """Probabilities over all candidate values (columns the learner never saw: 0;
        the prior when there is no learner)."""
        n_values = len(self.sensitive_values_)
        if estimator is None:
            return np.tile(self.prior_, (len(features), 1))
        proba = estimator.predict_proba(features)
        out = np.zeros((len(features), n_values))
        out[:, estimator.classes_.astype(int)] = proba
        return out


def tree_parts(target) -> tuple[object, list[DecisionTreeClassifier]]:
    """The preprocessing (or ``None``) and the trees of a white-box tree target.

    Raises
    ------
    TypeError
        If the target is not a scikit-learn decision tree classifier, a random or
        extra-trees forest of them, or a Pipeline ending in one.
    """
    model = target.model
    prep = None
    if hasattr(model, "steps"):
        prep, model = model[:-1], model.steps[-1][1]
    if isinstance(model, DecisionTreeClassifier):
        trees = [model]
    else:
        trees = getattr(model, "estimators_", None)
    if (
        target.kind != "sklearn"
        or not trees
        or not all(isinstance(t, DecisionTreeClassifier) for t in np.ravel(trees))
    ):
        raise TypeError(
            "DecisionTreeWhiteBox reads a scikit-learn DecisionTreeClassifier (or a "
            "random/extra-trees forest of them, or a Pipeline ending in one). "
            f"Received: target model of type {type(model).__name__}"
        )
    return prep, list(np.ravel(trees))


def leaf_count_scores(trees, Z, y_enc, prior, combo_weights, shape) -> np.ndarray:
    """Estimated training records of class ``y`` like each candidate completion.

    ``Z`` holds the candidate completions, ordered (record, value, combination) as
    ``shape = (n, k, m)``. In each tree, a completion's leaf count of class ``y``
    is shared among the candidate values reaching the same leaf in proportion to
    their ``prior``; the shares are summed over trees and weighted over the
    combinations of unknown features. Returns an array of shape (n, k).
    """
    n, k, m = shape
    total = np.zeros((n, k))
    for tree in trees:
        leaves = tree.apply(Z).reshape(n, k, m)
        value = tree.tree_.value[:, 0, :]
        counts = value / value.sum(axis=1, keepdims=True)
        counts = counts * tree.tree_.weighted_n_node_samples[:, None]
        # class y of the target is column y of the tree (same classes_)
        c_y = counts[leaves, y_enc[:, None, None]]  # (n, k, m)
        same = leaves[:, :, None, :] == leaves[:, None, :, :]  # (n, k, k', m)
        prior_mass = np.einsum("nkjm,j->nkm", same, prior)
        share = prior[None, :, None] / prior_mass
        total += (c_y * share) @ combo_weights
    return total
