"""Reconstruction metrics, the random-CNN feature space and the image baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from neurodecode.evaluate.image_baselines import RidgeToPixels, nearest_training_image
from neurodecode.evaluate.reconstruction import (
    LUMA,
    chance_levels,
    pixcorr,
    pixcorr_per_image,
    retrieval,
    score_reconstructions,
    shuffled_scores,
    ssim,
    ssim_per_image,
    two_way,
)
from neurodecode.models.vision.features import RandomCNNFeatures


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Distinct images with spatial structure: smoothed colour noise, (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, 2.5, 2.5, 0))
    x = (x - x.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(x, axis=(1, 2, 3), keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def cnn() -> RandomCNNFeatures:
    return RandomCNNFeatures()


# ---- PixCorr and SSIM ------------------------------------------------------------------------


def test_identical_images_score_one():
    images = smooth_images(6)
    assert pixcorr(images, images) == pytest.approx(1.0)
    assert ssim(images, images) == pytest.approx(1.0)
    # layouts: a (n, 3, H, W) tensor of the same images scores the same
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    assert pixcorr(batch, images) == pytest.approx(1.0)


def test_pixcorr_matches_numpy_and_handles_constant_and_size():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 16, 16, 3)), rng.random((3, 16, 16, 3))
    b[1] = 0.4 * a[1] + 0.6 * b[1]
    expected = [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(3)]
    np.testing.assert_allclose(pixcorr_per_image(a, b), expected, rtol=1e-5)
    # a constant reconstruction correlates 0, not NaN
    a[2] = 0.5
    assert pixcorr_per_image(a, b)[2] == 0.0
    # a reconstruction at twice the size is resized to the target's (area averaging)
    big = np.repeat(np.repeat(b, 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(pixcorr_per_image(big, b), 1.0, rtol=1e-5)


def test_ssim_of_constant_images_matches_closed_form():
    # constant images: variances and covariance vanish, so
    # SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = (0.01 * data_range)^2, and mu is
    # the luma of the colour (red (1, 0, 0) -> 0.299): checks weights and the data range.
    red = np.zeros((1, 16, 16, 3))
    red[..., 0] = 1.0
    gray = np.full((1, 16, 16, 3), 0.6)
    mx, my, c1 = 0.299, 0.6, 0.01**2
    assert LUMA[0] == 0.299
    assert ssim(red, gray) == pytest.approx((2 * mx * my + c1) / (mx**2 + my**2 + c1), rel=1e-6)


def test_ssim_matches_formula_by_hand():
    # Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), population covariances,
    # data range 1; averaged away from a 5-pixel border (as skimage does)
    rng = np.random.default_rng(2)
    x = rng.random((1, 24, 24, 3))
    y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1)
    gx, gy = x[0] @ np.array([0.299, 0.587, 0.114]), y[0] @ np.array([0.299, 0.587, 0.114])

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma=1.5, truncate=3.5, mode="reflect")

    mx, my = blur(gx), blur(gy)
    vx, vy, cxy = blur(gx * gx) - mx**2, blur(gy * gy) - my**2, blur(gx * gy) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    by_hand = s[5:-5, 5:-5].mean()
    assert 0.2 < by_hand < 0.9
    assert ssim(y, x) == pytest.approx(by_hand, abs=1e-6)


def test_shuffled_pairs_score_near_zero():
    rng = np.random.default_rng(3)
    a, b = rng.random((30, 32, 32, 3)), rng.random((30, 32, 32, 3))
    assert abs(pixcorr(a, b)) < 0.02
    assert abs(ssim(a, b)) < 0.05
    chance = shuffled_scores(a, a, n_permutations=3)
    assert abs(chance["pixcorr"]) < 0.02 and abs(chance["ssim"]) < 0.05
    assert set(chance) == {"pixcorr", "ssim", "pixcorr_sd", "ssim_sd"}


def test_shuffled_scores_never_pair_an_image_with_itself():
    images = smooth_images(3, size=16)
    chance = shuffled_scores(images, images, n_permutations=10)
    own = ssim_per_image(images, images)
    assert own.min() == pytest.approx(1.0)
    assert chance["ssim"] < 0.9 and chance["pixcorr"] < 0.9  # an own pair would give 1


def test_image_metric_errors():
    a = np.random.default_rng(4).random((3, 16, 16, 3))
    with pytest.raises(ValueError, match="3 reconstructions for 2 target"):
        pixcorr(a, a[:2])
    with pytest.raises(ValueError, match="at least 11"):
        ssim(a[:, :8, :8], a[:, :8, :8])
    with pytest.raises(ValueError, match="must be"):
        ssim(a[..., :2], a[..., :2])


# ---- two-way and retrieval -------------------------------------------------------------------


def test_two_way_and_retrieval_perfect_and_chance():
    rng = np.random.default_rng(5)
    target = rng.normal(size=(200, 64))
    assert two_way(target, target) == 1.0
    assert retrieval(target, target, n_candidates=300) == 1.0
    assert retrieval(target, target, direction="image_to_brain") == 1.0
    unrelated = rng.normal(size=(200, 64))
    assert two_way(unrelated, target) == pytest.approx(0.5, abs=0.03)
    assert retrieval(unrelated, target, n_candidates=20) == pytest.approx(1 / 20, abs=0.03)


def test_retrieval_directions_differ_as_defined():
    # predictions i >= 1 mix their image with image 0: as queries among images they pick image 0
    # about half the time (brain -> image ~ 0.5); each image still finds its own prediction
    # (image -> brain = 1)
    rng = np.random.default_rng(6)
    target = rng.normal(size=(40, 2000))
    pred = target + target[0]
    pred[0] = target[0]
    b2i = retrieval(pred, target, n_candidates=40)
    i2b = retrieval(pred, target, n_candidates=40, direction="image_to_brain")
    assert i2b == 1.0
    assert 0.25 < b2i < 0.8
    assert i2b == retrieval(target, pred, n_candidates=40, direction="brain_to_image")


def test_identification_errors():
    a = np.zeros((5, 4))
    with pytest.raises(ValueError, match="one shape"):
        two_way(a, a[:4])
    with pytest.raises(ValueError, match="at least 2"):
        retrieval(a[:1], a[:1])
    with pytest.raises(ValueError, match="direction"):
        retrieval(a, a, direction="both")


# ---- the random CNN feature space ------------------------------------------------------------


def test_random_cnn_is_deterministic_and_separates_images(cnn):
    images = smooth_images(20)
    f = cnn(images)
    assert f.shape == (20, cnn.n_features) and f.dtype == torch.float32
    assert not f.requires_grad
    assert torch.equal(f, RandomCNNFeatures(seed=0)(images))
    assert not torch.allclose(f, RandomCNNFeatures(seed=1)(images))
    # noisy copies are identified against their originals; distinct images are far apart
    noisy = np.clip(images + 0.05 * np.random.default_rng(7).normal(size=images.shape), 0, 1)
    assert two_way(cnn(noisy), f) > 0.95
    corr = np.corrcoef(f.numpy())
    assert corr[~np.eye(20, dtype=bool)].max() < 0.999


def test_random_cnn_two_way_is_near_chance_for_shuffled_pairs(cnn):
    images = smooth_images(40, seed=8)
    others = smooth_images(40, seed=9)
    assert two_way(cnn(others), cnn(images)) == pytest.approx(0.5, abs=0.1)


def test_random_cnn_bad_config():
    with pytest.raises(ValueError, match="too small"):
        RandomCNNFeatures(image_size=16)


# ---- score_reconstructions and chance levels -------------------------------------------------


def test_score_reconstructions_keys_and_values(cnn):
    images = smooth_images(12)
    emb = np.random.default_rng(10).normal(size=(12, 8))
    scores = score_reconstructions(images, images, features={"random_cnn": cnn},
                                   pred_embedding=emb, target_embedding=emb, n_candidates=300)
    assert scores == pytest.approx({"pixcorr": 1.0, "ssim": 1.0, "two_way_random_cnn": 1.0,
                                    "retrieval_top1_brain_to_image": 1.0,
                                    "retrieval_top1_image_to_brain": 1.0, "n_candidates": 12})
    wrong = score_reconstructions(images[::-1].copy(), images, features={"random_cnn": cnn})
    assert set(wrong) == {"pixcorr", "ssim", "two_way_random_cnn"}
    assert wrong["two_way_random_cnn"] < 0.75 and wrong["pixcorr"] < 0.5 and wrong["ssim"] < 0.5
    with pytest.raises(ValueError, match="both"):
        score_reconstructions(images, images, features={}, pred_embedding=emb)
    with pytest.raises(ValueError, match="11 predicted embeddings for 12"):
        score_reconstructions(images, images, features={}, pred_embedding=emb[:11],
                              target_embedding=emb)


def test_chance_levels():
    assert chance_levels(300) == {"two_way": 0.5, "retrieval_top1_brain_to_image": 1 / 300,
                                  "retrieval_top1_image_to_brain": 1 / 300, "n_candidates": 300}
    with pytest.raises(ValueError, match="at least 2"):
        chance_levels(1)


# ---- baselines -------------------------------------------------------------------------------


def linear_toy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain features X (n, 10) mapped linearly (noiselessly) to 8 x 8 images."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(10, 8 * 8 * 3))
    X = rng.normal(size=(n, 10)) * rng.uniform(0.5, 20, size=10) + rng.normal(size=10) * 5
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    images = np.clip(0.5 + 0.04 * z @ weights, 0, 1).reshape(n, 8, 8, 3)
    return X, images, weights


def test_ridge_to_pixels_recovers_linear_map():
    X, images, _ = linear_toy(300)
    model = RidgeToPixels().fit(X[:200], images[:200])
    pred = model.predict(X[200:])
    assert pred.shape == (100, 3, 8, 8) and pred.dtype == torch.float32
    assert float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0
    assert pixcorr(pred, images[200:]) > 0.9
    assert model.alpha_ in model.alphas and model.n_features_in_ == 10
    # an image-free mean predictor would be far worse: the map is really learned
    assert pixcorr(np.broadcast_to(images[:200].mean(axis=0), (100, 8, 8, 3)), images[200:]) < 0.5
    resized = RidgeToPixels(size=4).fit(X[:200], images[:200])
    assert resized.predict(X[200:]).shape == (100, 3, 4, 4)


def test_ridge_to_pixels_normalises_on_training_data_only():
    X, images, _ = linear_toy(120, seed=1)
    model = RidgeToPixels().fit(X[:100], images[:100])
    np.testing.assert_allclose(model.scaler_.mean_, X[:100].mean(axis=0))
    test = X[100:]
    wild = np.vstack([test, 1e3 * np.random.default_rng(2).normal(size=(30, 10)) + 500])
    torch.testing.assert_close(model.predict(wild)[:20], model.predict(test))


def test_ridge_to_pixels_errors():
    X, images, _ = linear_toy(30)
    with pytest.raises(ValueError, match="30 rows of brain responses for 29 images"):
        RidgeToPixels().fit(X, images[:29])
    with pytest.raises(ValueError, match="alphas"):
        RidgeToPixels(alphas=()).fit(X, images)
    with pytest.raises(ValueError, match="features"):
        RidgeToPixels().fit(X, images).predict(X[:, :5])


def test_nearest_training_image_exact_embeddings():
    rng = np.random.default_rng(11)
    bank_images = smooth_images(15, size=16)
    bank = rng.normal(size=(15, 6))
    which = np.array([3, 0, 14, 3, 7])
    images, index = nearest_training_image(2.5 * bank[which], torch.from_numpy(bank),
                                           bank_images)
    np.testing.assert_array_equal(index, which)
    assert images.shape == (5, 3, 16, 16)
    torch.testing.assert_close(images, torch.from_numpy(bank_images[which]).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="must match"):
        nearest_training_image(bank[:, :5], bank, bank_images)
    with pytest.raises(ValueError, match="15 training embeddings for 14"):
        nearest_training_image(bank, bank, bank_images[:14])
