"""Poisson-sampled batches for DP-SGD: the sampling its privacy accounting assumes.

:class:`PoissonSampler` is public, re-exported by :mod:`kmi.defenses.dp` and
:mod:`kmi.defenses`.
"""

from __future__ import annotations

import secrets
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike

__all__ = ["PoissonSampler"]


class PoissonSampler(keras.utils.PyDataset):
    """Batches drawn by Poisson sampling, the sampling DP-SGD's accounting assumes.

    Each example joins each batch independently with probability
    ``batch_size / num_examples``, so batch sizes vary around ``batch_size``.
    To keep the number of distinct shapes (and recompilations) small, every batch
    is padded to a multiple of ``pad_to_multiple_of`` with examples of sample
    weight zero, which :class:`~kmi.defenses.DPSGD` excludes from the gradient
    sum. Pass the same object to ``model.fit`` and to ``DPSGD(sampling=...)``: the
    epsilon then reported is the epsilon of what ran.

    Parameters
    ----------
    x : array-like or dict of array-like
        Training inputs.
    y : array-like
        Targets.
    sample_weight : array-like of shape (n_samples,), optional
        Per-example loss weights. Default: all ones.
    batch_size : int, default=256
        Expected batch size.
    steps : int, optional
        Batches per epoch. Default: ``round(num_examples / batch_size)``.
    seed : int, optional
        Seed of the sampling; ``None`` draws one from the OS.
    pad_to_multiple_of : int, default=32
        Batches are padded to a multiple of this size (1: no padding).
    **kwargs
        Passed to ``keras.utils.PyDataset`` (``workers``...).

    Attributes
    ----------
    num_examples : int
        Number of training examples ``N``.
    sampling_rate : float
        ``batch_size / num_examples``, the probability that an example joins a batch.
    steps : int
        Batches per epoch.
    seed : int
        The seed used (drawn from the OS when ``seed=None`` was given).

    Raises
    ------
    ValueError
        If ``x`` and ``y`` have different numbers of examples, ``batch_size`` is
        not an integer in ``[1, num_examples]`` or ``pad_to_multiple_of`` is not
        a positive integer.

    See Also
    --------
    DPSGD : pass the sampler as ``sampling=`` for an exact privacy account.
    compute_epsilon : the Poisson-sampling accounting.

    Notes
    -----
    Batch ``index`` of epoch ``e`` is drawn from the seed ``(seed, e, index)``, so
    the same seed gives the same batches, whatever the order in which Keras asks
    for them.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from kmi.defenses import DPSGD, PoissonSampler
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> sampler = PoissonSampler(x, y, batch_size=4, seed=0, pad_to_multiple_of=16)
    >>> len(sampler), sampler.sampling_rate
    (4, 0.25)
    >>> x_batch, y_batch, weight = sampler[0]
    >>> x_batch.shape, set(np.unique(weight)) <= {0.0, 1.0}
    ((16, 4), True)

    Fit with it, and tell :class:`DPSGD` how the batches were drawn:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> dp = DPSGD(noise_multiplier=1.0, sampling=sampler, seed=0)
    >>> history = model.fit(sampler, epochs=1, callbacks=[dp], verbose=0)
    >>> dp.sampling_assumption_, dp.steps_
    ('poisson', 4)
    """

    def __init__(
        self,
        x: Any,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        batch_size: int = 256,
        steps: int | None = None,
        seed: int | None = None,
        pad_to_multiple_of: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.x = keras.tree.map_structure(np.asarray, x)
        self.y = np.asarray(y)
        self.num_examples = len(keras.tree.flatten(self.x)[0])
        if len(self.y) != self.num_examples:
            raise ValueError(
                "x and y must have the same number of examples. "
                f"Received: len(x)={self.num_examples}, len(y)={len(self.y)}"
            )
        if int(batch_size) != batch_size or not (0 < batch_size <= self.num_examples):
            raise ValueError(
                f"batch_size must be an integer in [1, {self.num_examples}]. "
                f"Received: batch_size={batch_size!r}"
            )
        if int(pad_to_multiple_of) != pad_to_multiple_of or pad_to_multiple_of < 1:
            raise ValueError(
                "pad_to_multiple_of must be a positive integer. "
                f"Received: pad_to_multiple_of={pad_to_multiple_of!r}"
            )
        self.sample_weight = (
            np.ones(self.num_examples, "float32")
            if sample_weight is None
            else np.asarray(sample_weight, "float32")
        )
        self.batch_size = int(batch_size)
        self.sampling_rate = self.batch_size / self.num_examples
        self.steps = int(steps) if steps is not None else max(1, round(1 / self.sampling_rate))
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self._epoch = 0

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[Any, np.ndarray, np.ndarray]:
        """Batch ``index`` of the current epoch: ``(x, y, sample_weight)``, padded."""
        rng = np.random.default_rng([self.seed, self._epoch, int(index)])
        chosen = np.flatnonzero(rng.random(self.num_examples) < self.sampling_rate)
        m = self.pad_to_multiple_of
        size = max(m, -(-len(chosen) // m) * m)
        idx = np.zeros(size, dtype=np.int64)
        idx[: len(chosen)] = chosen
        weight = np.zeros(size, dtype="float32")
        weight[: len(chosen)] = self.sample_weight[chosen]
        x = keras.tree.map_structure(lambda a: a[idx], self.x)
        return x, self.y[idx], weight

    def on_epoch_end(self) -> None:
        """Move on to the next epoch's batches."""
        self._epoch += 1
