"""Per-fold cleaning of time samples, fitted on the training samples only.

Cleaning a whole run at ingest (``read_nifti(standardize=True, high_pass=...)``, ΔF/F with a
running baseline) is transductive for a split within that run: the training samples are
standardised with statistics of the test samples and filtered across the split boundary.
:class:`FoldClean` does the same cleaning inside a :class:`~sklearn.pipeline.Pipeline`, so that
:func:`neurodecode.evaluate.cross_validate` fits it on each fold's training samples:

- the temporal steps (detrending, high-/low-pass filtering, done by
  :func:`nilearn.signal.clean`) are applied to each block passed to ``fit`` or ``transform`` on
  its own, so no sample of one side reaches the other;
- the standardisation uses the mean and standard deviation of the (filtered) training samples,
  stored at fit time and applied unchanged to the test samples.

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.linear_model import RidgeClassifier
>>> model = make_pipeline(FoldClean(t_r=2.0, high_pass=0.01), RidgeClassifier())
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["FoldClean"]


class FoldClean(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Detrend, filter and standardise time samples with statistics of the training samples.

    Parameters
    ----------
    t_r : float, optional
        Seconds between samples (the repetition time for fMRI, ``1 / sfreq`` otherwise);
        required by ``high_pass`` and ``low_pass``.
    detrend : bool
        Remove a linear trend (and the mean) from each block, as :func:`nilearn.signal.clean`.
    high_pass, low_pass : float, optional
        Cut-off frequencies in Hz of :func:`nilearn.signal.clean`'s filter.
    filter : {"butterworth", "cosine"}
        Filter of :func:`nilearn.signal.clean` (``"cosine"``: regression of discrete cosine
        drifts, high-pass only).
    standardize : bool
        Divide by the training samples' standard deviation (``ddof=1``) after subtracting their
        mean, per feature.

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (n_features,)
        Per-feature mean and standard deviation of the cleaned training samples (``scale_`` is 1
        where the deviation is 0, and everywhere when ``standardize`` is False).
    n_features_in_ : int

    Notes
    -----
    ``X`` is ``(n_samples, n_features)``: consecutive time samples, e.g. the ``X`` of
    :func:`neurodecode.data.samples.time_samples`. The temporal steps treat each block as one
    series unless ``runs`` (one label per sample: the recording, or a contiguous segment) is
    passed to ``fit`` or ``transform``; in :func:`~neurodecode.evaluate.cross_validate` pass it
    with ``fit_params={"foldclean__runs": ...}`` (the test block is then cleaned as one series).
    """

    def __init__(
        self,
        t_r: float | None = None,
        *,
        detrend: bool = False,
        high_pass: float | None = None,
        low_pass: float | None = None,
        filter: Literal["butterworth", "cosine"] = "butterworth",
        standardize: bool = True,
    ) -> None:
        self.t_r = t_r
        self.detrend = detrend
        self.high_pass = high_pass
        self.low_pass = low_pass
        self.filter = filter
        self.standardize = standardize

    def _clean(self, X: np.ndarray, runs: Any) -> np.ndarray:
        """The temporal steps of nilearn on one block (no standardisation)."""
        filtering = self.high_pass is not None or self.low_pass is not None
        if not (self.detrend or filtering):
            return X
        if filtering and self.t_r is None:
            raise ValueError("FoldClean: high_pass/low_pass need t_r (seconds between samples)")
        if self.filter not in ("butterworth", "cosine"):
            raise ValueError(f"FoldClean: filter must be 'butterworth' or 'cosine', got "
                             f"{self.filter!r}")
        from nilearn.signal import clean

        if runs is not None:
            runs = np.asarray(runs)
            if runs.shape != (len(X),):
                raise ValueError(f"FoldClean: runs has shape {runs.shape}, X has {len(X)} rows")
        out = clean(X, runs=runs, detrend=bool(self.detrend), standardize=None,
                    filter=self.filter if filtering else False, high_pass=self.high_pass,
                    low_pass=self.low_pass, t_r=self.t_r)
        return np.asarray(out, dtype=X.dtype)

    def fit(self, X: Any, y: Any = None, runs: Any = None) -> FoldClean:
        """Learn the per-feature mean and scale of the cleaned training samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples.
        y : ignored
        runs : array-like of shape (n_samples,), optional
            Series label of each sample (each series is detrended and filtered on its own).

        Returns
        -------
        FoldClean
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        clean = self._clean(X, runs)
        self.mean_ = clean.mean(axis=0)
        if self.standardize and len(X) > 1:
            scale = clean.std(axis=0, ddof=1)
            self.scale_ = np.where(scale > 0, scale, 1.0)
        else:
            self.scale_ = np.ones(X.shape[1], dtype=clean.dtype)
        return self

    def transform(self, X: Any, runs: Any = None) -> np.ndarray:
        """Clean samples with the training statistics.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        runs : array-like of shape (n_samples,), optional
            Series label of each sample, as in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            ``(clean(X) - mean_) / scale_``, in the dtype of ``X`` (float32 or float64).
        """
        check_is_fitted(self, "mean_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        out = (self._clean(X, runs) - self.mean_) / self.scale_
        return out.astype(X.dtype, copy=False)

    def fit_transform(self, X: Any, y: Any = None, runs: Any = None) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same samples (and ``runs``)."""
        return self.fit(X, y, runs=runs).transform(X, runs=runs)
