"""Decoding by inverting an encoding model under a Gaussian prior of the targets.

With few trials of a subject (a new subject adapted from minutes of data), a linear decoder
fitted from hundreds of channels to the targets is badly under-determined: it can only combine
the few training responses. The generative direction is easier (Naselaris et al. 2009, Kay et
al. 2008): each channel's response is a linear function of a few latent target dimensions, a
handful of weights per channel that a few trials pin down, and inverting that model weighs
every channel by its own reliability. The latent dimensions and their prior come from a bank
of targets that needs no brain data (the embeddings of every training image), so the prior
knows what images look like even where the subject has seen few of them.

:class:`EncodingInversion` fits, in order:

1. a PCA prior of the targets: ``y = mean + (z * sqrt(latent_var)) @ components``, ``z ~ N(0, I)``,
   on ``prior`` (default: the training targets);
2. a ridge encoding model per channel of the standardised responses from the whitened latents
   of the training targets, ``r = B' z + c + noise``, with each channel's noise variance from
   its leave-one-out residuals (so a channel the model cannot predict gets little weight);
3. the posterior mean of ``z`` given a response, ``(I + B S^-1 B')^-1 B S^-1 (r - c)``, mapped
   back to targets. The whole decoder is linear: :attr:`coef_` and :attr:`intercept_`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

__all__ = ["EncodingInversion"]


class EncodingInversion(RegressorMixin, BaseEstimator):
    """A linear encoding model per channel, inverted under a PCA prior of the targets.

    Parameters
    ----------
    n_components : int
        Latent dimensions of the prior (at most; also at most half the training samples, the
        number of targets and the prior's samples minus one).
    alpha : float
        Ridge penalty of the encoding weights on the whitened latents: their prior precision.
        With ``n`` training samples each weight is shrunk by about ``n / (n + alpha)``.
    noise_floor : float
        Smallest noise variance of a (standardised) channel.

    Attributes
    ----------
    n_components_ : int
        Latent dimensions used.
    target_mean_ : ndarray, shape (n_targets,)
        Mean of the prior's targets.
    components_ : ndarray, shape (n_components_, n_targets)
        The prior's principal axes.
    latent_var_ : ndarray, shape (n_components_,)
        Variance of the prior's targets along each axis.
    mean_, scale_ : ndarray, shape (n_features,)
        Mean and standard deviation of each channel over the training samples (the
        standardisation of the responses).
    latent_mean_ : ndarray, shape (n_components_,)
        Mean whitened latent of the training targets.
    encoding_coef_ : ndarray, shape (n_components_, n_features)
        Encoding weights of every standardised channel on the whitened latents: a standardised
        response is ``(z - latent_mean_) @ encoding_coef_`` plus noise.
    noise_var_ : ndarray, shape (n_features,)
        Leave-one-out residual variance of each standardised channel.
    encoding_r2_ : ndarray, shape (n_features,)
        ``1 - noise_var_``: the leave-one-out variance of each channel the encoding explains.
    coef_ : ndarray, shape (n_targets, n_features)
        The decoder, in the units of the raw features: ``predict(X) = X @ coef_.T +
        intercept_``.
    intercept_ : ndarray, shape (n_targets,)
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(30, 3))
    >>> X = z @ rng.normal(size=(3, 200)) + rng.normal(size=(30, 200))
    >>> y = z @ rng.normal(size=(3, 10))
    >>> EncodingInversion(n_components=3).fit(X, y).predict(X).shape
    (30, 10)
    """

    def __init__(self, n_components: int = 32, alpha: float = 20.0,
                 noise_floor: float = 1e-3) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.noise_floor = noise_floor

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any, prior: Any = None) -> EncodingInversion:
        """Fit the prior, the encoding model and its inverse.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Responses (e.g. each trial's time-averaged channels).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            The targets of those samples.
        prior : array-like of shape (n_prior, n_targets), optional
            Targets the prior is fitted on (e.g. every training image's embedding); needs no
            responses. Default: ``y``.

        Returns
        -------
        EncodingInversion
            ``self``.
        """
        if not self.n_components >= 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             ensure_min_samples=2, dtype=np.float64)
        self._one_target = y.ndim == 1
        Y = y.reshape(len(y), -1)
        bank = Y if prior is None else check_array(prior, dtype=np.float64, ensure_min_samples=2)
        if bank.shape[1] != Y.shape[1]:
            raise ValueError(f"prior has {bank.shape[1]} targets per sample, y has {Y.shape[1]}")
        n = len(X)
        k = int(min(self.n_components, max(1, n // 2), Y.shape[1], len(bank) - 1))
        self.target_mean_ = bank.mean(axis=0)
        _, s, vt = np.linalg.svd(bank - self.target_mean_, full_matrices=False)
        var = s[:k] ** 2 / (len(bank) - 1)
        keep = var > 1e-12 * max(float(var.max(initial=0.0)), 1e-300)
        self.components_, self.latent_var_ = vt[:k][keep], var[keep]
        if not len(self.latent_var_):
            self.components_, self.latent_var_ = np.zeros((1, Y.shape[1])), np.ones(1)
        self.n_components_ = k = len(self.latent_var_)

        self.mean_ = mean = X.mean(axis=0)
        self.scale_ = scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0
        R = (X - mean) / scale
        latent = (Y - self.target_mean_) @ self.components_.T / np.sqrt(self.latent_var_)
        self.latent_mean_ = zbar = latent.mean(axis=0)
        Zc = latent - zbar
        gram = Zc.T @ Zc + self.alpha * np.eye(k)
        B = np.linalg.solve(gram, Zc.T @ R)                         # (k, n_features)
        hat = Zc @ np.linalg.solve(gram, Zc.T) + 1.0 / n            # with the intercept
        leverage = np.minimum(np.diag(hat), 1 - 1e-6)
        residual = (R - hat @ R) / (1 - leverage)[:, None]
        self.noise_var_ = np.maximum((residual ** 2).mean(axis=0), self.noise_floor)
        self.encoding_coef_ = B
        self.encoding_r2_ = 1.0 - self.noise_var_

        # posterior mean of z given r (standardised): z = (r + zbar B) M, M = S^-1 B' P^-1
        weighted = B / self.noise_var_                              # B S^-1
        precision = np.eye(k) + weighted @ B.T
        M = np.linalg.solve(precision, weighted).T                  # (n_features, k)
        to_targets = np.sqrt(self.latent_var_)[:, None] * self.components_
        D = M @ to_targets                                          # standardised r -> y
        self.coef_ = (D / scale[:, None]).T
        self.intercept_ = self.target_mean_ + (zbar @ B @ M) @ to_targets - (mean / scale) @ D
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Posterior-mean targets of responses ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = X @ self.coef_.T + self.intercept_
        return out[:, 0] if self._one_target else out
