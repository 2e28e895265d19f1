"""TensorFlow implementations of kmi's backend operations."""

import tensorflow as tf


def value_and_grad(fn, x):
    from kmi.backend import _check_scalar

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(x)
    _check_scalar(value)
    return value, tape.gradient(value, x)
