"""Baselines every image reconstruction is compared to.

- :class:`RidgeToPixels` — a linear map from brain responses to every pixel (ridge, penalty
  chosen by efficient leave-one-out): what a decoder without any image prior reaches, the
  floor of low-level metrics (PixCorr, SSIM);
- :func:`nearest_training_image` — each predicted embedding replaced by the training image
  whose embedding is closest (cosine): what perfect rendering of a decoded embedding would give
  without generalising beyond the training images, the reference of high-level metrics.
  It sees embeddings only; the test image is never an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from neurodecode.data.images import as_batch, resize

__all__ = ["RidgeToPixels", "nearest_training_image"]


class RidgeToPixels(BaseEstimator):
    """Ridge regression from brain responses to the pixels of the seen image.

    Features are standardised with statistics of the training data only; one penalty for all
    pixels is chosen among ``alphas`` by efficient leave-one-out
    (:class:`~sklearn.linear_model.RidgeCV`). Predictions are clipped to [0, 1].

    Parameters
    ----------
    alphas : sequence of float
        Candidate penalties (on standardised features).
    size : int, optional
        Side images are resized to before fitting (and predictions have); default their own.

    Attributes
    ----------
    scaler_ : StandardScaler
        Feature standardisation, fitted on the training responses.
    ridge_ : RidgeCV
        The fitted regression onto flattened ``(3, H, W)`` pixels.
    alpha_ : float
        The chosen penalty.
    image_shape_ : tuple of int
        ``(3, H, W)`` of the predicted images.
    n_features_in_ : int
        Number of brain features seen in :meth:`fit`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, images = rng.normal(size=(40, 5)), rng.random((40, 16, 16, 3))
    >>> RidgeToPixels().fit(X, images).predict(X[:2]).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(self, alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5), *,
                 size: int | None = None) -> None:
        self.alphas = alphas
        self.size = size

    def fit(self, X: Any, images: np.ndarray | torch.Tensor) -> RidgeToPixels:
        """Fit the map from responses to pixels.

        Parameters
        ----------
        X : array-like of shape (n, n_features)
            Brain responses, one row per trial.
        images : array or Tensor
            The ``n`` seen images, any layout :func:`~neurodecode.data.images.as_batch`
            accepts, values in [0, 1].

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If the numbers of rows and images differ, or ``alphas`` is empty or not positive.
        """
        X = validate_data(self, X, reset=True, dtype=np.float64)
        y = as_batch(images) if self.size is None else resize(images, self.size)
        y = y.detach().cpu().numpy().astype(np.float64)
        if len(y) != len(X):
            raise ValueError(f"{len(X)} rows of brain responses for {len(y)} images: they must "
                             "match")
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(alphas <= 0):
            raise ValueError(f"alphas must be a non-empty sequence of positive penalties, got "
                             f"{self.alphas!r}")
        self.scaler_ = StandardScaler().fit(X)
        self.ridge_ = RidgeCV(alphas=alphas).fit(self.scaler_.transform(X), y.reshape(len(y), -1))
        self.alpha_ = float(self.ridge_.alpha_)
        self.image_shape_ = tuple(int(s) for s in y.shape[1:])
        return self

    def predict(self, X: Any) -> torch.Tensor:
        """Predicted images.

        Parameters
        ----------
        X : array-like of shape (n, n_features)

        Returns
        -------
        Tensor
            float32 ``(n, 3, H, W)`` in [0, 1].
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        flat = self.ridge_.predict(self.scaler_.transform(X))
        out = np.clip(flat, 0.0, 1.0).reshape(len(X), *self.image_shape_)
        return torch.from_numpy(out.astype(np.float32))


def _rows(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    m = np.asarray(x, dtype=np.float64)
    if m.ndim < 2 or len(m) == 0:
        raise ValueError(f"{what} must be a non-empty (n, dim) matrix, got shape {m.shape}")
    m = m.reshape(len(m), -1)
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norm, out=np.zeros_like(m), where=norm > 0)


def nearest_training_image(pred_embedding: Any, train_embedding: Any,
                           train_images: np.ndarray | torch.Tensor
                           ) -> tuple[torch.Tensor, np.ndarray]:
    """The training image whose embedding is nearest (cosine) to each predicted embedding.

    Parameters
    ----------
    pred_embedding : array or Tensor of shape (n, ...)
        Embeddings decoded from brain activity (flattened per trial).
    train_embedding : array or Tensor of shape (m, ...)
        Embeddings of the training images, row ``j`` that of ``train_images[j]``.
    train_images : array or Tensor
        The ``m`` training images, any layout :func:`~neurodecode.data.images.as_batch`
        accepts.

    Returns
    -------
    images : Tensor
        float32 ``(n, 3, H, W)``: the chosen training images.
    index : ndarray of shape (n,)
        Row of ``train_images`` chosen for each prediction (first on ties).

    Raises
    ------
    ValueError
        If embedding sizes differ or the training embeddings and images do not match.
    """
    p = _rows(pred_embedding, "pred_embedding")
    b = _rows(train_embedding, "train_embedding")
    bank = as_batch(train_images).detach().cpu()
    if p.shape[1] != b.shape[1]:
        raise ValueError(f"predicted embeddings have {p.shape[1]} values and training "
                         f"embeddings {b.shape[1]}: they must match")
    if len(b) != len(bank):
        raise ValueError(f"{len(b)} training embeddings for {len(bank)} training images: they "
                         "must match")
    index = np.argmax(p @ b.T, axis=1)
    return bank[torch.from_numpy(index)].clone(), index
