"""Pixel ranges: every image attack works in [0, 1] and meets the data in its own range.

The attacks' step sizes, starts, clipping and GAN priors are set for images in
[0, 1]. Data stored in another range (0..255, 0..16, [-1, 1]) is mapped to [0, 1]
on the way in, the target gets a ``Rescaling`` in front that maps [0, 1] back to
the range its model was trained on, and the images an attack returns are mapped to
the data's range again. :class:`PixelRangeMixin` does this for the attacks;
:func:`kmi.audit.audit` does the same for a whole audit.
"""

from __future__ import annotations

import math

import numpy as np

from kmi.targets import Target
from kmi.utils.validation import check_images

UNIT = (0.0, 1.0)

#: The ``pixel_range`` parameter, as the image attacks' docstrings give it.
PIXEL_RANGE_DOC = """\
pixel_range : (low, high), default=None
    The pixel values the target takes. ``None`` reads them from the images given
    to ``fit`` (:func:`pixel_range_of`), or takes [0, 1] when ``fit`` is given
    none; the range used is ``pixel_range_`` after ``fit``. The attack searches,
    starts and clips images in [0, 1] and gives them to the target through a
    ``Rescaling`` to this range; ``invert`` returns images in it, and ``score``
    measures in it."""


def pixel_range_of(*arrays) -> tuple[float, float]:
    """The pixel convention of image data: (low, high) bounds of its values.

    The data's minimum and maximum, widened to whole numbers, and to [0, 1] for data
    within it: digits stored as 0..16 give (0, 16), 8-bit images (0, 255), images
    in [-1, 1] give (-1, 1). Rounding errors of up to 0.001 past a whole number
    (1.0000001 after a division) are not widened over. With no data, (0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> pixel_range_of(np.array([0.2, 0.9])), pixel_range_of(np.array([0.0, 16.0]))
    ((0.0, 1.0), (0.0, 16.0))
    >>> pixel_range_of(np.array([-0.7, 0.8]), np.array([3.0]))
    (-1.0, 3.0)
    >>> pixel_range_of(np.array([-1e-7, 1.0000001])), pixel_range_of(None)
    ((0.0, 1.0), (0.0, 1.0))
    """
    values = [np.asarray(a, dtype="float64") for a in arrays if a is not None and np.size(a)]
    if not values:
        return UNIT
    lo = min(float(np.min(a)) for a in values)
    hi = max(float(np.max(a)) for a in values)
    return float(min(0.0, np.floor(lo + 1e-3))), float(max(1.0, np.ceil(hi - 1e-3)))


def check_pixel_range(pixel_range, name: str = "pixel_range") -> tuple[float, float]:
    """``pixel_range`` as two finite floats, low below high, or a clear error."""
    try:
        lo, hi = (float(v) for v in pixel_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair (low, high) of numbers, e.g. (0, 255). "
            f"Received: {name}={pixel_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"{name} must hold two finite numbers, low below high. "
            f"Received: {name}={pixel_range!r}"
        )
    return lo, hi


def to_unit(images, pixel_range):
    """Images of ``pixel_range`` mapped to [0, 1] (float32)."""
    lo, hi = pixel_range
    return ((np.asarray(images, dtype="float32") - lo) / (hi - lo)).astype("float32")


def from_unit(images, pixel_range):
    """Images in [0, 1] mapped to ``pixel_range`` (float32)."""
    lo, hi = pixel_range
    return (lo + (hi - lo) * np.asarray(images, dtype="float32")).astype("float32")


def unit_input(model, pixel_range):
    """``model`` taking images in [0, 1], mapped to its ``pixel_range`` first.

    A Keras model gets a ``Rescaling`` layer in front (gradients flow through it,
    for white-box attacks); anything else is called on the mapped images.
    """
    import keras

    lo, hi = (float(v) for v in pixel_range)
    if isinstance(model, keras.Model):
        shape = model.input_shape
        shape = shape[0] if isinstance(shape, list) else shape
        return keras.Sequential(
            [keras.Input(shape[1:]), keras.layers.Rescaling(hi - lo, offset=lo), model],
            name=f"{model.name}_from_unit_range",
        )
    return lambda images: model(lo + (hi - lo) * np.asarray(images, dtype="float32"))


def unit_output(generator, pixel_range):
    """A Keras ``generator`` of images in ``pixel_range``, made to give them in [0, 1]."""
    import keras

    lo, hi = (float(v) for v in pixel_range)
    wrapped = keras.Sequential(
        [
            keras.Input(generator.inputs[0].shape[1:]),
            generator,
            keras.layers.Rescaling(1.0 / (hi - lo), offset=-lo / (hi - lo)),
        ],
        name=f"{generator.name}_to_unit_range",
    )
    wrapped._kmi_unit_range = True
    return wrapped


def _on_base(name):
    """An attribute read from and written to ``self.base``: one count for both targets."""
    return property(
        lambda self: getattr(self.base, name), lambda self, value: setattr(self.base, name, value)
    )


class UnitRangeTarget(Target):
    """A target as the attacks see it: images in [0, 1], mapped to ``pixel_range``.

    Its model maps its input back to the data's range before the user's model sees
    it. The access, output and query budget are those of ``base``, and its queries
    are ``base``'s: counted, and budgeted, on the user's target.
    """

    def __init__(self, base: Target, pixel_range):
        self.base = base
        self.pixel_range = check_pixel_range(pixel_range)
        counts = base.n_queries_, base.n_calls_
        super().__init__(
            unit_input(base.model, self.pixel_range),
            access=base.access,
            output=base.output,
            top_k=base.top_k,
            decimals=base.decimals,
            from_logits=base.from_logits,
            task=base.task,
            query_budget=base.query_budget,
            batch_size=base.batch_size,
            classes=base.classes_,
        )
        base.n_queries_, base.n_calls_ = counts  # __init__ zeroed them through the base

    n_queries_ = _on_base("n_queries_")
    n_calls_ = _on_base("n_calls_")


def in_unit_range(target: Target, pixel_range) -> Target:
    """``target`` taking images in [0, 1] (:class:`UnitRangeTarget`), or itself for [0, 1]."""
    if check_pixel_range(pixel_range) == UNIT:
        return target
    return UnitRangeTarget(target, pixel_range)


class PixelRangeMixin:
    """``pixel_range`` for an image attack: fit in [0, 1], return images in the data's range.

    An attack's ``fit`` calls :meth:`_fit_pixel_range` first (it sets
    ``pixel_range_``, puts the target behind :func:`in_unit_range` and returns the
    images mapped to [0, 1]), and ``invert`` returns :meth:`_to_data_range` of its
    images.
    """

    def _fit_pixel_range(self, X=None):
        if X is not None:
            X = check_images(X, self.input_shape_)
        if self.pixel_range is not None:
            self.pixel_range_ = check_pixel_range(self.pixel_range)
        else:
            self.pixel_range_ = pixel_range_of(X)
        self.target_ = in_unit_range(self.target_, self.pixel_range_)
        if X is None or self.pixel_range_ == UNIT:
            return X
        return to_unit(X, self.pixel_range_)

    def _to_unit(self, images):
        return images if self.pixel_range_ == UNIT else to_unit(images, self.pixel_range_)

    def _to_data_range(self, images):
        return images if self.pixel_range_ == UNIT else from_unit(images, self.pixel_range_)
