"""The estimator contract every attack follows, written once.

An attack is a scikit-learn estimator: ``__init__`` stores its arguments, ``fit``
learns from auxiliary data and validates the target, ``invert`` attacks the target and
``score`` measures success against ground truth (greater is better), so ``clone``,
``get_params``, ``GridSearchCV`` and joblib work on it.

:class:`BaseAttack` enforces the parts every attack shares, so no attack writes them
again:

- parameters are declared in ``_parameter_constraints`` (scikit-learn's
  :class:`~sklearn.utils._param_validation.Interval`, ``StrOptions``, ...) and checked
  at the start of every ``fit``, before the attack's own code runs;
- the target is wrapped (:func:`kmi.targets.as_target`) and its access checked against
  ``required_access`` at the same moment, and stored as ``target_``;
- :func:`sklearn.base.clone` shares ``target`` (and an evaluation model) by reference,
  so a grid search never copies a Keras model;
- what an attack needs is declared next to ``required_access`` (public data,
  BatchNormalization statistics, a GAN prior, the level it recovers), so that the audit
  selects and configures attacks from these attributes, never from class names.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

from kmi.targets import ACCESS_LEVELS, Target, as_target

__all__ = ["BaseAttack", "LEVELS"]

#: What an attack recovers: one representative per class, or each private record.
LEVELS = ("class", "instance")


def _fit_context(fit):
    """Run ``BaseAttack``'s checks (parameters, then target) before ``fit``."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        self._validate_params()
        if self.uses_target or getattr(self, "target", None) is not None:
            self._validate_target()
        return fit(self, *args, **kwargs)

    wrapper._kmi_fit_context = True
    return wrapper


class BaseAttack(BaseEstimator):
    """Base class of all kmi attacks.

    Subclasses set the capability attributes below, declare
    ``_parameter_constraints`` for every parameter of ``__init__``, and implement
    ``fit``, ``invert`` and ``score``. A subclass's ``fit`` is wrapped so that, before
    its first line runs, the parameters are validated
    (:meth:`~sklearn.base.BaseEstimator._validate_params`, raising
    :class:`~sklearn.utils._param_validation.InvalidParameterError`, a ``ValueError``)
    and the target is wrapped and checked (:meth:`_validate_target`, raising
    :class:`kmi.targets.AccessError`), the result stored as ``target_``.

    Attributes
    ----------
    required_access : {"label-only", "black-box", "white-box"}
        The least access to the target the attack needs.
    uses_target : bool
        Whether the attack queries the target at all (a baseline does not).
    needs_public_data : bool
        Whether ``fit`` needs auxiliary (public) data ``X``.
    needs_batchnorm : bool
        Whether the attack reads the target's BatchNormalization statistics.
    uses_gan_prior : bool
        Whether ``fit`` trains a GAN on the public data as an image prior.
    level : {"class", "instance"}
        Whether ``invert`` recovers one representative per class or each record.
    generative : bool
        Whether ``invert`` generates candidates of its own and ranks them (from
        prompts) rather than inverting the inputs it is given.

    Notes
    -----
    ``target`` is shared, not copied, by :func:`sklearn.base.clone`, whatever it is (a
    :class:`kmi.targets.Target`, a bare Keras model, a scikit-learn estimator or a
    callable), and so is every parameter named in ``_shared_params`` (an evaluation
    classifier). A raw model passed as ``target`` is wrapped with
    :func:`kmi.targets.as_target` in ``fit``; wrap it yourself to choose its access,
    output or query budget.

    Examples
    --------
    A tiny attack that answers, for each requested class, the ``top`` auxiliary
    records the target is most confident about. It declares what it needs and constrains its
    parameter; it writes no checks of its own.

    >>> from numbers import Integral
    >>> import numpy as np
    >>> from sklearn.base import clone
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from sklearn.utils._param_validation import Interval
    >>> from kmi.base import BaseAttack
    >>> class MostConfident(BaseAttack):
    ...     required_access = "black-box"
    ...     needs_public_data = True
    ...     _parameter_constraints = {
    ...         "target": "no_validation",
    ...         "top": [Interval(Integral, 1, None, closed="left")],
    ...     }
    ...     def __init__(self, target=None, *, top=1):
    ...         self.target = target
    ...         self.top = top
    ...     def fit(self, X, y=None):
    ...         self.candidates_ = np.asarray(X)
    ...         return self
    ...     def invert(self, y):
    ...         scores = self.target_.query(self.candidates_)[:, y]
    ...         best = np.argsort(-scores, axis=0, kind="stable")[: self.top]
    ...         return self.candidates_[best.T]
    >>> X, y = load_iris(return_X_y=True)
    >>> model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
    >>> attack = MostConfident(model, top=3).fit(X)
    >>> attack.invert([0, 2]).shape
    (2, 3, 4)
    >>> attack.target_.n_queries_, attack.required_access, attack.level
    (150, 'black-box', 'class')

    Parameters are validated when ``fit`` starts, not in ``__init__``:

    >>> bad = MostConfident(model, top=0)
    >>> bad.fit(X)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'top' ... Received: top=0

    ``clone`` copies the parameters but shares the target:

    >>> clone(attack).target is attack.target
    True

    The target's access is checked in ``fit`` against ``required_access``:

    >>> from kmi.targets import AccessError, Target
    >>> try:
    ...     MostConfident(Target(model, access="label-only")).fit(X)
    ... except AccessError as exc:
    ...     print(type(exc).__name__, "needs", MostConfident.required_access)
    AccessError needs black-box
    """

    required_access: ClassVar[str] = "black-box"
    uses_target: ClassVar[bool] = True
    needs_public_data: ClassVar[bool] = False
    needs_batchnorm: ClassVar[bool] = False
    uses_gan_prior: ClassVar[bool] = False
    level: ClassVar[str] = "class"
    generative: ClassVar[bool] = False

    #: Parameters passed through :func:`~sklearn.base.clone` by reference.
    _shared_params: ClassVar[tuple[str, ...]] = ("target", "eval_model")
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def _validate_params(self) -> None:
        """Check every parameter against ``_parameter_constraints``.

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            (a ``ValueError`` and ``TypeError``) naming the parameter, what it must
            be, and ending with ``Received: name=value``.
        """
        params = self.get_params(deep=False)
        for name, constraints in self._parameter_constraints.items():
            try:
                validate_parameter_constraints(
                    {name: constraints}, {name: params[name]}, caller_name=type(self).__name__
                )
            except InvalidParameterError as exc:
                expected = str(exc).rsplit(" Got ", 1)[0]
                raise InvalidParameterError(
                    f"{expected} Received: {name}={params[name]!r}"
                ) from None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "_kmi_fit_context", False):
            cls.fit = _fit_context(fit)

    def __sklearn_clone__(self) -> BaseAttack:
        params = self.get_params(deep=False)
        shared = {k: params.pop(k) for k in self._shared_params if k in params}
        params = {k: clone(v, safe=False) for k, v in params.items()}
        return type(self)(**params, **shared)

    def _validate_target(self) -> Target:
        if self.required_access not in ACCESS_LEVELS:  # pragma: no cover - developer error
            raise TypeError(f"{type(self).__name__}.required_access is invalid")
        target = as_target(getattr(self, "target", None))
        target.require(self.required_access, attack=type(self).__name__)
        self.target_ = target
        return target

    def fit(self, X: Any = None, y: Any = None) -> BaseAttack:
        """Learn from auxiliary data and validate the target; return ``self``."""
        raise NotImplementedError

    def invert(self, *args: Any, **kwargs: Any) -> Any:
        """Run the attack against the target and return what it recovered."""
        raise NotImplementedError

    def score(self, X: Any, y: Any = None) -> float:
        """Measure the attack's success against ground truth (greater is better)."""
        raise NotImplementedError

    def fit_invert(self, X: Any, y: Any = None, **invert_params: Any) -> Any:
        """Fit on ``X, y``, then invert.

        With no ``invert_params``, the records just fitted on are attacked
        (``invert(X, y)``), as ``fit_transform`` transforms what it fitted;
        otherwise ``invert(**invert_params)`` is called.

        Parameters
        ----------
        X : array-like or None
            Data for ``fit`` (and for ``invert`` when no ``invert_params`` are given).
        y : array-like, optional
            Labels for ``fit`` (and ``invert``).
        **invert_params
            Arguments of ``invert``, if it should attack something other than ``X, y``.

        Returns
        -------
        object
            What ``invert`` returns.
        """
        self.fit(X, y)
        if invert_params:
            return self.invert(**invert_params)
        return self.invert(X, y)
