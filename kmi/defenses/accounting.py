"""Privacy accounting for DP-SGD, as thin functions over ``dp-accounting``.

Both functions describe DP-SGD as the composition of ``steps`` Poisson-subsampled
Gaussian mechanisms (each example joins each batch independently with probability
``sampling_rate``), under the add-or-remove-one neighbouring relation, and hand that
event to Google's `dp-accounting <https://github.com/google/differential-privacy>`_
library: its RDP accountant (Mironov et al. 2019) or its PLD accountant (Koskela et al.
2020; tighter, slower). kmi never computes a privacy bound itself.

The Poisson assumption is exact when batches are drawn with
:class:`kmi.defenses.PoissonSampler`. With ordinary shuffled batches (``model.fit(x, y,
batch_size=...)``) it is the usual approximation used in the literature, not a proven
bound for what ran; :class:`kmi.defenses.DPSGD` says so when it reports epsilon.
"""

from __future__ import annotations

import logging
import math

import dp_accounting

__all__ = ["calibrate_noise", "compute_epsilon"]

ACCOUNTANTS = ("rdp", "pld")


class _UnevaluatedOrders(logging.Filter):
    """Drop dp-accounting's warning for each RDP order it cannot evaluate.

    With a large sampling rate and small noise, ``_compute_log_a_frac failed to
    converge ... Excluding this order`` is logged for every low order, at every step
    of a noise calibration: the demo printed 56 such lines. The order is left out of
    the minimum over orders, which is still a valid bound, so there is nothing for
    the user to act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "_compute_log_a_frac failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_UnevaluatedOrders())


def _resolve_schedule(sampling_rate, steps, num_examples, batch_size, epochs, delta):
    if sampling_rate is None:
        if num_examples is None or batch_size is None:
            raise ValueError(
                "Pass either sampling_rate, or num_examples and batch_size (the rate is "
                "then batch_size / num_examples). "
                f"Received: sampling_rate=None, num_examples={num_examples!r}, "
                f"batch_size={batch_size!r}"
            )
        if not (0 < batch_size <= num_examples):
            raise ValueError(
                "batch_size must be in (0, num_examples]. "
                f"Received: batch_size={batch_size!r}, num_examples={num_examples!r}"
            )
        sampling_rate = batch_size / num_examples
    if not (0 < sampling_rate <= 1):
        raise ValueError(
            f"sampling_rate must be in (0, 1]. Received: sampling_rate={sampling_rate!r}"
        )
    if steps is None:
        if epochs is None:
            raise ValueError(
                "Pass either steps or epochs (steps is then ceil(epochs / sampling_rate)). "
                "Received: steps=None, epochs=None"
            )
        steps = math.ceil(epochs / sampling_rate - 1e-9)
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer. Received: steps={steps!r}")
    if delta is None:
        if num_examples is None:
            raise ValueError(
                "delta defaults to 1 / num_examples; pass one of them. "
                "Received: delta=None, num_examples=None"
            )
        delta = 1.0 / num_examples
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1). Received: delta={delta!r}")
    return float(sampling_rate), int(steps), float(delta)


def _make_accountant(accountant):
    if accountant == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    if accountant == "pld":
        return dp_accounting.pld.PLDAccountant()
    raise ValueError(
        f"accountant must be one of {ACCOUNTANTS}. Received: accountant={accountant!r}"
    )


def _dp_sgd_event(noise_multiplier, sampling_rate, steps):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        steps,
    )


def compute_epsilon(
    noise_multiplier: float,
    *,
    sampling_rate: float | None = None,
    steps: int | None = None,
    num_examples: int | None = None,
    batch_size: int | None = None,
    epochs: float | None = None,
    delta: float | None = None,
    accountant: str = "rdp",
) -> float:
    """Epsilon spent by DP-SGD, at ``delta``, assuming Poisson sampling.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation divided by the clipping norm. ``0`` gives
        ``inf`` (no privacy).
    sampling_rate : float, optional
        Probability that an example joins a batch. Default:
        ``batch_size / num_examples``.
    steps : int, optional
        Number of noisy gradient steps. Default: ``ceil(epochs / sampling_rate)``.
    num_examples : int, optional
        Training set size ``N``.
    batch_size : int, optional
        Expected batch size.
    epochs : float, optional
        Number of passes over the data.
    delta : float, optional
        Target delta. Default: ``1 / num_examples``.
    accountant : {"rdp", "pld"}, default="rdp"
        dp-accounting's Rényi DP accountant or its privacy-loss-distribution
        accountant (tighter, slower).

    Returns
    -------
    float
        The smallest epsilon the accountant certifies at ``delta`` (``0.0`` for
        zero steps).

    Raises
    ------
    ValueError
        If the schedule is under-specified or a value is out of range.

    See Also
    --------
    calibrate_noise : the inverse, noise for a target epsilon.
    DPSGD : reports this value every epoch.

    Notes
    -----
    DP-SGD is described as ``SelfComposedDpEvent(PoissonSampledDpEvent(q,
    GaussianDpEvent(noise_multiplier)), steps)`` under add-or-remove-one
    adjacency. This is exact for Poisson-sampled batches
    (:class:`PoissonSampler`) and an approximation for shuffled batches.

    References
    ----------
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016.
    Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled
    Gaussian Mechanism", 2019.

    Examples
    --------
    >>> from kmi.defenses import compute_epsilon
    >>> eps = compute_epsilon(1.1, num_examples=60000, batch_size=256, epochs=60, delta=1e-5)
    >>> round(eps, 1)
    2.6
    """
    sampling_rate, steps, delta = _resolve_schedule(
        sampling_rate, steps, num_examples, batch_size, epochs, delta
    )
    if noise_multiplier < 0:
        raise ValueError(
            f"noise_multiplier must be >= 0. Received: noise_multiplier={noise_multiplier!r}"
        )
    acc = _make_accountant(accountant)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    acc.compose(_dp_sgd_event(float(noise_multiplier), sampling_rate, steps))
    return float(acc.get_epsilon(delta))


def calibrate_noise(
    target_epsilon: float,
    *,
    sampling_rate: float | None = None,
    steps: int | None = None,
    num_examples: int | None = None,
    batch_size: int | None = None,
    epochs: float | None = None,
    delta: float | None = None,
    accountant: str = "rdp",
    tol: float = 1e-3,
) -> float:
    """Smallest noise multiplier whose DP-SGD run stays within ``target_epsilon``.

    Parameters
    ----------
    target_epsilon : float
        The privacy budget, > 0.
    sampling_rate, steps, num_examples, batch_size, epochs, delta, accountant
        As in :func:`compute_epsilon`.
    tol : float, default=1e-3
        Tolerance on the returned noise multiplier; the value returned is on the
        private side (its epsilon is <= ``target_epsilon``).

    Returns
    -------
    float
        The noise multiplier.

    Raises
    ------
    ValueError
        If ``target_epsilon`` is not positive or the schedule is under-specified.

    See Also
    --------
    compute_epsilon

    Examples
    --------
    >>> from kmi.defenses import calibrate_noise, compute_epsilon
    >>> sigma = calibrate_noise(3.0, num_examples=60000, batch_size=256, epochs=15)
    >>> compute_epsilon(sigma, num_examples=60000, batch_size=256, epochs=15) <= 3.0
    True
    """
    if not target_epsilon > 0:
        raise ValueError(
            f"target_epsilon must be > 0. Received: target_epsilon={target_epsilon!r}"
        )
    sampling_rate, steps, delta = _resolve_schedule(
        sampling_rate, steps, num_examples, batch_size, epochs, delta
    )
    _make_accountant(accountant)
    if steps == 0:
        return 0.0
    sigma = dp_accounting.calibrate_dp_mechanism(
        lambda: _make_accountant(accountant),
        lambda s: _dp_sgd_event(s, sampling_rate, steps),
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.mechanism_calibration.LowerEndpointAndGuess(1e-2, 1.0),
        tol=tol,
    )
    return float(sigma)


def max_steps(
    noise_multiplier: float,
    target_epsilon: float,
    *,
    sampling_rate: float,
    delta: float,
    accountant: str = "rdp",
    upper: int = 10**7,
) -> int:
    """Largest number of DP-SGD steps whose epsilon stays within ``target_epsilon``.

    Found by bisection over :func:`compute_epsilon`, which grows with the number
    of steps. :class:`~kmi.defenses.PrivacyBudget` uses it to stop a ``fit``.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation divided by the clipping norm.
    target_epsilon : float
        The privacy budget.
    sampling_rate : float
        Probability that an example joins a batch.
    delta : float
        Target delta.
    accountant : {"rdp", "pld"}, default="rdp"
        As in :func:`compute_epsilon`.
    upper : int, default=10**7
        Largest number of steps searched; returned when even it stays within
        the budget.

    Returns
    -------
    int
        The number of steps (``0`` if a single step exceeds the budget).

    Raises
    ------
    ValueError
        If a value is out of range (see :func:`compute_epsilon`).

    See Also
    --------
    compute_epsilon : epsilon after a given number of steps.
    PrivacyBudget : stops a DP-SGD ``fit`` after this many steps.

    Examples
    --------
    How many batches of 256 out of 60,000 examples fit in ``epsilon=1``:

    >>> from kmi.defenses import compute_epsilon
    >>> from kmi.defenses.accounting import max_steps
    >>> steps = max_steps(1.1, 1.0, sampling_rate=256 / 60000, delta=1e-5)
    >>> steps, steps * 256 // 60000  # steps, whole epochs
    (1709, 7)
    >>> def eps(n):
    ...     return compute_epsilon(1.1, sampling_rate=256 / 60000, steps=n, delta=1e-5)
    >>> eps(steps) <= 1.0 < eps(steps + 1)
    True
    """

    def eps(steps):
        return compute_epsilon(
            noise_multiplier,
            sampling_rate=sampling_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )

    lo, hi = 0, 1
    while hi < upper and eps(hi) <= target_epsilon:
        lo, hi = hi, hi * 2
    if hi >= upper and eps(upper) <= target_epsilon:
        return upper
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if eps(mid) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    return lo
