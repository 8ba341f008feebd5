"""Reference statistics of spike trains: a rate-only likelihood, connectivity AUROC, generation.

- :class:`PoissonRateBaseline` — an inhomogeneous Poisson model of every unit whose rate is a
  function of the behaviour covariates only (no spike history, no coupling). Its
  :meth:`~PoissonRateBaseline.window_nll` is the negative log-probability of a current window's
  count matrix, the same event that a generative token model scores (the canonical token
  sequence of :mod:`neurodecode.data.tokens` is a one-to-one code of that matrix), so the two
  compare in nats per spike (:func:`nats_per_spike`).
- :func:`connectivity_auroc` — how well scores of directed pairs recover the true edges of a
  network, with a label-permutation chance level; :func:`cross_correlogram_scores` gives
  model-free scores to compare a model's with.
- :func:`generation_stats` — rates, inter-spike intervals and pairwise count correlations of
  generated spike trains against real ones, beside a rate-matched Poisson surrogate of the real
  data as a reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats
from scipy.special import gammaln
from sklearn.base import BaseEstimator
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import SplineTransformer
from sklearn.utils.validation import check_is_fitted

if TYPE_CHECKING:  # pragma: no cover
    from neurodecode.data.tokens import SpikeTokenizer, TokenWindows

__all__ = [
    "PoissonRateBaseline",
    "bin_widths",
    "connectivity_auroc",
    "covariates_at_bins",
    "cross_correlogram_scores",
    "generation_stats",
    "nats_per_spike",
]

_WINDOW_CHUNK = 4096  # windows scored at once by PoissonRateBaseline.window_nll


# --------------------------------------------------------------------------------------------
# Rate-only Poisson baseline
# --------------------------------------------------------------------------------------------


def bin_widths(tokenizer: SpikeTokenizer) -> np.ndarray:
    """Width (s) of every time bin of a tokenizer's current window; the last may be shorter."""
    k = np.arange(tokenizer.n_dt)
    return np.minimum(tokenizer.dt, tokenizer.window - k * tokenizer.dt)


def covariates_at_bins(
    tokenizer: SpikeTokenizer, starts: np.ndarray, time: np.ndarray, X: np.ndarray
) -> np.ndarray:
    """Covariates at the centre of every time bin of every current window.

    Sample-and-hold: a bin takes the sample whose interval ``[time[i], time[i + 1])`` holds its
    centre (the convention of binned counts).

    Parameters
    ----------
    tokenizer : SpikeTokenizer
        Gives the window and its bins.
    starts : ndarray, shape (n_windows,)
        Window starts (s).
    time : ndarray, shape (n_samples,)
        Sorted sample times of the covariates (s).
    X : ndarray, shape (n_samples, n_features)
        Covariates.

    Returns
    -------
    ndarray of float64, shape (n_windows, n_dt, n_features)
    """
    time = np.asarray(time, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or len(X) != len(time):
        raise ValueError(f"X {X.shape} must be (n_samples, n_features) with one row per time "
                         f"({len(time)} given)")
    widths = bin_widths(tokenizer)
    centres = np.asarray(starts, dtype=np.float64)[:, None] + (
        np.arange(tokenizer.n_dt) * tokenizer.dt + widths / 2)
    i = np.searchsorted(time, centres, side="right") - 1
    if np.any(i < 0) or np.any(centres > time[-1] + (time[-1] - time[0]) / max(1, len(time) - 1)):
        raise ValueError("some window bins lie outside the covariate samples")
    return X[i]


class PoissonRateBaseline(BaseEstimator):
    """Rate-only inhomogeneous Poisson model of every unit, a function of covariates.

    Each unit's count in a bin of width ``w`` is Poisson with mean ``rate(x) * w``, where
    ``log rate`` is linear in a cubic B-spline expansion of the covariates ``x`` (one spline per
    column; ``linear_features`` columns, e.g. one-hot stimulus classes, enter as they are),
    fitted by :class:`sklearn.linear_model.PoissonRegressor` per unit. Without covariates each
    unit has its mean rate.

    Parameters
    ----------
    n_knots : int
        Knots of each covariate's spline (uniform over its training range; constant beyond).
    degree : int
        Spline degree.
    linear_features : sequence of int
        Columns of ``X`` that are not expanded.
    alpha : float
        L2 penalty of the Poisson regressions.
    min_rate : float
        Floor of every predicted rate (Hz), so that a spike of a silent unit has a finite cost.
    max_iter : int
        Iterations of the Poisson regressions' solver.

    Attributes
    ----------
    bin_width_ : float
        Bin width of the training counts (s).
    n_units_ : int
        Units (columns of the counts).
    n_features_in_ : int
        Covariates (0 without them).
    spline_ : SplineTransformer or None
        The fitted expansion of the spline columns.
    coef_ : ndarray, shape (n_units, n_basis)
        Coefficients of the expanded covariates per unit.
    intercept_ : ndarray, shape (n_units,)
        Log mean count per bin at zero features.
    """

    def __init__(self, n_knots: int = 8, degree: int = 3, linear_features: Sequence[int] = (),
                 alpha: float = 1e-3, min_rate: float = 1e-3, max_iter: int = 300) -> None:
        self.n_knots = n_knots
        self.degree = degree
        self.linear_features = linear_features
        self.alpha = alpha
        self.min_rate = min_rate
        self.max_iter = max_iter

    def _split_columns(self, n_features: int) -> tuple[np.ndarray, np.ndarray]:
        linear = np.asarray(list(self.linear_features), dtype=np.int64)
        if linear.size and (linear.min() < 0 or linear.max() >= n_features):
            raise ValueError(f"linear_features {list(linear)} out of range for {n_features} "
                             "covariates")
        spline = np.setdiff1d(np.arange(n_features), linear)
        return spline, linear

    def _basis(self, X: np.ndarray) -> np.ndarray:
        spline, linear = self._split_columns(X.shape[1])
        parts = [X[:, linear]]
        if self.spline_ is not None:
            parts.insert(0, self.spline_.transform(X[:, spline]))
        return np.concatenate(parts, axis=1)

    def _check_X(self, X: Any, n_rows: int | None, *, fitting: bool) -> np.ndarray | None:
        n_features = 0 if fitting else self.n_features_in_
        if X is None:
            if not fitting and n_features:
                raise ValueError(f"this baseline was fitted on {n_features} covariates; pass X")
            return None
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise ValueError(f"X must be (n_bins, n_features), got shape {X.shape}")
        if n_rows is not None and len(X) != n_rows:
            raise ValueError(f"X has {len(X)} rows for {n_rows} bins of counts")
        if not np.all(np.isfinite(X)):
            raise ValueError("X holds NaN or infinite values")
        if not fitting and X.shape[1] != n_features:
            raise ValueError(f"X has {X.shape[1]} covariates; the baseline was fitted on "
                             f"{n_features}")
        return X

    def fit(self, counts: Any, X: Any = None, bin_width: float | None = None
            ) -> PoissonRateBaseline:
        """Fit every unit's rate on binned counts.

        Parameters
        ----------
        counts : array-like, shape (n_bins, n_units)
            Non-negative integer spike counts per bin.
        X : array-like, shape (n_bins, n_features), optional
            Covariates per bin; None for constant rates.
        bin_width : float
            Bin width in seconds.

        Returns
        -------
        self
        """
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[0] < 2 or counts.shape[1] < 1:
            raise ValueError(f"counts must be (n_bins >= 2, n_units >= 1), got {counts.shape}")
        if (not np.all(np.isfinite(counts)) or np.any(counts < 0)
                or np.any(counts != np.round(counts))):
            raise ValueError("counts must be non-negative integers")
        if bin_width is None or not bin_width > 0:
            raise ValueError(f"bin_width must be a positive number of seconds, got {bin_width}")
        X = self._check_X(X, len(counts), fitting=True)
        self.bin_width_ = float(bin_width)
        self.n_units_ = counts.shape[1]
        self.n_features_in_ = 0 if X is None else X.shape[1]
        self.spline_ = None
        total = counts.sum(axis=0)
        if X is None:
            self.coef_ = np.zeros((self.n_units_, 0))
            self.intercept_ = np.log(np.maximum(total, 0.5) / len(counts))
            return self
        spline, _ = self._split_columns(X.shape[1])
        if spline.size:
            self.spline_ = SplineTransformer(n_knots=self.n_knots, degree=self.degree,
                                             extrapolation="constant").fit(X[:, spline])
        basis = self._basis(X)
        self.coef_ = np.zeros((self.n_units_, basis.shape[1]))
        self.intercept_ = np.log(np.maximum(total, 0.5) / len(counts))
        for u in range(self.n_units_):
            if total[u] == 0:
                continue  # silent: half a spike over the training time, no modulation
            model = PoissonRegressor(alpha=self.alpha, max_iter=self.max_iter)
            model.fit(basis, counts[:, u])
            self.coef_[u] = model.coef_
            self.intercept_[u] = model.intercept_
        return self

    def rates(self, X: Any = None, n: int | None = None) -> np.ndarray:
        """Predicted rates in Hz.

        Parameters
        ----------
        X : array-like, shape (n_bins, n_features), optional
            Covariates; None when the baseline was fitted without them.
        n : int, optional
            Rows to return when ``X`` is None (default 1).

        Returns
        -------
        ndarray of float64, shape (n_bins, n_units)
        """
        check_is_fitted(self, "coef_")
        X = self._check_X(X, None, fitting=False)
        if X is None:
            eta = np.broadcast_to(self.intercept_, (1 if n is None else int(n), self.n_units_))
        else:
            eta = self._basis(X) @ self.coef_.T + self.intercept_
        return np.maximum(np.exp(eta) / self.bin_width_, self.min_rate)

    def window_nll(self, tokens: TokenWindows, unit_index: Any, X_at_bins: Any,
                   tokenizer: SpikeTokenizer) -> np.ndarray:
        """Negative log-probability (nats) of every current window's count matrix.

        ``nll = -sum_{u, k} log Poisson(n_uk; rate_u(t_k) * w_k)`` over every unit of the
        baseline and every time bin ``k`` (width ``w_k``, see :func:`bin_widths`) of the window.
        Windows with truncated tokens are scored on the tokens kept; :func:`nats_per_spike`
        leaves them out.

        Parameters
        ----------
        tokens : TokenWindows
            Windows of one recording, from a :class:`~neurodecode.data.tokens.SpikeTokenizer`.
        unit_index : array-like of int, shape (n_units,)
            Token id of each unit (column) of the baseline.
        X_at_bins : array-like, shape (n_windows, n_dt, n_features), optional
            Covariates at every bin (see :func:`covariates_at_bins`); None without covariates.
        tokenizer : SpikeTokenizer
            The tokenizer that made ``tokens`` (its window and bin width).

        Returns
        -------
        ndarray of float64, shape (n_windows,)
        """
        check_is_fitted(self, "coef_")
        n, n_dt, n_units = len(tokens), tokenizer.n_dt, self.n_units_
        column = self._columns(tokens, unit_index)
        if len(tokens.cur_dt) and (tokens.cur_dt.min() < 0 or tokens.cur_dt.max() >= n_dt):
            raise ValueError(f"token time bins span [{int(tokens.cur_dt.min())}, "
                             f"{int(tokens.cur_dt.max())}]; this tokenizer has {n_dt} bins")
        if X_at_bins is not None:
            X_at_bins = np.asarray(X_at_bins, dtype=np.float64)
            if X_at_bins.ndim != 3 or X_at_bins.shape[:2] != (n, n_dt):
                raise ValueError(f"X_at_bins has shape {X_at_bins.shape}; expected ({n}, {n_dt}, "
                                 "n_features)")
        widths = bin_widths(tokenizer)
        lengths = tokens.n_tokens()
        window = np.repeat(np.arange(n), lengths)
        cell = (window * n_dt + tokens.cur_dt) * n_units + column
        out = np.empty(n)
        for w0 in range(0, n, _WINDOW_CHUNK):
            w1 = min(n, w0 + _WINDOW_CHUNK)
            if X_at_bins is None:
                rate = self.rates(None, n=1)[0]
                mean = np.broadcast_to(widths[:, None] * rate, (w1 - w0, n_dt, n_units))
            else:
                flat = X_at_bins[w0:w1].reshape(-1, X_at_bins.shape[2])
                mean = self.rates(flat).reshape(w1 - w0, n_dt, n_units) * widths[:, None]
            out[w0:w1] = mean.sum(axis=(1, 2))
            lo, hi = tokens.cur_offsets[w0], tokens.cur_offsets[w1]
            cells, count = np.unique(cell[lo:hi] - w0 * n_dt * n_units, return_counts=True)
            log_mean = np.log(mean.reshape(-1)[cells])
            per = count * log_mean - gammaln(count + 1.0)
            out[w0:w1] -= np.bincount(cells // (n_dt * n_units), weights=per, minlength=w1 - w0)
        return out

    def _columns(self, tokens: TokenWindows, unit_index: Any) -> np.ndarray:
        """Baseline column of every current token; errors name the unknown unit ids."""
        unit_index = np.asarray(unit_index, dtype=np.int64).reshape(-1)
        if len(unit_index) != self.n_units_:
            raise ValueError(f"unit_index has {len(unit_index)} ids for the baseline's "
                             f"{self.n_units_} units")
        if len(np.unique(unit_index)) != len(unit_index):
            raise ValueError("unit_index repeats token ids")
        order = np.argsort(unit_index)
        pos = np.searchsorted(unit_index[order], tokens.cur_unit)
        pos = np.minimum(pos, len(unit_index) - 1)
        column = order[pos]
        unknown = unit_index[column] != tokens.cur_unit
        if np.any(unknown):
            ids = np.unique(tokens.cur_unit[unknown])
            raise ValueError(f"tokens of unit ids {ids[:10].tolist()} are not in unit_index: "
                             "the baseline can only score the units it was fitted on")
        return column

    def nll_per_spike(self, tokens: TokenWindows, unit_index: Any, X_at_bins: Any,
                      tokenizer: SpikeTokenizer) -> float:
        """Nats per spike over the windows without truncated tokens (see :func:`nats_per_spike`).

        Parameters are those of :meth:`window_nll`.
        """
        return nats_per_spike(self.window_nll(tokens, unit_index, X_at_bins, tokenizer), tokens)


def nats_per_spike(nll: Any, tokens: TokenWindows) -> float:
    """Sum of window NLLs over their spikes, on the windows with ``n_truncated == 0``.

    Parameters
    ----------
    nll : array-like, shape (n_windows,)
        Negative log-probability of each window (nats), from a model or the baseline.
    tokens : TokenWindows
        The windows.

    Returns
    -------
    float
    """
    nll = np.asarray(nll, dtype=np.float64)
    if nll.shape != (len(tokens),):
        raise ValueError(f"nll has shape {nll.shape} for {len(tokens)} windows")
    keep = tokens.n_truncated == 0
    n_spikes = int(tokens.n_tokens()[keep].sum())
    if n_spikes == 0:
        raise ValueError("no spike in the windows without truncated tokens")
    return float(nll[keep].sum() / n_spikes)


# --------------------------------------------------------------------------------------------
# Connectivity
# --------------------------------------------------------------------------------------------


def cross_correlogram_scores(times: Any, units: Any, n_units: int,
                             window: tuple[float, float] = (0.002, 0.010),
                             bin_width: float = 0.001) -> np.ndarray:
    """Directed coupling scores from spike-train cross-correlograms, a model-free reference.

    ``causal[i, j]`` counts the pairs where a spike of ``i`` follows one of ``j`` by a lag in
    ``window`` (on a ``bin_width`` grid); the score is the asymmetry against the reverse order,
    ``(causal - causal.T) / sqrt(causal + causal.T + 1)``: positive for an excitatory ``j ->
    i`` edge, negative for an inhibitory one, near 0 for shared slow drive (symmetric).

    Parameters
    ----------
    times, units : array-like, shape (n_spikes,)
        Spike times (s) and unit indices in ``[0, n_units)``.
    n_units : int
        Number of units.
    window : (float, float)
        Lags ``[lo, hi)`` (s) that count as causal.
    bin_width : float
        Time grid of the lags (s).

    Returns
    -------
    ndarray of float64, shape (n_units, n_units)
        Signed scores ``[post, pre]`` (zero diagonal); pass their magnitude to
        :func:`connectivity_auroc`.
    """
    from scipy import sparse

    times = np.asarray(times, dtype=np.float64).reshape(-1)
    units = np.asarray(units).reshape(-1)
    if times.shape != units.shape or len(times) == 0:
        raise ValueError(f"need as many times as units, at least one ({len(times)}, "
                         f"{len(units)} given)")
    if units.min() < 0 or units.max() >= n_units:
        raise ValueError(f"unit indices must lie in [0, {n_units})")
    lo, hi = (int(round(w / bin_width)) for w in window)
    if not 0 < lo < hi:
        raise ValueError(f"window {window} must be 0 < lo < hi and at least one bin_width "
                         f"({bin_width}) long")
    b = np.floor((times - times.min()) / bin_width).astype(np.int64)
    n_bins = int(b.max()) + hi + 1
    S = sparse.csr_matrix((np.ones(len(b)), (b, units.astype(np.int64))),
                          shape=(n_bins, n_units))
    causal = np.zeros((n_units, n_units))
    for lag in range(lo, hi):
        causal += (S[lag:].T @ S[:-lag]).toarray()  # [a, b]: a at t + lag after b at t
    score = (causal - causal.T) / np.sqrt(causal + causal.T + 1.0)
    np.fill_diagonal(score, 0.0)
    return score


def connectivity_auroc(scores: Any, true: Any, n_permutations: int = 1000, seed: int = 0
                       ) -> dict[str, float]:
    """AUROC of directed-pair scores for the true edges, with its permutation chance level.

    Only off-diagonal pairs count (``[i, j]`` and ``[j, i]`` are different pairs). Scores must
    grow with the belief in an edge: pass magnitudes for signed estimates. The chance level
    permutes the edge labels over the pairs (same number of edges).

    Parameters
    ----------
    scores : array-like, shape (n_units, n_units)
        Score of each directed pair.
    true : array-like of bool, shape (n_units, n_units)
        True edges, in the same ``[row, column]`` convention as ``scores``.
    n_permutations : int
        Label permutations of the null distribution.
    seed : int
        Seed of the permutations.

    Returns
    -------
    dict
        ``auroc``, ``chance_mean``, ``chance_p95`` (95th percentile of the null), ``p_value``
        (``(1 + #(null >= auroc)) / (1 + n_permutations)``), ``n_edges``, ``n_pairs``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    true = np.asarray(true)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"scores must be a square (n_units >= 2) matrix, got {scores.shape}")
    if true.shape != scores.shape:
        raise ValueError(f"true {true.shape} and scores {scores.shape} differ in shape")
    if true.dtype != bool and not np.isin(true, (0, 1)).all():
        raise ValueError("true must hold booleans (edge or not)")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    off = ~np.eye(len(scores), dtype=bool)
    s, y = scores[off], true[off].astype(bool)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or infinite values")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError(f"true has {n_pos} edges among {len(y)} pairs: need both edges and "
                         "non-edges")
    auroc = float(roc_auc_score(y, s))
    ranks = stats.rankdata(s)  # AUROC = Mann-Whitney U of the ranks (average ties)
    rng = np.random.default_rng(seed)
    labels = rng.permuted(np.tile(y, (n_permutations, 1)), axis=1)
    u = labels.astype(np.float64) @ ranks - n_pos * (n_pos + 1) / 2
    null = u / (n_pos * (len(y) - n_pos))
    return {
        "auroc": auroc,
        "chance_mean": float(null.mean()),
        "chance_p95": float(np.quantile(null, 0.95)),
        "p_value": float((1 + np.sum(null >= auroc - 1e-12)) / (1 + n_permutations)),
        "n_edges": n_pos,
        "n_pairs": len(y),
    }


# --------------------------------------------------------------------------------------------
# Statistics of generated spike trains
# --------------------------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _check_train(times: Any, units: Any, n_units: int, t_start: float, duration: float,
                 what: str) -> tuple[np.ndarray, np.ndarray]:
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    units = np.asarray(units).reshape(-1)
    if times.shape != units.shape:
        raise ValueError(f"{what}: {len(times)} times for {len(units)} units")
    if len(units) and (units.min() < 0 or units.max() >= n_units
                       or np.any(units != np.round(units))):
        raise ValueError(f"{what}: unit indices must be integers in [0, {n_units})")
    outside = (times < t_start) | (times >= t_start + duration) | ~np.isfinite(times)
    if np.any(outside):
        raise ValueError(f"{what}: {int(outside.sum())} spike(s) outside [{t_start}, "
                         f"{t_start + duration})")
    order = np.lexsort((times, units))
    return times[order], units[order].astype(np.int64)


def _isis(times: np.ndarray, units: np.ndarray, n_units: int) -> list[np.ndarray]:
    """Per unit, the intervals between its consecutive spikes (inputs sorted by unit, time)."""
    bounds = np.searchsorted(units, np.arange(n_units + 1))
    return [np.diff(times[bounds[u]:bounds[u + 1]]) for u in range(n_units)]


def _cv(isi: np.ndarray) -> float:
    return float(isi.std() / isi.mean()) if len(isi) > 1 and isi.mean() > 0 else math.nan


def _count_corr(times: np.ndarray, units: np.ndarray, n_units: int, t_start: float,
                duration: float, bin_width: float) -> np.ndarray:
    """Upper triangle of the units' count correlations (NaN where a unit never varies)."""
    n_bins = max(2, int(math.floor(duration / bin_width + 1e-9)))
    b = np.minimum(((times - t_start) / bin_width).astype(np.int64), n_bins - 1)
    counts = np.bincount(b * n_units + units, minlength=n_bins * n_units)
    counts = counts.reshape(n_bins, n_units).astype(np.float64)
    centred = counts - counts.mean(axis=0)
    sd = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(sd, sd)
    return corr[np.triu_indices(n_units, 1)]


def _train_summary(times: np.ndarray, units: np.ndarray, n_units: int, duration: float,
                   isis: list[np.ndarray], corr: np.ndarray, min_isi: int) -> dict[str, Any]:
    rates = np.bincount(units, minlength=n_units) / duration
    cvs = np.array([_cv(i) if len(i) >= min_isi else math.nan for i in isis])
    pooled = np.concatenate(isis) if isis else np.zeros(0)
    return {
        "n_spikes": len(times),
        "mean_rate": float(rates.mean()),
        "isi_cv": _finite(np.nanmean(cvs)) if np.isfinite(cvs).any() else None,
        "isi_below_2ms": _finite((pooled < 0.002).mean()) if len(pooled) else None,
        "mean_corr": _finite(np.nanmean(corr)) if np.isfinite(corr).any() else None,
        "_rates": rates,
        "_cvs": cvs,
        "_pooled": pooled,
    }


def _compare(real: dict[str, Any], other: dict[str, Any], real_isis: list[np.ndarray],
             other_isis: list[np.ndarray], real_corr: np.ndarray, other_corr: np.ndarray,
             min_isi: int) -> dict[str, Any]:
    r, g = real["_rates"], other["_rates"]
    active = r > 0
    rate_corr = (np.corrcoef(r, g)[0, 1] if r.std() > 0 and g.std() > 0 else math.nan)
    both = [u for u in range(len(r)) if len(real_isis[u]) >= min_isi
            and len(other_isis[u]) >= min_isi]
    ks_unit = [stats.ks_2samp(real_isis[u], other_isis[u]).statistic for u in both]
    cv_err = np.abs(real["_cvs"][both] - other["_cvs"][both]) if both else np.zeros(0)
    pooled_ks = (stats.ks_2samp(real["_pooled"], other["_pooled"]).statistic
                 if len(real["_pooled"]) and len(other["_pooled"]) else math.nan)
    ok = np.isfinite(real_corr) & np.isfinite(other_corr)
    corr_match = (np.corrcoef(real_corr[ok], other_corr[ok])[0, 1]
                  if ok.sum() > 2 and real_corr[ok].std() > 0 and other_corr[ok].std() > 0
                  else math.nan)
    row = {k: v for k, v in other.items() if not k.startswith("_")}
    row.update({
        "rate_corr": _finite(rate_corr),
        "rate_ratio_error": _finite(np.mean(np.abs(g[active] / r[active] - 1.0)))
        if active.any() else None,
        "isi_ks": _finite(pooled_ks),
        "isi_ks_unit": _finite(np.median(ks_unit)) if ks_unit else None,
        "isi_cv_error": _finite(cv_err.mean()) if len(cv_err) else None,
        "corr_match": _finite(corr_match),
        "corr_mae": _finite(np.abs(real_corr[ok] - other_corr[ok]).mean()) if ok.any() else None,
    })  # fmt: skip
    return row


def generation_stats(real_times: Any, real_units: Any, gen_times: Any, gen_units: Any,
                     n_units: int, duration: float, bin_width: float = 0.01, *,
                     t_start: float = 0.0, min_isi: int = 10, seed: int = 0) -> dict[str, Any]:
    """Compare generated spike trains with real ones (rates, ISIs, pairwise correlations).

    The same comparison is made for a rate-matched Poisson surrogate of the real data (each
    unit's real spike count, at uniform random times: same rates, no ISI structure, no
    correlations) as a reference row: a generator worth its name beats it on ISIs and
    correlations.

    Parameters
    ----------
    real_times, real_units : array-like, shape (n_real,)
        Real spike times (s) and unit indices in ``[0, n_units)``.
    gen_times, gen_units : array-like, shape (n_gen,)
        Generated spikes, same conventions (and the same units).
    n_units : int
        Number of units.
    duration : float
        Length (s) of the span both trains cover, ``[t_start, t_start + duration)``.
    bin_width : float
        Bin (s) of the pairwise spike-count correlations.
    t_start : float
        Start of the span (s).
    min_isi : int
        Intervals a unit needs for its ISI statistics (per-unit KS and CV).
    seed : int
        Seed of the Poisson surrogate.

    Returns
    -------
    dict
        JSON-able: ``n_units``, ``duration``, ``bin_width``; ``real`` (``n_spikes``,
        ``mean_rate``, ``isi_cv``: mean per-unit CV of the ISIs, ``isi_below_2ms``: fraction of
        ISIs under 2 ms, ``mean_corr``: mean pair correlation); ``generated`` and
        ``poisson_surrogate`` (the same, plus ``rate_corr``: Pearson correlation of the per-unit
        rates with the real ones, ``rate_ratio_error``: mean ``|rate / real rate - 1|`` over the
        active units, ``isi_ks``: KS statistic of the pooled ISIs, ``isi_ks_unit``: median
        per-unit KS statistic, ``isi_cv_error``: mean per-unit ``|CV - real CV|``,
        ``corr_match``: correlation of the upper-triangle pair correlations with the real ones,
        ``corr_mae``: their mean absolute difference); and ``rates_real``, ``rates_generated``
        (Hz per unit). Undefined values are None.
    """
    if n_units < 2:
        raise ValueError(f"n_units must be at least 2, got {n_units}")
    if not duration > 0 or not bin_width > 0 or bin_width > duration:
        raise ValueError(f"need duration > 0 and 0 < bin_width <= duration, got {duration}, "
                         f"{bin_width}")
    rt, ru = _check_train(real_times, real_units, n_units, t_start, duration, "real spikes")
    gt, gu = _check_train(gen_times, gen_units, n_units, t_start, duration, "generated spikes")
    rng = np.random.default_rng(seed)
    st = t_start + rng.uniform(0.0, duration, len(ru))
    st, su = _check_train(st, ru, n_units, t_start, duration, "surrogate")

    summaries = {}
    for name, (t, u) in {"real": (rt, ru), "generated": (gt, gu),
                         "poisson_surrogate": (st, su)}.items():
        isis = _isis(t, u, n_units)
        corr = _count_corr(t, u, n_units, t_start, duration, bin_width)
        summaries[name] = (_train_summary(t, u, n_units, duration, isis, corr, min_isi), isis,
                           corr)
    real, real_isis, real_corr = summaries["real"]
    out: dict[str, Any] = {
        "n_units": int(n_units), "duration": float(duration), "bin_width": float(bin_width),
        "real": {k: v for k, v in real.items() if not k.startswith("_")},
    }  # fmt: skip
    for name in ("generated", "poisson_surrogate"):
        other, isis, corr = summaries[name]
        out[name] = _compare(real, other, real_isis, isis, real_corr, corr, min_isi)
    out["rates_real"] = [float(r) for r in real["_rates"]]
    out["rates_generated"] = [float(r) for r in summaries["generated"][0]["_rates"]]
    return out
