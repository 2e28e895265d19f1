"""The estimator contract every attack follows.

An attack is a scikit-learn estimator: ``__init__`` stores its arguments, ``fit``
learns from auxiliary data and validates the target, ``invert`` attacks the target and
``score`` measures success against ground truth (greater is better), so ``clone``,
``get_params``, ``GridSearchCV`` and joblib work on it.
"""

from __future__ import annotations

from typing import ClassVar

from sklearn.base import BaseEstimator

from kmi.targets import ACCESS_LEVELS, Target, as_target

__all__ = ["BaseAttack"]


class BaseAttack(BaseEstimator):
    """Base class of all kmi attacks.

    Subclasses set ``required_access`` (one of ``"label-only"``, ``"black-box"``,
    ``"white-box"``) and implement ``fit``, ``invert`` and ``score``. ``fit`` must
    call :meth:`_validate_target`, which refuses a target giving less access than the
    attack needs and stores the wrapped target as ``target_``.

    Notes
    -----
    The ``target`` parameter is shared, not copied, by :func:`sklearn.base.clone`
    (:class:`kmi.targets.Target` returns itself from ``__sklearn_clone__``). A raw
    model passed as ``target`` is wrapped with :func:`kmi.targets.as_target` in
    ``fit``; wrap it yourself to choose its access, output or query budget.
    """

    #: The least access to the target the attack needs.
    required_access: ClassVar[str] = "black-box"

    def _validate_target(self) -> Target:
        if self.required_access not in ACCESS_LEVELS:  # pragma: no cover - developer error
            raise TypeError(f"{type(self).__name__}.required_access is invalid")
        target = as_target(getattr(self, "target", None))
        target.require(self.required_access, attack=type(self).__name__)
        self.target_ = target
        return target

    def fit(self, X, y=None):
        """Learn from auxiliary data and validate the target; return ``self``."""
        raise NotImplementedError

    def invert(self, *args, **kwargs):
        """Run the attack against the target and return what it recovered."""
        raise NotImplementedError

    def score(self, X, y=None) -> float:
        """Measure the attack's success against ground truth (greater is better)."""
        raise NotImplementedError

    def fit_invert(self, X, y=None, **invert_params):
        """Fit on ``X, y``, then invert.

        With no ``invert_params``, the records just fitted on are attacked
        (``invert(X, y)``), as ``fit_transform`` transforms what it fitted;
        otherwise ``invert(**invert_params)`` is called.
        """
        self.fit(X, y)
        if invert_params:
            return self.invert(**invert_params)
        return self.invert(X, y)
