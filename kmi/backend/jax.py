"""JAX implementations of kmi's backend operations."""

import jax


def value_and_grad(fn, x):
    from kmi.backend import _check_scalar

    def checked(t):
        value = fn(t)
        _check_scalar(value)
        return value

    return jax.value_and_grad(checked)(x)
