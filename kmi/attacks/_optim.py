"""The batched optimisation loop shared by every input- and latent-space attack.

MIFace, DeepInversion, GMI and KEDMI all minimise a per-row loss over a batch of
inputs or latent codes (one row per attacked class or restart) by gradient descent.
:func:`minimize` is that loop, written once:

- every row is optimised at once, in one compiled step (``kmi.backend.jit``);
- SGD (with momentum) or Adam, and box constraints (clipping) after each step;
- Fredrikson et al.'s stopping rule per row: a row stops when its loss is at most
  ``gamma`` or has not improved for ``patience`` steps; the loop ends when every row
  has stopped or after ``max_iter`` steps;
- keep-best: each row returns its lowest-loss iterate (optional);
- an optional processing hook (denoising, projection) every ``process_every`` steps;
- random per-step inputs (jitter, flips, reparameterisation noise) from ``aux_fn``,
  drawn from a NumPy generator so that runs are reproducible;
- every evaluation of the loss reads the target (a forward pass, and a gradient
  through it), so each step is counted as one query per row on the target given as
  ``queries``, which enforces its ``query_budget``;
- a progress bar under ``verbose``, and ``KeyboardInterrupt`` returns what is there;
  an exhausted query budget raises, carrying what is there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from kmi import backend
from kmi.targets import QueryBudgetExceededError

__all__ = ["OptimResult", "minimize"]


@dataclass
class OptimResult:
    """What :func:`minimize` returns.

    Attributes
    ----------
    x : ndarray
        Best (or last, without ``keep_best``) iterate of each row.
    loss : ndarray of shape (n_rows,)
        Loss of each row at ``x``.
    n_iter : int
        Steps taken.
    n_iter_rows : ndarray of shape (n_rows,)
        Step at which each row stopped (``n_iter`` if it never did).
    interrupted : bool
        Whether a KeyboardInterrupt ended the loop early.
    """

    x: np.ndarray
    loss: np.ndarray
    n_iter: int
    n_iter_rows: np.ndarray
    interrupted: bool = False


def _as_tensor(x):
    return ops.convert_to_tensor(np.asarray(x, dtype="float32"))


def _aux_tensor(v):
    v = np.asarray(v)
    if v.dtype.kind in "iub":
        return ops.convert_to_tensor(v.astype("int32"))
    return ops.convert_to_tensor(v.astype("float32"))


def minimize(
    loss_fn,
    x0,
    *,
    max_iter: int = 1000,
    learning_rate: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    clip=None,
    gamma: float | None = None,
    patience: int | None = None,
    keep_best: bool = True,
    tol: float = 1e-6,
    process=None,
    process_every: int = 1,
    aux_fn=None,
    rng=None,
    check_every: int = 10,
    queries=None,
    queries_per_row: int = 1,
    verbose: int = 0,
    desc: str = "",
) -> OptimResult:
    """Minimise a per-row loss over a batch by gradient descent, all rows at once.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(x, aux) -> tensor of shape (n_rows,)``, written with
        ``keras.ops``; ``aux`` is the dict returned by ``aux_fn`` (empty without
        one). Rows must not interact for the stopping rule to be per row.
    x0 : ndarray of shape (n_rows, ...)
        Starting point.
    max_iter : int, default=1000
    learning_rate : float, default=0.1
    optimizer : {"sgd", "adam"}, default="sgd"
    momentum : float, default=0.0
        SGD momentum (heavy ball).
    beta_1, beta_2 : float
        Adam's moment decays.
    clip : (float, float) or None
        Box the iterates are clipped to after each step.
    gamma : float, default=None
        A row stops once its loss is at most ``gamma``.
    patience : int, default=None
        A row stops after ``patience`` steps without improving its best loss.
    keep_best : bool, default=True
        Return each row's lowest-loss iterate rather than the last one.
    tol : float, default=1e-6
        A step improves a row when it lowers its best loss by more than ``tol``.
    process : callable, default=None
        ``process(x: ndarray) -> ndarray`` applied every ``process_every`` steps.
    process_every : int, default=1
    aux_fn : callable, default=None
        ``aux_fn(step, rng) -> dict of arrays`` giving the random inputs of a step.
    rng : numpy.random.Generator, default=None
    check_every : int, default=10
        Steps between checks of whether every row has stopped (each check
        copies one value from the device).
    queries : kmi.targets.Target, default=None
        The target ``loss_fn`` reads. Every step (and the final evaluation) is
        recorded on it as one query per row (:meth:`~kmi.targets.Target.record_queries`),
        so white-box reads are counted in ``n_queries_`` and respect ``query_budget``.
    queries_per_row : int, default=1
        Inputs of the target one row's loss reads (KED-MI: its samples per class).
    verbose : int, default=0
    desc : str, default=""

    Returns
    -------
    OptimResult

    Raises
    ------
    kmi.targets.QueryBudgetExceededError
        If ``queries`` has a budget too small for the next step. Raised before the
        first step if it cannot run at all; after that, the exception's
        ``partial_result`` holds the :class:`OptimResult` of the steps that ran.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam'. Received: optimizer={optimizer!r}")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(
            f"max_iter must be a non-negative integer. Received: max_iter={max_iter!r}"
        )
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(
            f"learning_rate must be a positive number. Received: learning_rate={learning_rate!r}"
        )
    rng = np.random.default_rng(rng)
    x0 = np.asarray(x0, dtype="float32")
    n = x0.shape[0]
    expand = (slice(None),) + (None,) * (x0.ndim - 1)
    gamma_v = -math.inf if gamma is None else float(gamma)
    patience_v = math.inf if patience is None else float(patience)
    lr = float(learning_rate)
    tol_v = float(tol)
    mom, b1, b2 = float(momentum), float(beta_1), float(beta_2)
    lo, hi = (None, None) if clip is None else (float(clip[0]), float(clip[1]))
    use_adam = optimizer == "adam"

    def rows_and_grad(x, aux):
        def total(t):
            rows = loss_fn(t, aux)
            return ops.sum(rows), rows

        _, rows, grad = backend.value_and_grad_with_aux(total, x)
        return rows, grad

    def step(state, aux):
        x, m, v, t, best_x, best_loss, since, active = state
        rows, g = rows_and_grad(x, aux)
        rows = ops.where(ops.isnan(rows), math.inf, rows)
        lower = ops.logical_and(rows < best_loss, active)
        best_loss_new = ops.where(lower, rows, best_loss)
        best_x = ops.where(lower[expand], x, best_x)
        since = ops.where(rows < best_loss - tol_v, 0.0, since + 1.0)
        best_loss = best_loss_new
        done = ops.logical_or(rows <= gamma_v, since >= patience_v)
        active = ops.logical_and(active, ops.logical_not(done))
        t = t + 1.0
        if use_adam:
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * g * g
            m_hat = m / (1.0 - b1**t)
            v_hat = v / (1.0 - b2**t)
            update = lr * m_hat / (ops.sqrt(v_hat) + 1e-8)
        else:
            m = mom * m + g if mom else g
            update = lr * m
        mask = ops.cast(active, x.dtype)[expand]
        x = x - mask * update
        if lo is not None:
            x = ops.clip(x, lo, hi)
        return (x, m, v, t, best_x, best_loss, since, active)

    def final_rows(x, aux):
        return loss_fn(x, aux)

    step_c = backend.jit(step)
    final_c = backend.jit(final_rows)

    x = _as_tensor(x0)
    zeros = ops.zeros_like(x)
    state = (
        x,
        zeros,
        zeros,
        _as_tensor(0.0),
        x,
        _as_tensor(np.full(n, np.inf)),
        _as_tensor(np.zeros(n)),
        ops.convert_to_tensor(np.ones(n, dtype=bool)),
    )
    stopped_at = np.full(n, max_iter, dtype=np.int64)
    bar = keras.utils.Progbar(max_iter, unit_name="step") if verbose and max_iter else None
    if verbose and desc:
        print(desc, flush=True)
    interrupted = False
    it = 0

    def make_aux(i):
        if aux_fn is None:
            return {}
        return {k: _aux_tensor(v) for k, v in aux_fn(i, rng).items()}

    budget_error = None
    try:
        while it < max_iter:
            if queries is not None:
                try:
                    queries.record_queries(n * queries_per_row)
                except QueryBudgetExceededError as exc:
                    if it == 0:
                        raise
                    budget_error = exc
                    break
            state = step_c(state, make_aux(it))
            it += 1
            if process is not None and it % max(int(process_every), 1) == 0:
                processed = np.asarray(process(ops.convert_to_numpy(state[0])), dtype="float32")
                if lo is not None:
                    processed = np.clip(processed, lo, hi)
                state = (_as_tensor(processed), *state[1:])
            if it % check_every == 0 or it == max_iter:
                active = ops.convert_to_numpy(state[7])
                newly = (~active) & (stopped_at == max_iter)
                stopped_at[newly] = it
                if bar is not None:
                    best = ops.convert_to_numpy(state[5])
                    finite = best[np.isfinite(best)]
                    bar.update(it, [("loss", float(finite.mean()) if finite.size else np.nan)])
                if not active.any():
                    break
    except KeyboardInterrupt:
        interrupted = True
        warnings.warn(
            f"Interrupted after {it} of {max_iter} steps; returning the best iterates so far.",
            RuntimeWarning,
            stacklevel=2,
        )
    result = _finish(
        state,
        final_c,
        make_aux(it),
        (it, stopped_at, interrupted, keep_best),
        (None, 0) if budget_error is not None else (queries, queries_per_row),
        expand,
    )
    if budget_error is not None:
        budget_error.partial_result = result
        raise budget_error
    return result


def _finish(state, final_c, aux, progress, counting, expand):
    """The result of the loop: each row's best (or last) iterate and its loss."""
    it, stopped_at, interrupted, keep_best = progress
    queries, per_row = counting
    x_last = state[0]
    n = int(x_last.shape[0])
    scored = True
    if queries is not None:
        try:
            queries.record_queries(n * per_row)
        except QueryBudgetExceededError:
            scored = False  # no budget left to score the last iterates: keep the best
    if scored:
        last_rows = ops.convert_to_numpy(final_c(x_last, aux)).astype("float64")
        last_rows = np.where(np.isnan(last_rows), np.inf, last_rows)
    else:
        last_rows = np.full(n, np.inf)
    x_last = ops.convert_to_numpy(x_last)
    if not keep_best:
        return OptimResult(x_last, last_rows, it, stopped_at, interrupted)
    best_x = ops.convert_to_numpy(state[4])
    best_loss = ops.convert_to_numpy(state[5]).astype("float64")
    # rows still running at the end: their last iterate was never scored in a step
    take_last = last_rows <= best_loss
    best_x = np.where(take_last[expand], x_last, best_x)
    best_loss = np.where(take_last, last_rows, best_loss)
    return OptimResult(best_x, best_loss, it, stopped_at, interrupted)
