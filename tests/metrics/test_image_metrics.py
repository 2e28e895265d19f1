"""Image attack metrics against hand-computed values."""

import numpy as np
import pytest

from kmi.metrics.image import (
    attack_accuracy,
    feature_frechet_distance,
    image_attack_metrics,
    knn_distance,
    nearest_neighbor_accuracy,
    psnr,
    ssim,
)


def one_hot_images(labels, n=4):
    return np.eye(n, dtype="float32")[labels].reshape(len(labels), 1, n, 1)


def scores_model(x):
    return x.reshape(len(x), -1)


def test_attack_accuracy_top_k_and_nan():
    images = one_hot_images([0, 1, 2, 3])
    images[3] = np.nan
    labels = np.array([0, 2, 2, 3])
    out = attack_accuracy(scores_model, images, labels, top_k=(1, 4))
    assert out == {"top_1": 0.5, "top_4": 0.75}
    assert attack_accuracy(scores_model, images, labels, top_k=1) == 0.5


def test_attack_accuracy_errors():
    images = one_hot_images([0, 1])
    with pytest.raises(ValueError, match="Received: images.shape"):
        attack_accuracy(scores_model, images[:, 0], [0, 1])
    with pytest.raises(ValueError, match="Received: labels in"):
        attack_accuracy(scores_model, images, [0, 9])
    with pytest.raises(ValueError, match=r"Received: len\(labels\)=1"):
        attack_accuracy(scores_model, images, [0])
    with pytest.raises(ValueError, match="integer class labels"):
        attack_accuracy(scores_model, images, [0.5, 1])
    with pytest.raises(ValueError, match="Received: top_k"):
        attack_accuracy(scores_model, images, [0, 1], top_k=0)


PRIVATE = one_hot_images([0, 1])


@pytest.mark.parametrize(
    "metric",
    [
        lambda x: attack_accuracy(scores_model, x, [0] * len(x)),
        lambda x: knn_distance(x, [0] * len(x), PRIVATE, [0, 1]),
        lambda x: nearest_neighbor_accuracy(x, [0] * len(x), PRIVATE, [0, 1]),
        lambda x: psnr(x, np.zeros_like(x)),
        lambda x: ssim(x, np.zeros_like(x)),
        lambda x: feature_frechet_distance(x, PRIVATE),
        lambda x: image_attack_metrics(x, [0] * len(x), eval_model=scores_model),
    ],
    ids=["accuracy", "knn", "nn_accuracy", "psnr", "ssim", "frechet", "summary"],
)
def test_empty_or_all_nan_reconstructions_are_refused(metric):
    with pytest.raises(
        ValueError, match=r"images is empty.*Received: images.shape=\(0, 1, 4, 1\)"
    ):
        metric(np.zeros((0, 1, 4, 1), "float32"))
    with pytest.raises(ValueError, match="only NaN or infinite images.*Received: images.shape"):
        metric(np.full((2, 1, 4, 1), np.nan, "float32"))


def test_private_and_reference_images_are_checked():
    recon = one_hot_images([0, 1])
    bad = PRIVATE.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="private_images contains NaN"):
        knn_distance(recon, [0, 1], bad, [0, 1])
    with pytest.raises(ValueError, match=r"Received: len\(private_labels\)=1"):
        nearest_neighbor_accuracy(recon, [0, 1], PRIVATE, [0])
    with pytest.raises(ValueError, match="reference is empty"):
        psnr(recon, recon[:0])
    with pytest.raises(ValueError, match="same image shape"):
        knn_distance(recon, [0, 1], one_hot_images([0, 1], n=5), [0, 1])


def test_knn_distance_and_nn_accuracy():
    private = one_hot_images([0, 0, 1, 1])
    private[1] *= 0.5
    plabels = np.array([0, 0, 1, 1])
    recon = one_hot_images([0, 0])
    assert knn_distance(recon, [0, 1], private, plabels) == pytest.approx(1.0)
    assert nearest_neighbor_accuracy(recon, [0, 1], private, plabels) == 0.5
    feats = knn_distance(
        recon, [0, 1], private, plabels, feature_model=lambda x: 2 * scores_model(x)
    )
    assert feats == pytest.approx(4.0)
    row = image_attack_metrics(
        recon,
        np.array([0, 1]),
        eval_model=scores_model,
        private_images=private,
        private_labels=plabels,
        top_k=(1,),
    )
    assert row == {"top_1": 0.5, "knn_distance": 1.0, "nn_accuracy": 0.5}


def test_psnr_ssim():
    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 16, 1)).astype("float32")
    assert ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + 0.1, 0, 1)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    assert ssim(a, noisy) < 1.0
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:1])


def test_feature_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 1, 2, 1)).astype("float32")
    assert feature_frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = feature_frechet_distance(a + 3.0, a)
    assert shifted == pytest.approx(18.0, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        feature_frechet_distance(a[:1], a)
