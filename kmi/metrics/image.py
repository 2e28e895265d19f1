"""Success of image model-inversion attacks, measured rather than shown.

- :func:`attack_accuracy`: top-k accuracy of an independent evaluation classifier
  (:func:`kmi.models.evaluation_classifier`) on the reconstructions (Zhang et al. 2020);
- :func:`knn_distance`: squared distance from each reconstruction to the nearest
  private image of its class, in the evaluation model's feature space;
- :func:`nearest_neighbor_accuracy`: whether that nearest private image is of the
  attacked class (no classifier needed);
- :func:`psnr` and :func:`ssim`: against instance ground truth (learned inversion);
- :func:`feature_frechet_distance`: Frechet distance between Gaussians fitted to
  features of the evaluation model. It is not FID: there is no Inception network
  offline, so values are comparable only for the same feature model.

Reconstructions may hold rows of NaN, which an interrupted attack leaves for the
images it did not recover: they count as wrong in the accuracies, are left out of the
distances, and make PSNR and SSIM NaN. A batch of reconstructions that is empty or
entirely NaN is refused. Private and reference images are checked by
:func:`kmi.utils.validation.check_images` and labels by
:func:`kmi.utils.validation.check_labels`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from kmi.utils.validation import check_images, check_labels

__all__ = [
    "attack_accuracy",
    "feature_frechet_distance",
    "image_attack_metrics",
    "knn_distance",
    "nearest_neighbor_accuracy",
    "psnr",
    "ssim",
]


def _reconstructions(images, name="images"):
    """Reconstructions as float32 and the mask of their finite rows.

    Rows holding NaN (or inf) are allowed; an empty or entirely non-finite batch is not.
    """
    try:
        x = np.asarray(images, dtype="float32")
    except (TypeError, ValueError):
        x = None
    if x is None or x.ndim != 4 or not len(x):
        check_images(images, name=name)  # raises the shape or emptiness error
    valid = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not valid.any():
        raise ValueError(
            f"{name} holds only NaN or infinite images: the attack recovered none, so there "
            f"is nothing to measure. Received: {name}.shape={x.shape} with {len(x)} "
            "non-finite rows"
        )
    check_images(x[valid], name=name)
    return x, valid


def _predict(model, x, batch_size=256):
    """Outputs of a Keras model or callable on the rows of ``x`` (NumPy)."""
    import keras

    from kmi.backend import predict

    if isinstance(model, keras.Model):  # compiled once per batch size bucket
        out = predict(model, x, batch_size)
        out = out[-1] if isinstance(out, list) else out
        return np.asarray(out, dtype="float64").reshape(len(x), -1)
    outs = []
    for start in range(0, len(x), batch_size):
        out = model(x[start : start + batch_size])
        if isinstance(out, (list, tuple)):
            out = out[-1]
        outs.append(np.asarray(keras.ops.convert_to_numpy(out), dtype="float64"))
    return np.concatenate(outs).reshape(len(x), -1)


def _features(feature_model, x, batch_size=256):
    if feature_model is None:
        return x.reshape(len(x), -1).astype("float64")
    return _predict(feature_model, x, batch_size)


def attack_accuracy(
    eval_model: Callable,
    images: ArrayLike,
    labels: ArrayLike,
    top_k: int | Sequence[int] = (1, 5),
    *,
    batch_size: int = 256,
) -> float | dict[str, float]:
    """Top-k accuracy of an evaluation classifier on reconstructed images.

    Parameters
    ----------
    eval_model : keras.Model or callable
        Classifier trained on the private data, of an architecture the attack did
        not use; returns scores (logits or probabilities) of shape (n, n_classes).
    images : array of shape (n, height, width, channels)
        Reconstructions; rows holding NaN count as wrong.
    labels : array of shape (n,)
        Attacked class of each reconstruction (column index of ``eval_model``).
    top_k : int or tuple of int, default=(1, 5)
        The ``k`` of each accuracy.
    batch_size : int, default=256
        Images per call of ``eval_model``.

    Returns
    -------
    float or dict
        The accuracy for an int ``top_k``; ``{"top_1": ..., "top_5": ...}`` for a tuple.

    Raises
    ------
    ValueError
        On images that are not 4-D, empty or all NaN, labels not matching them or out
        of range, or a ``top_k`` that is not positive.

    References
    ----------
    Y. Zhang, R. Jia, H. Pei, W. Wang, B. Li and D. Song. The secret revealer:
    generative model-inversion attacks against deep neural networks. CVPR 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.image import attack_accuracy
    >>> model = lambda x: x.reshape(len(x), -1)[:, :3]
    >>> images = np.eye(3, dtype="float32").reshape(3, 1, 3, 1)
    >>> attack_accuracy(model, images, [0, 1, 2], top_k=1)
    1.0
    >>> scores = attack_accuracy(model, images, [0, 0, 2], top_k=(1, 2))
    >>> {k: round(v, 3) for k, v in scores.items()}
    {'top_1': 0.667, 'top_2': 1.0}
    """
    images, valid = _reconstructions(images)
    labels = check_labels(labels, len(images), name="labels")
    ks = (top_k,) if isinstance(top_k, numbers.Integral) else tuple(top_k)
    if not ks or any(not isinstance(k, numbers.Integral) or k < 1 for k in ks):
        raise ValueError(f"top_k must be positive integers. Received: top_k={top_k!r}")
    scores = _predict(eval_model, np.where(valid[:, None, None, None], images, 0.0), batch_size)
    n_classes = scores.shape[1]
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"labels must be column indices of the evaluation model (0..{n_classes - 1}). "
            f"Received: labels in [{labels.min()}, {labels.max()}]"
        )
    out = {}
    order = np.argsort(-scores, axis=1, kind="stable")
    for k in ks:
        hit = (order[:, : int(k)] == labels[:, None]).any(axis=1) & valid
        out[f"top_{int(k)}"] = float(hit.mean())
    if isinstance(top_k, numbers.Integral):
        return out[f"top_{int(top_k)}"]
    return out


def _class_nearest(images, labels, private_images, private_labels, feature_model, batch_size):
    images, valid = _reconstructions(images)
    labels = check_labels(labels, len(images), name="labels")
    private_images = check_images(private_images, name="private_images")
    private_labels = check_labels(private_labels, len(private_images), name="private_labels")
    if images.shape[1:] != private_images.shape[1:]:
        raise ValueError(
            "images and private_images must have the same image shape. "
            f"Received: images.shape={images.shape}, private_images.shape={private_images.shape}"
        )
    fa = _features(feature_model, np.where(valid[:, None, None, None], images, 0.0), batch_size)
    fp = _features(feature_model, private_images, batch_size)
    # squared distances between every reconstruction and every private image
    d = (fa**2).sum(1)[:, None] + (fp**2).sum(1)[None, :] - 2.0 * fa @ fp.T
    d = np.maximum(d, 0.0)
    return d, labels, private_labels, valid


def knn_distance(
    images: ArrayLike,
    labels: ArrayLike,
    private_images: ArrayLike,
    private_labels: ArrayLike,
    *,
    feature_model: Callable | None = None,
    batch_size: int = 256,
) -> float:
    """Mean squared distance from each reconstruction to its class's nearest private image.

    Lower is better for the attacker (Zhang et al. 2020, "KNN Dist").

    Parameters
    ----------
    images : array of shape (n, h, w, c)
        Reconstructions; NaN rows are left out.
    labels : array of shape (n,)
        Attacked class of each reconstruction.
    private_images : array of shape (m, h, w, c)
        The private training images.
    private_labels : array of shape (m,)
        Their classes.
    feature_model : keras.Model or callable, default=None
        Feature space, e.g. ``kmi.models.feature_extractor(eval_model)``; ``None``
        measures in pixel space.
    batch_size : int, default=256
        Images per call of ``feature_model``.

    Returns
    -------
    float
        NaN rows and classes without private images are left out; NaN if none is left.

    Raises
    ------
    ValueError
        On images that are not 4-D, empty or all NaN, private images with NaN, labels
        that do not match their images, or image shapes that differ.

    References
    ----------
    Y. Zhang, R. Jia, H. Pei, W. Wang, B. Li and D. Song. The secret revealer:
    generative model-inversion attacks against deep neural networks. CVPR 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.image import knn_distance
    >>> private = np.stack([np.zeros((2, 2, 1)), np.ones((2, 2, 1))])
    >>> knn_distance(private + 0.5, [0, 1], private, [0, 1])
    1.0
    """
    d, labels, private_labels, valid = _class_nearest(
        images, labels, private_images, private_labels, feature_model, batch_size
    )
    same = labels[:, None] == private_labels[None, :]
    d = np.where(same, d, np.inf).min(axis=1)
    keep = valid & np.isfinite(d)
    return float(d[keep].mean()) if keep.any() else float("nan")


def nearest_neighbor_accuracy(
    images: ArrayLike,
    labels: ArrayLike,
    private_images: ArrayLike,
    private_labels: ArrayLike,
    *,
    feature_model: Callable | None = None,
    batch_size: int = 256,
) -> float:
    """Fraction of reconstructions whose nearest private image is of the attacked class.

    A classifier-free success rate: it needs only the private images an auditor holds.
    Rows of NaN count as wrong.

    Parameters
    ----------
    images, labels, private_images, private_labels, feature_model, batch_size
        As :func:`knn_distance`.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        As :func:`knn_distance`.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.image import nearest_neighbor_accuracy
    >>> private = np.stack([np.zeros((2, 2, 1)), np.ones((2, 2, 1))])
    >>> nearest_neighbor_accuracy(private + 0.1, [0, 0], private, [0, 1])
    0.5
    """
    d, labels, private_labels, valid = _class_nearest(
        images, labels, private_images, private_labels, feature_model, batch_size
    )
    hit = private_labels[np.argmin(d, axis=1)] == labels
    return float((hit & valid).mean())


def _pair(images, reference):
    images, _ = _reconstructions(images)
    reference = check_images(reference, name="reference")
    if images.shape != reference.shape:
        raise ValueError(
            "images and reference must have the same shape. "
            f"Received: images.shape={images.shape}, reference.shape={reference.shape}"
        )
    return images.astype("float64"), reference.astype("float64")


def psnr(images: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0) -> float:
    """Mean peak signal-to-noise ratio (dB) of ``images`` against ``reference``.

    Parameters
    ----------
    images : array of shape (n, h, w, c)
        Reconstructions; a NaN row makes the result NaN.
    reference : array of shape (n, h, w, c)
        The images they reconstruct, row by row.
    data_range : float, default=1.0
        Maximum minus minimum pixel value.

    Returns
    -------
    float
        ``mean(10 log10(data_range**2 / MSE))``; inf when an image is exact.

    Raises
    ------
    ValueError
        If the two batches differ in shape, or on empty or all-NaN images.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.image import psnr
    >>> reference = np.zeros((1, 4, 4, 1))
    >>> round(psnr(reference + 0.1, reference), 4)
    20.0
    """
    images, reference = _pair(images, reference)
    mse = ((images - reference) ** 2).reshape(len(images), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(float(data_range) ** 2 / mse)
    return float(np.mean(values))


def ssim(
    images: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0, sigma: float = 1.5
) -> float:
    """Mean structural similarity (Wang et al. 2004), Gaussian window, per channel.

    Parameters
    ----------
    images : array of shape (n, h, w, c)
        Reconstructions; a NaN row makes the result NaN.
    reference : array of shape (n, h, w, c)
        The images they reconstruct, row by row.
    data_range : float, default=1.0
        Maximum minus minimum pixel value.
    sigma : float, default=1.5
        Standard deviation of the Gaussian window, in pixels.

    Returns
    -------
    float
        In [-1, 1]; 1 for identical images.

    Raises
    ------
    ValueError
        If the two batches differ in shape, or on empty or all-NaN images.

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli. Image quality
    assessment: from error visibility to structural similarity. IEEE Transactions on
    Image Processing 13(4), 2004.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.image import ssim
    >>> reference = np.random.default_rng(0).random((2, 8, 8, 1))
    >>> round(ssim(reference, reference), 4), ssim(1 - reference, reference) < 0
    (1.0, True)
    """
    from scipy.ndimage import gaussian_filter

    a, b = _pair(images, reference)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (0, sigma, sigma, 0)

    def blur(t):
        return gaussian_filter(t, sigma=s, mode="reflect", truncate=3.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def feature_frechet_distance(
    images: ArrayLike,
    reference: ArrayLike,
    *,
    feature_model: Callable | None = None,
    batch_size: int = 256,
) -> float:
    """Frechet distance between Gaussians fitted to features of two image sets.

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` in the space of
    ``feature_model`` (e.g. the evaluation model's ``"features"`` layer). This is
    the formula of FID (Heusel et al. 2017), but not FID: the features are not
    Inception's.

    Parameters
    ----------
    images : array of shape (n, h, w, c)
        Reconstructions; NaN rows are left out.
    reference : array of shape (m, h, w, c)
        Real images.
    feature_model : keras.Model or callable, default=None
        Feature space; ``None`` measures in pixel space.
    batch_size : int, default=256
        Images per call of ``feature_model``.

    Returns
    -------
    float
        0 for two sets of identical statistics.

    Raises
    ------
    ValueError
        On images that are empty or all NaN, or fewer than 2 finite images in a set.

    References
    ----------
    M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler and S. Hochreiter. GANs
    trained by a two time-scale update rule converge to a local Nash equilibrium.
    NeurIPS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.image import feature_frechet_distance
    >>> a = np.random.default_rng(0).normal(size=(200, 1, 2, 1))
    >>> round(feature_frechet_distance(a + 1.0, a), 4)
    2.0
    """
    from scipy import linalg

    images, valid = _reconstructions(images)
    reference = check_images(reference, name="reference")
    fa = _features(feature_model, images[valid], batch_size)
    fb = _features(feature_model, reference, batch_size)
    if len(fa) < 2 or len(fb) < 2:
        raise ValueError(
            "feature_frechet_distance needs at least 2 finite images in each set. "
            f"Received: {len(fa)} and {len(fb)}"
        )
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sa, sb = np.atleast_2d(np.cov(fa, rowvar=False)), np.atleast_2d(np.cov(fb, rowvar=False))
    covmean = linalg.sqrtm(sa @ sb)
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2.0 * covmean))


def image_attack_metrics(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    eval_model: Callable | None = None,
    private_images: ArrayLike | None = None,
    private_labels: ArrayLike | None = None,
    feature_model: Callable | None = None,
    top_k: int | Sequence[int] = (1, 5),
) -> dict[str, float]:
    """The standard table row: top-k accuracy, KNN distance, nearest-neighbour accuracy.

    Each entry is computed when its inputs are given.

    Parameters
    ----------
    images : array of shape (n, h, w, c)
        Reconstructions.
    labels : array of shape (n,)
        Attacked class of each reconstruction.
    eval_model : keras.Model or callable, default=None
        For ``top_<k>`` (:func:`attack_accuracy`).
    private_images, private_labels : arrays, default=None
        For ``knn_distance`` and ``nn_accuracy`` (:func:`knn_distance`,
        :func:`nearest_neighbor_accuracy`).
    feature_model : keras.Model or callable, default=None
        Feature space of the distances; ``None`` for pixels.
    top_k : int or tuple of int, default=(1, 5)
        The ``k`` of each accuracy.

    Returns
    -------
    dict
        ``top_<k>`` for each ``k``, ``knn_distance`` and ``nn_accuracy``, as given.

    Raises
    ------
    ValueError
        As the functions it calls.

    Examples
    --------
    >>> import numpy as np
    >>> from kmi.metrics.image import image_attack_metrics
    >>> private = np.stack([np.zeros((2, 2, 1)), np.ones((2, 2, 1))])
    >>> scores = lambda x: np.c_[1 - x.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3))]
    >>> image_attack_metrics(private, [0, 1], eval_model=scores, private_images=private,
    ...                      private_labels=[0, 1], top_k=1)
    {'top_1': 1.0, 'knn_distance': 0.0, 'nn_accuracy': 1.0}
    """
    out = {}
    if eval_model is not None:
        out.update(attack_accuracy(eval_model, images, labels, top_k=tuple(np.atleast_1d(top_k))))
    if private_images is not None and private_labels is not None:
        out["knn_distance"] = knn_distance(
            images, labels, private_images, private_labels, feature_model=feature_model
        )
        out["nn_accuracy"] = nearest_neighbor_accuracy(
            images, labels, private_images, private_labels, feature_model=feature_model
        )
    return out
