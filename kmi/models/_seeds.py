"""Integer seeds for the model builders: one seed in, a distinct seed for each random layer.

A builder called with ``seed=<int>`` gives every random initializer and every random
layer (dropout, augmentation) a seed of its own, drawn from a :class:`SeedStream`, so
that the same seed builds the same weights on each backend without touching a global
random state. Without a seed nothing changes: Keras draws as usual.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np


def _is_random(initializer) -> bool:
    """Whether a Keras initializer draws random numbers (it has a ``seed`` in its config)."""
    return "seed" in initializer.get_config()


class SeedStream:
    """Successive integer seeds derived from one seed; nothing but ``None`` without one.

    The ``i``-th seed is a hash of ``(seed, i)`` (NumPy's ``SeedSequence``), below
    ``2**31``: the streams of two seeds do not overlap, as ``seed + i`` would.

    Parameters
    ----------
    seed : int or None
        A non-negative integer, or ``None`` for unseeded layers.

    Raises
    ------
    ValueError
        If ``seed`` is not ``None`` or a non-negative integer.
    """

    def __init__(self, seed: int | None):
        if seed is not None and (
            not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0
        ):
            raise ValueError(
                f"seed must be a non-negative integer or None. Received: seed={seed!r}"
            )
        self.seed = None if seed is None else int(seed)
        self._count = 0

    def next(self) -> int | None:
        """The next seed, or ``None`` when the stream has no seed."""
        if self.seed is None:
            return None
        state = np.random.SeedSequence([self.seed, self._count]).generate_state(1)[0]
        self._count += 1
        return int(state >> 1)

    def initializer(
        self, identifier: str | keras.initializers.Initializer = "glorot_uniform"
    ) -> str | keras.initializers.Initializer:
        """A copy of the initializer ``identifier`` with the next seed.

        ``identifier`` is returned unchanged without a seed (Keras' default draw), and
        initializers that draw nothing (zeros, ones) take no seed.
        """
        if self.seed is None:
            return identifier
        initializer = keras.initializers.get(identifier)
        if not _is_random(initializer):
            return initializer
        config = {**initializer.get_config(), "seed": self.next()}
        return initializer.__class__.from_config(config)

    def redraw(self, layer: keras.layers.Layer) -> None:
        """Draw the random variables of a built ``layer`` again, each with a seed of its own.

        For layers that hand one initializer to all their sublayers, as keras-hub's
        transformer blocks and embeddings do (a seeded one would give equal query, key
        and value kernels): each variable named ``name`` is drawn from
        ``layer.<name>_initializer`` with the next seed, and each seed-generator state
        (the dropout inside the layer) restarts from the next seed. Nothing happens
        without a seed.
        """
        if self.seed is None:
            return
        for variable in layer.variables:
            if variable.name == "seed_generator_state":
                variable.assign(np.array([self.next(), 0]).astype(variable.dtype))
                continue
            initializer = getattr(layer, f"{variable.name}_initializer", None)
            if initializer is None or not _is_random(keras.initializers.get(initializer)):
                continue
            seeded = self.initializer(initializer)
            variable.assign(seeded(tuple(variable.shape), dtype=variable.dtype))
