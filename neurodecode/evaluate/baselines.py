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

:class:`BlockedRidgeCV` is the ridge regression of :func:`ridge`: its penalty is chosen on
inner folds by group or contiguous time block (:func:`blocked_folds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import signal as sps
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted, validate_data

from neurodecode.data.stats import channel_stats
from neurodecode.verbosity import Verbose, mne_verbose

__all__ = [
    "DEFAULT_BANDS",
    "FACTORIES",
    "BandPower",
    "BlockedRidgeCV",
    "ChannelStandardizer",
    "Decimate",
    "Flatten",
    "MNEVerbose",
    "bandpower_logistic",
    "blocked_folds",
    "csp_lda",
    "erp_lda",
    "knn",
    "lda",
    "logistic",
    "ridge",
    "xdawn_lda",
]

#: The factories of ready-made estimators (what a decode stage's ``estimator.name`` may give).
FACTORIES = ("bandpower_logistic", "csp_lda", "erp_lda", "knn", "lda", "logistic", "ridge",
             "xdawn_lda")  # fmt: skip

#: Default frequency bands (Hz): theta, alpha, beta.
DEFAULT_BANDS = ((4.0, 8.0), (8.0, 13.0), (13.0, 30.0))

#: Float dtypes kept as they are; any other numeric input is converted to the first.
_FLOATS = [np.float64, np.float32]


def _validated(est: BaseEstimator, X: Any, *, reset: bool, ndims: tuple[int, ...] = (2, 3),
               dtype: Any = _FLOATS, allow_nan: bool = False) -> np.ndarray:
    """``validate_data`` for arrays of samples of any rank (epochs included).

    Sets (``reset=True``) or checks ``n_features_in_`` — ``X.shape[1]``, the channels of epochs —
    and refuses sparse, complex, empty, non-finite (unless ``allow_nan``) input and a number of
    dimensions outside ``ndims``, in scikit-learn's words.
    """
    X = validate_data(est, X, reset=reset, allow_nd=True, dtype=dtype,
                      ensure_all_finite=not allow_nan)
    if X.ndim not in ndims:
        raise ValueError(f"{type(est).__name__} takes X with {' or '.join(map(str, ndims))} "
                         f"dimensions, got shape {X.shape}")
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

    Attributes
    ----------
    n_features_in_ : int
        Channels of the training epochs (time samples for 2-D ``X``).
    n_times_ : int
        Time samples per training epoch; :meth:`transform` takes epochs of this length only,
        since the frequency resolution depends on it.

    Notes
    -----
    ``X`` is (n_epochs, n_channels, n_times), or (n_epochs, n_times) for epochs of one channel.
    Welch segments are 1 s long (or the whole epoch when shorter), Hann-windowed with 50 %
    overlap; each band must hold at least one frequency bin (checked by :meth:`fit`). Output
    features are ordered channel-major: ``(ch0, band0), (ch0, band1), ..., (ch1, band0), ...``.
    """

    def __init__(self, sfreq: float, bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
                 log: bool = True):
        self.sfreq = sfreq
        self.bands = bands
        self.log = log

    def fit(self, X: Any, y: Any = None) -> BandPower:
        """Check that every band holds a frequency bin at the epochs' resolution.

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times) or (n_epochs, n_times)
        y : ignored

        Returns
        -------
        BandPower
        """
        X = _validated(self, X, reset=True, dtype=np.float64)
        freqs = self._freqs(X.shape[-1])
        df = freqs[1] - freqs[0] if len(freqs) > 1 else float(self.sfreq)
        for low, high in self.bands:
            if not np.any((freqs >= low) & (freqs < high)):
                raise ValueError(f"band [{low}, {high}) Hz holds no frequency bin at a "
                                 f"resolution of {df:g} Hz (epochs of {X.shape[-1]} samples)")
        self.n_times_ = X.shape[-1]
        return self

    def _nperseg(self, n_times: int) -> int:
        return max(1, min(n_times, int(round(self.sfreq))))

    def _freqs(self, n_times: int) -> np.ndarray:
        return np.fft.rfftfreq(self._nperseg(n_times), d=1.0 / self.sfreq)

    def transform(self, X: Any) -> np.ndarray:
        """Band power of each channel.

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times) or (n_epochs, n_times)

        Returns
        -------
        ndarray of shape (n_epochs, n_channels * n_bands)
        """
        check_is_fitted(self)
        X = _validated(self, X, reset=False, dtype=np.float64)
        if X.shape[-1] != self.n_times_:
            raise ValueError(f"fitted on epochs of {self.n_times_} samples, got {X.shape[-1]}")
        nperseg = self._nperseg(X.shape[-1])
        freqs, psd = sps.welch(X, fs=self.sfreq, nperseg=nperseg, axis=-1)
        df = freqs[1] - freqs[0] if len(freqs) > 1 else float(self.sfreq)
        power = np.stack([psd[..., (freqs >= low) & (freqs < high)].sum(axis=-1) * df
                          for low, high in self.bands], axis=-1)  # (n, [ch,] bands)
        if self.log:
            power = np.log10(np.maximum(power, np.finfo(float).tiny))
        return power.reshape(len(X), -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


class Decimate(TransformerMixin, BaseEstimator):
    """Average epochs in consecutive bins of ``factor`` time samples.

    Use it for evoked responses: it low-pass filters and shrinks the time course to a few
    dozen values per channel (choose ``factor`` so that bins last 20–50 ms). The last bin
    averages what remains when ``n_times`` is not a multiple of ``factor``. Time is the last
    axis: ``X`` is (n_epochs, n_channels, n_times), or (n_epochs, n_times) for one channel.

    Parameters
    ----------
    factor : int
        Time samples per bin.

    Attributes
    ----------
    n_features_in_ : int
        Channels of the training epochs (time samples for 2-D ``X``).
    n_times_ : int
        Time samples per training epoch.
    """

    def __init__(self, factor: int = 10):
        self.factor = factor

    def fit(self, X: Any, y: Any = None) -> Decimate:
        """Check the factor (nothing is learnt).

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times) or (n_epochs, n_times)
        y : ignored

        Returns
        -------
        Decimate
        """
        if int(self.factor) < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        self.n_times_ = _validated(self, X, reset=True).shape[-1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Bin averages, in the input's float dtype.

        Parameters
        ----------
        X : array-like of shape (n_epochs, n_channels, n_times) or (n_epochs, n_times)

        Returns
        -------
        ndarray of shape (n_epochs, n_channels, ceil(n_times / factor)), or
        (n_epochs, ceil(n_times / factor)) for 2-D ``X``
        """
        check_is_fitted(self)
        X = _validated(self, X, reset=False)
        if X.shape[-1] != self.n_times_:
            raise ValueError(f"fitted on epochs of {self.n_times_} samples, got {X.shape[-1]}")
        starts = np.arange(0, X.shape[-1], int(self.factor))
        counts = np.diff(np.append(starts, X.shape[-1]))
        return (np.add.reduceat(X, starts, axis=-1) / counts).astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class Flatten(TransformerMixin, BaseEstimator):
    """Reshape samples of any shape to vectors: (n, ...) → (n, prod(...)).

    Use it between epoch transformers and estimators that take feature matrices. The values
    and their dtype are kept as they are (NaN included).

    Attributes
    ----------
    n_features_in_ : int
        ``X.shape[1]`` at fit.
    sample_shape_ : tuple of int
        Shape of one training sample; :meth:`transform` takes samples of this shape only.
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
        X = _validated(self, X, reset=True, ndims=tuple(range(2, 33)), dtype="numeric",
                       allow_nan=True)
        self.sample_shape_ = tuple(X.shape[1:])
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
        X = _validated(self, X, reset=False, ndims=tuple(range(2, 33)), dtype="numeric",
                       allow_nan=True)
        if X.shape[1:] != self.sample_shape_:
            raise ValueError(f"fitted on samples of shape {self.sample_shape_}, got {X.shape[1:]}")
        return X.reshape(len(X), -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class ChannelStandardizer(TransformerMixin, BaseEstimator):
    """Z-score every channel (or feature) with statistics of the training data.

    Use it as the first step of a pipeline so that the mean and scale are learnt from the
    training samples of each fold only. For epochs (n, ch, time) the statistics of a channel
    pool all its samples and time points, so the time course within an epoch is preserved.
    Statistics are computed in float64; the output keeps a float32 input's dtype.

    Attributes
    ----------
    n_features_in_ : int
        Channels (features) of the training data.
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
        X = _validated(self, X, reset=True)
        self.mean_, self.scale_ = channel_stats(X, channel_axis=1 if X.ndim == 3 else -1)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Subtract the training mean and divide by the training scale, per channel.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_epochs, n_channels, n_times)

        Returns
        -------
        ndarray of the same shape and float dtype
        """
        check_is_fitted(self)
        X = _validated(self, X, reset=False)
        shape = (-1,) if X.ndim == 2 else (-1, 1)
        z = (X - self.mean_.reshape(shape)) / self.scale_.reshape(shape)
        return z.astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class MNEVerbose(TransformerMixin, BaseEstimator):
    """Run an MNE transformer's ``fit`` and ``transform`` at an MNE log level.

    MNE's decoding classes (:class:`mne.decoding.CSP`, :class:`mne.decoding.XdawnTransformer`)
    log every covariance estimate at MNE's default ``info`` level: hundreds of lines per
    cross-validation. This wrapper applies :func:`neurodecode.verbosity.mne_verbose` around
    them, wherever the pipeline is fitted (joblib workers included, since the level travels
    with the estimator). Input validation is the wrapped transformer's, and so are its
    scikit-learn tags.

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
        The fitted clone. Its fitted attributes (names ending in ``_``, such as
        ``n_features_in_`` or ``patterns_``) and its ``plot_*`` methods are reachable on the
        wrapper too (``pipeline["csp"].patterns_``, ``pipeline["csp"].plot_patterns(info)``);
        its other methods are not, since they would run outside the chosen log level.
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.input_tags = inner.input_tags
        tags.target_tags = inner.target_tags
        if inner.transformer_tags is not None:
            tags.transformer_tags = inner.transformer_tags
        return tags

    def __getattr__(self, name: str) -> Any:
        fitted = self.__dict__.get("estimator_")
        public = not name.startswith("_") and (name.endswith("_") or name.startswith("plot_"))
        if fitted is None or not public:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(fitted, name)


def blocked_folds(n_samples: int, n_splits: int = 5, groups: Any = None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner cross-validation folds that never split a group or interleave samples in time.

    With ``groups`` holding two or more distinct values, :class:`~sklearn.model_selection.
    GroupKFold` over them (every group in one test fold; ``min(n_splits, n_groups)`` folds);
    otherwise ``n_splits`` contiguous blocks in sample order
    (:class:`~sklearn.model_selection.KFold`, unshuffled) — keep the samples sorted by time.

    Parameters
    ----------
    n_samples : int
    n_splits : int
        Folds (at least 2).
    groups : array-like of shape (n_samples,), optional
        Group of each sample (run, session, subject, trial block).

    Returns
    -------
    list of (train, test) index arrays

    Raises
    ------
    ValueError
        ``n_splits < 2``, groups of another length than the samples, or fewer samples than
        folds.
    """
    if int(n_splits) < 2:
        raise ValueError(f"inner cross-validation needs n_splits >= 2, got {n_splits}")
    X = np.empty((n_samples, 0))
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise ValueError(f"groups must have shape ({n_samples},), got {groups.shape}")
        n_groups = len(np.unique(groups))
        if n_groups >= 2:
            return list(GroupKFold(min(int(n_splits), n_groups)).split(X, groups=groups))
    return list(KFold(int(n_splits)).split(X))


class BlockedRidgeCV(RegressorMixin, BaseEstimator):
    """Ridge regression whose penalty is chosen by blocked inner cross-validation.

    Efficient leave-one-out (:class:`~sklearn.linear_model.RidgeCV`'s default) validates each
    sample on a model fitted on its neighbours, which for autocorrelated samples (time bins,
    overlapping windows, BOLD volumes) rewards too little regularisation. Here each penalty is
    scored (R²) on inner folds of :func:`blocked_folds`: whole groups when ``groups`` is
    passed to :meth:`fit` (in a pipeline: ``fit(X, y, ridge__groups=...)``, or
    ``cross_validate(..., fit_params={"ridge__groups": samples["run"]})``), contiguous blocks in
    sample order otherwise; the model is then refitted on all samples with the best penalty.

    Parameters
    ----------
    alphas : sequence of float, optional
        Penalties to choose from; default 17 values log-spaced over ``1e-2 .. 1e6``.
    n_splits : int
        Inner folds.

    Attributes
    ----------
    alpha_ : float
        The chosen penalty.
    best_score_ : float
        Its mean inner-fold R².
    coef_, intercept_ : ndarray
        Of the refitted :class:`~sklearn.linear_model.Ridge`.
    folds_ : list of (train, test) index arrays
        The inner folds used.
    n_features_in_ : int
    """

    def __init__(self, alphas: Sequence[float] | None = None, n_splits: int = 5):
        self.alphas = alphas
        self.n_splits = n_splits

    def fit(self, X: Any, y: Any, groups: Any = None) -> BlockedRidgeCV:
        """Choose the penalty on blocked inner folds, refit on all samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        groups : array-like of shape (n_samples,), optional
            Group of each sample; the inner folds keep each group whole.

        Returns
        -------
        BlockedRidgeCV
        """
        X, y = validate_data(self, X, y, dtype=_FLOATS, multi_output=True, y_numeric=True)
        alphas = np.logspace(-2, 6, 17) if self.alphas is None else np.asarray(self.alphas,
                                                                               dtype=float)
        self.folds_ = blocked_folds(len(X), self.n_splits, groups)
        self.ridge_ = RidgeCV(alphas=alphas, cv=self.folds_).fit(X, y)
        self.alpha_ = float(self.ridge_.alpha_)
        self.best_score_ = float(self.ridge_.best_score_)
        self.coef_, self.intercept_ = self.ridge_.coef_, self.ridge_.intercept_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predict with the refitted ridge model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        return self.ridge_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# --------------------------------------------------------------------------- factories


def _logistic_model(C: float | Sequence[float]) -> BaseEstimator:
    if np.ndim(C) == 0:
        return LogisticRegression(C=float(C), class_weight="balanced", max_iter=1000)
    return GridSearchCV(LogisticRegression(class_weight="balanced", max_iter=1000),
                        {"C": [float(c) for c in C]}, scoring="balanced_accuracy", cv=5)


def ridge(alphas: Sequence[float] | None = None, cv: int = 5) -> Pipeline:
    """Standardise, flatten, ridge regression with the penalty chosen on blocked inner folds.

    Use it for continuous targets — behaviour, stimulus features, image embeddings — from
    features or epochs; the first model to beat on any regression task. The penalty is chosen
    by :class:`BlockedRidgeCV` on inner folds of the training samples that are whole groups
    (``fit(X, y, ridge__groups=...)``, or ``cross_validate(...,
    fit_params={"ridge__groups": samples["run"]})``) or, without groups, contiguous blocks in
    sample order (keep the sample table sorted by time) — never leave-one-out, which on
    autocorrelated samples favours too little regularisation.

    Parameters
    ----------
    alphas : sequence of float, optional
        Penalties to choose from; default 17 values log-spaced over ``1e-2 .. 1e6``.
    cv : int
        Inner folds (at least 2).

    Returns
    -------
    Pipeline
        ``standardize`` → ``flatten`` → ``ridge`` (:class:`BlockedRidgeCV`).
    """
    return Pipeline([("standardize", ChannelStandardizer()), ("flatten", Flatten()),
                     ("ridge", BlockedRidgeCV(alphas=alphas, n_splits=cv))])


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
