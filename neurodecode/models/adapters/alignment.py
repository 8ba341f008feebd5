"""Functional alignment: a closed-form linear map of a new subject onto a trained one.

MindAligner-style: the new subject's responses are mapped into the channel space of a subject
the model was trained on, from pairs of samples that share a stimulus (or a label), and are
then decoded by the trained model through that subject's adapter. Fitting is one ridge
regression or one SVD: seconds on a CPU, with no gradient step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["FunctionalAlignment", "paired_targets"]


class FunctionalAlignment(RegressorMixin, TransformerMixin, BaseEstimator):
    """Linear map from one subject's channels onto another's.

    Parameters
    ----------
    method : {"ridge", "procrustes"}
        ``"ridge"``: ridge regression of the target responses on the source responses (the
        penalty chosen among ``alphas`` by contiguous-block cross-validation over the pairs in
        their given order, so that neighbouring time steps of one trial are not on both sides);
        ``"procrustes"``: the scaled semi-orthogonal map ``s U V^T`` (``U S V^T`` the SVD of
        ``X^T Y`` on centred data), which keeps the geometry of the source responses.
    alphas : sequence of float
        Ridge penalties to choose from (relative to the mean squared singular value of ``X``).
    rescale : bool
        Scale the ridge map so that the mapped source responses have the target's amplitude
        (the penalty shrinks it; a trained model downstream is not scale-invariant).

    Attributes
    ----------
    coef_ : ndarray
        ``(n_source_channels, n_target_channels)``.
    intercept_ : ndarray
        ``(n_target_channels,)``.
    alpha_ : float or None
        The chosen ridge penalty.
    """

    def __init__(self, method: Literal["ridge", "procrustes"] = "ridge",
                 alphas: Sequence[float] = (1e-2, 1e-1, 1.0, 10.0, 100.0), rescale: bool = True
                 ) -> None:
        self.method = method
        self.alphas = alphas
        self.rescale = rescale

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> FunctionalAlignment:
        """Fit the map from ``X`` (source, ``(n, C_src)``) to ``y`` (target, ``(n, C_tgt)``)."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        Y = y.reshape(len(y), -1).astype(np.float64)
        X = X.astype(np.float64)
        xm, ym = X.mean(axis=0), Y.mean(axis=0)
        Xc, Yc = X - xm, Y - ym
        if self.method == "ridge":
            scale = float((Xc**2).sum() / max(1, min(Xc.shape))) or 1.0
            alphas = np.asarray(self.alphas, dtype=np.float64) * scale
            self.alpha_ = _blocked_alpha(Xc, Yc, alphas) if len(alphas) > 1 else alphas[0]
            self.coef_ = _ridge_svd(Xc, Yc, [self.alpha_])[0]
            if self.rescale:  # shrinkage lowers the amplitude of the map, not its pattern
                fitted = float(np.linalg.norm(Xc @ self.coef_))
                if fitted > 0:
                    self.coef_ = self.coef_ * (float(np.linalg.norm(Yc)) / fitted)
        elif self.method == "procrustes":
            u, s, vt = np.linalg.svd(Xc.T @ Yc, full_matrices=False)
            norm = float((Xc**2).sum()) or 1.0
            self.coef_ = (u @ vt) * (s.sum() / norm)
            self.alpha_ = None
        else:
            raise ValueError(f"method must be 'ridge' or 'procrustes', got {self.method!r}")
        self.intercept_ = ym - xm @ self.coef_
        self._y_1d = y.ndim == 1
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Map source responses ``(n, C_src)`` into the target space."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False)
        out = X @ self.coef_ + self.intercept_
        return out[:, 0] if self._y_1d else out

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Same as :meth:`predict`."""
        return self.predict(X)


def _ridge_svd(X: np.ndarray, Y: np.ndarray, alphas: Sequence[float]) -> list[np.ndarray]:
    """Ridge coefficients ``(n_features, n_targets)`` for each penalty, from one thin SVD."""
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    uty = u.T @ Y
    return [vt.T @ ((s / (s**2 + a))[:, None] * uty) for a in alphas]


def _blocked_alpha(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, n_splits: int = 5
                   ) -> float:
    """The penalty whose predictions correlate best with contiguous held-out blocks of rows.

    Correlation, not squared error: with few pairs the error is lowest for the largest penalty
    (predicting the mean), which keeps no pattern; the scale is set afterwards (see
    ``rescale``). Each fold costs one thin SVD of the other rows (fast when rows are few and
    features many, the case of a few-shot subject with thousands of voxels); every penalty
    reuses it.
    """
    n = len(X)
    k = min(n_splits, n)
    if k < 2:
        return float(alphas[len(alphas) // 2])
    scores = np.zeros(len(alphas))
    for block in np.array_split(np.arange(n), k):
        rest = np.setdiff1d(np.arange(n), block)
        xm, ym = X[rest].mean(axis=0), Y[rest].mean(axis=0)
        u, s, vt = np.linalg.svd(X[rest] - xm, full_matrices=False)
        uty = u.T @ (Y[rest] - ym)
        proj = (X[block] - xm) @ vt.T  # (n_block, k)
        target = (Y[block] - ym).ravel()
        for i, a in enumerate(alphas):
            pred = (proj @ ((s / (s**2 + a))[:, None] * uty)).ravel()
            denom = float(np.linalg.norm(pred) * np.linalg.norm(target))
            scores[i] += float(pred @ target) / denom if denom > 0 else 0.0
    return float(alphas[int(np.argmax(scores))])


def paired_targets(keys: np.ndarray, reference_X: np.ndarray, reference_keys: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The reference subject's mean response to each key, for every sample with that key.

    Parameters
    ----------
    keys : ndarray
        Key of each new-subject sample (a stimulus id shared by subjects, or a label).
    reference_X : ndarray
        Reference samples ``(m, ...)``.
    reference_keys : ndarray
        Key of each reference sample.

    Returns
    -------
    targets : ndarray
        ``(n_kept, ...)``: per kept new-subject sample, the mean reference sample of its key.
    kept : ndarray of bool
        ``(n,)``: samples whose key the reference has.
    """
    keys, reference_keys = np.asarray(keys), np.asarray(reference_keys)
    means = {k: reference_X[reference_keys == k].mean(axis=0) for k in np.unique(reference_keys)}
    kept = np.array([k in means for k in keys.tolist()], dtype=bool)
    if not kept.any():
        raise ValueError("no sample of the new subject shares a key with the reference subject")
    return np.stack([means[k] for k in keys[kept].tolist()]), kept
