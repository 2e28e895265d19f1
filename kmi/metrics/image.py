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

Rows of NaN (left by an interrupted attack) count as failures: wrong for the
accuracies, excluded (with the count reported) nowhere silently.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "attack_accuracy",
    "feature_frechet_distance",
    "image_attack_metrics",
    "knn_distance",
    "nearest_neighbor_accuracy",
    "psnr",
    "ssim",
]


def _images(x, name="images"):
    x = np.asarray(x, dtype="float32")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of images of shape (n, height, width, channels). "
            f"Received: {name}.shape={x.shape}"
        )
    return x


def _labels(labels, n, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D array with one integer label per image ({n}). "
            f"Received: {name}.shape={labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer class indices. Received: {name}.dtype={labels.dtype}"
        )
    return labels.astype(np.int64)


def _valid_rows(x):
    return np.isfinite(x.reshape(len(x), -1)).all(axis=1)


def _predict(model, x, batch_size=256):
    """Outputs of a Keras model or callable on the rows of ``x`` (NumPy)."""
    import keras

    outs = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        out = model(batch, training=False) if isinstance(model, keras.Model) else model(batch)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        outs.append(np.asarray(keras.ops.convert_to_numpy(out), dtype="float64"))
    if not outs:
        return np.zeros((0, 0))
    return np.concatenate(outs).reshape(len(x), -1)


def _features(feature_model, x, batch_size=256):
    if feature_model is None:
        return x.reshape(len(x), -1).astype("float64")
    return _predict(feature_model, x, batch_size)


def attack_accuracy(eval_model, images, labels, top_k=(1, 5), *, batch_size: int = 256):
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
    batch_size : int, default=256

    Returns
    -------
    float or dict
        The accuracy for an int ``top_k``; ``{"top_1": ..., "top_5": ...}`` for a tuple.

    Raises
    ------
    ValueError
        On images not 4-D, labels not matching them, or labels out of range.

    Examples
    --------
    >>> import numpy as np
    >>> model = lambda x: x.reshape(len(x), -1)[:, :3]
    >>> images = np.eye(3, dtype="float32").reshape(3, 1, 3, 1)
    >>> attack_accuracy(model, images, [0, 1, 2], top_k=1)
    1.0
    """
    images = _images(images)
    labels = _labels(labels, len(images))
    ks = (top_k,) if isinstance(top_k, numbers.Integral) else tuple(top_k)
    if not ks or any(not isinstance(k, numbers.Integral) or k < 1 for k in ks):
        raise ValueError(f"top_k must be positive integers. Received: top_k={top_k!r}")
    valid = _valid_rows(images)
    scores = _predict(eval_model, np.where(valid[:, None, None, None], images, 0.0), batch_size)
    n_classes = scores.shape[1] if scores.size else 0
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must be column indices of the evaluation model (0..{n_classes - 1}). "
            f"Received: labels in [{labels.min()}, {labels.max()}]"
        )
    out = {}
    order = np.argsort(-scores, axis=1, kind="stable") if len(labels) else np.zeros((0, 0))
    for k in ks:
        hit = (order[:, : int(k)] == labels[:, None]).any(axis=1) & valid
        out[f"top_{int(k)}"] = float(hit.mean()) if len(hit) else float("nan")
    if isinstance(top_k, numbers.Integral):
        return out[f"top_{int(top_k)}"]
    return out


def _class_nearest(images, labels, private_images, private_labels, feature_model, batch_size):
    images = _images(images)
    labels = _labels(labels, len(images))
    private_images = _images(private_images, "private_images")
    private_labels = _labels(private_labels, len(private_images), "private_labels")
    if images.shape[1:] != private_images.shape[1:]:
        raise ValueError(
            "images and private_images must have the same image shape. "
            f"Received: images.shape={images.shape}, private_images.shape={private_images.shape}"
        )
    valid = _valid_rows(images)
    fa = _features(feature_model, np.where(valid[:, None, None, None], images, 0.0), batch_size)
    fp = _features(feature_model, private_images, batch_size)
    # squared distances between every reconstruction and every private image
    d = (fa**2).sum(1)[:, None] + (fp**2).sum(1)[None, :] - 2.0 * fa @ fp.T
    d = np.maximum(d, 0.0)
    return d, labels, private_labels, valid


def knn_distance(
    images, labels, private_images, private_labels, *, feature_model=None, batch_size=256
) -> float:
    """Mean squared distance from each reconstruction to its class's nearest private image.

    Lower is better for the attacker (Zhang et al. 2020, "KNN Dist").

    Parameters
    ----------
    images : array of shape (n, h, w, c)
    labels : array of shape (n,)
        Attacked class of each reconstruction.
    private_images, private_labels : arrays
        The private training images and their classes.
    feature_model : keras.Model or callable, default=None
        Feature space, e.g. ``kmi.models.feature_extractor(eval_model)``; ``None``
        measures in pixel space.
    batch_size : int, default=256

    Returns
    -------
    float
        NaN rows and classes without private images are left out; NaN if none is left.
    """
    d, labels, private_labels, valid = _class_nearest(
        images, labels, private_images, private_labels, feature_model, batch_size
    )
    same = labels[:, None] == private_labels[None, :]
    d = np.where(same, d, np.inf).min(axis=1)
    keep = valid & np.isfinite(d)
    return float(d[keep].mean()) if keep.any() else float("nan")


def nearest_neighbor_accuracy(
    images, labels, private_images, private_labels, *, feature_model=None, batch_size=256
) -> float:
    """Fraction of reconstructions whose nearest private image is of the attacked class.

    A classifier-free success rate: it needs only the private images an auditor holds.
    Rows of NaN count as wrong.
    """
    d, labels, private_labels, valid = _class_nearest(
        images, labels, private_images, private_labels, feature_model, batch_size
    )
    if not len(labels):
        return float("nan")
    hit = private_labels[np.argmin(d, axis=1)] == labels
    return float((hit & valid).mean())


def psnr(images, reference, *, data_range: float = 1.0) -> float:
    """Mean peak signal-to-noise ratio (dB) of ``images`` against ``reference``.

    Raises
    ------
    ValueError
        If the two batches differ in shape.
    """
    images, reference = _pair(images, reference)
    mse = ((images - reference) ** 2).reshape(len(images), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(float(data_range) ** 2 / mse)
    return float(np.mean(values))


def _pair(images, reference):
    images = _images(images)
    reference = _images(reference, "reference")
    if images.shape != reference.shape:
        raise ValueError(
            "images and reference must have the same shape. "
            f"Received: images.shape={images.shape}, reference.shape={reference.shape}"
        )
    return images.astype("float64"), reference.astype("float64")


def ssim(images, reference, *, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004), Gaussian window, per channel.

    Returns
    -------
    float
        In [-1, 1]; 1 for identical images.
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


def feature_frechet_distance(images, reference, *, feature_model=None, batch_size=256) -> float:
    """Frechet distance between Gaussians fitted to features of two image sets.

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` in the space of
    ``feature_model`` (e.g. the evaluation model's ``"features"`` layer). This is
    the formula of FID, but not FID: the features are not Inception's.
    """
    from scipy import linalg

    images = _images(images)
    reference = _images(reference, "reference")
    fa = _features(feature_model, images[_valid_rows(images)], batch_size)
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
    images,
    labels,
    *,
    eval_model=None,
    private_images=None,
    private_labels=None,
    feature_model=None,
    top_k=(1, 5),
) -> dict:
    """The standard table row: top-k accuracy, KNN distance, nearest-neighbour accuracy.

    Each entry is computed when its inputs are given.
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
