"""Progress bars and graceful interruption for long attacks."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def chunks(n: int, size: int, *, verbose: int = 0, desc: str = "") -> Iterator[slice]:
    """Yield slices covering ``range(n)`` in pieces of ``size``, with a progress bar.

    The bar (``keras.utils.Progbar``) shows when ``verbose`` is truthy; it reports
    processed items and an estimate of the time left.
    """
    size = max(int(size), 1)
    bar = None
    if verbose and n:
        import keras

        if desc:
            print(desc, flush=True)
        bar = keras.utils.Progbar(n, verbose=1 if verbose else 0, unit_name="record")
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield slice(start, stop)
        if bar is not None:
            bar.update(stop)


def warn_interrupted(done: int, total: int, what: str = "records") -> None:
    """Warn that work was interrupted and only part of the result is real."""
    warnings.warn(
        f"Interrupted after {done} of {total} {what}; returning what was computed. "
        "The remaining entries are missing (NaN or None).",
        RuntimeWarning,
        stacklevel=3,
    )


def epoch_progress(epochs: int, desc: str = "") -> keras.callbacks.Callback:
    """A Keras callback drawing one progress bar over the epochs of a ``fit``.

    The bar shows the loss and an estimate of the time left, instead of one bar per
    epoch; ``desc``, if given, is printed when training begins.
    """
    import keras

    class _EpochProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if desc:
                print(desc, flush=True)
            self.bar = keras.utils.Progbar(int(epochs), unit_name="epoch")

        def on_epoch_end(self, epoch, logs=None):
            values = [(k, float(v)) for k, v in (logs or {}).items() if k == "loss"]
            self.bar.update(epoch + 1, values=values)

    return _EpochProgress()
