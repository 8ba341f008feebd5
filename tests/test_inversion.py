"""Encoding-model inversion: the posterior it computes, and where it beats a ridge decoder.

The simulation is the setting it is built for (a new subject's few trials): targets that vary
along a few latent dimensions, hundreds of channels each driven by those latents with its own
noise, half of them carrying no signal, and a bank of targets without responses for the prior.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from neurodecode.models.inversion import EncodingInversion


def _simulate(n: int, seed: int, *, k: int = 4, n_targets: int = 60, n_channels: int = 300):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(k, n_targets))
    tuning = rng.normal(size=(k, n_channels))
    tuning[:, n_channels // 2:] = 0.0                  # half the channels carry no signal
    noise = rng.uniform(2.0, 6.0, size=n_channels)     # each channel its own reliability

    def draw(m: int):
        z = rng.normal(size=(m, k))
        X = z @ tuning + noise * rng.normal(size=(m, n_channels)) + 5.0
        return X, z @ mix + 1.0 + 0.1 * rng.normal(size=(m, n_targets))

    (X, y), (X_test, y_test) = draw(n), draw(200)
    prior = draw(1000)[1]                              # targets only: no responses
    return X, y, X_test, y_test, prior


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the Pearson correlation of predicted and true target vectors."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_ridge_from_few_samples_with_a_prior_of_targets(seed):
    X, y, X_test, y_test, prior = _simulate(24, seed)
    ridge = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(X, y).predict(X_test)
    inv = EncodingInversion(n_components=8).fit(X, y, prior=prior).predict(X_test)
    r_ridge, r_inv = _correlation(ridge, y_test), _correlation(inv, y_test)
    assert r_inv > r_ridge + 0.05, (r_inv, r_ridge)
    assert np.mean((inv - y_test) ** 2) < 0.6 * np.mean((ridge - y_test) ** 2)


def test_prediction_is_the_posterior_mean_of_the_fitted_encoding_model():
    X, y, X_test, _, prior = _simulate(40, 3)
    inv = EncodingInversion(n_components=6).fit(X, y, prior=prior)
    assert inv.n_components_ == 6 and inv.components_.shape == (6, 60)
    # the same posterior in the channels' space (Woodbury): E[z | r] = B (B'B + S)^-1 (r - c)
    B, S = inv.encoding_coef_, np.diag(inv.noise_var_)
    r = (X_test - inv.mean_) / inv.scale_
    c = -inv.latent_mean_ @ B
    z = (r - c) @ np.linalg.solve(B.T @ B + S, B.T)
    expected = inv.target_mean_ + (z * np.sqrt(inv.latent_var_)) @ inv.components_
    np.testing.assert_allclose(inv.predict(X_test), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(inv.predict(X_test), X_test @ inv.coef_.T + inv.intercept_)


def test_channels_without_signal_are_told_apart():
    X, y, *_ = _simulate(100, 4)
    inv = EncodingInversion(n_components=4).fit(X, y)
    signal, silent = inv.encoding_r2_[:150], inv.encoding_r2_[150:]
    assert np.median(signal) > np.median(silent) + 0.1 and np.mean(silent) < 0.02
    # and the decoder weighs them less (per unit of response variance)
    weight = np.linalg.norm(inv.coef_ * inv.scale_, axis=0)
    assert np.median(weight[150:]) < 0.5 * np.median(weight[:150])


def test_components_are_capped_by_the_samples_and_one_target_works():
    X, y, *_ = _simulate(10, 5)
    assert EncodingInversion(n_components=32).fit(X, y).n_components_ == 5  # n // 2
    pred = EncodingInversion(n_components=3).fit(X, y[:, 0]).predict(X)
    assert pred.shape == (10,)


def test_bad_prior_and_parameters_are_named():
    X, y, *_ = _simulate(10, 6)
    with pytest.raises(ValueError, match="prior has 3 targets per sample, y has 60"):
        EncodingInversion().fit(X, y, prior=np.zeros((20, 3)))
    with pytest.raises(ValueError, match="alpha must be > 0"):
        EncodingInversion(alpha=0).fit(X, y)
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        EncodingInversion(n_components=0).fit(X, y)
