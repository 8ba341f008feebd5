"""Classical baselines every model is compared to, as scikit-learn estimators.

Transformers for epochs ``X`` of shape (n_epochs, n_channels, n_times) or features of shape
(n_samples, n_features):

- :class:`BandPower` — log band power per channel (Welch), for oscillatory effects;
- :class:`Decimate` — average in consecutive time bins, for evoked responses (ERPs);
- :class:`Flatten` — one feature vector per sample;
- :class:`ChannelStandardizer` — per-channel z-scoring, fitted on training data only;
- :class:`MNEVerbose` — runs an MNE transformer at an MNE log level (quiet by default).

Factories return unfitted :class:`~sklearn.pipeline.Pipeline` objects whose every data-fitted
step (normalisation included) is fitted inside each cross-validation fold:

==========================  ================================================================
factory                     use it for
==========================  ================================================================
:func:`ridge`               continuous targets (behaviour, stimulus features, embeddings)
:func:`logistic`            classification from features or short epochs
:func:`bandpower_logistic`  classes that differ in oscillatory power (rest/task, workload)
:func:`csp_lda`             two or more classes that differ in the spatial pattern of band
                            power (motor imagery), band-pass filtered epochs
:func:`erp_lda`             classes that differ in evoked responses (P300, N170, ...)
:func:`xdawn_lda`           evoked responses with many channels or low SNR
:func:`knn`                 a non-linear reference, small data sets
==========================  ================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import signal as sps
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from neurodecode.verbosity import Verbose, mne_verbose

__all__ = [
    "DEFAULT_BANDS",
    "BandPower",
    "ChannelStandardizer",
    "Decimate",
    "Flatten",
    "MNEVerbose",
    "bandpower_logistic",
    "csp_lda",
    "erp_lda",
    "knn",
    "lda",
    "logistic",
    "ridge",
    "xdawn_lda",
]

#: Default frequency bands (Hz): theta, alpha, beta.
DEFAULT_BANDS = ((4.0, 8.0), (8.0, 13.0), (13.0, 30.0))


def _epochs(X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 3:
        raise ValueError(f"expected epochs (n_epochs, n_channels, n_times), got shape {X.shape}")
    return X


class BandPower(TransformerMixin, BaseEstimator):
    """Band power of every channel from Welch's periodogram.

    Use it when classes differ in the power of oscillations (alpha during rest, beta
    desynchronisation during movement, theta with workload) rather than in the time course.

    Parameters
    ----------
    sfreq : float
        Sampling rate (Hz).
    bands : sequence of (float, float)
        Half-open frequency bands ``[low, high)`` in Hz.
    log : bool
        Return ``log10`` of the power (closer to Gaussian, what linear models want).

    Notes
    -----
    Welch segments are 1 s long (or the whole epoch when shorter), Hann-windowed with 50 %
    overlap; each band must hold at least one frequency bin. Output features are ordered
    channel-major: ``(ch0, band0), (ch0, band1), ..., (ch1, band0), ...``.
    """

    def __init__(self, sfreq: float, bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
                 log: bool = True):
        self.sfreq = sfreq
        self.bands = bands
        self.log = log

    def fit(self, X: Any, y: Any = None) -> BandPower:
        """Record the number of channels (nothing is learnt).

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times)
        y : ignored

        Returns
        -------
        BandPower
        """
        self.n_channels_ = _epochs(X).shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Band power of each channel.

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times)

        Returns
        -------
        ndarray of shape (n_epochs, n_channels * n_bands)
        """
        check_is_fitted(self)
        X = _epochs(X)
        if X.shape[1] != self.n_channels_:
            raise ValueError(f"fitted on {self.n_channels_} channels, got {X.shape[1]}")
        nperseg = min(X.shape[-1], int(round(self.sfreq)))
        freqs, psd = sps.welch(X, fs=self.sfreq, nperseg=nperseg, axis=-1)
        df = freqs[1] - freqs[0]
        power = []
        for low, high in self.bands:
            inside = (freqs >= low) & (freqs < high)
            if not inside.any():
                raise ValueError(f"band [{low}, {high}) Hz holds no frequency bin at a "
                                 f"resolution of {df:g} Hz (epochs of {X.shape[-1]} samples)")
            power.append(psd[..., inside].sum(axis=-1) * df)
        power = np.stack(power, axis=-1)  # (n, ch, bands)
        if self.log:
            power = np.log10(np.maximum(power, np.finfo(float).tiny))
        return power.reshape(len(X), -1)


class Decimate(TransformerMixin, BaseEstimator):
    """Average epochs in consecutive bins of ``factor`` time samples.

    Use it for evoked responses: it low-pass filters and shrinks the time course to a few
    dozen values per channel (choose ``factor`` so that bins last 20–50 ms). The last bin
    averages what remains when ``n_times`` is not a multiple of ``factor``.

    Parameters
    ----------
    factor : int
        Time samples per bin.
    """

    def __init__(self, factor: int = 10):
        self.factor = factor

    def fit(self, X: Any, y: Any = None) -> Decimate:
        """Check the factor (nothing is learnt).

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times)
        y : ignored

        Returns
        -------
        Decimate
        """
        if int(self.factor) < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        self.n_times_ = _epochs(X).shape[-1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Bin averages.

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times)

        Returns
        -------
        ndarray of shape (n_epochs, n_channels, ceil(n_times / factor))
        """
        check_is_fitted(self)
        X = _epochs(X)
        if X.shape[-1] != self.n_times_:
            raise ValueError(f"fitted on epochs of {self.n_times_} samples, got {X.shape[-1]}")
        starts = np.arange(0, X.shape[-1], int(self.factor))
        counts = np.diff(np.append(starts, X.shape[-1]))
        return np.add.reduceat(X, starts, axis=-1) / counts


class Flatten(TransformerMixin, BaseEstimator):
    """Reshape samples of any shape to vectors: (n, ...) → (n, prod(...)).

    Use it between epoch transformers and estimators that take feature matrices.
    """

    def fit(self, X: Any, y: Any = None) -> Flatten:
        """Record the sample shape.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : ignored

        Returns
        -------
        Flatten
        """
        self.sample_shape_ = tuple(np.shape(X)[1:])
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Flatten every sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = np.asarray(X)
        if X.shape[1:] != self.sample_shape_:
            raise ValueError(f"fitted on samples of shape {self.sample_shape_}, got {X.shape[1:]}")
        return X.reshape(len(X), -1)


class ChannelStandardizer(TransformerMixin, BaseEstimator):
    """Z-score every channel (or feature) with statistics of the training data.

    Use it as the first step of a pipeline so that the mean and scale are learnt from the
    training samples of each fold only. For epochs (n, ch, time) the statistics of a channel
    pool all its samples and time points, so the time course within an epoch is preserved.

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (n_channels,)
        Per-channel mean and standard deviation (1 where the channel is constant).
    """

    def fit(self, X: Any, y: Any = None) -> ChannelStandardizer:
        """Learn each channel's mean and standard deviation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_epochs, n_channels, n_times)
        y : ignored

        Returns
        -------
        ChannelStandardizer
        """
        X = self._check(X)
        axes = (0,) if X.ndim == 2 else (0, 2)
        self.mean_ = X.mean(axis=axes)
        scale = X.std(axis=axes)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Subtract the training mean and divide by the training scale, per channel.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_epochs, n_channels, n_times)

        Returns
        -------
        ndarray of the same shape
        """
        check_is_fitted(self)
        X = self._check(X)
        shape = (-1,) if X.ndim == 2 else (-1, 1)
        if X.shape[1] != self.mean_.size:
            raise ValueError(f"fitted on {self.mean_.size} channels, got {X.shape[1]}")
        return (X - self.mean_.reshape(shape)) / self.scale_.reshape(shape)

    @staticmethod
    def _check(X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim not in (2, 3):
            raise ValueError(f"expected 2-D or 3-D X, got shape {X.shape}")
        return X


class MNEVerbose(TransformerMixin, BaseEstimator):
    """Run an MNE transformer's ``fit`` and ``transform`` at an MNE log level.

    MNE's decoding classes (:class:`mne.decoding.CSP`, :class:`mne.decoding.XdawnTransformer`)
    log every covariance estimate at MNE's default ``info`` level: hundreds of lines per
    cross-validation. This wrapper applies :func:`neurodecode.verbosity.mne_verbose` around
    them, wherever the pipeline is fitted (joblib workers included, since the level travels
    with the estimator).

    Parameters
    ----------
    estimator : MNE transformer
        Cloned at ``fit``.
    verbose : bool, str, int or None
        MNE-style level (``True`` = ``"info"``); ``None`` runs MNE at ``"warning"`` unless the
        user or an enclosing call (``cross_validate(verbose=...)``) chose another level.

    Attributes
    ----------
    estimator_ : MNE transformer
        The fitted clone. Its attributes are reachable on the wrapper too
        (``pipeline["csp"].patterns_``, ``pipeline["csp"].plot_patterns(info)``).
    """

    def __init__(self, estimator: Any, verbose: Verbose = None):
        self.estimator = estimator
        self.verbose = verbose

    def fit(self, X: Any, y: Any = None) -> MNEVerbose:
        """Fit a clone of ``estimator`` at the chosen MNE log level.

        Parameters
        ----------
        X : array-like
        y : array-like, optional

        Returns
        -------
        MNEVerbose
        """
        with mne_verbose(self.verbose):
            self.estimator_ = clone(self.estimator).fit(X, y)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Transform with the fitted clone at the chosen MNE log level.

        Parameters
        ----------
        X : array-like

        Returns
        -------
        ndarray
        """
        check_is_fitted(self)
        with mne_verbose(self.verbose):
            return self.estimator_.transform(X)

    def __getattr__(self, name: str) -> Any:
        fitted = self.__dict__.get("estimator_")
        if fitted is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(fitted, name)


# --------------------------------------------------------------------------- factories


def _logistic_model(C: float | Sequence[float]) -> BaseEstimator:
    if np.ndim(C) == 0:
        return LogisticRegression(C=float(C), class_weight="balanced", max_iter=1000)
    return GridSearchCV(LogisticRegression(class_weight="balanced", max_iter=1000),
                        {"C": [float(c) for c in C]}, scoring="balanced_accuracy", cv=5)


def ridge(alphas: Sequence[float] | None = None, cv: int | None = None) -> Pipeline:
    """Standardise, flatten, ridge regression with the penalty chosen on the training data.

    Use it for continuous targets — behaviour, stimulus features, image embeddings — from
    features or epochs; the first model to beat on any regression task.

    Parameters
    ----------
    alphas : sequence of float, optional
        Penalties to choose from; default 17 values log-spaced over ``1e-2 .. 1e6``.
    cv : int, optional
        ``None``: efficient leave-one-out over training samples. For time series pass an
        integer: that many contiguous folds of the training set (unshuffled, in sample order:
        keep the sample table sorted by time), since leave-one-out on autocorrelated samples
        favours too little regularisation.

    Returns
    -------
    Pipeline
        ``standardize`` → ``flatten`` → ``ridge`` (:class:`~sklearn.linear_model.RidgeCV`).
    """
    alphas = np.logspace(-2, 6, 17) if alphas is None else np.asarray(alphas, dtype=float)
    inner = None if cv is None else KFold(cv)
    return Pipeline([("standardize", ChannelStandardizer()), ("flatten", Flatten()),
                     ("ridge", RidgeCV(alphas=alphas, cv=inner))])


def logistic(C: float | Sequence[float] = 1.0) -> Pipeline:
    """Standardise, flatten, L2 logistic regression with balanced class weights.

    Use it for classification from feature vectors or short, low-dimensional epochs.

    Parameters
    ----------
    C : float or sequence of float
        Inverse penalty; a sequence is searched by 5-fold cross-validation of balanced
        accuracy on the training data (:class:`~sklearn.model_selection.GridSearchCV`).

    Returns
    -------
    Pipeline
        ``standardize`` → ``flatten`` → ``logistic``.
    """
    return Pipeline([("standardize", ChannelStandardizer()), ("flatten", Flatten()),
                     ("logistic", _logistic_model(C))])


def bandpower_logistic(sfreq: float, bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
                       C: float | Sequence[float] = 1.0) -> Pipeline:
    """Log band power per channel, standardised, logistic regression.

    Use it when classes differ in oscillatory power whatever its spatial pattern (rest versus
    task, workload, sleep stages) — from raw (not band-passed) epochs.

    Parameters
    ----------
    sfreq : float
        Sampling rate (Hz).
    bands : sequence of (float, float)
        Frequency bands (Hz).
    C : float or sequence of float
        As for :func:`logistic`.

    Returns
    -------
    Pipeline
        ``bandpower`` → ``standardize`` → ``logistic``.
    """
    return Pipeline([("bandpower", BandPower(sfreq, bands=bands, log=True)),
                     ("standardize", ChannelStandardizer()), ("logistic", _logistic_model(C))])


def csp_lda(n_components: int = 4, *, verbose: Verbose = None) -> Pipeline:
    """Common spatial patterns (log variance) then linear discriminant analysis.

    Use it for classes that differ in the spatial distribution of band power — motor imagery
    (left/right hand, feet) — from epochs band-pass filtered to the relevant band (e.g.
    7–30 Hz). This is MNE's motor imagery example pipeline.

    Parameters
    ----------
    n_components : int
        CSP filters kept.
    verbose : bool, str, int or None
        MNE log level of the CSP fits, in MNE's convention; ``None`` (default) keeps MNE at
        ``"warning"`` — no per-covariance ``info`` lines — unless ``MNE_LOGGING_LEVEL``,
        :func:`mne.set_log_level` or ``cross_validate(verbose=...)`` asks for more.

    Returns
    -------
    Pipeline
        ``csp`` (:class:`MNEVerbose` around :class:`mne.decoding.CSP`, ``reg=None, log=True,
        norm_trace=False``) → ``lda``.
    """
    from mne.decoding import CSP

    csp = CSP(n_components=n_components, reg=None, log=True, norm_trace=False)
    return Pipeline([("csp", MNEVerbose(csp, verbose=verbose)),
                     ("lda", LinearDiscriminantAnalysis())])


def _shrinkage_lda() -> LinearDiscriminantAnalysis:
    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")


def lda() -> Pipeline:
    """Standardised features, shrinkage LDA (closed form: fast enough for many permutations).

    Use it for many features and few samples per class (fMRI voxels, spike counts): Ledoit–Wolf
    shrinkage keeps the covariance well conditioned, and nothing is tuned on the test data.

    Returns
    -------
    Pipeline
        ``standardize`` → ``flatten`` → ``lda`` (``solver="lsqr", shrinkage="auto"``).
    """
    return Pipeline([("standardize", ChannelStandardizer()), ("flatten", Flatten()),
                     ("lda", _shrinkage_lda())])


def erp_lda(decim: int = 10) -> Pipeline:
    """Time-binned evoked responses of every channel, shrinkage LDA.

    Use it for classes that differ in evoked responses (P300 speller, oddball, face/house
    N170): the standard ERP classifier, robust with few trials per feature thanks to
    Ledoit–Wolf shrinkage.

    Parameters
    ----------
    decim : int
        Time samples averaged per bin (bins of 20–50 ms: ``decim ≈ sfreq / 40``).

    Returns
    -------
    Pipeline
        ``standardize`` → ``decimate`` → ``flatten`` → ``lda``
        (``solver="lsqr", shrinkage="auto"``).
    """
    return Pipeline([("standardize", ChannelStandardizer()), ("decimate", Decimate(decim)),
                     ("flatten", Flatten()), ("lda", _shrinkage_lda())])


def xdawn_lda(n_components: int = 2, decim: int = 10, *, verbose: Verbose = None) -> Pipeline:
    """xDAWN spatial filters (per class) enhancing evoked responses, then shrinkage LDA.

    Use it instead of :func:`erp_lda` for evoked responses recorded with many channels or at a
    low signal-to-noise ratio: xDAWN projects the epochs onto the few components that carry the
    class-specific evoked response.

    Parameters
    ----------
    n_components : int
        xDAWN components per class.
    decim : int
        As for :func:`erp_lda`.
    verbose : bool, str, int or None
        MNE log level of the xDAWN fits; as for :func:`csp_lda`.

    Returns
    -------
    Pipeline
        ``xdawn`` (:class:`MNEVerbose` around :class:`mne.decoding.XdawnTransformer`) →
        ``decimate`` → ``flatten`` → ``lda``.
    """
    from mne.decoding import XdawnTransformer

    xdawn = XdawnTransformer(n_components=n_components)
    return Pipeline([("xdawn", MNEVerbose(xdawn, verbose=verbose)),
                     ("decimate", Decimate(decim)), ("flatten", Flatten()),
                     ("lda", _shrinkage_lda())])


def knn(n_neighbors: int = 5, task: Literal["classification", "regression"] = "classification"
        ) -> Pipeline:
    """Standardise, flatten, k nearest neighbours.

    Use it as a non-linear, assumption-free reference on small data sets (it degrades with
    many features); a model that does not beat it has learnt little beyond similarity.

    Parameters
    ----------
    n_neighbors : int
    task : {"classification", "regression"}

    Returns
    -------
    Pipeline
        ``standardize`` → ``flatten`` → ``knn``.
    """
    if task == "classification":
        model: BaseEstimator = KNeighborsClassifier(n_neighbors=n_neighbors)
    elif task == "regression":
        model = KNeighborsRegressor(n_neighbors=n_neighbors)
    else:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    return Pipeline([("standardize", ChannelStandardizer()), ("flatten", Flatten()),
                     ("knn", model)])
