"""Output hardening: transforms of a model's scores before they are released.

The functions here are written with ``keras.ops``, so they accept NumPy arrays and
tensors of any backend. :class:`kmi.targets.Target` applies them to query answers;
Keras layers wrapping them can be appended to a served model.
"""

import keras
from keras import ops

__all__ = ["label_only", "round_confidence", "top_k_confidence"]


def round_confidence(scores, decimals: int = 2):
    """Round scores to ``decimals`` decimal places (Fredrikson et al. 2015).

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Probabilities.
    decimals : int, default=2
        Number of decimals kept. Must be >= 0.

    Returns
    -------
    tensor of shape (n_samples, n_classes)
        The rounded scores. Rows are not renormalised: rounding is what an API that
        prints ``decimals`` digits releases.
    """
    if int(decimals) != decimals or decimals < 0:
        raise ValueError(
            f"decimals must be a non-negative integer. Received: decimals={decimals!r}"
        )
    scale = 10.0 ** int(decimals)
    return ops.round(ops.convert_to_tensor(scores, dtype="float32") * scale) / scale


def top_k_confidence(scores, k: int = 1):
    """Keep the ``k`` largest scores of each row and set the others to zero.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
    k : int, default=1
        Number of scores released per row; ``1 <= k``. Values above ``n_classes``
        release every score.

    Returns
    -------
    tensor of shape (n_samples, n_classes)
        Rows keep their original values in the top ``k`` positions (they are not
        renormalised, as an API showing the top ``k`` probabilities would not).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer. Received: k={k!r}")
    scores = ops.convert_to_tensor(scores, dtype="float32")
    n_classes = ops.shape(scores)[-1]
    k = min(int(k), int(n_classes))
    kth = ops.top_k(scores, k=k, sorted=True)[0][..., k - 1 : k]
    return ops.where(scores >= kth, scores, ops.zeros_like(scores))


def label_only(scores):
    """Return only the predicted label (the arg-max) of each row, as int32."""
    return ops.cast(ops.argmax(ops.convert_to_tensor(scores), axis=-1), "int32")


def _to_numpy(x):
    return keras.ops.convert_to_numpy(x)
