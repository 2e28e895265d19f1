"""DP-SGD that drops into ``model.fit``: per-example clipping, Gaussian noise, accounting.

:class:`DPSGD` is a Keras callback. For the duration of a ``fit`` it replaces the
model's train step by one that clips each example's gradient to ``l2_norm_clip``
(by ghost clipping, :mod:`kmi.defenses._ghost`, for every layer with a rule in
:mod:`kmi.defenses._ghost_rules`: dense, einsum, convolution, embedding and
normalisation layers, keras-hub's included; per-example gradients, vectorised by
:func:`kmi.backend.per_example_value_and_grad` (``jax.vmap`` or
``tf.vectorized_map``), of the other layers' variables only), sums, adds Gaussian
noise of standard deviation ``noise_multiplier * l2_norm_clip`` and divides by the
batch size before handing the result to the compiled optimizer. Everything else
``fit`` does (the compiled loss and metrics, ``add_loss`` terms, the optimizer, other
callbacks) is unchanged, and the model's own train step is back once ``fit`` returns.
:class:`PrivacyBudget` stops a ``fit`` before a budget is spent; :func:`make_private`
makes every ``fit`` of a model private without a callback.

This module holds those three entry points. The machinery lives in private modules,
and the public names among it are re-exported here: the training step and
:func:`per_example_gradients` in :mod:`kmi.defenses._dp_step`, the model and
parameter checks and :func:`check_dp_compatible` in :mod:`kmi.defenses._dp_checks`,
and :class:`PoissonSampler` in :mod:`kmi.defenses._sampling`. Accounting is delegated
to ``dp-accounting`` (:mod:`kmi.defenses.accounting`). The three entry points share
their parameter handling, which is why they stay together at about 600 lines.
"""

from __future__ import annotations

import math
import secrets
import warnings
from typing import Any

import keras

from kmi.defenses import _dp_step
from kmi.defenses._dp_checks import (
    CLIPPING_METHODS,  # noqa: F401 (importable from here)
    check_dp_compatible,
    check_dpsgd_parameters,
)
from kmi.defenses._dp_step import per_example_gradients
from kmi.defenses._sampling import PoissonSampler
from kmi.defenses.accounting import calibrate_noise, compute_epsilon, max_steps

__all__ = [
    "DPSGD",
    "PoissonSampler",
    "PrivacyBudget",
    "check_dp_compatible",
    "make_private",
    "per_example_gradients",
]


@keras.saving.register_keras_serializable(package="kmi")
class DPSGD(keras.callbacks.Callback):
    """Make a ``model.fit`` differentially private (DP-SGD, Abadi et al. 2016).

    During the ``fit`` it is passed to, every training step computes each
    example's gradient, clips it to L2 norm ``l2_norm_clip``, sums the clipped
    gradients, adds Gaussian noise of standard deviation ``noise_multiplier *
    l2_norm_clip`` and divides by the batch size; the compiled optimizer then
    applies the result. At the end of every epoch the privacy spent so far is
    written to ``logs["epsilon"]`` (at ``delta``), so it shows in the progress
    bar and in ``History``. The model's own train step is restored when ``fit``
    returns.

    Parameters
    ----------
    l2_norm_clip : float, default=1.0
        Maximum L2 norm of one example's gradient (all variables together).
    noise_multiplier : float, optional
        Noise standard deviation divided by ``l2_norm_clip``. Give this or
        ``target_epsilon``.
    target_epsilon : float, optional
        Calibrate ``noise_multiplier`` so that the planned ``epochs`` of this
        ``fit`` spend at most this epsilon.
    delta : float, optional
        Default: ``1 / num_examples``.
    num_examples : int, optional
        Training set size ``N``, needed when ``delta`` is not given with
        shuffled batches (a Keras callback cannot see the data).
    accountant : {"rdp", "pld"}, default="rdp"
        dp-accounting accountant used for epsilon and calibration.
    sampling : "shuffle" or PoissonSampler, default="shuffle"
        How batches are drawn. ``"shuffle"``: ordinary ``fit`` batches; the
        sampling rate is taken as ``1 / steps_per_epoch`` and epsilon is the
        Poisson-sampling epsilon at that rate, an approximation for shuffled
        batches (a warning says so). A :class:`PoissonSampler` (the same object
        passed to ``fit``): epsilon is exact for what ran, and the noisy sum is
        divided by the *expected* batch size.
    seed : int, optional
        Seed of the noise. ``None`` draws one from the OS (what a private run
        should do; fix it only for tests).
    clipping : {"auto", "ghost", "vectorized"}, default="auto"
        How each example's gradient norm is obtained. ``"ghost"``: from the
        layers' inputs and output gradients of one ordinary forward/backward pass
        (ghost clipping with book-keeping; see Notes), for models whose trainable
        layers all have a ghost rule (matched with ``isinstance``, so subclasses
        are covered): ``Dense``, ``EinsumDense`` (any equation, so
        ``MultiHeadAttention`` and keras-hub's transformer layers), ``Conv1D`` /
        ``Conv2D`` (dilated, grouped, causal, channels-first), ``Embedding``,
        keras-hub's ``ReversibleEmbedding`` (tied or not) and
        ``PositionEmbedding``, ``LayerNormalization``, ``GroupNormalization``,
        ``RMSNormalization`` and keras-hub's RMS norms; it raises naming the
        classes of any other. ``"auto"``: ghost clipping for the covered layers
        and per-example gradients of the other layers' variables only (reported
        as ``clipping_ == "mixed"``); the whole model's per-example gradients
        only when the model as a whole rules ghost clipping out (a custom
        ``compute_loss``, a loss reduction other than the mean, weight or
        activity regularizers). ``"vectorized"``: per-example gradients of the
        whole model (``jax.vmap``/``tf.vectorized_map``), for any layer. All
        give the same clipped sum, up to float rounding.
    verbose : int, default=0
        1 prints the noise multiplier, sampling assumption and clipping method
        at the start.

    Attributes
    ----------
    noise_multiplier_ : float
        The noise multiplier used (given or calibrated).
    sampling_rate_ : float
    delta_ : float
    steps_ : int
        DP steps run so far by this callback (all its ``fit`` calls: privacy
        composes across them).
    epsilon_ : float
        Privacy spent after the last completed epoch.
    sampling_assumption_ : str
        ``"poisson"`` or ``"shuffle (Poisson accounting used as an approximation)"``.
    clipping_ : str
        The clipping method used: ``"ghost"``, ``"mixed"`` (ghost clipping and
        per-example gradients of the uncovered layers) or ``"vectorized"``.
    clipping_reason_ : str or None
        With ``clipping="auto"``, why ghost clipping was not used for every
        layer; it names the class of each layer that was not covered.

    Raises
    ------
    ValueError
        At the start of ``fit``: invalid parameters, or a model DP-SGD cannot
        train (see :func:`check_dp_compatible`).

    See Also
    --------
    make_private : the same without a callback.
    PrivacyBudget : stop before a budget is exceeded.
    compute_epsilon, calibrate_noise

    Notes
    -----
    Ghost clipping (Li et al. 2022; Bu et al. 2023) runs the batch forward and
    backward once, taps each covered layer's input ``a`` and the gradient ``g`` of
    the loss with respect to its output, and gets each example's gradient norm from
    them (``||a_i^T g_i||``, by forming ``a_i^T g_i`` where that is small, else as
    ``sum (a_i a_i^T) * (g_i g_i^T)`` over the positions of a sequence or image) and
    the clipped sum as ``a^T (c * g)`` (book-keeping). Normalisation layers'
    per-example gamma/beta gradients are formed outright (they are small); a tied
    ``ReversibleEmbedding``'s two uses are summed before the norm. A layer whose
    output is the model's only output (a language model's vocabulary projection)
    does not hold that output's gradient through the backward pass for the clipped
    sum: it is formed again from the predictions once the clip factors are known, so
    DP fine-tuning of a language model does not hold one more logits-sized buffer
    (measured on a GPT-2 shape: ``benchmarks/dp_sgd.py transformers-profile``). A
    layer without a rule contributes the norm of its own per-example gradients, so
    one unknown layer never sends the whole model to the vectorised route. It is the
    faster route on both backends (``benchmarks/dp_sgd.py speed`` and
    ``transformers``). It needs the compiled loss to be a mean over the batch (the
    default reduction) and no weight or activity regularizers; ``clipping="auto"``
    otherwise uses the vectorised route. Loss terms a layer adds with ``add_loss``
    are taken to be means over the batch, as kmi's own are
    (:class:`~kmi.defenses.InformationBottleneck`); a layer adding a batch *sum*
    needs ``clipping="vectorized"``.

    The DP train function is compiled once per model and configuration and
    reused by later ``fit`` calls; the model's own train function is swapped
    back when ``fit`` returns, so a plain ``fit`` afterwards does not recompile
    either.

    Vectorised per-example gradients are computed by
    :func:`kmi.backend.per_example_value_and_grad` (``jax.vmap`` on JAX,
    ``tf.vectorized_map`` on TensorFlow). Layers that use randomness (Dropout)
    draw an independent mask per example. Loss terms from
    ``add_loss`` and weight regularizers are part of each example's loss.
    Noise is drawn from a seed derived from the optimizer step and ``seed``.
    On TensorFlow, ``tf.vectorized_map`` has no vectorisation rule for the
    stateless random ops of Dropout with per-example seeds; those ops alone run in
    a ``while_loop`` (TensorFlow logs a warning), which slows models with Dropout.
    A trainable BatchNormalization is refused; a frozen one (``trainable=False``,
    which Keras 3 runs in inference mode) is accepted (see
    :func:`check_dp_compatible`).

    References
    ----------
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import DPSGD
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)
    ... ])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.1, num_examples=16, seed=0)
    >>> history = model.fit(x, y, batch_size=4, epochs=1, callbacks=[dp], verbose=0)
    >>> dp.clipping_, dp.steps_, round(history.history["epsilon"][-1], 2)
    ('ghost', 4, 1.03)
    """

    def __init__(
        self,
        l2_norm_clip: float = 1.0,
        noise_multiplier: float | None = None,
        *,
        target_epsilon: float | None = None,
        delta: float | None = None,
        num_examples: int | None = None,
        accountant: str = "rdp",
        sampling: str | PoissonSampler = "shuffle",
        seed: int | None = None,
        clipping: str = "auto",
        verbose: int = 0,
    ) -> None:
        super().__init__()
        self.l2_norm_clip = l2_norm_clip
        self.noise_multiplier = noise_multiplier
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.num_examples = num_examples
        self.accountant = accountant
        self.sampling = sampling
        self.seed = seed
        self.clipping = clipping
        self.verbose = verbose
        self.steps_ = 0

    def get_config(self) -> dict[str, Any]:
        if isinstance(self.sampling, PoissonSampler):
            raise NotImplementedError(
                "A DPSGD callback holding a PoissonSampler (data) is not serialisable. "
                "Received: sampling=PoissonSampler"
            )
        return {
            "l2_norm_clip": self.l2_norm_clip,
            "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "num_examples": self.num_examples,
            "accountant": self.accountant,
            "sampling": self.sampling,
            "seed": self.seed,
            "clipping": self.clipping,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> keras.callbacks.Callback:
        return cls(**config)

    # -- validation and schedule
    def _resolve(self):
        check_dpsgd_parameters(
            self.l2_norm_clip,
            self.noise_multiplier,
            self.target_epsilon,
            self.delta,
            self.num_examples,
            self.clipping,
            self.accountant,
        )
        steps_per_epoch = self.params.get("steps")
        if isinstance(self.sampling, PoissonSampler):
            self.sampling_rate_ = self.sampling.sampling_rate
            num_examples = self.sampling.num_examples
            self._normalizer = float(self.sampling.batch_size)
            self.sampling_assumption_ = "poisson"
        elif self.sampling == "shuffle":
            if not steps_per_epoch:
                raise ValueError(
                    "With shuffled batches DPSGD takes the sampling rate as 1 / steps per "
                    "epoch, which is unknown for this data; pass steps_per_epoch to fit or "
                    "use a PoissonSampler. Received: steps=None"
                )
            self.sampling_rate_ = 1.0 / steps_per_epoch
            num_examples = self.num_examples
            self._normalizer = None
            self.sampling_assumption_ = "shuffle (Poisson accounting used as an approximation)"
        else:
            raise ValueError(
                "sampling must be 'shuffle' or a kmi.defenses.PoissonSampler. "
                f"Received: sampling={self.sampling!r}"
            )
        if self.delta is None and num_examples is None:
            raise ValueError(
                "delta defaults to 1 / N, and a callback cannot see the data: pass "
                "num_examples=len(x) (or delta). Received: num_examples=None, delta=None"
            )
        self.delta_ = float(self.delta) if self.delta is not None else 1.0 / num_examples
        if self.noise_multiplier is not None:
            self.noise_multiplier_ = float(self.noise_multiplier)
        else:
            epochs = self.params.get("epochs") or 1
            self.noise_multiplier_ = calibrate_noise(
                self.target_epsilon,
                sampling_rate=self.sampling_rate_,
                steps=self.steps_ + math.ceil(epochs / self.sampling_rate_ - 1e-9),
                delta=self.delta_,
                accountant=self.accountant,
            )

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._resolve()
        model = self.model
        check_dp_compatible(model)
        if self.sampling_assumption_ != "poisson":
            warnings.warn(
                "DPSGD: batches are shuffled, not Poisson-sampled; the epsilon reported "
                f"is the Poisson-sampling epsilon at rate {self.sampling_rate_:.4g} "
                "(the usual approximation, not a bound for what ran). Use "
                "kmi.defenses.PoissonSampler for an exact account.",
                UserWarning,
                stacklevel=2,
            )
        ghost, self.clipping_, self.clipping_reason_ = _dp_step.choose_clipping(
            model, self.clipping
        )
        if self.verbose:
            how = self.clipping_
            if self.clipping_reason_:
                how += f" (ghost clipping not used: {self.clipping_reason_})"
            print(
                f"DPSGD: l2_norm_clip={self.l2_norm_clip}, noise_multiplier="
                f"{self.noise_multiplier_:.4g}, sampling_rate={self.sampling_rate_:.4g}, "
                f"delta={self.delta_:.3g}, sampling={self.sampling_assumption_}, "
                f"clipping={how}"
            )
        if self.noise_multiplier_ == 0:
            warnings.warn(
                "DPSGD: noise_multiplier=0 clips gradients but adds no noise: there is no "
                "privacy guarantee (epsilon is infinite).",
                UserWarning,
                stacklevel=2,
            )

        def make_grad_fn():
            seed = secrets.randbits(31) if self.seed is None else int(self.seed)
            return _dp_step.make_grad_fn(
                model,
                float(self.l2_norm_clip),
                self.noise_multiplier_,
                self._normalizer,
                keras.random.SeedGenerator(seed),
                seed,
                ghost,
            )

        key = (
            float(self.l2_norm_clip),
            self.noise_multiplier_,
            self._normalizer,
            self.clipping_,
            self.seed,
        )
        self._plain_train_function = model.train_function
        model.train_function = _dp_step.dp_train_function(model, key, make_grad_fn)
        model._kmi_dpsgd = self

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start_steps = self.steps_

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # ``batch`` is the index of the last step run (steps_per_execution may run
        # several per call), so count from it rather than by calls.
        self.steps_ = self._epoch_start_steps + batch + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epsilon_ = self.epsilon()
        if logs is not None:
            logs["epsilon"] = self.epsilon_

    def on_train_end(self, logs: dict | None = None) -> None:
        model = self.model
        model.train_function = self._plain_train_function
        model.__dict__.pop("_kmi_dpsgd", None)

    def epsilon(self, steps: int | None = None) -> float:
        """Epsilon spent after ``steps`` DP steps, at ``delta_``.

        Parameters
        ----------
        steps : int, optional
            Number of DP steps. Default: the steps run so far (``steps_``), over
            all the ``fit`` calls this callback took part in.

        Returns
        -------
        float
            Epsilon from the callback's accountant, at its sampling rate and noise
            multiplier. Available once a ``fit`` has started (they are resolved
            then); use :func:`compute_epsilon` to plan before training.
        """
        return compute_epsilon(
            self.noise_multiplier_,
            sampling_rate=self.sampling_rate_,
            steps=self.steps_ if steps is None else steps,
            delta=self.delta_,
            accountant=self.accountant,
        )


@keras.saving.register_keras_serializable(package="kmi")
class PrivacyBudget(keras.callbacks.Callback):
    """Stop a DP-SGD ``fit`` before its privacy budget is exceeded.

    Works with a :class:`DPSGD` callback in the same ``fit`` (or a model from
    :func:`make_private`). At the start of training it computes, with the same
    accountant, the largest number of DP steps whose epsilon stays within
    ``target_epsilon``, and sets ``model.stop_training`` after that step (the
    ``EarlyStopping`` pattern), so training ends mid-epoch if it must.

    Parameters
    ----------
    target_epsilon : float
        The budget, > 0.
    delta : float, optional
        Default: the DPSGD callback's delta.
    dpsgd : DPSGD, optional
        The DP-SGD callback to follow. Default: the one running on the model.

    Attributes
    ----------
    max_steps_ : int
        Total DP steps allowed by the budget.
    stopped_step_ : int or None
        The DP step after which training was stopped, if it was.

    Raises
    ------
    ValueError
        At the start of ``fit``: ``target_epsilon`` is not > 0; at its first
        step: no :class:`DPSGD` runs on the model, or the steps already run have
        spent the budget.

    See Also
    --------
    DPSGD : the DP-SGD callback whose steps are counted.
    compute_epsilon : epsilon for a planned schedule.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import DPSGD, PrivacyBudget
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)
    ... ])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> dp = DPSGD(noise_multiplier=1.1, num_examples=16, seed=0)
    >>> budget = PrivacyBudget(target_epsilon=1.5)
    >>> _ = model.fit(x, y, batch_size=4, epochs=3, callbacks=[dp, budget], verbose=0)
    >>> budget.max_steps_, budget.stopped_step_, dp.epsilon() <= 1.5
    (7, 7, True)
    """

    def __init__(
        self, target_epsilon: float, delta: float | None = None, *, dpsgd: DPSGD | None = None
    ) -> None:
        super().__init__()
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.dpsgd = dpsgd

    def get_config(self) -> dict[str, Any]:
        return {"target_epsilon": self.target_epsilon, "delta": self.delta}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> keras.callbacks.Callback:
        return cls(**config)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.target_epsilon > 0:
            raise ValueError(
                f"target_epsilon must be > 0. Received: target_epsilon={self.target_epsilon!r}"
            )
        self.max_steps_ = None
        self.stopped_step_ = None

    def _setup(self):
        dp = self.dpsgd or self.model.__dict__.get("_kmi_dpsgd")
        if dp is None:
            raise ValueError(
                "PrivacyBudget needs a DPSGD callback in the same fit (or a model from "
                "make_private). Received: dpsgd=None"
            )
        self._dp = dp
        delta = dp.delta_ if self.delta is None else float(self.delta)
        self.max_steps_ = max_steps(
            dp.noise_multiplier_,
            self.target_epsilon,
            sampling_rate=dp.sampling_rate_,
            delta=delta,
            accountant=dp.accountant,
        )
        if self.max_steps_ <= dp.steps_:
            raise ValueError(
                f"The budget epsilon={self.target_epsilon} allows {self.max_steps_} DP steps "
                f"and {dp.steps_} have run: no step can be taken. Received: "
                f"target_epsilon={self.target_epsilon!r}"
            )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.max_steps_ is None:
            self._setup()
        if self._epoch_start is None:
            # DPSGD counts a step when it ends, so this is the count before the epoch
            self._epoch_start = self._dp.steps_ - batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = self._epoch_start + batch + 1
        # stop when the next call (steps_per_execution steps) would exceed the budget
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if done + per_call > self.max_steps_:
            self.model.stop_training = True
            self.stopped_step_ = done


def make_private(
    model: keras.Model,
    l2_norm_clip: float = 1.0,
    noise_multiplier: float | None = None,
    **kwargs: Any,
) -> keras.Model:
    """Make every later ``model.fit`` differentially private, without a callback.

    Equivalent to passing ``DPSGD(l2_norm_clip, noise_multiplier, **kwargs)`` in
    the ``callbacks`` of every ``fit``: the DP train step is installed for each
    ``fit``, ``logs["epsilon"]`` is written every epoch, and the one
    :class:`DPSGD` object (``model.dpsgd``) accounts across ``fit`` calls.

    Parameters
    ----------
    model : keras.Model
        A compiled model (checked now with :func:`check_dp_compatible`).
    l2_norm_clip : float, default=1.0
        As in :class:`DPSGD`.
    noise_multiplier : float, optional
        As in :class:`DPSGD`.
    **kwargs
        Other :class:`DPSGD` arguments (``num_examples``, ``seed``...).

    Returns
    -------
    keras.Model
        ``model`` itself, modified in place; ``model.dpsgd`` is its
        :class:`DPSGD` callback.

    Raises
    ------
    ValueError
        If DP-SGD cannot train ``model`` (see :func:`check_dp_compatible`); invalid
        DP-SGD parameters are reported at the start of ``fit``.

    See Also
    --------
    DPSGD : the callback it installs.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import make_private
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)
    ... ])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model = make_private(model, noise_multiplier=1.0, num_examples=16, seed=0)

    Privacy composes across ``fit`` calls: epsilon grows with the second one.

    >>> [round(model.fit(x, y, batch_size=4, verbose=0).history["epsilon"][0], 2)
    ...  for _ in range(2)]
    [1.28, 1.94]
    """
    check_dp_compatible(model)
    dpsgd = DPSGD(l2_norm_clip, noise_multiplier, **kwargs)
    fit = type(model).fit.__get__(model)

    def private_fit(*args, callbacks=None, **fit_kwargs):
        callbacks = list(callbacks or [])
        if not any(isinstance(c, DPSGD) for c in callbacks):
            callbacks.insert(0, dpsgd)
        return fit(*args, callbacks=callbacks, **fit_kwargs)

    private_fit.__doc__ = fit.__doc__
    model.fit = private_fit
    model.dpsgd = dpsgd
    return model
