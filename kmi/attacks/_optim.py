"""The batched optimisation loop shared by every input- and latent-space attack.

MIFace, DeepInversion, GMI, KEDMI and TokenOptimization all minimise a per-row loss
over a batch of inputs or latent codes (one row per attacked class or restart) by
gradient descent. :func:`minimize` is that loop, written once:

- every row is optimised at once, and the steps run in chunks inside one compiled
  loop (``keras.ops.while_loop`` under ``kmi.backend.jit``: ``jax.lax.while_loop``,
  ``tf.while_loop``), about ``chunk_size`` steps per call from Python;
- the compiled chunk is cached: an attack that names its loss (``program``) and the
  models it reads (``models``) compiles once per shape and reuses the program
  across ``invert`` calls, restarts and classes. The models' weights are passed in
  as arguments (a ``keras.StatelessScope``), so training a model later is seen;
- SGD (with momentum) or Adam, and box constraints (clipping) after each step;
  the hyperparameters are arguments of the compiled program, not constants, so a
  grid search over them compiles once;
- Fredrikson et al.'s stopping rule per row, inside the loop: a row stops when its
  loss is at most ``gamma`` or has not improved for ``patience`` steps; the loop
  ends when every row has stopped or after ``max_iter`` steps;
- keep-best: each row returns its lowest-loss iterate (optional);
- an optional processing hook (denoising, projection, in NumPy) every
  ``process_every`` steps, between chunks;
- random per-step inputs (jitter, flips, reparameterisation noise) from ``aux_fn``,
  drawn from a NumPy generator a chunk at a time, so that runs are reproducible
  and equal to a step-by-step loop's;
- every evaluation of the loss reads the target (a forward pass, and a gradient
  through it), so each step is counted as one query per row on the target given as
  ``queries``, which enforces its ``query_budget`` (a chunk never runs past it);
- progress, interruption and the budget act between chunks: a progress bar under
  ``verbose``, ``KeyboardInterrupt`` returns the last finished chunk, and an
  exhausted query budget raises, carrying what is there.
"""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from kmi import backend
from kmi.targets import QueryBudgetExceededError

__all__ = ["CHUNK_SIZE", "OptimResult", "adam_apply", "adam_init", "minimize"]

CHUNK_SIZE = 50
"""Steps per compiled call (progress, interruption and the budget act in between)."""

_AUX_BYTES = 64 * 2**20  # most bytes of per-step random inputs held for one chunk
_CACHE_SIZE = 32  # compiled programs kept (least recently used dropped first)
_CACHE: OrderedDict = OrderedDict()
_TRACES = {"chunk": 0, "final": 0}  # times a program was traced (tests count them)

_HP = ("learning_rate", "momentum", "beta_1", "beta_2", "gamma", "patience", "tol", "lo", "hi")


def adam_init(params: Sequence[Any]) -> tuple:
    """The state of :func:`adam_apply` for a list of parameter tensors."""
    zeros = [ops.zeros_like(p) for p in params]
    return (zeros, [ops.zeros_like(p) for p in params], ops.convert_to_tensor(0.0))


def adam_apply(state, grads, params, *, learning_rate, beta_1=0.9, beta_2=0.999):
    """One functional Adam step on lists of tensors: ``(new_params, new_state)``.

    For the networks the attacks train inside a compiled function (GAN priors, RLB-MI's
    agent), where ``Optimizer.stateless_apply`` is not available on every backend.
    """
    m, v, t = state
    b1, b2 = beta_1, beta_2
    t = t + 1.0
    m = [b1 * mi + (1.0 - b1) * g for mi, g in zip(m, grads)]
    v = [b2 * vi + (1.0 - b2) * g * g for vi, g in zip(v, grads)]
    scale = learning_rate * ops.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    params = [p - scale * mi / (ops.sqrt(vi) + 1e-7) for p, mi, vi in zip(params, m, v)]
    return params, (m, v, t)


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
    loss_curve : ndarray of shape (n_iter,)
        Mean loss over the rows at each step (before the step's update).
    """

    x: np.ndarray
    loss: np.ndarray
    n_iter: int
    n_iter_rows: np.ndarray
    interrupted: bool = False
    loss_curve: np.ndarray | None = None


def _as_tensor(x):
    return ops.convert_to_tensor(np.asarray(x, dtype="float32"))


def _aux_array(v):
    v = np.asarray(v)
    return v.astype("int32") if v.dtype.kind in "iub" else v.astype("float32")


def _variables(models) -> list:
    """The distinct Keras variables of ``models`` (their weights, passed in per call)."""
    seen, out = set(), []
    for model in models:
        for v in getattr(model, "variables", ()):
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def _programs(loss_fn, project, variables, flags):
    """The compiled ``chunk`` and ``final`` functions of one loss."""
    use_adam, use_momentum, use_clip, stops, keep_best = flags

    def step(state, aux, hp):
        x, m, v, t, best_x, best_loss, since, active, stop, last = state
        lr, mom, b1, b2, gamma, patience, tol, lo, hi = (hp[j] for j in range(len(_HP)))
        expand = (slice(None),) + (None,) * (len(x.shape) - 1)

        def total(z):
            rows = loss_fn(z, aux)
            return ops.sum(rows), rows

        _, rows, g = backend.value_and_grad_with_aux(total, x)
        rows = ops.where(ops.isnan(rows), math.inf, rows)
        lower = ops.logical_and(rows < best_loss, active)
        if keep_best:  # a pass over every row's iterate: only when it is asked for
            best_x = ops.where(lower[expand], x, best_x)
        t = t + 1.0
        if stops:
            since = ops.where(rows < best_loss - tol, 0.0, since + 1.0)
            done = ops.logical_and(active, ops.logical_or(rows <= gamma, since >= patience))
            stop = ops.where(done, ops.cast(t, "int32"), stop)
        best_loss = ops.where(lower, rows, best_loss)
        if use_adam:
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * g * g
            m_hat = m / (1.0 - ops.power(b1, t))
            v_hat = v / (1.0 - ops.power(b2, t))
            update = lr * m_hat / (ops.sqrt(v_hat) + 1e-8)
        else:
            m = mom * m + g if use_momentum else g
            update = lr * m
        if stops:  # stopped rows stay where they are
            x = x - ops.cast(active, x.dtype)[expand] * update
            active = ops.logical_and(active, ops.logical_not(done))
        else:  # without a stopping rule every row runs to the end
            x = x - update
        if use_clip:
            x = ops.clip(x, lo, hi)
        if project is not None:
            x = project(x, aux)
        return (x, m, v, t, best_x, best_loss, since, active, stop, rows)

    def chunk(state, aux_steps, data, hp, n_steps, values, curve):
        _TRACES["chunk"] += 1  # runs when traced, not when the compiled program runs
        positions = ops.arange(ops.shape(curve)[0])
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):

            def cond(i, state, curve):
                return ops.logical_and(i < n_steps, ops.any(state[7]))

            def body(i, state, curve):
                aux = {k: ops.take(a, i, axis=0) for k, a in aux_steps.items()}
                state = step(state, {**aux, **data}, hp)
                curve = ops.where(positions == i, ops.mean(state[9]), curve)
                return i + 1, state, curve

            return ops.while_loop(cond, body, (ops.zeros((), "int32"), state, curve))

    def final(x, aux, values):
        _TRACES["final"] += 1
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return loss_fn(x, aux)

    return backend.jit(chunk), backend.jit(final)


def _compiled(loss_fn, project, models, program, flags):
    """The compiled programs of ``loss_fn``: cached under ``program`` and the models."""
    models = [m for m in models if m is not None]
    variables = _variables(models)
    if program is None:
        return variables, _programs(loss_fn, project, variables, flags)
    owners = tuple(models)
    key = (tuple(id(m) for m in owners), program, flags)
    entry = _CACHE.get(key)
    if entry is not None:
        refs, cached_vars, fns = entry
        if all(r() is m for r, m in zip(refs, owners)) and len(cached_vars) == len(variables):
            _CACHE.move_to_end(key)
            return cached_vars, fns
    fns = _programs(loss_fn, project, variables, flags)
    _CACHE[key] = (tuple(weakref.ref(m) for m in owners), variables, fns)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return variables, fns


def _budget_steps(queries, per_step: int) -> float:
    """Steps the target's query budget still allows (infinite without a budget)."""
    budget = getattr(queries, "query_budget", None)
    if queries is None or budget is None:
        return math.inf
    return (budget - queries.n_queries_) // max(per_step, 1)


def minimize(
    loss_fn: Callable[[Any, dict], Any],
    x0: Any,
    *,
    max_iter: int = 1000,
    learning_rate: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    clip: tuple[float, float] | None = None,
    project: Callable[[Any, dict], Any] | None = None,
    gamma: float | None = None,
    patience: int | None = None,
    keep_best: bool = True,
    score_last: bool = True,
    tol: float = 1e-6,
    process: Callable[[np.ndarray], np.ndarray] | None = None,
    process_every: int = 1,
    aux_fn: Callable[[int, np.random.Generator], dict] | None = None,
    rng: Any = None,
    data: dict | None = None,
    models: Sequence[keras.Model] = (),
    program: Hashable | None = None,
    chunk_size: int | None = None,
    queries: Any = None,
    queries_per_row: int = 1,
    verbose: int = 0,
    desc: str = "",
) -> OptimResult:
    """Minimise a per-row loss over a batch by gradient descent, all rows at once.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(x, aux) -> tensor of shape (n_rows,)``, written with
        ``keras.ops``; ``aux`` is the dict returned by ``aux_fn`` for the step,
        merged with ``data``. Rows must not interact for the stopping rule to be
        per row.
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
    project : callable, default=None
        ``project(x, aux) -> x``, written with ``keras.ops``: a projection applied
        after each step (and the clipping), inside the compiled loop (GraphMI's
        edge budget). Part of the computation ``program`` names.
    gamma : float, default=None
        A row stops once its loss is at most ``gamma``.
    patience : int, default=None
        A row stops after ``patience`` steps without improving its best loss.
    keep_best : bool, default=True
        Return each row's lowest-loss iterate rather than the last one.
    score_last : bool, default=True
        Evaluate the loss once more at the last iterates (one more query per row).
        Without it (and without ``keep_best``), ``loss`` is each row's loss at the
        last step, before that step's update.
    tol : float, default=1e-6
        A step improves a row when it lowers its best loss by more than ``tol``.
    process : callable, default=None
        ``process(x: ndarray) -> ndarray`` applied every ``process_every`` steps
        (chunks then end every ``process_every`` steps).
    process_every : int, default=1
    aux_fn : callable, default=None
        ``aux_fn(step, rng) -> dict of arrays`` giving the random inputs of a step.
        It is called for every step of a chunk before the chunk runs (a chunk that
        ends early, because every row stopped, has drawn its unused steps too).
    rng : numpy.random.Generator, default=None
    data : dict of arrays, default=None
        Inputs that are the same at every step (one-hot labels, masks). They are
        arguments of the compiled program, so a cached program takes new ones.
    models : sequence of keras.Model, default=()
        Every Keras model ``loss_fn`` calls. Their variables are passed to the
        compiled program at each call, so a cached program sees their current
        weights.
    program : hashable, default=None
        Names the computation of ``loss_fn``: two calls with equal ``program`` and
        the same ``models`` must compute the same function of ``(x, aux)``, the
        models' weights, and nothing else they close over. The compiled program is
        then cached and reused (it is traced again only for new shapes). ``None``
        compiles afresh for this call.
    chunk_size : int, default=None
        Steps per compiled call; :data:`CHUNK_SIZE` (50) by default. One gives a
        step-by-step loop.
    queries : kmi.targets.Target, default=None
        The target ``loss_fn`` reads. Every step (and the final evaluation) is
        recorded on it as one query per row (:meth:`~kmi.targets.Target.record_queries`,
        once per chunk), so white-box reads are counted in ``n_queries_`` and
        respect ``query_budget``.
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

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.attacks._optim import minimize
    >>> target = keras.ops.convert_to_tensor(np.array([[1.0, -2.0], [3.0, 0.5]], "float32"))
    >>> result = minimize(
    ...     lambda x, aux: keras.ops.sum((x - aux["target"]) ** 2, axis=1),
    ...     np.zeros((2, 2)), data={"target": target}, max_iter=200, learning_rate=0.1,
    ... )
    >>> np.round(result.x, 3).tolist(), result.n_iter
    ([[1.0, -2.0], [3.0, 0.5]], 200)
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
    chunk = CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be at least 1. Received: chunk_size={chunk_size!r}")
    if process is not None:
        chunk = max(int(process_every), 1)  # the hook runs between chunks
    rng = np.random.default_rng(rng)
    data = {k: ops.convert_to_tensor(_aux_array(v)) for k, v in (data or {}).items()}
    x0 = np.asarray(x0, dtype="float32")
    n = x0.shape[0]
    lo, hi = (0.0, 0.0) if clip is None else (float(clip[0]), float(clip[1]))
    hp = _as_tensor(
        [
            learning_rate,
            momentum,
            beta_1,
            beta_2,
            -math.inf if gamma is None else gamma,
            math.inf if patience is None else patience,
            tol,
            lo,
            hi,
        ]
    )
    stops = gamma is not None or patience is not None
    flags = (optimizer == "adam", bool(momentum), clip is not None, stops, bool(keep_best))
    variables, (chunk_c, final_c) = _compiled(loss_fn, project, models, program, flags)

    def values():
        return [v.value for v in variables]

    def make_aux(i):
        if aux_fn is None:
            return {}
        drawn = {k: _aux_array(v) for k, v in aux_fn(i, rng).items()}
        if set(drawn) & set(data):
            raise ValueError(f"aux_fn and data share keys: {sorted(set(drawn) & set(data))}")
        return drawn

    def chunk_aux(start, k, width):
        """Per-step inputs of steps ``start .. start + k``, padded to ``width`` steps."""
        if aux_fn is None:
            return {}
        steps = [make_aux(i) for i in range(start, start + k)]
        steps += [steps[-1]] * (width - k)  # padding steps are never run
        return {key: ops.convert_to_tensor(np.stack([s[key] for s in steps])) for key in steps[0]}

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
        ops.convert_to_tensor(np.full(n, max_iter, dtype="int32")),
        _as_tensor(np.full(n, np.nan)),
    )
    width = min(chunk, max(max_iter, 1))
    if aux_fn is not None and max_iter:
        probe = aux_fn(0, copy.deepcopy(rng))  # a copy: the steps' own draws come later
        step_bytes = sum(_aux_array(a).nbytes for a in probe.values())
        width = max(1, min(width, _AUX_BYTES // max(step_bytes, 1)))
    bar = keras.utils.Progbar(max_iter, unit_name="step") if verbose and max_iter else None
    if verbose and desc:
        print(desc, flush=True)
    interrupted = False
    it = 0
    per_step = n * int(queries_per_row)
    curves = []
    budget_error = None
    try:
        while it < max_iter:
            k = min(width, max_iter - it)
            allowed = _budget_steps(queries, per_step)
            if allowed < 1:
                try:
                    queries.record_queries(per_step)  # raises the budget's own error
                except QueryBudgetExceededError as exc:
                    if it == 0:
                        raise
                    budget_error = exc
                    break
            k = int(min(k, allowed))
            steps_run, new_state, curve = chunk_c(
                state,
                chunk_aux(it, k, width),
                data,
                hp,
                ops.convert_to_tensor(k, "int32"),
                values(),
                ops.zeros((width,)),
            )
            steps_run = int(ops.convert_to_numpy(steps_run))
            state = new_state
            curves.append(ops.convert_to_numpy(curve)[:steps_run])
            if queries is not None and steps_run:
                queries.record_queries(steps_run * per_step)
            it += steps_run
            if process is not None and it % chunk == 0 and steps_run == k:
                processed = np.asarray(process(ops.convert_to_numpy(state[0])), dtype="float32")
                if clip is not None:
                    processed = np.clip(processed, lo, hi)
                state = (_as_tensor(processed), *state[1:])
            if bar is not None:
                best = ops.convert_to_numpy(state[5])
                finite = best[np.isfinite(best)]
                bar.update(it, [("loss", float(finite.mean()) if finite.size else np.nan)])
            if steps_run < k:  # every row has stopped
                break
    except KeyboardInterrupt:
        interrupted = True
        warnings.warn(
            f"Interrupted after {it} of {max_iter} steps; returning the "
            f"{'best' if keep_best else 'last'} iterates so far.",
            RuntimeWarning,
            stacklevel=2,
        )
    stopped_at = np.minimum(ops.convert_to_numpy(state[8]).astype(np.int64), it)
    result = _finish(
        state,
        lambda x_last, aux: final_c(x_last, {**aux, **data}, values()),
        make_aux(it) if (score_last or keep_best) else None,
        (it, stopped_at, interrupted, keep_best),
        (None, 0) if budget_error is not None else (queries, queries_per_row),
    )
    result.loss_curve = np.concatenate(curves) if curves else np.zeros(0)
    if budget_error is not None:
        budget_error.partial_result = result
        raise budget_error
    return result


def _finish(state, final_c, aux, progress, counting):
    """The result of the loop: each row's best (or last) iterate and its loss."""
    it, stopped_at, interrupted, keep_best = progress
    queries, per_row = counting
    x_last = state[0]
    n = int(x_last.shape[0])
    expand = (slice(None),) + (None,) * (len(x_last.shape) - 1)
    scored = aux is not None
    if scored and queries is not None:
        try:
            queries.record_queries(n * per_row)
        except QueryBudgetExceededError:
            scored = False  # no budget left to score the last iterates: keep the best
    if scored:
        aux = {k: ops.convert_to_tensor(v) for k, v in aux.items()}
        last_rows = ops.convert_to_numpy(final_c(x_last, aux)).astype("float64")
        last_rows = np.where(np.isnan(last_rows), np.inf, last_rows)
    elif aux is None:  # not scored again: the rows' loss at the last step
        last_rows = ops.convert_to_numpy(state[9]).astype("float64")
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
