"""Argument checks shared by the image and prior builders."""

from __future__ import annotations

import numbers
from collections.abc import Sequence


def check_input_shape(input_shape: Sequence[int], name: str = "input_shape") -> tuple:
    """``input_shape`` as a tuple of three positive ints, or a ValueError naming ``name``."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{name} must be (height, width, channels) of positive integers. "
            f"Received: {name}={input_shape!r}"
        )
    return shape


def check_n_classes(n_classes: int) -> int:
    """``n_classes`` as an int of at least 2, or a ValueError."""
    if not isinstance(n_classes, numbers.Integral) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2. Received: n_classes={n_classes!r}")
    return int(n_classes)
